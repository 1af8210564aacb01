"""The teacher: Gatys et al.'s optimisation of an image's pixels so that its
content matches a photo and its Gram statistics match a painting.

``J(G) = alpha * J_content(C, G) + beta * J_style(S, G) + gamma * TV(G)`` (see
:mod:`export.style.losses`), minimised over the pixels of ``G`` (RGB, 0..255)
by Adam or by L-BFGS, starting from noise or from the content image.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .lossnet import DEFAULT_LAYERS, LayerChoice

#: Smallest side (px) of an image the loss networks accept.  Their unpadded strided
#: layers need 31 px in SqueezeNet 1.1 (a 3x3/2 conv and three 3x3/2 pools) and 32 px in
#: VGG19 (five 2x2/2 pools); below that TensorFlow fails deep inside a pooling op
#: ("could not create a descriptor"), so images are checked against this first.
MIN_SIDE = 32


def check_side(height: int, width: int, what: str) -> None:
    """Raise a ValueError naming ``what`` and its size when ``height`` x ``width`` (the size
    an image will be fed to the loss network at) has a side under :data:`MIN_SIDE`."""
    if min(height, width) < MIN_SIDE:
        raise ValueError(f"{what} would be fed to the loss network at {width}x{height} px; "
                         f"both sides must be >= {MIN_SIDE} px")


@dataclass(frozen=True)
class CostWeights:
    """alpha, beta, gamma and the layers of the total cost.

    The defaults balance the terms for SqueezeNet on 256-384 px images: J_content
    (an un-normalised sum of squares) is ~1e9 between a photo and a painting while
    J_style is ~1e5, so beta/alpha ~ 1e4 gives both terms a say (3e3 / 3e4 / 3e5 were
    compared on chicago x udnie; 3e4 keeps the buildings and takes the strokes).  A
    little total variation (gamma) suppresses the pixel noise at the borders, which
    SqueezeNet's unpadded stride-2 first conv does not see.
    """

    alpha: float = 1.0
    beta: float = 3e4
    gamma: float = 0.05
    network: str = "squeezenet"
    layers: LayerChoice | None = None

    def __post_init__(self) -> None:
        for name in ("alpha", "beta", "gamma"):
            value = getattr(self, name)
            # NaN passes a "< 0" test and would make every cost NaN; inf is no weight either
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.network not in DEFAULT_LAYERS:
            raise ValueError(f"network must be one of {sorted(DEFAULT_LAYERS)}")

    @property
    def layer_choice(self) -> LayerChoice:
        return self.layers or DEFAULT_LAYERS[self.network]

    def with_trained_weights(self, extra: dict) -> "CostWeights":
        """These costs with the alpha, beta, gamma a stylizer file says its student was
        trained with (its contract's ``extra``), the class defaults where it says none."""
        return dataclasses.replace(self, alpha=float(extra.get("alpha", CostWeights.alpha)),
                                   beta=float(extra.get("beta", CostWeights.beta)),
                                   gamma=float(extra.get("gamma", CostWeights.gamma)))


def trained_layers(extra) -> LayerChoice | None:
    """The loss-network layers and their lambda a stylizer file says its student was trained
    with (its contract's ``extra``: ``content_layer``, ``style_layers``); None where it
    records none (files exported before they were recorded)."""
    if "content_layer" not in extra or "style_layers" not in extra:
        return None
    return LayerChoice(content=extra["content_layer"],
                       style=tuple((name, float(lam)) for name, lam in extra["style_layers"]))


def layers_record(choice: LayerChoice) -> dict:
    """``choice`` as JSON data (``{"content": name, "style": [[name, lambda], ...]}``)."""
    return {"content": choice.content, "style": [[n, w] for n, w in choice.style]}


@dataclass(frozen=True)
class OptimizeOptions:
    """Settings of one optimisation.

    Attributes:
        iterations: optimiser steps (L-BFGS: iterations, each with a line search).
        method: ``"adam"`` or ``"lbfgs"``.
        learning_rate: Adam step in pixel units (0..255 scale).
        init: ``"content"`` (start from the photo: faster, keeps structure) or
            ``"noise"`` (the photo plus ``noise_ratio`` of uniform noise, as in Gatys).
        noise_ratio: for ``init="noise"``, the weight of noise in ``(1-r) C + r U(0,255)``.
        max_side: the content image is resized so its longest side is at most this.
        seed: noise seed.
        costs: alpha, beta, gamma and layers.
    """

    iterations: int = 300
    method: str = "adam"
    learning_rate: float = 6.0
    init: str = "content"
    noise_ratio: float = 0.6
    max_side: int = 384
    seed: int = 0
    costs: CostWeights = field(default_factory=CostWeights)

    def __post_init__(self) -> None:
        if self.method not in ("adam", "lbfgs"):
            raise ValueError(f"method must be 'adam' or 'lbfgs', got {self.method!r}")
        if self.init not in ("content", "noise"):
            raise ValueError(f"init must be 'content' or 'noise', got {self.init!r}")
        if self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")
        if self.max_side < MIN_SIDE:
            raise ValueError(f"max_side must be >= {MIN_SIDE}, got {self.max_side}")
        if not 0.0 <= self.noise_ratio <= 1.0:
            raise ValueError("noise_ratio must be in [0, 1]")


@dataclass
class OptimizeResult:
    """The stylised image (RGB uint8) and the cost history."""

    image: np.ndarray
    history: dict[str, list[float]]
    seconds: float


def fit_side(image: np.ndarray, max_side: int, multiple: int = 1) -> np.ndarray:
    """Resize (area) so the longest side is at most ``max_side``, sides rounded to ``multiple``."""
    import cv2

    h, w = image.shape[:2]
    s = min(1.0, max_side / max(h, w))
    nh = max(multiple, int(round(h * s / multiple)) * multiple)
    nw = max(multiple, int(round(w * s / multiple)) * multiple)
    if (nh, nw) == (h, w):
        return image
    return cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)


def style_image_for(style: np.ndarray, height: int, width: int) -> np.ndarray:
    """The style image resized to ``height`` x ``width``: the Gram matrix sums over
    positions, so G(S) and G(G) are comparable only at the same size."""
    import cv2

    return cv2.resize(style, (width, height), interpolation=cv2.INTER_AREA)


class CostModel:
    """The loss network plus the fixed targets (content activations, style Grams):
    ``costs(images) -> dict(J, J_content, J_style, TV)`` per image."""

    def __init__(self, extractor, weights: CostWeights) -> None:
        self.extractor = extractor
        self.weights = weights
        self.choice = weights.layer_choice
        self._content = None
        self._grams = None

    def set_targets(self, content, style) -> None:
        """Content (B,H,W,3) and style (1 or B,H,W,3) images, RGB float 0..255."""
        import tensorflow as tf

        from .losses import gram

        self._content = self.extractor(tf.constant(content, tf.float32))[self.choice.content]
        fs = self.extractor(tf.constant(style, tf.float32))
        self._grams = {n: gram(fs[n]) for n in self.choice.style_weights}

    def grams_of(self, style):
        from .losses import gram
        import tensorflow as tf

        fs = self.extractor(tf.constant(style, tf.float32))
        return {n: gram(fs[n]) for n in self.choice.style_weights}

    def costs(self, images, content_acts=None, grams=None) -> dict:
        from . import losses

        f = self.extractor(images)
        content_acts = self._content if content_acts is None else content_acts
        grams = self._grams if grams is None else grams
        jc = losses.content_cost(content_acts, f[self.choice.content])
        js = losses.style_cost(grams, f, self.choice.style_weights)
        w = self.weights
        tv = losses.total_variation(images) if w.gamma else 0.0 * jc
        return {"J": losses.total_cost(jc, js, w.alpha, w.beta, tv, w.gamma),
                "J_content": jc, "J_style": js, "TV": tv}


def optimize(content: np.ndarray, style: np.ndarray, options: OptimizeOptions = OptimizeOptions(),
             *, extractor=None, progress: bool = True,
             callback: Callable[[int, dict], None] | None = None) -> OptimizeResult:
    """Stylise ``content`` (RGB uint8, H x W x 3) with ``style`` (RGB uint8).

    The content image is first fitted to ``options.max_side`` (never enlarged); the style
    image is resized to the same size (see :func:`style_image_for`).

    Raises:
        ValueError: an image is not RGB uint8, or the fitted size has a side under
            :data:`MIN_SIDE` (e.g. a 3:2 photo at ``max_side=40``: 40 x 27 px).

    Returns:
        the generated image (RGB uint8, the fitted content size) and the history of
        J, J_content, J_style and TV per iteration.
    """
    import tensorflow as tf
    from tqdm import tqdm

    from .lossnet import feature_extractor

    if content.dtype != np.uint8 or content.ndim != 3 or content.shape[2] != 3:
        raise ValueError(f"content must be RGB uint8 (H, W, 3), got {content.dtype}{content.shape}")
    if style.dtype != np.uint8 or style.ndim != 3 or style.shape[2] != 3:
        raise ValueError(f"style must be RGB uint8 (H, W, 3), got {style.dtype}{style.shape}")
    fitted = fit_side(content, options.max_side)
    # checked before the loss network is built: the style image is fed at this size too
    check_side(*fitted.shape[:2], f"the content image ({content.shape[1]}x{content.shape[0]} "
                                  f"px fitted to max_side={options.max_side}) and the style "
                                  "image")
    costs_w = options.costs
    if extractor is None:
        extractor = feature_extractor(costs_w.network, costs_w.layer_choice.names)
    c = fitted.astype(np.float32)[None]
    s = style_image_for(style, c.shape[1], c.shape[2]).astype(np.float32)[None]
    model = CostModel(extractor, costs_w)
    model.set_targets(c, s)

    rng = np.random.default_rng(options.seed)
    if options.init == "noise":
        r = options.noise_ratio
        g0 = (1 - r) * c + r * rng.uniform(0, 255, c.shape).astype(np.float32)
    else:
        g0 = c.copy()

    @tf.function(reduce_retracing=True)
    def value_and_grad(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            parts = model.costs(x)
            total = tf.reduce_sum(parts["J"])
        return total, tape.gradient(total, x), parts

    history: dict[str, list[float]] = {"J": [], "J_content": [], "J_style": [], "TV": []}

    def record(it: int, parts) -> None:
        for k in history:
            history[k].append(float(np.sum(parts[k])))
        if callback is not None:
            callback(it, {k: v[-1] for k, v in history.items()})

    # trace the graph once before the clock starts: `seconds` measures optimisation,
    # not TensorFlow's one-off graph building
    value_and_grad(tf.constant(g0))
    start = time.perf_counter()
    bar = tqdm(range(options.iterations), disable=not progress, desc=f"{options.method}",
               unit="it")
    if options.method == "adam":
        g = tf.Variable(g0)
        opt = tf.keras.optimizers.Adam(learning_rate=float(options.learning_rate))
        for it in bar:
            # a tensor, as in the warm-up call: a Variable argument would trace the graph
            # again inside the timed loop
            _, grad, parts = value_and_grad(tf.convert_to_tensor(g))
            if it:  # the costs of the image the previous step made, as L-BFGS records
                record(it - 1, parts)
                bar.set_postfix(J=f"{history['J'][-1]:.3g}")
            opt.apply_gradients([(grad, g)])
            # pixels stay displayable: project back onto the valid range after each step
            g.assign(tf.clip_by_value(g, 0.0, 255.0))
        if options.iterations:  # and those of the final image
            record(options.iterations - 1, value_and_grad(tf.convert_to_tensor(g))[2])
        out = g.numpy()
    else:
        def f(x: np.ndarray):
            total, grad, parts = value_and_grad(tf.constant(x.reshape(g0.shape), tf.float32))
            return float(total), grad.numpy().ravel().astype(np.float64), parts

        out = _lbfgs(f, g0.ravel().astype(np.float64), bar, record).reshape(g0.shape)
    bar.close()
    seconds = time.perf_counter() - start
    image = np.clip(np.round(out[0]), 0, 255).astype(np.uint8)
    return OptimizeResult(image=image, history=history, seconds=seconds)


def _lbfgs(f, x: np.ndarray, bar, record, memory: int = 10) -> np.ndarray:
    """Minimal L-BFGS (two-loop recursion, backtracking Armijo line search) with the
    iterate projected onto the pixel box [0, 255] (no SciPy in the training env)."""
    s_list: list[np.ndarray] = []
    y_list: list[np.ndarray] = []
    fx, gx, parts = f(x)
    step0 = 1.0
    for it in bar:
        q = gx.copy()
        alphas = []
        for s, y in reversed(list(zip(s_list, y_list))):
            a = (s @ q) / (y @ s)
            alphas.append(a)
            q -= a * y
        if s_list:
            q *= (s_list[-1] @ y_list[-1]) / (y_list[-1] @ y_list[-1])
        else:  # first step: scale so the largest pixel change is ~1 grey level... x10
            q *= 10.0 / max(np.abs(q).max(), 1e-12)
        for (s, y), a in zip(zip(s_list, y_list), reversed(alphas)):
            b = (y @ q) / (y @ s)
            q += s * (a - b)
        d = -q
        slope = gx @ d
        if slope >= 0:  # not a descent direction: restart from steepest descent
            s_list.clear(), y_list.clear()
            d = -gx * (10.0 / max(np.abs(gx).max(), 1e-12))
            slope = gx @ d
        t = step0
        for _ in range(12):
            x_new = np.clip(x + t * d, 0.0, 255.0)
            f_new, g_new, parts_new = f(x_new)
            if f_new <= fx + 1e-4 * t * slope:
                break
            t *= 0.5
        else:
            record(it, parts)
            break  # no progress possible along this direction
        s, y = x_new - x, g_new - gx
        if y @ s > 1e-10:
            s_list.append(s), y_list.append(y)
            if len(s_list) > memory:
                s_list.pop(0), y_list.pop(0)
        x, fx, gx, parts = x_new, f_new, g_new, parts_new
        record(it, parts)
        bar.set_postfix(J=f"{fx:.3g}")
    return x


def save_loss_curve(history: dict[str, list[float]], path, title: str = "") -> None:
    """Plot J and the un-weighted J_content, J_style, TV per iteration (log scale) to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for key in ("J", "J_content", "J_style", "TV"):
        values = history.get(key) or []
        if values and max(values) > 0:
            ax.plot(values, label=key)
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("cost")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(str(path))
    plt.close(fig)
