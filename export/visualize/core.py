"""What a trained ConvNet learned: the 9 image patches that activate each of 9 units most.

For a layer L, every spatial position of every channel ("unit") looks at one
receptive field of the input. Scanning a set of images, we keep for each unit
the 9 images where it fires most (one patch per image, so the 9 patches come
from 9 different images), crop the receptive field around the maximum, and
lay the result out as a 9x9 grid: one 3x3 block per unit.

Receptive fields are computed from the layer graph (kernel, stride, dilation,
padding of each conv/pool layer; merges take the largest field), not guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import cv2
import numpy as np

# Keras layer class names that change the receptive field like a sliding window
_WINDOWED = {"Conv1D", "Conv2D", "Conv3D", "DepthwiseConv2D", "SeparableConv2D",
             "MaxPooling2D", "AveragePooling2D", "MaxPooling1D", "AveragePooling1D"}
# layers after which a unit sees the whole input
_GLOBAL = {"GlobalAveragePooling2D", "GlobalMaxPooling2D", "GlobalAveragePooling1D",
           "GlobalMaxPooling1D", "Flatten", "Dense"}
# layers that would need an inverse mapping (decoders): not supported
_UPSAMPLING = {"UpSampling2D", "Conv2DTranspose", "Resizing"}
# layers that keep each unit's field (per position, or a merge of same-grid inputs). A Lambda
# is taken as one too: the models here use it for pixel scaling only
_ELEMENTWISE = {"Activation", "ReLU", "PReLU", "LeakyReLU", "ELU", "Softmax",
                "BatchNormalization", "LayerNormalization", "GroupNormalization",
                "Dropout", "SpatialDropout2D", "GaussianNoise", "Rescaling", "Normalization",
                "Lambda", "L2Normalize", "Identity",
                "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate"}
# zero padding and cropping move unit 0's centre, not the field's size
_PADDING = {"ZeroPadding1D", "ZeroPadding2D", "Cropping1D", "Cropping2D"}


class VisualizeError(ValueError):
    """The layer cannot be visualised (unknown, upsampling, or no images)."""


@dataclass(frozen=True)
class ReceptiveField:
    """Receptive field of one unit of a layer, in input pixels.

    ``size``: side of the field; ``jump``: input pixels between neighbouring
    units; ``start``: centre of unit 0 in input coordinates (pixel centres at
    integers). ``size=None`` means the whole input (after global pooling).
    """

    size: float | None
    jump: float
    start: float

    def centre(self, index: int) -> float:
        return self.start + index * self.jump


def _first(v) -> int:
    return int(v[0]) if isinstance(v, (tuple, list)) else int(v)


def _same_pad_left(k_eff: int, stride: int, size: int | None) -> int:
    """Pixels TensorFlow pads before the first position for ``padding="same"``.

    The total is ``max((ceil(n/s) - 1)·s + k - n, 0)``, the smaller half before: it depends
    on the input's size ``n`` unless ``n`` divides by the stride (then ``max(k - s, 0)``).
    """
    if size is None:
        return max(k_eff - stride, 0) // 2
    out = -(-size // stride)
    return max((out - 1) * stride + k_eff - size, 0) // 2


def receptive_fields(model, input_size: int | None = None) -> dict[str, ReceptiveField]:
    """Receptive field of every layer of a Keras functional model (first spatial axis).

    ``input_size``: the input's side in pixels, which fixes the "same" padding of strided
    layers on odd sizes; without it every size is taken to divide by the strides.

    Raises:
        VisualizeError: a layer that upsamples, a nested model, or a layer kind whose
            effect on the field is not known here (rather than a silently wrong field).
    """
    import keras

    fields: dict[str, ReceptiveField] = {}
    sizes: dict[str, int | None] = {}
    for op in model.operations:
        kind = type(op).__name__
        parents = [t._keras_history[0].name for t in op._inbound_nodes[0].input_tensors]
        if not parents:  # the input layer
            fields[op.name] = ReceptiveField(1.0, 1.0, 0.0)
            sizes[op.name] = input_size
            continue
        if isinstance(op, keras.Model):
            raise VisualizeError(f"layer {op.name!r} is a nested model ({kind}); build the "
                                 "network flat (its layers in the outer model) to visualise it")
        ins = [fields[p] for p in parents]
        size = sizes[parents[0]]
        if kind in _UPSAMPLING:
            raise VisualizeError(f"layer {op.name!r} ({kind}) upsamples; receptive fields of "
                                 "decoder layers are not defined here")
        if any(f.size is None for f in ins) or kind in _GLOBAL:
            fields[op.name], sizes[op.name] = ReceptiveField(None, 1.0, 0.0), None
            continue
        base = max(ins, key=lambda f: f.size)
        if kind in _WINDOWED:
            k = _first(getattr(op, "kernel_size", None) or op.pool_size)
            stride = _first(op.strides)
            dilation = _first(getattr(op, "dilation_rate", 1))
            k_eff = dilation * (k - 1) + 1
            if op.padding == "same":
                pad_left = _same_pad_left(k_eff, stride, size)
                sizes[op.name] = None if size is None else -(-size // stride)
            else:
                pad_left = 0
                sizes[op.name] = None if size is None else (size - k_eff) // stride + 1
            fields[op.name] = ReceptiveField(base.size + (k_eff - 1) * base.jump,
                                             base.jump * stride,
                                             base.start + ((k_eff - 1) / 2 - pad_left) * base.jump)
        elif kind in _PADDING:
            amount = getattr(op, "padding", None) if kind.startswith("Zero") else op.cropping
            before, after = (amount[0] if isinstance(amount[0], (tuple, list)) else amount)
            sign = -1 if kind.startswith("Zero") else 1
            fields[op.name] = ReceptiveField(base.size, base.jump,
                                             base.start + sign * before * base.jump)
            sizes[op.name] = None if size is None else size - sign * (before + after)
        elif kind in _ELEMENTWISE:
            fields[op.name], sizes[op.name] = base, size
        else:
            raise VisualizeError(f"layer {op.name!r} ({kind}): its effect on the receptive "
                                 "field is not known here")
    return fields


@dataclass
class _Hit:
    value: float
    image: int
    y: int
    x: int


def top_patches(model, layer: str, images: Sequence[np.ndarray], *, units: Sequence[int] | None = None,
                n_units: int = 9, per_unit: int = 9, batch: int = 16, progress=None
                ) -> tuple[list[int], dict[int, list[_Hit]], ReceptiveField]:
    """For each chosen unit of ``layer``, the ``per_unit`` strongest (image, position) hits.

    ``images`` are RGB float32 arrays of one size, as the model takes them.
    Units default to the ``n_units`` channels with the largest mean top activation.
    """
    import keras

    names = [op.name for op in model.operations]
    if layer not in names:
        raise VisualizeError(f"no layer {layer!r}; layers: {', '.join(names)}")
    sides = {np.asarray(im).shape[0] for im in images}
    field = receptive_fields(model, input_size=sides.pop() if len(sides) == 1 else None)[layer]
    probe = keras.Model(model.inputs[0], model.get_layer(layer).output)
    best: dict[int, list[_Hit]] = {}
    for b0 in range(0, len(images), batch):
        acts = np.asarray(probe(np.stack(images[b0:b0 + batch]), training=False))
        if acts.ndim == 2:  # dense/global layer: one position
            acts = acts[:, None, None, :]
        if acts.ndim != 4:
            raise VisualizeError(f"layer {layer!r} has activations of rank {acts.ndim}; "
                                 "2D image layers only")
        flat = acts.reshape(len(acts), -1, acts.shape[-1])
        pos = flat.argmax(axis=1)      # (B, C) best position per image and unit
        val = flat.max(axis=1)         # (B, C)
        for i in range(len(acts)):
            for c in range(acts.shape[-1]):
                y, x = divmod(int(pos[i, c]), acts.shape[2])
                hits = best.setdefault(c, [])
                hits.append(_Hit(float(val[i, c]), b0 + i, y, x))
                if len(hits) > 4 * per_unit:  # keep the lists short while scanning
                    hits.sort(key=lambda h: -h.value)
                    del hits[per_unit:]
        if progress is not None:
            progress(min(b0 + batch, len(images)), len(images))
    for c in best:
        best[c].sort(key=lambda h: -h.value)
        del best[c][per_unit:]
    if units is None:
        strength = {c: np.mean([h.value for h in hits]) for c, hits in best.items()}
        units = sorted(strength, key=lambda c: -strength[c])[:n_units]
    bad = [u for u in units if u not in best]
    if bad:
        raise VisualizeError(f"layer {layer!r} has {len(best)} units; {bad} do not exist")
    return list(units), {u: best[u] for u in units}, field


def crop_patch(image: np.ndarray, field: ReceptiveField, y: int, x: int) -> np.ndarray:
    """The receptive field of unit position (y, x), clipped to the image (grey outside)."""
    h, w = image.shape[:2]
    if field.size is None:
        return image
    half = field.size / 2
    cy, cx = field.centre(y), field.centre(x)
    y0, y1 = int(np.floor(cy - half + 0.5)), int(np.floor(cy + half + 0.5))
    x0, x1 = int(np.floor(cx - half + 0.5)), int(np.floor(cx + half + 0.5))
    pad = max(0, -y0, -x0, y1 - h, x1 - w)
    if pad:
        image = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_CONSTANT,
                                   value=(128, 128, 128))
    return image[y0 + pad:y1 + pad, x0 + pad:x1 + pad]


def grid(patches: Iterable[Iterable[np.ndarray]], tile: int = 64, gap: int = 2,
         block_gap: int = 10) -> np.ndarray:
    """9 units x 9 patches (BGR uint8) -> one 9x9 grid image, a 3x3 block per unit."""
    blocks = []
    for unit_patches in patches:
        tiles = [cv2.resize(p, (tile, tile), interpolation=cv2.INTER_NEAREST
                            if p.shape[0] < tile else cv2.INTER_AREA) for p in unit_patches]
        tiles += [np.full((tile, tile, 3), 255, np.uint8)] * (9 - len(tiles))
        rows = [np.concatenate(sum(([t, np.full((tile, gap, 3), 255, np.uint8)]
                                    for t in tiles[r * 3:r * 3 + 3]), [])[:-1], axis=1)
                for r in range(3)]
        sep = np.full((gap, rows[0].shape[1], 3), 255, np.uint8)
        blocks.append(np.concatenate([rows[0], sep, rows[1], sep, rows[2]], axis=0))
    blocks += [np.full_like(blocks[0], 255)] * (9 - len(blocks))
    bh, bw = blocks[0].shape[:2]
    out = np.full((3 * bh + 4 * block_gap, 3 * bw + 4 * block_gap, 3), 255, np.uint8)
    for i, b in enumerate(blocks):
        r, c = divmod(i, 3)
        y, x = block_gap + r * (bh + block_gap), block_gap + c * (bw + block_gap)
        out[y:y + bh, x:x + bw] = b
    return out
