"""Style transfer: the cost formulas by hand, the loss networks, the optimiser,
student training/resume, export round trips and sdk.Stylizer."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from conftest import load_app, shared_path
from sdk.errors import (ClosedError, InputDtypeError, InputError, InputShapeError,
                        ModelKindError, ModelNotFoundError)

# --- the costs, checked against hand computations ------------------------------------

# one image, 2x2 positions, 2 channels: channel 0 = [[1, 2], [3, 4]], channel 1 = [[0, 1], [1, 0]]
A = np.stack([np.array([[1., 2.], [3., 4.]]), np.array([[0., 1.], [1., 0.]])], axis=-1)[None]
# G00 = 1+4+9+16 = 30, G01 = 0+2+3+0 = 5, G11 = 0+1+1+0 = 2
GRAM_A = np.array([[30., 5.], [5., 2.]])


def test_gram_matches_hand_computation(tf):
    from export.style.losses import gram

    np.testing.assert_allclose(gram(A).numpy()[0], GRAM_A)


def test_content_cost_is_half_squared_distance(tf):
    from export.style.losses import content_cost

    b = A.copy()
    b[0, 0, 0, 0] += 2.0   # difference 2
    b[0, 1, 1, 1] -= 3.0   # difference 3
    # 1/2 * (2^2 + 3^2) = 6.5
    np.testing.assert_allclose(content_cost(A, b).numpy(), [6.5])


def test_layer_style_cost_matches_definition(tf):
    from export.style.losses import layer_style_cost

    g_style = np.array([[31., 5.], [5., 4.]])
    # sum (G_S - G_G)^2 = 1^2 + 0 + 0 + 2^2 = 5; normaliser (2 * 2*2*2)^2 = 256
    np.testing.assert_allclose(layer_style_cost(g_style, A).numpy(), [5 / 256])
    # the normaliser uses the generated activations' n_H, n_W, n_C: a 1x4 layout gives the
    # same Gram and the same 1/(2*1*4*2)^2 = 1/256
    np.testing.assert_allclose(layer_style_cost(g_style, A.reshape(1, 1, 4, 2)).numpy(),
                               [5 / 256])
    # n_C = 2 but 3x3 positions: normaliser (2*3*3*2)^2 = 1296
    a9 = np.zeros((1, 3, 3, 2))
    a9[0, 0, 0] = [1.0, 1.0]   # Gram [[1, 1], [1, 1]]
    np.testing.assert_allclose(layer_style_cost(np.zeros((2, 2)), a9).numpy(), [4 / 1296])


def test_style_cost_weights_layers_and_total_cost(tf):
    from export.style.losses import layer_style_cost, style_cost, total_cost

    acts = {"l1": A, "l2": 2 * A}
    grams = {"l1": np.zeros((2, 2)), "l2": GRAM_A}
    j1 = float(np.sum(GRAM_A ** 2)) / 256          # G(G) = GRAM_A vs 0
    j2 = float(np.sum((4 * GRAM_A - GRAM_A) ** 2)) / 256   # G(2A) = 4 G(A)
    np.testing.assert_allclose(layer_style_cost(grams["l2"], acts["l2"]).numpy(), [j2])
    js = style_cost(grams, acts, {"l1": 0.25, "l2": 0.75}).numpy()
    np.testing.assert_allclose(js, [0.25 * j1 + 0.75 * j2], rtol=1e-6)
    j = total_cost(tf.constant(6.5), tf.constant(js), alpha=10.0, beta=40.0)
    np.testing.assert_allclose(np.asarray(j), 10 * 6.5 + 40 * js, rtol=1e-6)


def test_total_variation_by_hand(tf):
    from export.style.losses import total_variation

    x = np.array([[0., 1.], [3., 7.]])[None, :, :, None]
    # vertical: (3-0)^2 + (7-1)^2 = 45; horizontal: (1-0)^2 + (7-3)^2 = 17
    np.testing.assert_allclose(total_variation(x).numpy(), [62.0])


def test_grain_sees_a_fixed_2px_pattern_not_smooth_images(tf):
    from export.style.losses import grain

    yy, xx = np.mgrid[0:64, 0:64].astype(np.float32)
    smooth = np.repeat((2 * xx + yy)[None, :, :, None], 3, axis=3)    # a ramp: no pattern
    checker = ((yy + xx) % 2 * 4.0)[None, :, :, None] * np.ones((1, 1, 1, 3), np.float32)
    stripes = (xx % 2 * 4.0)[None, :, :, None] * np.ones((1, 1, 1, 3), np.float32)
    g = grain(np.concatenate([smooth, smooth + checker, smooth + stripes]), pool=4).numpy()
    # by hand, per 2x2 block (a b / c d): the ramp 2x + y gives horizontal (a-b+c-d)/4 = -1,
    # vertical (a+b-c-d)/4 = -1/2, checkerboard 0; the checker adds -2 to the checkerboard
    # component, the stripes -2 to the horizontal one
    cells = (64 // 2 // 4) ** 2 * 3
    np.testing.assert_allclose(g[0], cells * (1.0 + 0.25), rtol=1e-5)
    np.testing.assert_allclose(g[1], cells * (1.0 + 0.25 + 4.0), rtol=1e-5)
    np.testing.assert_allclose(g[2], cells * (9.0 + 0.25), rtol=1e-5)
    # a random texture averages out; the same texture plus a faint grid does not
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 20, size=(1, 128, 128, 3)).astype(np.float32)
    faint = ((yy + xx) % 2 * 4.0)[None, :, :, None]   # +-2 grey levels, as measured on a student
    faint = np.tile(faint, (1, 2, 2, 3))
    assert grain(noise).numpy()[0] < 0.35 * grain(noise + faint).numpy()[0]
    # odd sizes: the last row and column do not form 2x2 blocks and are dropped
    odd = np.pad(smooth + checker, ((0, 0), (0, 1), (0, 1), (0, 0)), mode="edge")
    np.testing.assert_allclose(grain(odd, pool=4).numpy(), g[1:2], rtol=1e-5)


def test_costs_are_per_image_in_a_batch(tf):
    from export.style.losses import content_cost, layer_style_cost

    batch = np.concatenate([A, 2 * A])
    np.testing.assert_allclose(content_cost(batch, np.zeros_like(batch)).numpy(),
                               [0.5 * np.sum(A ** 2), 0.5 * np.sum(4 * A ** 2)])
    assert layer_style_cost(GRAM_A, batch).numpy()[0] == pytest.approx(0.0)


# --- loss networks -------------------------------------------------------------------


def test_squeezenet_loads_local_weights_by_layer_name(tf):
    import h5py

    from export.style import lossnet

    path = shared_path("models", "squeezenet1.1",
                       "squeezenet_weights_tf_dim_ordering_tf_kernels_notop.h5")
    net = lossnet.squeezenet(path)
    tensors: list = []
    with h5py.File(path, "r") as f:
        f["fire9/expand3x3"].visititems(
            lambda _, o: tensors.append(np.asarray(o)) if isinstance(o, h5py.Dataset) else None)
    kernel = [t for t in tensors if t.ndim == 4][0]
    np.testing.assert_array_equal(net.get_layer("fire9_expand3x3").get_weights()[0], kernel)
    feats = lossnet.feature_extractor("squeezenet", ["relu_conv1", "fire4/concat"])(
        np.full((1, 64, 64, 3), 128.0, np.float32))
    assert feats["relu_conv1"].shape == (1, 31, 31, 64)
    assert feats["fire4_concat"].shape[-1] == 256


def test_squeezenet_rejects_missing_file_and_unknown_layer(tf, tmp_path):
    from export.style import lossnet

    with pytest.raises(FileNotFoundError):
        lossnet.squeezenet(tmp_path / "absent.h5")
    with pytest.raises(ValueError, match="no layer"):
        lossnet.feature_extractor("squeezenet", ["fire42/concat"], weights=None)


def test_vgg19_accepts_a_local_weights_file(tf, tmp_path):
    """VGG19 never needs the network when given a file: save random weights, load them back."""
    import keras

    from export.style import lossnet

    keras.utils.set_random_seed(3)
    src = keras.applications.VGG19(include_top=False, weights=None, input_shape=(None, None, 3))
    path = tmp_path / "vgg19_notop.weights.h5"
    src.save_weights(str(path))
    net = lossnet.vgg19(path)
    got = net.get_layer("block5_conv4").get_weights()[0]
    np.testing.assert_array_equal(got, src.get_layer("block5_conv4").get_weights()[0])
    with pytest.raises(FileNotFoundError):
        lossnet.vgg19(tmp_path / "missing.h5")


# --- the optimiser ------------------------------------------------------------------------


def _few_layers():
    from export.style.lossnet import LayerChoice
    from export.style.optimize import CostWeights

    # early layers only: a small graph traces and runs fast in tests
    return CostWeights(layers=LayerChoice(content="fire2/concat",
                                          style=(("relu_conv1", 0.5), ("fire2_concat", 0.5))))


@pytest.fixture(scope="module")
def random_extractor(tf):
    """SqueezeNet (random weights) up to fire2: enough to check that optimisation lowers J."""
    import keras

    from export.style.lossnet import feature_extractor

    keras.utils.set_random_seed(0)
    return feature_extractor("squeezenet", _few_layers().layer_choice.names, weights=None)


def _smooth_image(seed: int, size: int = 48) -> np.ndarray:
    import cv2

    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, (6, 6, 3)).astype(np.float32)
    return np.clip(cv2.resize(small, (size, size)) + rng.normal(0, 6, (size, size, 3)),
                   0, 255).astype(np.uint8)


@pytest.mark.parametrize("method", ["adam", "lbfgs"])
def test_optimizer_lowers_the_total_cost(random_extractor, method):
    from export.style.optimize import OptimizeOptions, optimize

    content, style = _smooth_image(1), _smooth_image(2)
    result = optimize(content, style, OptimizeOptions(iterations=6, method=method, init="noise",
                                                      max_side=48, costs=_few_layers()),
                      extractor=random_extractor, progress=False)
    assert result.image.shape == (48, 48, 3) and result.image.dtype == np.uint8
    j = result.history["J"]
    assert len(j) >= 2 and j[-1] < j[0]


def test_optimizer_rejects_bad_images_and_options(random_extractor):
    from export.style.optimize import OptimizeOptions, optimize

    with pytest.raises(ValueError, match="RGB uint8"):
        optimize(np.zeros((8, 8, 3), np.float32), _smooth_image(2),
                 extractor=random_extractor, progress=False)
    with pytest.raises(ValueError, match="method"):
        OptimizeOptions(method="sgd")


def test_optimize_cli_writes_image_and_loss_curve(tmp_path):
    from export.style.cli import main
    from export.style.train import write_rgb

    shared_path("models", "squeezenet1.1")
    write_rgb(tmp_path / "c.png", _smooth_image(1, 40))
    write_rgb(tmp_path / "s.png", _smooth_image(2, 40))
    rc = main(["optimize", "--content", str(tmp_path / "c.png"), "--style",
               str(tmp_path / "s.png"), "--out", str(tmp_path / "g.png"), "--iterations", "3",
               "--max-side", "40", "--content-layer", "fire2/concat",
               "--style-layers", "relu_conv1=0.5,fire2/concat=0.5"])
    assert rc == 0
    assert (tmp_path / "g.png").stat().st_size > 0 and (tmp_path / "g_loss.png").stat().st_size > 0


def test_images_too_small_for_the_loss_network_are_refused_up_front(tmp_path, capsys):
    """A 3:2 photo at max_side=40 is fed at 40x27 px: SqueezeNet's unpadded pools failed
    deep in TensorFlow ("could not create a descriptor"); now a ValueError names the size
    and the minimum first, in optimize, evaluate and bench, and the CLI refuses the size."""
    from export.style.bench import bench
    from export.style.cli import main
    from export.style.evaluate import evaluate
    from export.style.optimize import MIN_SIDE, OptimizeOptions, optimize
    from export.style.train import write_rgb

    photo, style = _smooth_image(1, 72)[:48], _smooth_image(2, 48)
    with pytest.raises(ValueError, match=rf"72x48 px fitted to max_side=40.* at 40x27 px; "
                                         rf"both sides must be >= {MIN_SIDE}"):
        optimize(photo, style, OptimizeOptions(max_side=40, iterations=1), progress=False)
    with pytest.raises(ValueError, match="at 30x20 px"):   # never enlarged
        optimize(photo[:20, :30], style, progress=False)
    write_rgb(tmp_path / "content" / "wide.png", photo)
    with pytest.raises(ValueError, match=r"wide.png \(fitted to max_side=32\).* at 32x20 px"):
        evaluate({"s": {"fp32": tmp_path / "absent.tflite"}}, tmp_path, tmp_path / "content",
                 tmp_path / "out", max_side=32)
    assert not (tmp_path / "out").exists()   # refused before any work
    with pytest.raises(ValueError, match="at 28x28 px"):
        bench({}, photo, style, size=28, threads=(1,), johnson=False)
    for args in (["evaluate", "--max-side", "24"], ["bench", "--size", "16"]):
        with pytest.raises(SystemExit) as stop:
            main([*args, "--models", str(tmp_path), "--out", str(tmp_path / "x")])
        assert stop.value.code == 2
        assert f"too small for the loss network; at least {MIN_SIDE}" in capsys.readouterr().err


# --- student training ---------------------------------------------------------------------


def _tiny_training(tmp_path, seed: int, photos: int = 3, side: int = 56,
                   style: str = "s.png", **options):
    """Training options over ``photos`` smooth ``side``-px photos and a smooth style image
    written under ``tmp_path`` (a 4-wide, 1-block student on 32-px crops, 2 steps)."""
    from export.style.student import StudentConfig
    from export.style.train import TrainOptions, write_rgb

    content = tmp_path / "content"
    for i in range(photos):
        write_rgb(content / f"p{i}.jpg", _smooth_image(seed + i, side))
    write_rgb(tmp_path / style, _smooth_image(seed + 10, side))
    defaults = dict(style=str(tmp_path / style), run_dir=str(tmp_path / "run"),
                    content_dir=str(content), samples_dir=str(content), steps=2,
                    batch_size=2, crop=32, distill_images=1, teacher_iterations=2,
                    costs=_few_layers(), student=StudentConfig(base=4, blocks=1))
    return TrainOptions(**{**defaults, **options})


def test_train_writes_checkpoints_samples_and_resumes(random_extractor, tmp_path):
    import json

    from export.style.optimize import fit_side
    from export.style.student import SIZE_MULTIPLE, StudentConfig
    from export.style.train import (TrainOptions, list_images, load_run, read_rgb, sample_grid,
                                    train)

    opts = _tiny_training(tmp_path, 10, style="wave.png", sample_every=2, checkpoint_every=1)
    content = tmp_path / "content"
    train(opts, progress=False, extractor=random_extractor, eager=True)
    run = tmp_path / "run"
    assert (run / "samples" / "step_000002.png").is_file()
    assert list((run / "teacher").glob("*/*_teacher.png"))  # keyed by what they depend on
    with pytest.raises(FileExistsError):
        train(opts, progress=False, extractor=random_extractor, eager=True)
    # a resume may go further, not change what the checkpoint and the teacher belong to
    for change in ({"crop": 48}, {"costs": dataclasses.replace(opts.costs, beta=9e9)}):
        with pytest.raises(ValueError, match="started with other settings"):
            train(TrainOptions(**{**opts.__dict__, **change, "steps": 3}), resume=True,
                  progress=False, extractor=random_extractor, eager=True)
    longer = TrainOptions(**{**opts.__dict__, "steps": 3})
    train(longer, resume=True, progress=False, extractor=random_extractor, eager=True)
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]   # resumed at 2, not restarted
    loaded_opts, student, n = load_run(run, with_steps=True)
    assert n == 3 and loaded_opts.style_name == "wave"
    x = np.random.default_rng(0).uniform(0, 255, (1, 36, 44, 3)).astype(np.float32)
    y = np.asarray(student(x, training=False))
    assert y.shape == x.shape
    # the loaded weights are those of the last step: they redraw exactly the sample grid
    # training wrote after it (measured: the step-2 grid differs by up to 2 grey levels in
    # 160 values, a fresh student's by up to 5); a range check could not fail here, the
    # output being 255 * sigmoid
    samples = [fit_side(read_rgb(q), 256, SIZE_MULTIPLE) for q in list_images(content)]
    np.testing.assert_array_equal(sample_grid(student, samples),
                                  read_rgb(run / "samples" / "step_000003.png"))

    # a new run on larger crops starts from this run's weights (lr 0: the trained ones must
    # come through unchanged; normalisation statistics move with the new crops), and a different architecture is refused before anything is written
    bigger = TrainOptions(**{**opts.__dict__, "run_dir": str(tmp_path / "big"), "crop": 48,
                             "steps": 1, "learning_rate": 0.0, "distill_images": 0,
                             "init": str(run)})
    train(bigger, progress=False, extractor=random_extractor, eager=True)
    _, big_student, big_steps = load_run(tmp_path / "big", with_steps=True)
    assert big_steps == 1
    assert len(big_student.trainable_weights) == len(student.trainable_weights)
    for a, b in zip(big_student.trainable_weights, student.trainable_weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    wider = TrainOptions(**{**bigger.__dict__, "run_dir": str(tmp_path / "wide"),
                            "student": StudentConfig(base=8, blocks=1)})
    with pytest.raises(ValueError, match="must match"):
        train(wider, progress=False, extractor=random_extractor, eager=True)
    assert not (tmp_path / "wide").exists()


def test_train_with_frozen_batchnorm_keeps_the_init_statistics(random_extractor, tmp_path):
    from export.style.train import TrainOptions, batchnorm_layers, load_run, train

    first = _tiny_training(tmp_path, 30, run_dir=str(tmp_path / "a"))
    with pytest.raises(ValueError, match="needs init"):
        TrainOptions(**{**first.__dict__, "freeze_batchnorm": True})
    train(first, progress=False, extractor=random_extractor, eager=True)
    _, start = load_run(tmp_path / "a")
    frozen = TrainOptions(**{**first.__dict__, "run_dir": str(tmp_path / "b"), "steps": 3,
                             "learning_rate": 1e-2, "init": str(tmp_path / "a"),
                             "freeze_batchnorm": True})
    train(frozen, progress=False, extractor=random_extractor, eager=True)
    _, end = load_run(tmp_path / "b")

    def stats(model):
        return [np.asarray(v) for layer in batchnorm_layers(model)
                for v in (layer.moving_mean, layer.moving_variance)]

    # the statistics are the init's exactly (neither updated by the steps nor re-averaged
    # at the end, as an unfrozen run does) ...
    assert stats(start) and all(np.array_equal(a, b) for a, b in zip(stats(start), stats(end)))
    # ... while the weights trained, the normalisation's scale and offset too
    def affine(model):
        return [np.asarray(v) for layer in batchnorm_layers(model) for v in (layer.gamma,
                                                                             layer.beta)]

    assert not any(np.array_equal(a, b) for a, b in zip(affine(start), affine(end)))
    unfrozen = TrainOptions(**{**frozen.__dict__, "run_dir": str(tmp_path / "c"),
                               "freeze_batchnorm": False})
    train(unfrozen, progress=False, extractor=random_extractor, eager=True)
    _, moved = load_run(tmp_path / "c")
    assert not all(np.array_equal(a, b) for a, b in zip(stats(start), stats(moved)))
    # a run started before the option existed resumes (its config lacks the key)
    import json
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    del cfg["freeze_batchnorm"], cfg["scale_range"]
    (tmp_path / "a" / "config.json").write_text(json.dumps(cfg))
    train(TrainOptions(**{**first.__dict__, "steps": 3}), resume=True, progress=False,
          extractor=random_extractor, eager=True)


def test_extra_crops_alternate_with_the_crop(random_extractor, tmp_path, monkeypatch):
    import json

    from export.style.optimize import CostModel
    from export.style.train import TrainOptions, center_crop, read_rgb, train

    costs = dataclasses.replace(_few_layers(), gamma=0.0)
    opts = _tiny_training(tmp_path, 50, photos=2, side=64, steps=3, batch_size=1,
                          extra_crops=[48], teacher_iterations=1, costs=costs)
    assert opts.extra_crops == (48,)
    seen = []  # (side, Gram targets) of every cost evaluation of a training batch
    original = CostModel.costs

    def spy(self, images, content_acts=None, grams=None):
        if grams is not None:
            seen.append((int(images.shape[1]), {n: np.asarray(g) for n, g in grams.items()}))
        return original(self, images, content_acts=content_acts, grams=grams)

    monkeypatch.setattr(CostModel, "costs", spy)
    train(opts, progress=False, extractor=random_extractor, eager=True)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["crop"] for r in log] == [32, 48, 32]
    # each size against the style's Grams at that size (same C x C shapes: only values tell)
    model = CostModel(random_extractor, costs)
    style = read_rgb(tmp_path / "s.png")
    assert [side for side, _ in seen] == [32, 48, 32]
    for side, grams in seen:
        want = model.grams_of(center_crop(style, side).astype(np.float32)[None])
        for name, g in grams.items():
            np.testing.assert_allclose(g, np.asarray(want[name]), rtol=1e-5)
    assert not np.allclose(seen[0][1][name], seen[1][1][name], rtol=1e-3)
    # the content term divided by (side / crop)^2 keeps beta's balance
    for r in log:
        k = (r["crop"] / 32) ** 2
        assert r["loss"] == pytest.approx(r["J_content"] / k + costs.beta * r["J_style"]
                                          + 0.5 * r["distill"], rel=1e-4)
    for bad in ((32,), (50,), (16,), (48, 48)):
        with pytest.raises(ValueError, match="extra_crops"):
            TrainOptions(style="x", run_dir="x", crop=32, extra_crops=bad)


def test_balance_crop_keeps_beta_balance_on_larger_crops(random_extractor, tmp_path,
                                                       monkeypatch):
    """--crop 48 --balance-crop 32: the content term divided by (48 / 32)^2 every step, the
    teacher optimising with beta times that factor, the contract recording the balance."""
    import json

    from export.style import train as train_module
    from export.style.train import TrainOptions, train

    costs = dataclasses.replace(_few_layers(), gamma=1e-3)
    opts = _tiny_training(tmp_path, 60, photos=2, side=64, steps=2, batch_size=1, crop=48,
                          balance_crop=32, teacher_iterations=1, costs=costs)
    assert opts.balance_side == 32
    teacher_betas = []
    original = train_module.optimize

    def spy(content, style, options, **kw):
        teacher_betas.append(options.costs.beta)
        return original(content, style, options, **kw)

    monkeypatch.setattr(train_module, "optimize", spy)
    train(opts, progress=False, extractor=random_extractor, eager=True)
    assert teacher_betas == [pytest.approx(costs.beta * 2.25)]
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["crop"] for r in log] == [48, 48]
    for r in log:  # the content and TV terms divided, style, grain (weight 0), distill not
        assert r["TV"] > 0
        assert r["loss"] == pytest.approx(r["J_content"] / 2.25 + costs.beta * r["J_style"]
                                          + costs.gamma * r["TV"] / 2.25
                                          + 0.5 * r["distill"], rel=1e-4)
    # without it the same crop weighs the content term as given (and its teacher too)
    plain = TrainOptions(**{**opts.__dict__, "run_dir": str(tmp_path / "plain"),
                            "balance_crop": None})
    assert plain.balance_side == 48
    train(plain, progress=False, extractor=random_extractor, eager=True)
    assert teacher_betas[1] == pytest.approx(costs.beta)
    r = json.loads((tmp_path / "plain" / "log.jsonl").read_text().splitlines()[0])
    assert r["loss"] == pytest.approx(r["J_content"] + costs.beta * r["J_style"]
                                      + costs.gamma * r["TV"] + 0.5 * r["distill"], rel=1e-4)
    # the balance equal to the crop is the default setting, spelt out; the balanced run's
    # teacher (another beta) is cached under another key
    same = TrainOptions(**{**plain.__dict__, "balance_crop": 48})
    assert same.balance_crop is None and same == plain
    keys = {run: [d.name for d in (tmp_path / run / "teacher").iterdir()]
            for run in ("run", "plain")}
    assert len(keys["run"]) == len(keys["plain"]) == 1 and keys["run"] != keys["plain"]
    from export.style.release import stylizer_info
    from export.style.train import load_run

    options, student = load_run(tmp_path / "run")
    assert options.balance_crop == 32  # read back from config.json
    assert stylizer_info(student, options, 2).extra["train_balance_crop"] == 32
    assert stylizer_info(student, plain, 2).extra["train_balance_crop"] == 48
    for bad in (16, 50):
        with pytest.raises(ValueError, match="balance_crop"):
            TrainOptions(style="x", run_dir="x", crop=32, balance_crop=bad)


def test_resume_fills_defaults_of_nested_options(tmp_path):
    """A run started before student.stages (or costs.network) existed resumes: a missing
    nested key is its default; a nested setting that really differs is still refused."""
    import json

    from export.style.student import StudentConfig
    from export.style.train import TrainOptions, _check_resume

    opts = TrainOptions(style=str(tmp_path / "s.png"), run_dir=str(tmp_path / "run"))
    cfg = json.loads(opts.to_json())
    del cfg["student"]["stages"], cfg["costs"]["network"]
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps(cfg))
    _check_resume(tmp_path / "run", opts)
    shuffle = TrainOptions(**{**opts.__dict__, "student": StudentConfig(stages="shuffle")})
    with pytest.raises(ValueError, match="started with other settings.*'stages': 'full'"):
        _check_resume(tmp_path / "run", shuffle)


def test_train_options_refuse_zero_counts_and_non_finite_weights(tmp_path):
    """0 report intervals divided by zero after the teacher had run, limit=0 meant all
    photos, and NaN passed every "< 0" check: all refused when the options are made."""
    from export.style.optimize import CostWeights
    from export.style.train import TrainOptions, list_images

    nan, inf = float("nan"), float("inf")
    for name, value in (("sample_every", 0), ("checkpoint_every", 0), ("teacher_iterations", 0),
                        ("learning_rate", -1e-3), ("learning_rate", nan),
                        ("learning_rate", inf), ("limit", 0), ("distill_weight", nan),
                        ("grain_weight", inf)):
        with pytest.raises(ValueError, match=rf"{name} must be .*got {value!r}"):
            TrainOptions(style="x", run_dir="x", **{name: value})
    for name, value in (("alpha", inf), ("beta", nan), ("gamma", -1.0)):
        with pytest.raises(ValueError, match=rf"{name} must be a finite number >= 0, got"):
            CostWeights(**{name: value})
    with pytest.raises(ValueError, match="limit must be"):
        list_images(tmp_path, 0)
    assert TrainOptions(style="x", run_dir="x", learning_rate=0.0, limit=1).limit == 1


def test_scale_range_sizes_the_photo_before_the_crop():
    from export.style.train import TrainOptions, random_crop

    # a 100-px-high gradient: a crop of the photo scaled to short side 2 x 32 spans about
    # half its rows, one of the photo scaled to 32 all of them
    photo = np.repeat(np.linspace(0, 255, 100, dtype=np.float32)[:, None, None], 120, 1)
    photo = np.repeat(photo, 3, 2).astype(np.uint8)
    rng = np.random.default_rng(0)
    spans = {s: np.ptp(random_crop(photo, 32, rng, (s, s))[:, 0, 0].astype(int))
             for s in (1.0, 2.0)}
    assert spans[1.0] > 240 and 100 < spans[2.0] < 140, spans
    for bad in ((0.8, 1.2), (1.5, 1.2), (1.0,)):
        with pytest.raises(ValueError, match="scale_range"):
            TrainOptions(style="x", run_dir="x", scale_range=bad)
    assert TrainOptions(style="x", run_dir="x", scale_range=[1, 2]).scale_range == (1.0, 2.0)


# --- export and the runtime -----------------------------------------------------------------


def _trained_bn_statistics(model, seed: int) -> None:
    """Non-trivial BN statistics, so conversion must fold them: each layer's are those of
    its real inputs on photo-like frames (plus random γ, β), as after training.

    With arbitrary (or initial) statistics a random student's decoder passes almost
    nothing of the frame on: its output is a fixed pattern (another frame's output within
    1.5 grey levels of it on average, the mean output 38-39 dB from every frame's), so no
    PSNR floor or tolerance can tell a faithful int8 file from one that ignores its input."""
    import keras

    rng = np.random.default_rng(seed)
    frames = np.stack([_smooth_image(100 + i, 32) for i in range(8)]).astype(np.float32)
    for layer in model.layers:   # graph order: each layer sees the earlier ones already set
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            a = np.asarray(keras.Model(model.input, layer.input)(frames, training=False))
            layer.moving_mean.assign(a.mean((0, 1, 2)).astype("float32"))
            layer.moving_variance.assign(a.var((0, 1, 2)).astype("float32"))
            layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
            layer.beta.assign(rng.uniform(-0.2, 0.2, n).astype("float32"))


def _blind_psnr(model, images: np.ndarray) -> float:
    """PSNR (peak 255) against ``model`` on ``images`` of the best output that ignores
    its input: the model's mean output over them.  A PSNR floor under it cannot fail."""
    from export.formats import agreement

    ref = np.asarray(model(images, training=False))
    return agreement(ref, np.broadcast_to(ref.mean(0, keepdims=True), ref.shape),
                     peak=255.0).psnr_db


@pytest.fixture(scope="module")
def tiny_student(tf):
    import keras

    from export.style.student import StudentConfig, build_student

    keras.utils.set_random_seed(5)
    model = build_student(StudentConfig(base=4, blocks=1), name="tiny_style")
    _trained_bn_statistics(model, seed=5)
    model(np.zeros((1, 32, 32, 3), np.float32))
    return model


@pytest.fixture(scope="module")
def style_models(tiny_student, tmp_path_factory):
    """The tiny student exported to TFLite fp32/int8 and ONNX, checked against Keras."""
    from export.style.release import export_student
    from export.style.student import SIZE_MULTIPLE
    from export.formats import source_hash
    from sdk.contract import ModelInfo, Preprocessing

    info = ModelInfo(kind="stylizer", name="style-tiny", inputs=(), outputs=(),
                     preprocessing=Preprocessing(channel_order="RGB", pixel_range=(0, 255)),
                     output={"style": "tiny", "output_range": [0, 255],
                             "size_multiple": SIZE_MULTIPLE},
                     source_hash=source_hash(tiny_student))
    d = tmp_path_factory.mktemp("style_models")
    images = np.stack([_smooth_image(30 + i, 32) for i in range(24)]).astype(np.float32)
    report = export_student(tiny_student, info, d, "tiny", calibration=images[:20],
                            check=images[20:],
                            formats=("tflite_fp32", "tflite_int8", "onnx_fp32"))
    paths = {k: v["path"] for k, v in report.items()}
    from export import formats
    paths["wrong_kind"] = formats.to_onnx(tiny_student, d / "generic.onnx",
                                          info.replace(kind="generic"))
    return paths, report


def test_export_checks_every_format_against_keras(style_models, tiny_student):
    """Every file within the release's own PSNR floor of Keras; and on this student the
    int8 floor can fail: an output that ignores the frame (the student's mean output over
    the check images, the best such output there is) stays well below it."""
    from export.style.release import MIN_PSNR

    _, report = style_models
    assert report["tflite_fp32"]["psnr_db"] >= 45 and report["onnx_fp32"]["psnr_db"] >= 45
    assert report["tflite_int8"]["min_psnr_db"] == MIN_PSNR["tflite_int8"]
    assert report["tflite_int8"]["psnr_db"] >= MIN_PSNR["tflite_int8"]
    check = np.stack([_smooth_image(30 + i, 32) for i in range(20, 24)]).astype(np.float32)
    assert _blind_psnr(tiny_student, check) < MIN_PSNR["tflite_int8"] - 3


def test_export_refuses_a_drifting_model(tiny_student, tmp_path):
    from export.formats import ConversionError
    from export.style.release import export_student
    from sdk.contract import ModelInfo

    info = ModelInfo(kind="stylizer", name="t", inputs=(), outputs=(),
                     output={"style": "t", "output_range": [0, 255], "size_multiple": 4})
    images = np.stack([_smooth_image(30 + i, 32) for i in range(20)]).astype(np.float32)
    with pytest.raises(ConversionError, match="PSNR") as caught:
        export_student(tiny_student, info, tmp_path, "t", calibration=images[:16],
                       check=images[16:], formats=("tflite_int8", "tflite_fp32"),
                       min_psnr={"tflite_int8": 200.0})   # unreachable: must refuse
    assert not (tmp_path / "t_int8.tflite").exists()
    # the other format is still made, and the report says what was refused
    assert caught.value.report["tflite_fp32"]["psnr_db"] >= 45
    assert "refused" in caught.value.report["tflite_int8"]


def test_export_stages_files_and_quantises_its_own_graph(tiny_student, tmp_path):
    """The int8 ONNX file comes from this student's fp32 graph, never from an older file
    of that name in the folder, and that graph is checked and released with it; nothing is
    left staged; a refused format's older file (other weights) is deleted, not kept beside
    the new ones."""
    from export.formats import ConversionError
    from export.style.release import export_student
    from sdk.contract import ModelInfo

    info = ModelInfo(kind="stylizer", name="t", inputs=(), outputs=(),
                     output={"style": "t", "output_range": [0, 255], "size_multiple": 4})
    images = np.stack([_smooth_image(30 + i, 32) for i in range(20)]).astype(np.float32)
    (tmp_path / "t_fp32.onnx").write_bytes(b"an older release, not this student")
    report = export_student(tiny_student, info, tmp_path, "t", calibration=images[:16],
                            check=images[16:], formats=("onnx_int8",),
                            min_psnr={"onnx_int8": 15.0})
    assert report["onnx_int8"]["path"] == str(tmp_path / "t_int8.onnx")
    assert report["onnx_fp32"]["psnr_db"] >= 45     # its source, checked and released too
    assert not (tmp_path / "t_fp32.onnx").read_bytes().startswith(b"an older")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t_fp32.onnx", "t_int8.onnx"]
    with pytest.raises(ConversionError) as caught:   # int8 asked first, its source refused
        export_student(tiny_student, info, tmp_path, "t", calibration=images[:16],
                       check=images[16:], formats=("onnx_int8", "onnx_fp32"),
                       min_psnr={"onnx_fp32": 200.0})
    assert "its source" in caught.value.report["onnx_int8"]["refused"]
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def _kept_student(tmp_path, name: str, seed: int) -> Path:
    """A ``<style>_student/`` copy (style "s") of a tiny student with weights of ``seed``."""
    import keras

    from export.style.release import keep_keras_copy
    from export.style.student import StudentConfig, build_student
    from export.style.train import TrainOptions

    keras.utils.set_random_seed(seed)
    options = TrainOptions(style=str(tmp_path / "s.png"), run_dir=str(tmp_path / name),
                           student=StudentConfig(base=4, blocks=1))
    student = build_student(options.student, name="style_s")
    return keep_keras_copy(student, options, 2, tmp_path / "none", tmp_path / name)


def test_export_run_leaves_no_file_of_other_weights(tf, tmp_path, monkeypatch, capsys):
    """Exporting some formats of new weights deletes (and names) the files of the old
    weights it did not replace, so stylizer_paths never finds them; the same weights' other
    files stay; with every format refused the kept Keras copy is not overwritten and the
    earlier release's other files stay."""
    import json

    from export.formats import ConversionError, source_hash
    from export.style import release
    from export.style.train import load_run
    from sdk.style import stylizer_paths

    # small crops for calibration and checking: the float formats asked for here agree
    # with Keras at any size
    monkeypatch.setattr(release, "real_crops", lambda folder, n, size, seed, skip=0: np.stack(
        [_smooth_image(seed + skip + i, 32) for i in range(n)]).astype(np.float32))
    out = tmp_path / "models"
    a, b, c = (_kept_student(tmp_path, name, seed) for name, seed in
               (("a", 1), ("b", 2), ("c", 3)))

    def export(run, fmt):
        return release.export_run(run, out, calibration_dir=tmp_path, formats=[fmt])

    def files():
        return sorted(p.name for p in out.glob("s_*.*") if p.suffix in (".tflite", ".onnx"))

    def kept_hash():
        return source_hash(load_run(out / "s_student")[1])

    export(a, "onnx_fp32")
    capsys.readouterr()
    summary = export(b, "tflite_fp32")
    assert files() == ["s_fp32.tflite"] and list(summary["formats"]) == ["tflite_fp32"]
    assert "removed " + str(out / "s_fp32.onnx") in capsys.readouterr().out
    assert stylizer_paths(out, "fp32", ".onnx") == {}   # nothing of A's left to pick up
    weights_b = kept_hash()
    assert weights_b == summary["source_hash"]
    summary = export(out / "s_student", "onnx_fp32")   # the same weights: nothing removed
    assert files() == ["s_fp32.onnx", "s_fp32.tflite"]
    assert sorted(summary["formats"]) == ["onnx_fp32", "tflite_fp32"]
    assert "removed" not in capsys.readouterr().out
    monkeypatch.setitem(release.MIN_PSNR, "onnx_fp32", 200.0)   # unreachable: refused
    with pytest.raises(ConversionError):
        export(c, "onnx_fp32")
    assert kept_hash() == weights_b      # not the refused weights
    # a refused export deletes only the refused format's older file: the rest of the
    # earlier release (B's TFLite file, B's Keras copy) stays usable
    assert files() == ["s_fp32.tflite"]
    record = json.loads((out / "s_export.json").read_text())
    assert list(record["formats"]) == ["onnx_fp32"] and "refused" in record["formats"][
        "onnx_fp32"]


def test_shuffle_student_exports_and_runs_at_any_multiple_of_4(tf, tmp_path):
    """The 'shuffle' output stage (nothing at full resolution but a 3x3 conv on RGB):
    same-size output, ICNR start (2x2 blocks equal before the smoothing conv), every
    format within its PSNR floor of Keras, DepthToSpace accepted by the TensorRT check,
    and frames through sdk.Stylizer matching Keras."""
    import keras

    from export.formats import source_hash
    from export.jetson.check import check_onnx
    from export.style.release import MIN_PSNR, export_student
    from export.style.student import SIZE_MULTIPLE, StudentConfig, build_student
    from sdk import Stylizer, StylizerOptions
    from sdk.contract import ModelInfo, Preprocessing

    keras.utils.set_random_seed(6)
    model = build_student(StudentConfig(base=4, blocks=1, stages="shuffle"), name="tiny_shuffle")
    assert not any(layer.name in ("enc1_conv", "dec2_dw", "up2") for layer in model.layers)
    x = np.stack([_smooth_image(60 + i, 32) for i in range(24)]).astype(np.float32)
    pre = keras.Model(model.input, model.get_layer("shuffle").output)(x[:1]).numpy()[0]
    np.testing.assert_allclose(pre[0::2, 0::2], pre[1::2, 1::2], atol=1e-6)
    _trained_bn_statistics(model, seed=6)   # else the output barely depends on the frame
    k, b = model.get_layer("out_conv").get_weights()
    model.get_layer("out_conv").set_weights([k, b + np.random.default_rng(0).normal(0, 0.3, b.shape)])
    info = ModelInfo(kind="stylizer", name="style-tiny-shuffle", inputs=(), outputs=(),
                     preprocessing=Preprocessing(channel_order="RGB", pixel_range=(0, 255)),
                     output={"style": "tiny", "output_range": [0, 255],
                             "size_multiple": SIZE_MULTIPLE},
                     source_hash=source_hash(model))
    report = export_student(model, info, tmp_path, "tiny", calibration=x[:20], check=x[20:],
                            formats=("tflite_fp32", "tflite_int8", "onnx_fp32"))
    assert report["tflite_fp32"]["psnr_db"] >= 45 and report["onnx_fp32"]["psnr_db"] >= 45
    assert report["tflite_int8"]["psnr_db"] >= MIN_PSNR["tflite_int8"]
    assert _blind_psnr(model, x[20:]) < MIN_PSNR["tflite_int8"] - 3   # a floor that can fail
    onnx_check = check_onnx(report["onnx_fp32"]["path"])
    assert onnx_check.ok and "DepthToSpace" in onnx_check.op_counts
    frame = np.clip(np.random.default_rng(8).normal(120, 40, (44, 60, 3)), 0, 255).astype(np.uint8)
    ref = np.asarray(model(frame[None, :, :, ::-1].astype(np.float32), training=False))
    ref = np.clip(np.rint(ref[0, :, :, ::-1]), 0, 255)
    for fmt in ("tflite_fp32", "onnx_fp32"):
        with Stylizer(options=StylizerOptions(model_path=report[fmt]["path"], border=0)) as st:
            out = st(frame)
        assert out.shape == frame.shape
        assert np.abs(out.astype(np.float64) - ref).mean() < 0.51


@pytest.mark.parametrize("fmt", ["tflite_fp32", "tflite_int8", "onnx_fp32"])
def test_stylizer_keeps_frame_size_and_matches_keras(style_models, tiny_student, fmt):
    from sdk import Stylizer, StylizerOptions

    paths, _ = style_models
    rng = np.random.default_rng(7)
    frame = np.clip(rng.normal(120, 40, (36, 52, 3)), 0, 255).astype(np.uint8)  # BGR
    # border=0: the reference below runs Keras on the bare frame
    with Stylizer(options=StylizerOptions(model_path=paths[fmt], border=0)) as stylizer:
        assert stylizer.style == "tiny"
        out = stylizer(frame)
        assert out.shape == frame.shape and out.dtype == np.uint8
        odd = stylizer(frame[:35, :49])   # not a multiple of 4: padded, then cropped back
        assert odd.shape == (35, 49, 3)
    # reference: Keras on RGB float, back to BGR
    ref = np.asarray(tiny_student(frame[None, :, :, ::-1].astype(np.float32), training=False))
    ref = np.clip(np.rint(ref[0, :, :, ::-1]), 0, 255)
    err = np.abs(out.astype(np.float64) - ref)
    assert err.mean() < (6.0 if fmt.endswith("int8") else 0.51)


def test_stylizer_batch_equals_single_calls(style_models):
    from sdk import Stylizer, StylizerOptions

    paths, _ = style_models
    frames = [_smooth_image(40 + i, 32)[:, :, ::-1].copy() for i in range(3)]
    with Stylizer.create_from_options(StylizerOptions(model_path=paths["onnx_fp32"])) as st:
        batch = st.stylize_batch(frames)
        singles = [st(f) for f in frames]
        mixed = st.stylize_batch([frames[0], frames[1][:24, :20]])
    for b, s in zip(batch, singles):
        np.testing.assert_allclose(b.astype(int), s.astype(int), atol=1)
    assert mixed[1].shape == (24, 20, 3)


def test_stylizer_max_side_returns_full_size(style_models):
    from sdk import Stylizer, StylizerOptions

    paths, _ = style_models
    frame = _smooth_image(3, 64)
    with Stylizer.create_from_options(StylizerOptions(model_path=paths["tflite_fp32"],
                                                      max_side=32)) as st:
        assert st(frame).shape == (64, 64, 3)
        assert st(frame[:9, :11]).shape == (9, 11, 3)   # border clipped to what reflection allows


def test_stylizer_typed_errors_for_bad_input(style_models):
    from sdk import Stylizer

    paths, _ = style_models
    with Stylizer(paths["tflite_fp32"]) as st:
        with pytest.raises(InputDtypeError):
            st(np.zeros((32, 32, 3), np.float32))
        with pytest.raises(InputShapeError):
            st(np.zeros((2, 32, 32, 3), np.uint8))
        with pytest.raises(InputShapeError):
            st(np.zeros((4, 32, 3), np.uint8))
        with pytest.raises(InputError):
            st([[1, 2, 3]])
        with pytest.raises(InputError):
            st.stylize_batch("frames")
        assert st(np.zeros((32, 32), np.uint8)).shape == (32, 32, 3)  # grey is accepted
        # ... after the same size check as a BGR frame (OpenCV fails on an empty array)
        for tiny in (np.zeros((0, 0), np.uint8), np.zeros((2, 2, 4), np.uint8)):
            with pytest.raises(InputShapeError, match="too small"):
                st(tiny)


def test_stylizer_rejects_wrong_kind_and_missing_model(style_models, tmp_path):
    from sdk import Stylizer, StylizerOptions

    paths, _ = style_models
    with pytest.raises(ModelKindError, match="generic"):
        Stylizer.create_from_options(StylizerOptions(model_path=paths["wrong_kind"]))
    with pytest.raises(ModelNotFoundError):
        Stylizer.create_from_model_path(tmp_path / "absent.tflite")
    with pytest.raises(ValueError):
        StylizerOptions(model_path="x", running_mode="live")
    with pytest.raises(ValueError):
        StylizerOptions(model_path="x", smoothing=1.0)
    # NaN used to switch the scene-cut check off; a float border or a str max_side failed
    # later, inside OpenCV or as a bare TypeError
    for bad, message in (({"scene_cut": float("nan")}, "finite"), ({"border": 2.5}, "int"),
                         ({"max_side": "64"}, "int"), ({"smoothing": float("nan")}, "finite")):
        with pytest.raises(ValueError, match=message):
            StylizerOptions(model_path="x", **bad)


def test_stylizer_close_twice_and_use_after_close(style_models):
    from sdk import Stylizer

    paths, _ = style_models
    st = Stylizer(paths["tflite_fp32"])   # opens lazily
    st(_smooth_image(1, 32))
    st.close()
    st.close()
    with pytest.raises(ClosedError, match="closed"):
        st(_smooth_image(1, 32))


def test_video_mode_reduces_flicker_and_resets_on_scene_cut(style_models):
    from sdk import Stylizer, StylizerOptions

    paths, _ = style_models
    rng = np.random.default_rng(11)
    still = _smooth_image(50, 48).astype(np.float64)
    frames = [np.clip(still + rng.normal(0, 12, still.shape), 0, 255).astype(np.uint8)
              for _ in range(8)]

    def flicker(outputs):
        return np.mean([np.abs(a.astype(float) - b.astype(float)).mean()
                        for a, b in zip(outputs, outputs[1:])])

    with Stylizer(paths["onnx_fp32"]) as image_mode:
        independent = [image_mode(f) for f in frames]
    opts = StylizerOptions(model_path=paths["onnx_fp32"], running_mode="video", smoothing=0.7)
    with Stylizer.create_from_options(opts) as video:
        smoothed = [video(f) for f in frames]
        assert flicker(smoothed) < 0.6 * flicker(independent)
        other = _smooth_image(99, 48)   # a cut: output must be that frame's own stylisation
        with Stylizer(paths["onnx_fp32"]) as image_mode:
            expected = image_mode(other)
        np.testing.assert_array_equal(video(other), expected)
        video.reset()
        np.testing.assert_array_equal(video(frames[0]), independent[0])


# --- peers and export options ------------------------------------------------------------


def test_tfjs_reader_rejects_a_size_mismatch(tmp_path):
    import json

    from export.style.peers import read_tfjs_raw

    (tmp_path / "manifest.json").write_text(json.dumps(
        {"Variable": {"filename": "Variable", "shape": [2, 3]}}))
    np.arange(5, dtype="<f4").tofile(tmp_path / "Variable")
    with pytest.raises(ValueError, match="manifest says"):
        read_tfjs_raw(tmp_path)
    np.arange(6, dtype="<f4").tofile(tmp_path / "Variable")
    np.testing.assert_array_equal(read_tfjs_raw(tmp_path)[0], np.arange(6).reshape(2, 3))


def test_johnson_peer_rebuilds_from_tfjs_weights(tf):
    from export.style.peers import johnson_from_tfjs, read_tfjs_raw

    folder = shared_path("models", "peers", "johnson-fast-style", "udnie")
    model = johnson_from_tfjs(folder)
    # every variable of the folder is used once, in its order: each conv's kernel, then
    # its instance norm's shift and scale (the range check below holds for any weights)
    raw = read_tfjs_raw(folder)
    assert len(model.weights) == len(raw) == 48
    for w, r in zip(model.weights, raw):
        np.testing.assert_array_equal(np.asarray(w), r, err_msg=w.path)
    y = np.asarray(model(np.full((1, 32, 48, 3), 128.0, np.float32)))
    assert y.shape == (1, 32, 48, 3)
    assert -23 <= y.min() and y.max() <= 278   # tanh * 150 + 127.5


def test_export_format_groups():
    from export.style.release import expand_formats

    assert expand_formats(["tflite"]) == ["tflite_fp32", "tflite_fp16", "tflite_int8"]
    assert expand_formats(["onnx", "onnx_fp32"]) == ["onnx_fp32", "onnx_int8"]
    with pytest.raises(ValueError, match="unknown format"):
        expand_formats(["tensorrt"])


def test_results_markdown_from_the_summary():
    """The docs table is generated from results.json: one row per content × style,
    ratios and times taken from the record, a missing precision shown as '–'."""
    from export.style.evaluate import results_markdown

    row = {"content": "c", "style": "s", "size": [256, 172],
           "optimizer": {"J_style": 1.0e4, "J_content": 1.0e8, "seconds": 40.0},
           "student_fp32": {"J_style": 3.0e4, "J_content": 2.5e8, "seconds": 0.025,
                            "J_style_vs_optimizer": 3.0, "J_content_vs_optimizer": 2.5,
                            "speedup": 1600.0}}
    table = results_markdown({"results": [row]}).splitlines()
    assert len(table) == 3
    cells = [c.strip() for c in table[2].strip("|").split("|")]
    assert cells[:3] == ["c", "s", "256×172"]
    assert cells[6:9] == ["3.00e4 (3.00)", "2.50e8 (2.50)", "25"]
    assert cells[9:12] == ["–", "–", "–"] and cells[12] == "1600×"


def test_reuse_optimizer_only_on_matching_settings(tmp_path):
    import json

    from export.style.evaluate import _earlier_optimizer
    from export.style.train import write_rgb

    entry = {"content": "c", "style": "s", "alpha": 1.0, "beta": 5e3, "gamma": 0.05,
             "size": [32, 32]}
    image = np.full((32, 32, 3), 77, np.uint8)
    write_rgb(tmp_path / "c_s_optimizer.png", image)
    (tmp_path / "results.json").write_text(json.dumps(
        {"max_side": 256, "iterations": 300,
         "results": [{**entry, "optimizer": {"seconds": 54.1}}]}))
    got, seconds = _earlier_optimizer(tmp_path, entry, 300, 256)
    assert seconds == 54.1 and (got == 77).all()
    assert _earlier_optimizer(tmp_path, {**entry, "beta": 3e4}, 300, 256) is None
    # results written before the loss network was recorded were SqueezeNet's
    assert _earlier_optimizer(tmp_path, {**entry, "loss_network": "squeezenet"}, 300, 256)
    assert _earlier_optimizer(tmp_path, {**entry, "loss_network": "vgg19"}, 300, 256) is None
    assert _earlier_optimizer(tmp_path, entry, 200, 256) is None
    assert _earlier_optimizer(None, entry, 300, 256) is None
    with pytest.raises(FileNotFoundError, match="results.json"):
        _earlier_optimizer(tmp_path / "nowhere", entry, 300, 256)


def test_geometric_means_of_the_ratios():
    from export.style.evaluate import geometric_means

    rows = [{"student_fp32": {"J_style_vs_optimizer": 2.0, "J_content_vs_optimizer": 1.0}},
            {"student_fp32": {"J_style_vs_optimizer": 8.0, "J_content_vs_optimizer": 4.0},
             "student_int8": {"J_style_vs_optimizer": 3.0, "J_content_vs_optimizer": 5.0}}]
    gm = geometric_means(rows)
    assert gm["student_fp32"] == {"J_style": 4.0, "J_content": 2.0}
    assert gm["student_int8"] == {"J_style": 3.0, "J_content": 5.0}


def test_bench_ratios_to_the_optimizer_on_the_same_frame(style_models, random_extractor):
    """`export style bench --optimizer-iterations N`: the optimiser's output joins the
    cost table, every output gets its ratio to it, and the optimiser's own ratio is 1."""
    from export.style.bench import bench

    paths, _ = style_models
    content, style = _smooth_image(40, 48), _smooth_image(41, 48)
    plain = bench({"tiny fp32": paths["tflite_fp32"]}, content, style, size=32, threads=(1,),
                  runs=1, warmup=0, johnson=False, extractor=random_extractor,
                  costs=_few_layers())
    assert plain["optimizer_seconds"] is None
    assert "J_style_vs_optimizer" not in plain["strength"]["tiny fp32"]
    result = bench({"tiny fp32": paths["tflite_fp32"]}, content, style, size=32, threads=(1,),
                   runs=1, warmup=0, johnson=False, extractor=random_extractor,
                   costs=_few_layers(), optimizer_iterations=3)
    strength = result["strength"]
    assert set(strength) == {"tiny fp32", "optimizer (3 it.)"}
    assert strength["optimizer (3 it.)"]["J_style_vs_optimizer"] == pytest.approx(1.0)
    ours = strength["tiny fp32"]
    assert ours["J_style_vs_optimizer"] == pytest.approx(
        ours["J_style"] / strength["optimizer (3 it.)"]["J_style"])
    assert ours["J_style"] == pytest.approx(plain["strength"]["tiny fp32"]["J_style"], rel=1e-5)
    assert result["images"]["optimizer (3 it.)"].shape == (32, 32, 3)
    # every output's 2-px grain is the training penalty's value on it: on the model's own
    # (float, clipped) output for the resized frame, which the reported uint8 image rounds;
    # and the photo's own grain is the penalty's value on the resized photo
    import cv2

    import sdk
    from export.style.losses import grain

    x = cv2.resize(content, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)[None]
    with sdk.load_model(paths["tflite_fp32"], threads=1) as m:
        y = np.clip(m(x), 0, 255).astype(np.float32)
    np.testing.assert_array_equal(result["images"]["tiny fp32"],
                                  np.rint(y[0]).astype(np.uint8))
    assert ours["grain"] == pytest.approx(float(grain(y)[0]), rel=1e-5)
    assert result["content_grain"] == pytest.approx(float(grain(x)[0]), rel=1e-5)
    assert result["content_grain"] != pytest.approx(ours["grain"], rel=1e-2)


def test_evaluate_runs_student_and_optimizer_with_the_chosen_beta(style_models, random_extractor,
                                                                 tmp_path):
    """`export style evaluate` end to end on the tiny student: costs, ratios, grid; the
    optimiser uses the file's β unless --optimizer-beta says otherwise."""
    from export.style.evaluate import evaluate
    from export.style.train import write_rgb

    paths, _ = style_models
    write_rgb(tmp_path / "styles" / "tiny.jpg", _smooth_image(50, 48))
    write_rgb(tmp_path / "content" / "c1.png", _smooth_image(51, 40))
    models = {"tiny": {"fp32": paths["tflite_fp32"]}}
    kw = dict(max_side=32, iterations=2, repeats=1, extractor=random_extractor,
              costs=_few_layers())
    own = evaluate(models, tmp_path / "styles", tmp_path / "content", tmp_path / "own", **kw)
    chosen = evaluate(models, tmp_path / "styles", tmp_path / "content", tmp_path / "chosen",
                      optimizer_beta=123.0, **kw)
    assert own["results"][0]["beta"] == 3e4                # the tiny file records no β
    assert chosen["results"][0]["beta"] == 123.0 and chosen["optimizer_beta"] == 123.0
    r = chosen["results"][0]
    assert r["student_fp32"]["J_style"] > 0 and r["optimizer"]["J_style"] > 0
    assert r["student_fp32"]["J_style_vs_optimizer"] > 0
    assert (tmp_path / "chosen" / "grid.png").is_file()
    assert (tmp_path / "chosen" / "results.md").read_text().count("| c1 |") == 1
    # several earlier evaluations: the one whose optimiser settings match is read back
    again = evaluate(models, tmp_path / "styles", tmp_path / "content", tmp_path / "again",
                     optimizer_beta=123.0, reuse_optimizer=[tmp_path / "own", tmp_path / "chosen"],
                     **kw)
    assert again["results"][0]["optimizer"]["reused_from"] == str(tmp_path / "chosen")
    # a student is scored with the loss network it was trained against, never another
    import dataclasses

    other = dataclasses.replace(_few_layers(), network="vgg19", layers=None)
    with pytest.raises(ValueError, match="trained with the squeezenet loss network"):
        evaluate(models, tmp_path / "styles", tmp_path / "content", tmp_path / "vgg",
                 **{**kw, "costs": other})
    # an earlier result of another loss network is never read back as this one's optimum
    import json

    summary = json.loads((tmp_path / "chosen" / "results.json").read_text())
    assert summary["results"][0]["loss_network"] == "squeezenet"
    summary["results"][0]["loss_network"] = "vgg19"
    (tmp_path / "chosen" / "results.json").write_text(json.dumps(summary))
    fresh = evaluate(models, tmp_path / "styles", tmp_path / "content", tmp_path / "fresh",
                     optimizer_beta=123.0, reuse_optimizer=[tmp_path / "chosen"], **kw)
    assert "reused_from" not in fresh["results"][0]["optimizer"]


def test_files_record_their_loss_layers_and_are_scored_with_them(style_models, tiny_student,
                                                               random_extractor, tmp_path,
                                                               capsys):
    """A newly exported file records its loss-network layers and their λ; evaluate and
    bench score it with them (the defaults were used before), and say so when a file
    records none."""
    import dataclasses

    from export import formats
    from export.style.bench import bench
    from export.style.evaluate import evaluate
    from export.style.lossnet import LayerChoice
    from export.style.optimize import layers_record, trained_layers
    from export.style.release import stylizer_info
    from export.style.train import TrainOptions, write_rgb

    few = _few_layers()
    options = TrainOptions(style="tiny.png", run_dir="x", costs=few)
    info = stylizer_info(tiny_student, options, 2)
    assert info.extra["content_layer"] == "fire2_concat"
    assert trained_layers(info.extra) == few.layer_choice
    recorded = formats.to_tflite(tiny_student, tmp_path / "tiny_fp32.tflite", info)
    write_rgb(tmp_path / "styles" / "tiny.jpg", _smooth_image(50, 48))
    write_rgb(tmp_path / "content" / "c1.png", _smooth_image(51, 40))
    kw = dict(max_side=32, iterations=1, repeats=1, extractor=random_extractor)
    # no costs given: the file's layers, not the default ones (which the extractor lacks)
    result = evaluate({"tiny": {"fp32": recorded}}, tmp_path / "styles", tmp_path / "content",
                      tmp_path / "rec", **kw)
    assert result["results"][0]["layers"] == layers_record(few.layer_choice)
    assert "records no loss-network layers" not in capsys.readouterr().out
    other = dataclasses.replace(few, layers=LayerChoice(content="fire2/concat",
                                                        style=(("relu_conv1", 1.0),)))
    with pytest.raises(ValueError, match="trained with the layers"):
        evaluate({"tiny": {"fp32": recorded}}, tmp_path / "styles", tmp_path / "content",
                 tmp_path / "other", costs=other, **kw)
    paths, _ = style_models   # a file that records no layers: the given ones, said so
    evaluate({"tiny": {"fp32": paths["tflite_fp32"]}}, tmp_path / "styles",
             tmp_path / "content", tmp_path / "old", costs=few, **kw)
    assert "tiny: the file records no loss-network layers" in capsys.readouterr().out
    content, style = _smooth_image(40, 48), _smooth_image(41, 48)
    got = bench({"tiny": recorded}, content, style, size=32, threads=(1,), runs=1, warmup=0,
                johnson=False, extractor=random_extractor)
    assert got["layers"] == layers_record(few.layer_choice)
    with pytest.raises(ValueError, match="record different loss networks or layers"):
        bench({"a": recorded, "b": paths["tflite_fp32"]}, content, style, size=32,
              threads=(1,), runs=1, warmup=0, johnson=False, extractor=random_extractor)
    assert "tflite records no loss-network layers" in capsys.readouterr().out


def test_released_students_reload_and_name_no_machine_paths(tf):
    """Every models/style/<style>_student/ is what `export style export` re-creates the
    files from: its config must parse, rebuild the student the files were made from and
    name no absolute path of the machine that trained it."""
    import json

    from export.style.release import portable_options
    from export.style.train import TrainOptions, load_run
    from sdk.paths import MODELS_DIR, REPO_ROOT

    kept = sorted((MODELS_DIR / "style").glob("*_student"))
    assert kept, "no released style student in models/style"
    for folder in kept:
        cfg = json.loads((folder / "config.json").read_text())
        for key in ("style", "run_dir", "content_dir", "samples_dir", "init"):
            assert cfg.get(key) is None or not Path(cfg[key]).is_absolute(), (folder, key)
        options, student, steps = load_run(folder, with_steps=True)
        assert steps > 0 and student.count_params() > 0
        assert folder.name == f"{options.style_name}_student"
    shared = REPO_ROOT.parent / "shared" / "data" / "x.jpg"
    moved = portable_options(TrainOptions(style=str(shared), run_dir="/elsewhere/run"))
    assert moved.style == "../shared/data/x.jpg" and moved.run_dir == "/elsewhere/run"


def test_bench_cli_writes_table_json_and_the_outputs_picture(style_models, tmp_path, capsys):
    import json
    import shutil

    from export.style.cli import main

    shared_path("models", "squeezenet1.1")
    shared_path("data", "style", "styles", "udnie.jpg")
    paths, _ = style_models
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(paths["tflite_fp32"], models / "udnie_fp32.tflite")
    out = tmp_path / "bench"
    assert main(["bench", "--models", str(models), "--style", "udnie", "--size", "64",
                 "--threads", "1", "--runs", "1", "--no-johnson", "--out", str(out)]) == 0
    result = json.loads((out / "bench.json").read_text())
    assert "ours udnie fp32 tflite" in result["strength"]
    assert (out / "outputs.png").stat().st_size > 0
    assert "| ours udnie fp32 tflite |" in capsys.readouterr().out


# --- apps/stylize_camera.py ------------------------------------------------------------


def _write_image(path: Path) -> Path:
    import cv2

    assert cv2.imwrite(str(path), _smooth_image(11, 64))
    return path


def test_stylize_camera_bad_source_or_out_is_one_line_and_exit_2(tmp_path, capsys):
    """Checked before the model is even opened: a missing --style does not mask them."""
    app = load_app("stylize_camera")
    image = _write_image(tmp_path / "photo.png")
    video = tmp_path / "clip.avi"
    video.write_bytes(b"not opened: the --out check comes first")
    style = str(tmp_path / "absent.onnx")
    cases = [
        ([str(image), "out.mp4"], "does not fit an image source"),   # image in, video out
        ([str(image), "out.xyz"], ".jpg/.jpeg/.png/.bmp/.webp"),     # unknown extension
        ([str(video), "out.png"], "does not fit a video source"),    # video in, image out
        ([str(tmp_path / "missing.jpg"), "out.jpg"], "neither a camera index nor an existing"),
        (["camera:x", "out.mp4"], "camera:INDEX"),
    ]
    for (source, out), message in cases:
        assert app.main(["--style", style, "--source", source,
                         "--out", str(tmp_path / out)]) == 2, source
        err = capsys.readouterr().err.strip()
        assert err.startswith("stylize_camera: error: ") and "\n" not in err, err
        assert message in err, err
    assert not list(tmp_path.glob("out.*"))


def test_source_kind_is_shared_and_camera_is_a_whole_word(tmp_path, monkeypatch):
    """apps/sources.py reads --source for both apps: "camera_clip.mp4" is a video file, not
    camera 0; a folder is a source only where the app reads folders (door_lock)."""
    app = load_app("stylize_camera")
    monkeypatch.chdir(tmp_path)
    Path("camera_clip.mp4").write_bytes(b"")
    Path("0").mkdir()
    assert app.source_kind("camera_clip.mp4") == ("video", "camera_clip.mp4")
    assert app.source_kind("camera") == app.source_kind("0", folders=False) == ("camera", 0)
    assert app.source_kind("camera:2") == ("camera", 2)
    assert app.source_kind("0") == ("folder", "0")
    Path("photos").mkdir()
    with pytest.raises(app.SourceError, match="is a folder; this app reads"):
        app.source_kind("photos", folders=False)
    Path("notes.txt").write_text("x")
    with pytest.raises(app.UsageError, match="read as a video"):
        app.check_out("x.jpg", app.source_kind("notes.txt", folders=False)[0])
    # .pgm holds grey images only: OpenCV cannot write a stylised frame to it
    Path("photo.png").write_bytes(b"x")
    with pytest.raises(app.UsageError, match="does not fit an image"):
        app.check_out("out.pgm", app.source_kind("photo.png", folders=False)[0])
    # a missing output folder is named before any work
    with pytest.raises(app.UsageError, match="does not exist"):
        app.check_out("no/such/folder/out.jpg", app.source_kind("photo.png", folders=False)[0])
    app.check_out("out.jpg", app.source_kind("photo.png", folders=False)[0])


def test_stylize_camera_overlay_only_on_video_by_default(style_models, tmp_path, monkeypatch):
    import cv2

    app = load_app("stylize_camera")
    paths, _ = style_models
    style = str(paths["onnx_fp32"])
    image = _write_image(tmp_path / "photo.png")
    drawn = []
    draw = app.draw_fps
    monkeypatch.setattr(app, "draw_fps", lambda *a: (drawn.append(a[2]), draw(*a)))

    base = ["--style", style, "--source", str(image)]
    assert app.main([*base, "--out", str(tmp_path / "plain.png")]) == 0
    assert drawn == []  # a still image: no overlay unless asked
    assert app.main([*base, "--out", str(tmp_path / "fps.png"), "--overlay"]) == 0
    assert len(drawn) == 1
    plain, fps = (cv2.imread(str(tmp_path / n)) for n in ("plain.png", "fps.png"))
    assert plain.shape == fps.shape == (64, 64, 3) and (plain != fps).any()

    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 64))
    assert writer.isOpened()
    for _ in range(3):
        writer.write(plain)
    writer.release()
    drawn.clear()
    video = ["--style", style, "--source", str(clip), "--max-frames", "2"]
    assert app.main([*video, "--out", str(tmp_path / "fps.mp4")]) == 0
    assert len(drawn) == 2  # a video: overlay by default, once per frame
    assert app.main([*video, "--out", str(tmp_path / "plain.avi"), "--no-overlay"]) == 0
    assert len(drawn) == 2
    cap = cv2.VideoCapture(str(tmp_path / "fps.mp4"))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 2
    cap.release()


def test_stylize_camera_records_a_camera_at_the_rate_frames_come(style_models, tmp_path,
                                                                 monkeypatch):
    """A camera's recording is written at the measured stylizing rate, not the camera's
    nominal one (a file played back fast); a short run writes its held frames too."""
    import cv2

    app = load_app("stylize_camera")
    paths, _ = style_models
    image = cv2.imread(str(_write_image(tmp_path / "photo.png")))
    clip = tmp_path / "clip.avi"   # stands in for the camera: nominally 10 FPS
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 64))
    for k in range(15):
        writer.write(np.roll(image, k, axis=1))
    writer.release()
    monkeypatch.setattr(app, "source_kind", lambda source, folders=True: (app.CAMERA, source))
    base = ["--style", str(paths["onnx_fp32"]), "--source", str(clip), "--no-overlay"]
    held = {}
    rate = app.video_rate
    monkeypatch.setattr(app, "video_rate", lambda cap, kind, frames: held.setdefault(
        "rate", rate(cap, kind, frames)))
    assert app.main([*base, "--out", str(tmp_path / "cam.avi")]) == 0
    cap = cv2.VideoCapture(str(tmp_path / "cam.avi"))
    written, frames = cap.get(cv2.CAP_PROP_FPS), int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    assert frames == 15 and held["rate"] != 10.0 and written == pytest.approx(held["rate"],
                                                                              rel=0.01)
    assert held["rate"] <= app.MAX_CAMERA_FPS  # a file read faster than any camera
    assert app.main([*base, "--out", str(tmp_path / "short.avi"), "--max-frames", "3"]) == 0
    cap = cv2.VideoCapture(str(tmp_path / "short.avi"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    cap.release()


def test_stylize_camera_rate_of_a_camera_is_measured_and_bounded():
    """Measured from the frames' times, bounded by MAX_CAMERA_FPS: OpenCV's AVI writer
    kept 9 of 15 frames at the 1012 FPS a fast machine measured here."""
    app = load_app("stylize_camera")
    frame = np.zeros((4, 4, 3), np.uint8)

    class Cap:
        def get(self, prop):
            return 12.5

    slow = [(0.5 * k, frame) for k in range(10)]
    fast = [(0.001 * k, frame) for k in range(10)]
    assert app.video_rate(Cap(), app.CAMERA, slow) == pytest.approx(2.0)
    assert app.video_rate(Cap(), app.CAMERA, fast) == app.MAX_CAMERA_FPS
    assert app.video_rate(Cap(), app.CAMERA, fast[:1]) == 12.5   # one frame: nominal
    assert app.video_rate(Cap(), app.VIDEO, fast) == 12.5        # a file keeps its own


def test_stylize_camera_warns_when_a_video_is_cut_short(style_models, tmp_path, capsys):
    """A video that gives fewer frames than it declares is said to be cut or damaged;
    a complete one, or one stopped by --max-frames, is not."""
    import cv2

    app = load_app("stylize_camera")
    paths, _ = style_models
    image = cv2.imread(str(_write_image(tmp_path / "photo.png")))
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 64))
    for k in range(12):
        writer.write(np.roll(image, k, axis=1))
    writer.release()
    base = ["--style", str(paths["onnx_fp32"]), "--no-overlay"]
    assert app.main([*base, "--source", str(clip), "--out", str(tmp_path / "a.avi")]) == 0
    assert app.main([*base, "--source", str(clip), "--out", str(tmp_path / "b.avi"),
                     "--max-frames", "3"]) == 0
    assert "warning" not in capsys.readouterr().err
    cut = tmp_path / "cut.avi"
    data = clip.read_bytes()
    cut.write_bytes(data[: len(data) // 2] + data[-2048:])   # frames gone, index kept
    cap = cv2.VideoCapture(str(cut))
    declared = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    assert declared == 12
    assert app.main([*base, "--source", str(cut), "--out", str(tmp_path / "c.avi")]) == 0
    err = capsys.readouterr().err
    assert "of the 12 frames the video declares were read" in err


def test_demo_style_refuses_bad_sizes_and_threads_in_one_line(capsys):
    """--max-side 0 reached OpenCV's resize and --threads 0 the runtime, each with a
    traceback; both are refused by the parser now."""
    demo = load_app("demo_style")
    for args, message in ((["--max-side", "0"], "--max-side"), (["--threads", "0"], "--threads")):
        with pytest.raises(SystemExit) as stop:
            demo.main(args)
        assert stop.value.code == 2 and message in capsys.readouterr().err


def test_stylize_camera_keeps_the_last_row_and_column_of_odd_frames(style_models, tmp_path,
                                                                    monkeypatch):
    """OpenCV's writers drop the last row/column of an odd-sized frame: the app pads it
    by one repeated edge pixel instead, so the whole picture is in the video."""
    import cv2

    from sdk import Stylizer

    app = load_app("stylize_camera")
    frame = np.zeros((5, 7, 3), np.uint8)
    frame[-1, :] = 200          # the rows/columns a writer would drop
    frame[:, -1] = 100
    even = app.even_frame(frame)
    assert even.shape == (6, 8, 3)
    np.testing.assert_array_equal(even[:5, :7], frame)
    np.testing.assert_array_equal(even[5, :7], frame[4])
    np.testing.assert_array_equal(even[:, 7], even[:, 6])
    assert app.even_frame(even) is even

    paths, _ = style_models
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 64))
    for _ in range(3):
        writer.write(np.full((64, 64, 3), 30, np.uint8))
    writer.release()

    def odd_bright_edges(self, image):   # a 63x61 output with bright last row and column
        out = np.full((63, 61, 3), 30, np.uint8)
        out[-1, :] = 220
        out[:, -1] = 220
        return out

    monkeypatch.setattr(Stylizer, "__call__", odd_bright_edges)
    out = tmp_path / "odd.avi"
    assert app.main(["--style", str(paths["onnx_fp32"]), "--no-overlay",
                     "--source", str(clip), "--out", str(out)]) == 0
    cap = cv2.VideoCapture(str(out))
    ok, got = cap.read()
    cap.release()
    assert ok and got.shape == (64, 62, 3)
    # MJPG is lossy: the kept edge is bright, the picture's inside dark
    assert got[62, 5:55].mean() > 150 and got[5:55, 60].mean() > 150
    assert got[5:55, 5:55].mean() < 60


def test_stylize_camera_runtime_failure_mid_stream_is_one_line(style_models, tmp_path,
                                                               monkeypatch, capsys):
    """A runtime error on the third frame: exit 1 with one line naming the frame, the two
    frames already stylised stay in the written video, and no traceback."""
    import cv2

    from sdk import Stylizer
    from sdk.errors import InferenceError

    app = load_app("stylize_camera")
    paths, _ = style_models
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 64))
    for i in range(4):
        writer.write(np.full((64, 64, 3), 40 * i, np.uint8))
    writer.release()
    real, calls = Stylizer.__call__, []

    def flaky(self, frame):
        calls.append(1)
        if len(calls) == 3:
            raise InferenceError("the runtime failed")
        return real(self, frame)

    monkeypatch.setattr(Stylizer, "__call__", flaky)
    out = tmp_path / "out.avi"
    assert app.main(["--style", str(paths["onnx_fp32"]), "--source", str(clip),
                     "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["stylize_camera: error: frame 2: the runtime failed"]
    cap = cv2.VideoCapture(str(out))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 2
    cap.release()


def test_recalibrate_batchnorm_averages_the_batch_statistics(tf):
    """The inference statistics become the plain mean of the batches' means and
    variances (not the moving average's last few), and momentum is restored."""
    import keras

    from export.style.train import batchnorm_layers, recalibrate_batchnorm

    inner = keras.Sequential([keras.Input((3, 3, 2)), keras.layers.BatchNormalization(momentum=0.9)])
    model = keras.Sequential([keras.Input((3, 3, 2)), keras.layers.Identity(), inner])
    (bn,) = batchnorm_layers(model)
    rng = np.random.default_rng(0)
    batches = [rng.normal(loc=k, scale=1 + k, size=(4, 3, 3, 2)).astype(np.float32)
               for k in range(5)]
    assert recalibrate_batchnorm(model, iter(batches)) == 5
    means = [b.mean(axis=(0, 1, 2)) for b in batches]
    variances = [b.var(axis=(0, 1, 2)) for b in batches]
    np.testing.assert_allclose(bn.moving_mean.numpy(), np.mean(means, axis=0), rtol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), np.mean(variances, axis=0), rtol=1e-4)
    assert bn.momentum == 0.9
    with pytest.raises(ValueError, match="at least one batch"):
        recalibrate_batchnorm(model, iter([]))


def test_recalibrate_run_refuses_an_existing_directory(tmp_path):
    from export.style.train import recalibrate_run

    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="exists and is not empty"):
        recalibrate_run(tmp_path / "run", tmp_path / "old")
    with pytest.raises(ValueError, match="exists and is not empty"):
        recalibrate_run(tmp_path / "run", tmp_path / "old" / "config.json")
