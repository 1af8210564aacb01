"""Function-preserving widening of a trained encoder (Net2WiderNet, Chen et al. 2016).

A wider encoder (larger ``width``) is initialised from a trained narrower one so
that, before any training, it computes the same embedding: every new channel of a
layer is a copy of one of the narrow layer's channels, and the layers that read
those channels divide the copied input weights by the number of copies. Batch
normalisation, depthwise convolutions and ReLUs act per channel, so they copy the
channel's parameters; residual adds see the same copy pattern on both inputs
because a projection feeding an add takes the pattern of the add's other input.

Exact copies would stay identical forever (they receive identical gradients), so
the copied incoming weights get a little noise (``noise`` times the layer's weight
std): the wide network starts within a hair of the narrow one and the copies can
drift apart. Training a wider encoder from scratch costs more CPU time than the
narrow one took in total; widening keeps what the narrow one learnt.
"""

from __future__ import annotations

import numpy as np
import keras
from keras import layers


class WidenError(ValueError):
    """The two encoders cannot be mapped channel by channel."""


def _source(tensor) -> str:
    return tensor._keras_history[0].name


def _inputs(layer) -> list:
    node = layer._inbound_nodes[0]
    return list(node.input_tensors)


def _mapping(n_narrow: int, n_wide: int, rng: np.random.Generator) -> np.ndarray:
    """Wide channel j reads narrow channel g[j]: the first ``n_narrow`` are themselves."""
    if n_wide < n_narrow:
        raise WidenError(f"cannot narrow {n_narrow} channels to {n_wide}")
    extra = rng.integers(0, n_narrow, size=n_wide - n_narrow)
    return np.concatenate([np.arange(n_narrow), extra])


def widen(narrow: keras.Model, wide: keras.Model, *, noise: float = 0.01,
          seed: int = 0) -> keras.Model:
    """Copy ``narrow``'s weights into ``wide`` (same layer names, more channels).

    Returns ``wide`` (modified in place). Raises :class:`WidenError` when a layer is
    missing, narrower in ``wide``, or of a kind this mapping does not cover.
    """
    rng = np.random.default_rng(seed)
    maps: dict[str, np.ndarray] = {}      # producing layer name -> channel mapping
    # a projection that feeds an add must copy the add's other input's channels
    # (whichever of the two is mapped first sets the pattern)
    add_partner: dict[str, str] = {}
    for layer in wide.layers:
        if isinstance(layer, layers.Add):
            names = [_source(t) for t in _inputs(layer)]
            for a in names:
                for b in names:
                    if a != b:
                        add_partner[a] = b

    bn_of_conv: dict[str, str] = {}
    for layer in wide.layers:
        if isinstance(layer, layers.BatchNormalization):
            bn_of_conv[_source(_inputs(layer)[0])] = layer.name

    for layer in wide.layers:
        name = layer.name
        ins = [] if isinstance(layer, layers.InputLayer) else _inputs(layer)
        in_map = maps.get(_source(ins[0])) if ins else None
        try:
            old = narrow.get_layer(name)
        except ValueError as exc:
            raise WidenError(f"layer {name} is not in the narrow encoder") from exc
        if isinstance(layer, layers.InputLayer):
            maps[name] = np.arange(layer.output.shape[-1])
        elif isinstance(layer, layers.DepthwiseConv2D):
            (k,) = old.get_weights()
            layer.set_weights([k[:, :, in_map, :]])
            maps[name] = in_map
        elif isinstance(layer, layers.Conv2D):
            (k,) = old.get_weights()
            n_out = layer.filters
            partner = add_partner.get(bn_of_conv.get(name, ""))
            if partner in maps:  # the add's other input was mapped already
                out_map = maps[partner]
            else:
                out_map = _mapping(k.shape[-1], n_out, rng)
            if len(out_map) != n_out:
                raise WidenError(f"{name}: {n_out} outputs, mapping has {len(out_map)}")
            counts = np.bincount(in_map, minlength=k.shape[2]).astype(np.float32)
            w = k[:, :, in_map, :] / counts[in_map][None, None, :, None]
            w = w[:, :, :, out_map]
            copies = np.arange(n_out) >= k.shape[-1]
            if copies.any() and noise > 0:
                w[..., copies] += rng.normal(0, noise * float(k.std()),
                                             size=w[..., copies].shape).astype(w.dtype)
            layer.set_weights([w.astype(np.float32)])
            maps[name] = out_map
        elif isinstance(layer, layers.BatchNormalization):
            layer.set_weights([v[in_map] for v in old.get_weights()])
            maps[name] = in_map
        elif isinstance(layer, layers.Add):
            maps[name] = maps[_source(ins[0])]
        elif layer.weights:
            raise WidenError(f"{name}: cannot widen a {type(layer).__name__} with weights")
        else:
            # ReLU, Rescaling, Dropout, Flatten, L2 normalisation: per channel or none
            maps[name] = in_map
    return wide
