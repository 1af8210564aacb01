"""Training the student on one style: perceptual loss over content crops plus
distillation from the Gatys optimiser (the teacher).

Per step, for a batch of random crops ``C`` of ``content-train`` photos::

    L = mean_batch(alpha * J_content(C, f(C)) + beta * J_style(S, f(C)) + gamma * TV(f(C))
                   + grain_weight * grain(f(C)))
        + distill_weight * 1/2 * ||f(C_t) - G_t||^2

where ``f`` is the student, ``S`` the style image resized to the crop size (the
Gram matrices are only comparable at equal sizes), and ``(C_t, G_t)`` one of a
few content images with the optimiser's result on it (computed once at the start
of a run and kept in ``<run>/teacher/``).  The distillation term pulls the
student towards what full optimisation reaches, which a short training run on
the perceptual loss alone does not.

A run directory holds ``config.json``, TF checkpoints (``ckpt/``, to resume),
``log.jsonl``, sample grids (``samples/step_NNNNNN.png``) and the final
``student.weights.h5``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from export import images as image_io
from sdk.paths import SHARED_DIR

from .lossnet import LayerChoice
from .optimize import CostModel, CostWeights, OptimizeOptions, fit_side, optimize
from .student import SIZE_MULTIPLE, StudentConfig, build_student

#: batches of training crops the final batch-norm statistics are averaged over
RECALIBRATION_BATCHES = 64

CONTENT_TRAIN = SHARED_DIR / "data" / "style" / "content-train"
CONTENT_SAMPLES = SHARED_DIR / "data" / "style" / "content-samples"
STYLES = SHARED_DIR / "data" / "style" / "styles"


@dataclass(frozen=True)
class TrainOptions:
    """Settings of one training run (saved to ``config.json``).

    Attributes:
        style: the style image; its file stem names the style.
        run_dir: where checkpoints, samples and logs go.
        content_dir: training photos (random crops, random horizontal flips).
        steps: total optimisation steps (a resumed run continues to this number).
        batch_size, crop: crops per step and their side in pixels.
        learning_rate: Adam learning rate.
        costs: alpha, beta, gamma and layers of the perceptual loss.
        distill_images: how many content images the teacher stylises (0: no distillation).
        distill_weight: weight of the pixel distillation term.
        teacher_iterations: optimiser iterations per teacher image.
        sample_every, checkpoint_every: in steps.
        student: widths of the student.
        seed: data order and initialisation.
        limit: use only the first N training photos (tests).
        init: an earlier run directory whose student weights start this run (same
            student architecture; e.g. to continue a 160-px student on larger crops).
            Its optimiser state and step count are not carried over.
        grain_weight: weight of :func:`export.style.losses.grain`, the fixed 2-pixel
            pattern a pixel-shuffle output can leave (0: off, as the first releases).
        freeze_batchnorm: train with the batch-norm layers in inference mode: every step
            normalises with the fixed statistics the exported file uses (those of
            ``init``, e.g. a ``recalibrate``d copy), so the loss minimised is that of the
            deployed network; the statistics are neither updated nor re-averaged at the
            end. Off: batch statistics while training, averaged at the end.
        scale_range: each training photo's short side is scaled to ``crop`` times a
            uniform draw from this range before the crop (scale augmentation; at 1 the
            crop spans the short side). A student serves frames of many sizes and its
            strokes are sized in pixels: a wider range shows it the same scenes at more of
            the scales a camera frame has. Beyond the photos' own size this enlarges them
            (bilinear; ``content-train``'s short sides are 321 px), so the larger scales
            are also blurrier than a camera's frames.
        extra_crops: further crop sides the steps take in turn with ``crop`` (e.g. (384,):
            every other step on 384-px crops), each with the style's Gram targets at that
            size and its content and TV terms divided by (side / balance side)^2 (the
            balance side is ``crop`` unless ``balance_crop`` names another), so that beta
            keeps its balance (J_content and TV grow with the pixel count, J_style does
            not). Distillation stays at ``crop``. The grain penalty and the distillation
            term are sums over the image too and are not divided: on larger crops they
            weigh more against the perceptual loss.
        balance_crop: the crop side beta's balance refers to (``None``: ``crop``). With
            ``crop=384, balance_crop=256`` every step's content and TV terms are divided
            by (384 / 256)^2 and the teacher optimises with beta times that factor, so a
            student trained at 256 px continues on 384-px crops with the same beta, and
            its files are weighed by the same J as the ones trained at 256. The grain and
            distillation terms are not divided (see ``extra_crops``): at 384 px they weigh
            2.25x what they weighed at 256. Equal to ``crop`` it is stored as ``None``.
    """

    style: str
    run_dir: str
    content_dir: str = str(CONTENT_TRAIN)
    samples_dir: str = str(CONTENT_SAMPLES)
    steps: int = 1300
    batch_size: int = 4
    crop: int = 160
    learning_rate: float = 2e-3
    # beta lower than the optimiser's default: with 3e4 the student traded the photo's
    # structure for texture (docs/RESULTS_style.md); the optimiser keeps it by starting
    # from the photo, the student has no such anchor
    costs: CostWeights = field(default_factory=lambda: CostWeights(beta=5e3))
    distill_images: int = 4
    distill_weight: float = 0.5
    teacher_iterations: int = 150
    sample_every: int = 100
    checkpoint_every: int = 100
    student: StudentConfig = field(default_factory=StudentConfig)
    seed: int = 0
    limit: int | None = None
    init: str | None = None
    grain_weight: float = 0.0
    freeze_batchnorm: bool = False
    scale_range: tuple[float, float] = (1.0, 1.3)
    extra_crops: tuple[int, ...] = ()
    balance_crop: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "extra_crops", tuple(int(c) for c in self.extra_crops))
        for c in self.extra_crops:
            if (c % SIZE_MULTIPLE or c < 32 or c == self.crop
                    or self.extra_crops.count(c) > 1):
                raise ValueError(f"extra_crops must be multiples of {SIZE_MULTIPLE}, >= 32 "
                                 f"and differ from crop and each other, got "
                                 f"{self.extra_crops}")
        # a list when read back from config.json
        object.__setattr__(self, "scale_range", tuple(float(v) for v in self.scale_range))
        lo, hi = self.scale_range if len(self.scale_range) == 2 else (0.0, -1.0)
        if not 1.0 <= lo <= hi:
            # below 1 the photo's short side would be smaller than the crop
            raise ValueError(f"scale_range must be (lo, hi) with 1 <= lo <= hi, got "
                             f"{self.scale_range}")
        if self.crop % SIZE_MULTIPLE or self.crop < 32:
            raise ValueError(f"crop must be a multiple of {SIZE_MULTIPLE} and >= 32, got {self.crop}")
        if self.balance_crop == self.crop:  # the default, spelt out: one setting, one form
            object.__setattr__(self, "balance_crop", None)
        if self.balance_crop is not None and (self.balance_crop % SIZE_MULTIPLE
                                              or self.balance_crop < 32):
            raise ValueError(f"balance_crop must be a multiple of {SIZE_MULTIPLE} and >= 32, "
                             f"got {self.balance_crop}")
        # counts: 0 would divide by zero in the report intervals (after the teacher's
        # minutes were spent) or give the teacher no iteration to run
        for name in ("steps", "batch_size", "teacher_iterations", "sample_every",
                     "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.limit is not None and self.limit < 1:
            # not "all photos", as a falsy 0 used to mean
            raise ValueError(f"limit must be None (all photos) or >= 1, got {self.limit!r}")
        if self.distill_images < 0:
            raise ValueError(f"distill_images must be >= 0, got {self.distill_images!r}")
        # weights and the step size: NaN passes a "< 0" test and inf is no weight either
        for name in ("learning_rate", "distill_weight", "grain_weight"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.freeze_batchnorm and self.init is None:
            # a fresh student's statistics are 0 / 1, not those of any data
            raise ValueError("freeze_batchnorm needs init: a trained student whose "
                             "batch-norm statistics it keeps")

    @property
    def balance_side(self) -> int:
        """The crop side at which beta weighs the terms as given (see ``balance_crop``)."""
        return self.crop if self.balance_crop is None else self.balance_crop

    def pixel_factor(self, side: int) -> float:
        """(side / balance side)^2: how much more J_content and TV weigh on ``side``-px
        crops than where beta was chosen (J_style does not grow with the pixel count)."""
        return (side / self.balance_side) ** 2

    @property
    def style_name(self) -> str:
        return Path(self.style).stem

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        return json.dumps(d, indent=1, default=str)


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file as RGB uint8; a missing or unreadable file is an error."""
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return np.ascontiguousarray(image[:, :, ::-1])


def write_rgb(path: str | Path, image: np.ndarray) -> None:
    import cv2

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.ascontiguousarray(image[:, :, ::-1])):
        raise OSError(f"cannot write {path}")


def list_images(folder: str | Path, limit: int | None = None) -> list[Path]:
    """The first ``limit`` images of ``folder`` in name order (all when ``limit`` is None)."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be None (all images) or >= 1, got {limit!r}")
    files = image_io.list_images(folder)
    return files if limit is None else files[:limit]


def random_crop(image: np.ndarray, size: int, rng: np.random.Generator,
                scale: tuple[float, float] = (1.0, 1.3)) -> np.ndarray:
    """A random ``size`` x ``size`` crop, randomly flipped left-right, after scaling the
    short side to ``size`` times a uniform draw from ``scale`` (scale augmentation)."""
    import cv2

    h, w = image.shape[:2]
    short = min(h, w)
    target = int(size * rng.uniform(*scale))
    if short != target:
        s = target / short
        image = cv2.resize(image, (max(size, round(w * s)), max(size, round(h * s))),
                           interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
        h, w = image.shape[:2]
    y = int(rng.integers(0, h - size + 1))
    x = int(rng.integers(0, w - size + 1))
    out = image[y:y + size, x:x + size]
    return out[:, ::-1] if rng.random() < 0.5 else out


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    import cv2

    h, w = image.shape[:2]
    s = size / min(h, w)
    image = cv2.resize(image, (max(size, round(w * s)), max(size, round(h * s))),
                       interpolation=cv2.INTER_AREA)
    h, w = image.shape[:2]
    y, x = (h - size) // 2, (w - size) // 2
    return image[y:y + size, x:x + size]


def sample_grid(model, images: list[np.ndarray]) -> np.ndarray:
    """Each content image beside its stylisation, stacked vertically (RGB uint8)."""
    rows = []
    for im in images:
        out = model(im.astype(np.float32)[None], training=False)
        out = np.clip(np.asarray(out)[0], 0, 255).astype(np.uint8)
        rows.append(np.concatenate([im, out], axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
    return np.concatenate(rows, axis=0)


#: Options a resumed run may change: how far it goes and how often it reports.
RESUMABLE_CHANGES = ("steps", "sample_every", "checkpoint_every")


def _fill_defaults(saved: dict, defaults: dict) -> None:
    """Add to ``saved`` (a config read back) every key of ``defaults`` it lacks, recursing
    into option dicts present in both (``costs``, ``student``)."""
    for key, value in defaults.items():
        if key not in saved:
            saved[key] = value
        elif isinstance(saved[key], dict) and isinstance(value, dict):
            _fill_defaults(saved[key], value)


def _check_resume(run: Path, options: "TrainOptions") -> None:
    """Refuse to resume ``run`` with settings other than those it was started with: the
    checkpoint's weights and the teacher's targets belong to them (a new crop size even
    fails deep inside the distillation loss)."""
    saved = json.loads(run.joinpath("config.json").read_text())
    now = json.loads(options.to_json())
    # an option added since the run was started, at any depth (e.g. student.stages): its
    # default, which is what the run was trained with
    _fill_defaults(saved, json.loads(TrainOptions(style="x", run_dir="x").to_json()))

    def same(key: str) -> bool:
        a, b = saved.get(key), now.get(key)
        if key.endswith(("_dir", "style", "init")) and isinstance(a, str) and isinstance(b, str):
            return Path(a).resolve() == Path(b).resolve()  # the same file, however named
        return a == b

    diffs = [f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in sorted(set(saved) | set(now))
             if k not in RESUMABLE_CHANGES and not same(k)]
    if diffs:
        raise ValueError(f"{run} was started with other settings ({'; '.join(diffs)}); resume "
                         f"it with the same options (only {', '.join(RESUMABLE_CHANGES)} may "
                         "change) or start another --run")


def make_teacher_targets(options: TrainOptions, style: np.ndarray, extractor,
                         files: list[Path], progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(contents, optimised) arrays for distillation, cached in ``<run>/teacher/<key>``,
    the key a hash of everything the optimised images depend on."""
    # the student's loss at this crop, Jc / b + beta Js + gamma TV / b, times b
    balance = options.pixel_factor(options.crop)
    costs = options.costs if balance == 1 else dataclasses.replace(
        options.costs, beta=options.costs.beta * balance)
    key = hashlib.sha256(json.dumps({
        "crop": options.crop, "costs": dataclasses.asdict(costs),
        "iterations": options.teacher_iterations, "seed": options.seed,
        "style": Path(options.style).name, "style_shape": list(style.shape)},
        sort_keys=True, default=str).encode()).hexdigest()[:12]
    out = Path(options.run_dir) / "teacher" / key
    contents, targets = [], []
    rng = np.random.default_rng(options.seed + 1)
    picks = rng.choice(len(files), size=min(options.distill_images, len(files)), replace=False)
    opt = OptimizeOptions(iterations=options.teacher_iterations, max_side=options.crop,
                          costs=costs, seed=options.seed)
    for i, k in enumerate(sorted(picks)):
        c = center_crop(read_rgb(files[k]), options.crop)
        cached = out / f"{files[k].stem}_teacher.png"
        if cached.is_file():
            g = read_rgb(cached)
        else:
            g = optimize(c, style, opt, extractor=extractor, progress=progress).image
            write_rgb(cached, g)
            write_rgb(out / f"{files[k].stem}_content.png", c)
        contents.append(c)
        targets.append(g)
        if progress:
            print(f"teacher {i + 1}/{len(picks)}: {files[k].name}", flush=True)
    return np.asarray(contents, np.float32), np.asarray(targets, np.float32)


def batchnorm_layers(model) -> list:
    """The model's BatchNormalization layers, in order."""
    import keras

    found = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
        elif isinstance(layer, keras.Model):  # a nested block
            found.extend(batchnorm_layers(layer))
    return found


def recalibrate_batchnorm(model, batches) -> int:
    """Set every BatchNormalization layer's inference statistics to the plain average of
    the batch statistics over ``batches`` (an iterable of input arrays); returns how many
    batches were seen.

    Training keeps an exponential moving average whose last ~10 updates dominate, and the
    distillation pass used to add a one-image update to every step (a single photo's
    statistics, without the between-photo variance): the released students' statistics
    were those of a few teacher photos, and their J_style on new photos up to 4x too high
    (docs/RESULTS_style.md, "Batch-norm statistics"). A forward pass in training mode with
    momentum k/(k+1) at batch k makes the moving values the running mean of the batch means
    and variances, which is what the student normalised with while it learned.
    """
    layers = batchnorm_layers(model)
    saved = [layer.momentum for layer in layers]
    n = 0
    try:
        for batch in batches:
            for layer in layers:
                layer.momentum = n / (n + 1.0)
            model(np.asarray(batch, np.float32), training=True)
            n += 1
    finally:
        for layer, momentum in zip(layers, saved):
            layer.momentum = momentum
    if n == 0:
        raise ValueError("recalibrate_batchnorm needs at least one batch")
    return n


def crop_batch(files: list[Path], crop: int, batch_size: int,
               rng: np.random.Generator, scale: tuple[float, float] = (1.0, 1.3)) -> np.ndarray:
    """One training batch: ``batch_size`` random ``crop`` crops of random ``files``."""
    return np.stack([random_crop(read_rgb(files[k]), crop, rng, scale)
                     for k in rng.integers(0, len(files), batch_size)]).astype(np.float32)


def training_crops(files: list[Path], crop: int | tuple[int, ...], batch_size: int,
                   batches: int, seed: int, scale: tuple[float, float] = (1.0, 1.3)):
    """``batches`` batches of :func:`crop_batch`, from a generator seeded with ``seed``;
    with several crop sides, the batches take them in turn (as training does)."""
    sides = (crop,) if isinstance(crop, int) else tuple(crop)
    rng = np.random.default_rng(seed)
    for b in range(batches):
        yield crop_batch(files, sides[b % len(sides)], batch_size, rng, scale)


def train(options: TrainOptions, *, resume: bool = False, progress: bool = True,
          extractor=None, eager: bool = False) -> Path:
    """Train (or resume) a student; returns the path of the final weights file.

    Args:
        resume: continue from the run's latest checkpoint (to ``options.steps``).
        extractor: a loss-network feature extractor (default: the real one).
        eager: run the step without ``tf.function``: tracing the step costs
            ~10 s, worth it for a real run, not for a few steps on tiny images.
    """
    import tensorflow as tf
    from tqdm import tqdm

    from . import losses as style_losses
    from .lossnet import feature_extractor

    run = Path(options.run_dir)
    ckpt_dir = run / "ckpt"
    if run.joinpath("config.json").is_file() and not resume and any(ckpt_dir.glob("ckpt-*")):
        raise FileExistsError(f"{run} already holds a run; pass resume=True (--resume) to "
                              "continue it or choose another --run")
    init = None
    if options.init is not None and not (resume and any(ckpt_dir.glob("ckpt-*"))):
        # checked before the teacher's minutes are spent
        init = load_run(options.init, with_steps=True)
        if init[0].student != options.student:
            raise ValueError(f"init run {options.init} holds a student {init[0].student}; "
                             f"this run builds {options.student}: they must match")
    if resume and run.joinpath("config.json").is_file():
        _check_resume(run, options)
    run.mkdir(parents=True, exist_ok=True)
    run.joinpath("config.json").write_text(options.to_json())

    files = list_images(options.content_dir, options.limit)
    style = read_rgb(options.style)
    crop = options.crop
    style_sq = center_crop(style, crop)  # square style at the crop size (see losses docstring)
    weights = options.costs
    if extractor is None:
        extractor = feature_extractor(weights.network, weights.layer_choice.names)
    cost_model = CostModel(extractor, weights)
    sizes = (crop,) + options.extra_crops
    # the style's Gram targets at each crop side (comparable only at equal sizes)
    grams_by_size = {c: cost_model.grams_of(center_crop(style, c).astype(np.float32)[None])
                     for c in sizes}
    if options.distill_images and options.distill_weight:
        # the teacher paints with the square style image the student's Gram targets use
        t_content, t_target = make_teacher_targets(options, style_sq, extractor, files,
                                                   progress)
    else:
        t_content = t_target = None

    tf.keras.utils.set_random_seed(options.seed)
    student = build_student(options.student, name=f"style_{options.style_name}")
    opt = tf.keras.optimizers.Adam(options.learning_rate)
    step = tf.Variable(0, dtype=tf.int64, name="step")
    ckpt = tf.train.Checkpoint(student=student, optimizer=opt, step=step)
    manager = tf.train.CheckpointManager(ckpt, str(ckpt_dir), max_to_keep=2)
    if resume and manager.latest_checkpoint:
        ckpt.restore(manager.latest_checkpoint).expect_partial()
        print(f"resumed from {manager.latest_checkpoint} at step {int(step.numpy())}")
    elif init is not None:
        student.set_weights(init[1].get_weights())
        print(f"initialised from {options.init} ({init[2]} steps at crop {init[0].crop})")
    choice = weights.layer_choice
    bn_stats = [v for layer in batchnorm_layers(student) for v in
                (layer.moving_mean, layer.moving_variance)]

    # with frozen statistics every pass runs the deployed function (inference mode)
    bn_training = not options.freeze_batchnorm

    def train_step(batch, tc, tt, grams, k):
        with tf.GradientTape() as tape:
            out = student(batch, training=bn_training)
            content_acts = extractor(batch)[choice.content]
            parts = cost_model.costs(out, content_acts=content_acts, grams=grams)
            # k = options.pixel_factor(side): the pixel-count terms scaled back to the
            # balance beta was chosen at
            loss = tf.reduce_mean(style_losses.total_cost(
                parts["J_content"] / k, parts["J_style"], weights.alpha, weights.beta,
                parts["TV"] / k, weights.gamma))
            g = tf.reduce_mean(style_losses.grain(out))
            if options.grain_weight:
                loss = loss + options.grain_weight * g
            distill = tf.constant(0.0)
            if tc is not None:
                # the one-image distillation pass must not move the inference statistics
                # (see recalibrate_batchnorm): they are put back after it
                kept = [tf.identity(v.value) for v in bn_stats]
                distill = 0.5 * tf.reduce_sum(tf.square(student(tc, training=bn_training)
                                                        - tt))
                loss = loss + options.distill_weight * distill
                for v, value in zip(bn_stats, kept):
                    v.assign(value)
        grads = tape.gradient(loss, student.trainable_variables)
        opt.apply_gradients(zip(grads, student.trainable_variables))
        return (loss, tf.reduce_mean(parts["J_content"]), tf.reduce_mean(parts["J_style"]),
                distill, g, tf.reduce_mean(parts["TV"]))

    if not eager:
        train_step = tf.function(train_step, reduce_retracing=True)
    samples = [fit_side(read_rgb(p), 256, SIZE_MULTIPLE) for p in list_images(options.samples_dir)]
    rng = np.random.default_rng(options.seed + int(step.numpy()))
    log = run.joinpath("log.jsonl").open("a")
    start_step = int(step.numpy())
    bar = tqdm(range(start_step, options.steps), initial=start_step, total=options.steps,
               disable=not progress, desc=f"train {options.style_name}")
    t0 = time.perf_counter()
    for s in bar:
        side = sizes[s % len(sizes)]
        batch = crop_batch(files, side, options.batch_size, rng, options.scale_range)
        tc = tt = None
        if t_content is not None:
            t = s % len(t_content)
            tc, tt = t_content[t:t + 1], t_target[t:t + 1]
        loss, jc, js, dl, gr, tv = (float(v) for v in train_step(
            tf.constant(batch, tf.float32), tc, tt, grams_by_size[side],
            tf.constant(options.pixel_factor(side), tf.float32)))
        if not np.isfinite(loss):
            raise FloatingPointError(f"loss became {loss} at step {s}; lower --lr")
        step.assign(s + 1)
        record = {"step": s + 1, "crop": side, "loss": loss, "J_content": jc, "J_style": js,
                  "distill": dl, "grain": gr, "TV": tv,
                  "seconds": round(time.perf_counter() - t0, 1)}
        log.write(json.dumps(record) + "\n")
        bar.set_postfix(J=f"{loss:.3g}", Jc=f"{jc:.3g}", Js=f"{js:.3g}")
        if s + 1 == options.steps and not options.freeze_batchnorm:
            # the inference statistics as the plain average over fresh training batches,
            # before the last samples and checkpoint so that both show the final student
            recalibrate_batchnorm(student, training_crops(files, sizes, options.batch_size,
                                                          RECALIBRATION_BATCHES,
                                                          options.seed + s + 1,
                                                          options.scale_range))
        if (s + 1) % options.sample_every == 0 or s + 1 == options.steps:
            write_rgb(run / "samples" / f"step_{s + 1:06d}.png", sample_grid(student, samples))
        if (s + 1) % options.checkpoint_every == 0 or s + 1 == options.steps:
            manager.save(checkpoint_number=s + 1)
            log.flush()
    log.close()
    bar.close()
    final = run / "student.weights.h5"
    student.save_weights(str(final))
    return final


def recalibrate_run(run_dir: str | Path, out_dir: str | Path,
                    batches: int = RECALIBRATION_BATCHES, seed: int = 0,
                    crop: int | None = None) -> Path:
    """A copy of a trained student (a run or a kept ``<style>_student/``) in ``out_dir``
    whose batch-norm statistics are averaged over ``batches`` batches of its own training
    crops (:func:`recalibrate_batchnorm`; ``crop``: square crops of this side instead of
    the run's); the weights are otherwise unchanged. Students trained before session 20
    carry statistics of their last few distillation photos."""
    from sdk.paths import REPO_ROOT

    run, out = Path(run_dir), Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        # an old run there would be loaded from its own checkpoint, not these weights
        raise ValueError(f"recalibrate writes a new copy: {out} exists and is not empty")
    options, student, steps = load_run(run, with_steps=True)
    content = Path(options.content_dir)
    if not content.is_absolute() and not content.is_dir():
        content = REPO_ROOT / content  # kept copies name paths relative to the repository
    files = list_images(content, options.limit)
    recalibrate_batchnorm(student, training_crops(files, crop or
                                                  (options.crop,) + options.extra_crops,
                                                  options.batch_size, batches, seed,
                                                  options.scale_range))
    out.mkdir(parents=True, exist_ok=True)
    config = json.loads(run.joinpath("config.json").read_text())
    # the copy's statistics are no longer those a frozen run kept from its init
    config["freeze_batchnorm"] = False
    out.joinpath("config.json").write_text(json.dumps(config, indent=1))
    (out / "steps.json").write_text(json.dumps({"steps": steps}))
    student.save_weights(str(out / "student.weights.h5"))
    return out


def load_run(run_dir: str | Path, with_steps: bool = False):
    """(TrainOptions, Keras student with the run's final or latest weights[, steps trained])."""
    import tensorflow as tf

    run = Path(run_dir)
    cfg = json.loads(run.joinpath("config.json").read_text())
    costs = cfg.pop("costs")
    if costs.get("layers"):
        layers = costs["layers"]
        costs["layers"] = LayerChoice(content=layers["content"],
                                      style=tuple((n, float(w)) for n, w in layers["style"]))
    student_cfg = StudentConfig(**cfg.pop("student"))
    options = TrainOptions(**cfg, costs=CostWeights(**costs), student=student_cfg)
    student = build_student(student_cfg, name=f"style_{options.style_name}")
    final = run / "student.weights.h5"
    latest = tf.train.latest_checkpoint(str(run / "ckpt"))
    step = tf.Variable(0, dtype=tf.int64)
    if latest is not None:
        # the checkpoint also tells how many steps the weights saw
        tf.train.Checkpoint(student=student, step=step).restore(latest).expect_partial()
    elif not final.is_file():
        raise FileNotFoundError(f"{run} has neither student.weights.h5 nor a checkpoint")
    if final.is_file() and (latest is None or int(step.numpy()) >= options.steps):
        student.load_weights(str(final))
    steps = int(step.numpy())
    if latest is None and run.joinpath("steps.json").is_file():  # a released copy (no ckpt)
        steps = int(json.loads(run.joinpath("steps.json").read_text())["steps"])
    return (options, student, steps) if with_steps else (options, student)
