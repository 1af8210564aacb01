"""``python -m export style <command>``: the Gatys optimiser, student training and export.

    python -m export style optimize --content C.jpg --style S.jpg --out G.png
    python -m export style train --style ../shared/data/style/styles/udnie.jpg
    python -m export style export --run runs/style/udnie --out models/style
    python -m export style evaluate --models models/style --out runs/style/evaluate
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from sdk.paths import REPO_ROOT, SHARED_DIR

from ..tf_threads import set_threads
from .student import STAGES

RUNS = REPO_ROOT / "runs" / "style"
STYLES = SHARED_DIR / "data" / "style" / "styles"


def _costs(args: argparse.Namespace):
    from .lossnet import DEFAULT_LAYERS, LayerChoice, layer_name
    from .optimize import CostWeights

    layers = None
    if args.content_layer or args.style_layers:
        base = DEFAULT_LAYERS[args.network]
        style = base.style
        if args.style_layers:
            pairs = [item.split("=") for item in args.style_layers.split(",")]
            style = tuple((layer_name(p[0]), float(p[1]) if len(p) > 1 else 1.0 / len(pairs))
                          for p in pairs)
        layers = LayerChoice(content=layer_name(args.content_layer or base.content), style=style)
    return CostWeights(alpha=args.alpha, beta=args.beta, gamma=args.tv, network=args.network,
                       layers=layers)


def _add_cost_args(p: argparse.ArgumentParser) -> None:
    from .optimize import CostWeights

    d = CostWeights()
    g = p.add_argument_group("costs: J = alpha*J_content + beta*J_style + tv*TV")
    g.add_argument("--alpha", type=float, default=d.alpha)
    g.add_argument("--beta", type=float, default=d.beta)
    g.add_argument("--tv", type=float, default=d.gamma, help="total-variation weight gamma")
    g.add_argument("--network", choices=("squeezenet", "vgg19"), default=d.network,
                   help="loss network (squeezenet: local weights; vgg19: --vgg-weights or Keras cache)")
    g.add_argument("--content-layer", default=None, help="e.g. fire4/concat")
    g.add_argument("--style-layers", default=None,
                   help="comma list of layer[=lambda], e.g. relu_conv1=0.5,fire3/concat=0.5")
    g.add_argument("--vgg-weights", default=None,
                   help="local VGG19 notop weights file (else Keras' cache/download)")


def _side(text: str) -> int:
    """An image side the loss network can measure (argparse type): an int >= MIN_SIDE."""
    from .optimize import MIN_SIDE

    try:
        side = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int, got {text!r}") from None
    if side < MIN_SIDE:
        # refused here, not after the models are loaded: TensorFlow would fail inside a
        # pooling layer of the loss network
        raise argparse.ArgumentTypeError(f"{side} px is too small for the loss network; "
                                         f"at least {MIN_SIDE}")
    return side


def _extractor(args: argparse.Namespace, costs):
    from .lossnet import feature_extractor

    weights = "default"
    if costs.network == "vgg19" and args.vgg_weights:
        weights = args.vgg_weights
    return feature_extractor(costs.network, costs.layer_choice.names, weights=weights)


def _optimize(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    from .optimize import OptimizeOptions, optimize, save_loss_curve
    from .train import read_rgb, write_rgb

    costs = _costs(args)
    options = OptimizeOptions(iterations=args.iterations, method=args.method,
                              learning_rate=args.lr, init=args.init, max_side=args.max_side,
                              seed=args.seed, costs=costs)
    content, style = read_rgb(args.content), read_rgb(args.style)
    result = optimize(content, style, options, extractor=_extractor(args, costs))
    out = Path(args.out)
    write_rgb(out, result.image)
    curve = Path(args.curve) if args.curve else out.with_name(out.stem + "_loss.png")
    save_loss_curve(result.history, curve,
                    f"{Path(args.content).stem} x {Path(args.style).stem} ({args.method})")
    h = result.history
    print(json.dumps({"out": str(out), "loss_curve": str(curve), "seconds": round(result.seconds, 2),
                      "J": h["J"][-1], "J_content": h["J_content"][-1],
                      "J_style": h["J_style"][-1]}))
    return 0


def _scale_range(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise SystemExit(f"--scale takes LO,HI (e.g. 1,2), got {text!r}") from None
    return lo, hi


def _train(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    from .student import StudentConfig
    from .train import TrainOptions, train

    style = Path(args.style)
    if not style.is_file() and (STYLES / f"{args.style}.jpg").is_file():
        style = STYLES / f"{args.style}.jpg"  # a bare style name
    if not style.is_file():
        print(f"style image not found: {args.style}", file=sys.stderr)
        return 2
    run = Path(args.run) if args.run else RUNS / style.stem
    try:
        options = TrainOptions(style=str(style), run_dir=str(run), content_dir=args.content_dir,
                               steps=args.steps, batch_size=args.batch, crop=args.crop,
                               learning_rate=args.lr, costs=_costs(args),
                               distill_images=args.distill_images,
                               distill_weight=args.distill_weight,
                               teacher_iterations=args.teacher_iterations,
                               sample_every=args.sample_every,
                               checkpoint_every=args.checkpoint_every,
                               student=StudentConfig(base=args.base, blocks=args.blocks,
                                                     stages=args.stages),
                               seed=args.seed, limit=args.limit, init=args.init,
                               grain_weight=args.grain, freeze_batchnorm=args.freeze_bn,
                               scale_range=_scale_range(args.scale),
                               extra_crops=tuple(int(c) for c in args.extra_crops.split(",")
                                                 if c.strip()),
                               balance_crop=args.balance_crop)
    except ValueError as e:  # an impossible combination of options: say which, no traceback
        print(f"train: {e}", file=sys.stderr)
        return 2
    # the loss network the options name, with --vgg-weights' local file where given
    final = train(options, resume=args.resume, extractor=_extractor(args, options.costs))
    print(f"weights: {final}")
    return 0


def _recalibrate(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    from .train import recalibrate_run

    out = recalibrate_run(args.run, args.out, batches=args.batches, seed=args.seed,
                          crop=args.crop)
    print(f"batch-norm statistics averaged over {args.batches} batches: {out} "
          f"(export it with: python -m export style export --run {out})")
    return 0


def _export(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    from .release import export_run

    runs = [Path(r) for r in args.run] if args.run else sorted(Path(args.out).glob("*_student"))
    if not runs:
        print(f"nothing to export: no --run given and no <style>_student/ in {args.out}",
              file=sys.stderr)
        return 2
    for run in runs:
        report = export_run(run, args.out, calibration_dir=args.calibration_dir,
                            formats=args.formats.split(","))
        print(json.dumps(report, indent=1))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    from sdk.style import stylizer_paths

    from .evaluate import evaluate

    precisions = args.precisions.split(",")
    models: dict = {}
    for precision in precisions:
        for style, path in stylizer_paths(args.models, precision, args.format).items():
            if not args.styles or style in args.styles.split(","):
                models.setdefault(style, {})[precision] = path
    if not models:
        print(f"no stylizers in {args.models}", file=sys.stderr)
        return 2
    evaluate(models, args.styles_dir, args.content_dir, args.out, max_side=args.max_side,
             iterations=args.iterations, threads=args.threads,
             reuse_optimizer=args.reuse_optimizer, optimizer_beta=args.optimizer_beta,
             vgg_weights=args.vgg_weights)
    return 0


def _bench(args: argparse.Namespace) -> int:
    from .bench import bench
    from .train import read_rgb, write_rgb

    models = {}
    for name in ("fp32.tflite", "fp16.tflite", "int8.tflite", "fp32.onnx", "int8.onnx"):
        path = Path(args.models) / f"{args.style}_{name}"
        if path.is_file():
            models[f"ours {args.style} {name.replace('.', ' ')}"] = path
    if not models:
        print(f"no {args.style}_* models in {args.models}", file=sys.stderr)
        return 2
    threads = tuple(int(t) for t in args.threads.split(","))
    result = bench(models, read_rgb(args.content), read_rgb(Path(STYLES) / f"{args.style}.jpg"),
                   size=args.size, threads=threads, runs=args.runs, johnson=not args.no_johnson,
                   optimizer_iterations=args.optimizer_iterations)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images = result.pop("images")
    for label, im in images.items():
        write_rgb(out / (label.split(" (")[0].replace(" ", "_") + ".png"), im)
    # one picture of every output side by side (the first of each of our files' groups
    # is enough: precisions look alike, their costs are in the table)
    from .evaluate import picture_grid

    first_ours = next((k for k in images if k.startswith("ours")), None)
    shown = {k: v for k, v in images.items() if not k.startswith("ours") or k == first_ours}
    side = min(256, args.size)
    write_rgb(out / "outputs.png", picture_grid([list(shown.values())],
                                                [k.split(" (")[0][:30] for k in shown],
                                                cell=(side, side)))
    (out / "bench.json").write_text(json.dumps(result, indent=1))
    print("| model | threads | ms | runtime | KiB |\n|---|---|---|---|---|")
    for r in result["latency"]:
        print(f"| {r['model']} | {r['threads']} | {r['ms']} | {r['runtime']} | "
              f"{r['bytes'] / 1024:.0f} |")
    print(f"\n2-px grain (export/style/losses.py grain): the photo itself "
          f"{result['content_grain']:.0f}")
    if result["optimizer_seconds"] is None:
        print("\n| output | J_style | J_content | grain |\n|---|---|---|---|")
        for k, v in result["strength"].items():
            print(f"| {k} | {v['J_style']:.4g} | {v['J_content']:.4g} | {v['grain']:.0f} |")
    else:
        print(f"\noptimiser: {result['optimizer_seconds']} s, {result['optimizer_costs']}")
        print("\n| output | J_style (× optimiser) | J_content (× optimiser) | grain |\n"
              "|---|---|---|---|")
        for k, v in result["strength"].items():
            print(f"| {k} | {v['J_style']:.3g} ({v['J_style_vs_optimizer']:.2f}) | "
                  f"{v['J_content']:.3g} ({v['J_content_vs_optimizer']:.2f}) | "
                  f"{v['grain']:.0f} |")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m export style``; returns the exit status."""
    from .optimize import OptimizeOptions
    from .train import CONTENT_TRAIN, TrainOptions

    parser = argparse.ArgumentParser(prog="python -m export style",
                                     description="Gatys optimiser, fast style network, export")
    sub = parser.add_subparsers(dest="command", required=True)

    o = OptimizeOptions()
    p = sub.add_parser("optimize", help="stylise one image by optimising its pixels (Gatys)")
    p.add_argument("--content", required=True)
    p.add_argument("--style", required=True)
    p.add_argument("--out", required=True, help="output image (PNG/JPG)")
    p.add_argument("--curve", default=None, help="loss-curve PNG (default: <out>_loss.png)")
    p.add_argument("--method", choices=("adam", "lbfgs"), default=o.method)
    p.add_argument("--iterations", type=int, default=o.iterations)
    p.add_argument("--lr", type=float, default=o.learning_rate, help="Adam step (pixels)")
    p.add_argument("--init", choices=("content", "noise"), default=o.init)
    p.add_argument("--max-side", type=_side, default=o.max_side)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="TensorFlow CPU threads")
    _add_cost_args(p)
    p.set_defaults(func=_optimize)

    t = TrainOptions(style="x", run_dir="x")
    p = sub.add_parser("train", help="train the fast student for one style")
    p.add_argument("--style", required=True, help="style image, or a name in ../shared styles")
    p.add_argument("--run", default=None, help="run directory (default runs/style/<style>)")
    p.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    p.add_argument("--init", default=None, metavar="RUN",
                   help="start from an earlier run's student weights (same --base/--blocks/"
                        "--stages), e.g. to continue on larger --crop; fresh optimiser and steps")
    p.add_argument("--content-dir", default=str(CONTENT_TRAIN))
    p.add_argument("--steps", type=int, default=t.steps)
    p.add_argument("--batch", type=int, default=t.batch_size)
    p.add_argument("--crop", type=int, default=t.crop)
    p.add_argument("--lr", type=float, default=t.learning_rate)
    p.add_argument("--distill-images", type=int, default=t.distill_images)
    p.add_argument("--distill-weight", type=float, default=t.distill_weight)
    p.add_argument("--teacher-iterations", type=int, default=t.teacher_iterations)
    p.add_argument("--sample-every", type=int, default=t.sample_every)
    p.add_argument("--checkpoint-every", type=int, default=t.checkpoint_every)
    p.add_argument("--base", type=int, default=t.student.base, help="student width")
    p.add_argument("--blocks", type=int, default=t.student.blocks, help="residual blocks")
    p.add_argument("--stages", choices=STAGES, default=t.student.stages,
                   help="output stages: 'full' (convs at full resolution, the first releases) "
                        "or 'shuffle' (nothing at full resolution; pixel-shuffle output)")
    p.add_argument("--grain", type=float, default=t.grain_weight, metavar="W",
                   help="weight of the 2-pixel-grain penalty (pixel-shuffle students; "
                        "export/style/losses.py grain)")
    p.add_argument("--freeze-bn", action="store_true",
                   help="train the deployed function: batch norm in inference mode with the "
                        "--init run's statistics (e.g. a `recalibrate`d copy), never updated")
    p.add_argument("--scale", default=",".join(f"{v:g}" for v in t.scale_range),
                   metavar="LO,HI", help="each photo's short side is scaled to the crop times "
                                         "a draw from [LO, HI] before cropping (LO >= 1)")
    p.add_argument("--extra-crops", default="", metavar="N[,N...]",
                   help="further crop sides taken in turn with --crop (e.g. 384: every other "
                        "step on 384-px crops, beta's balance kept per size)")
    p.add_argument("--balance-crop", type=int, default=None, metavar="N",
                   help="the crop side beta's balance refers to (default: --crop); e.g. "
                        "--crop 384 --balance-crop 256 continues a 256-px student on 384-px "
                        "crops with the same beta")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, help="only the first N photos")
    p.add_argument("--threads", type=int, default=1, help="TensorFlow CPU threads (shared machine)")
    _add_cost_args(p)
    p.set_defaults(func=_train, beta=t.costs.beta)

    p = sub.add_parser("recalibrate", help="a copy of a trained student with its batch-norm "
                                           "statistics averaged over its training crops")
    p.add_argument("--run", required=True, help="training run or kept <style>_student/")
    p.add_argument("--out", required=True, help="where the copy goes (a new directory)")
    p.add_argument("--batches", type=int, default=64)
    p.add_argument("--crop", type=int, default=None,
                   help="side of the square crops (default: the run's training crop)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=_recalibrate)

    p = sub.add_parser("export", help="convert a trained student to TFLite/ONNX and check it")
    p.add_argument("--run", action="append", default=None,
                   help="training run directory (repeatable; default: every <style>_student/ "
                        "kept in --out by earlier exports)")
    p.add_argument("--out", default=str(REPO_ROOT / "models" / "style"))
    p.add_argument("--formats", default="tflite,onnx_fp32",
                   help="comma list: tflite (fp32+fp16+int8), onnx (fp32+int8 QDQ), or "
                        "tflite_fp32, tflite_fp16, tflite_int8, onnx_fp32, onnx_int8")
    p.add_argument("--calibration-dir", default=str(CONTENT_TRAIN),
                   help="real photos for int8 calibration")
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=_export)

    p = sub.add_parser("evaluate", help="student vs optimiser: costs, times, picture grid")
    p.add_argument("--models", default=str(REPO_ROOT / "models" / "style"))
    p.add_argument("--styles", default=None, help="comma list (default: all released)")
    p.add_argument("--precisions", default="fp32,int8")
    p.add_argument("--format", default=".tflite", choices=(".tflite", ".onnx"))
    p.add_argument("--styles-dir", default=str(STYLES))
    p.add_argument("--content-dir", default=str(SHARED_DIR / "data" / "style" / "content-samples"))
    p.add_argument("--out", default=str(RUNS / "evaluate"))
    p.add_argument("--max-side", type=_side, default=256)
    p.add_argument("--iterations", type=int, default=200)
    p.add_argument("--reuse-optimizer", action="append", default=None, metavar="DIR",
                   help="read matching optimiser results from an earlier evaluation's --out "
                        "instead of recomputing them (same content, style, size, costs, "
                        "iterations); repeat to search several")
    p.add_argument("--optimizer-beta", type=float, default=None, metavar="BETA",
                   help="the optimiser's beta instead of each file's training beta (J_content "
                        "grows with the pixel count: a 160-px-crop student's beta B balances "
                        "like B*(256/160)^2 on 256-px images)")
    p.add_argument("--vgg-weights", default=None,
                   help="local VGG19 notop weights file, for students trained against VGG19 "
                        "(each file is scored with its own loss network)")
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("bench", help="latency and style strength vs Magenta and Johnson")
    p.add_argument("--models", default=str(REPO_ROOT / "models" / "style"))
    p.add_argument("--style", default="udnie")
    p.add_argument("--content", default=str(SHARED_DIR / "data" / "style" / "content-samples" /
                                            "chicago.jpg"))
    p.add_argument("--size", type=_side, default=384)
    p.add_argument("--threads", default=f"1,{os.cpu_count() or 1}")
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--no-johnson", action="store_true")
    p.add_argument("--optimizer-iterations", type=int, default=0, metavar="N",
                   help="also run the Gatys optimiser N iterations on the frame and give every "
                        "output's costs as a ratio to its (300 in docs/RESULTS_style.md)")
    p.add_argument("--out", default=str(RUNS / "bench"))
    p.set_defaults(func=_bench)

    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return int(args.func(args) or 0)
