"""``python -m export nd speech|clips --out DIR``: a 1D and a 3D encoder end to end.

Builds the example data (cached in ``DIR/data.npz``), holds out a quarter of
the identities, trains with the triplet loss (checkpointed; rerun to resume),
calibrates τ on training identities, evaluates verification and one-shot
identification on the held-out ones, exports TFLite and ONNX with the contract,
checks each export through ``sdk.Encoder`` against Keras, and writes
``DIR/results.json`` and ``DIR/roc.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

EXAMPLES = {
    # name: (kind of input, first kernel, filters, embedding size, int8 TFLite possible)
    "speech": ("1D signal (frames, mel bins)", 5, (32, 64, 96), 64, True),
    "clips": ("3D clip (frames, h, w, 1)", 3, (8, 16, 32), 64, False),
}


class RunMismatchError(ValueError):
    """``--out`` holds a run made with other data or seed settings."""


def _settings(name: str, args) -> dict:
    """What the cached data, the held-out split and the checkpoint depend on."""
    data = ({"identities": args.identities, "samples": args.samples} if name == "speech" else
            {"images": str(Path(args.images).resolve()), "samples": args.samples,
             "frames": args.frames, "size": args.size})
    return {"example": name, "seed": args.seed, **data}


def _check_run_folder(name: str, args) -> None:
    """Refuse to reuse a folder made with other settings (its cache, split and checkpoint).

    The held-out identities are drawn from ``--seed`` and the data from the data options: a
    rerun with others would evaluate on identities the cached checkpoint trained on.
    """
    record = args.out / "settings.json"
    wanted = _settings(name, args)
    if record.is_file():
        had = json.loads(record.read_text())
        diff = {k: (had.get(k), v) for k, v in wanted.items() if had.get(k) != v}
        if diff:
            changes = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in diff.items())
            raise RunMismatchError(f"{args.out} was made with other settings ({changes}); its "
                                   "cached data, held-out split and checkpoint belong to them: "
                                   "give another --out or delete the folder")
    elif any((args.out / f).exists() for f in ("data.npz", "checkpoints")):
        raise RunMismatchError(f"{args.out} holds a run without settings.json (made before "
                               "runs recorded their settings): give another --out or delete it")
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(wanted, indent=1))


def _check_arguments(name: str, args) -> None:
    """Fail before any work on settings that cannot give a held-out evaluation."""
    if name == "speech" and args.identities < 8:
        # a quarter (at least 2) is held out; the rest must fill triplet batches with
        # several identities
        raise ValueError(f"--identities must be at least 8, got {args.identities}")
    if args.samples < 2:
        raise ValueError(f"--samples must be at least 2 (same-identity pairs), got {args.samples}")
    if args.steps < 1:
        raise ValueError(f"--steps must be positive, got {args.steps}")
    if name == "clips":
        if args.frames < 2 or args.size < 8:
            raise ValueError(f"--frames must be >= 2 and --size >= 8, got {args.frames}, "
                             f"{args.size}")
        if not Path(args.images).is_dir():
            raise FileNotFoundError(f"--images {args.images}: no such folder (AT&T/ORL faces, "
                                    "in ../shared/data/faces/att-orl)")


def _dataset(name: str, args) -> dict:
    cache = args.out / "data.npz"
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    if name == "speech":
        from .speech import make_dataset

        bar = tqdm(total=args.identities, desc="synthesising speakers", unit="spk", disable=None)
        data = make_dataset(args.identities, args.samples, seed=args.seed,
                            progress=lambda done, total: bar.update(done - bar.n))
        bar.close()
    else:
        from .clips import make_dataset

        data = make_dataset(args.images, clips_per_person=args.samples, frames=args.frames,
                            size=args.size, seed=args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(cache, **data)
    return data


def _augment(name: str):
    if name == "speech":
        def aug(x, rng):  # gain (a constant in log-mel) and a little noise
            return x + rng.normal(0, 0.5, (len(x), 1, 1)) + rng.normal(0, 0.2, x.shape)
        return aug

    def aug(x, rng):  # contrast/brightness jitter of the whole clip
        return np.clip(x * rng.uniform(0.8, 1.2, (len(x), 1, 1, 1, 1))
                       + rng.uniform(-20, 20, (len(x), 1, 1, 1, 1)), 0, 255)
    return aug


def _roc_png(path: Path, dist: np.ndarray, same: np.ndarray, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from export.faces.metrics import roc_curve

    far, tar, _ = roc_curve(dist, same)
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot(far, tar)
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set(xlabel="false accept rate", ylabel="true accept rate", title=title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(name: str, args) -> dict:
    from export import formats
    from export.encoders import build_encoder
    from export.faces.metrics import accuracy_at, best_threshold, roc_metrics
    from sdk.contract import ModelInfo, Preprocessing

    from .train import TrainOptions, all_pairs, embed, rank1_one_shot, train

    what, kernel, filters, emb_size, int8_ok = EXAMPLES[name]
    _check_run_folder(name, args)
    data = _dataset(name, args)
    x, y = data["x"].astype(np.float32), data["y"]
    if len(np.unique(y)) < 8:
        raise ValueError(f"{len(np.unique(y))} identities in the data: at least 8 are needed "
                         "(a quarter held out, several per triplet batch)")
    rng = np.random.default_rng(args.seed)
    ids = rng.permutation(np.unique(y))
    held = ids[: max(2, len(ids) // 4)]
    test = np.isin(y, held)
    mean, std = float(x[~test].mean()), float(x[~test].std())
    model = build_encoder(x.shape[1:], filters=filters, kernel_size=kernel,
                          embedding_size=emb_size, mean=mean, std=std, name=f"{name}_encoder")
    options = TrainOptions(steps=args.steps, seed=args.seed)
    hist = train(model, x[~test], y[~test], options, args.out / "checkpoints",
                 augment=_augment(name))["history"]

    emb_train, emb_test = embed(model, x[~test]), embed(model, x[test])
    from sdk.distance import squared_l2

    # every training pair: best_threshold maximises accuracy, which depends on the
    # same/different ratio, so a subsample of different pairs would bias τ
    p_tr, s_tr = all_pairs(y[~test])
    tau, train_acc = best_threshold(squared_l2(emb_train[p_tr[:, 0]], emb_train[p_tr[:, 1]]), s_tr)
    p_te, s_te = all_pairs(y[test])
    d_te = squared_l2(emb_test[p_te[:, 0]], emb_test[p_te[:, 1]])
    metrics = roc_metrics(d_te, s_te)
    result = {
        "example": name, "input": what, "input_shape": list(x.shape[1:]),
        "synthetic": True, "identities": int(len(ids)), "held_out_identities": int(len(held)),
        "samples": int(len(x)), "steps": options.steps, "final_loss": float(np.mean(hist[-50:])),
        "threshold": tau, "train_accuracy_at_threshold": train_acc,
        "held_out_accuracy_at_threshold": accuracy_at(d_te, s_te, tau),
        "held_out": metrics,
        "held_out_one_shot_rank1": rank1_one_shot(emb_test, y[test], rng),
    }
    _roc_png(args.out / "roc.png", d_te, s_te, f"{name}: held-out identities")

    info = ModelInfo(kind="encoder", name=f"{name}-encoder", inputs=(), outputs=(),
                     preprocessing=Preprocessing(channel_order="NONE" if name == "speech"
                                                 else "GRAY",
                                                 pixel_range=(float(x.min()), float(x.max())),
                                                 layout="NWC" if name == "speech" else "NDHWC"),
                     output={"embedding_size": emb_size, "metric": "squared_l2",
                             "threshold": tau},
                     source_hash=formats.source_hash(model),
                     extra={"example": name, "synthetic_data": True})
    calib = [s[None] for s in x[~test][rng.choice(int((~test).sum()), 64, replace=False)]]
    exports = {"tflite_fp32": formats.to_tflite(model, args.out / f"{name}_fp32.tflite", info),
               "onnx_fp32": formats.to_onnx(model, args.out / f"{name}_fp32.onnx", info)}
    if int8_ok:
        exports["tflite_int8"] = formats.to_tflite(model, args.out / f"{name}_int8.tflite", info,
                                                   precision="int8", calibration=calib)
    else:
        exports["tflite_fp16"] = formats.to_tflite(model, args.out / f"{name}_fp16.tflite", info,
                                                   precision="fp16")
    result["exports"] = {k: _check_export(p, x[test], y[test], emb_test, tau)
                         for k, p in exports.items()}
    (args.out / "results.json").write_text(json.dumps(result, indent=2))
    return result


def _check_export(path: Path, x: np.ndarray, y: np.ndarray, ref: np.ndarray, tau: float) -> dict:
    """Run the exported file through sdk.Encoder and a Gallery, as a device would."""
    import sdk
    from export.faces.metrics import accuracy_at
    from export.formats import agreement

    from .train import all_pairs

    with sdk.Encoder.create(path) as enc:
        emb = enc.embed(x)
        pairs, same = all_pairs(y)
        d = enc.distance(emb[pairs[:, 0]], emb[pairs[:, 1]])
        out = {"file": str(path), "bytes": path.stat().st_size, "runtime": enc.model.runtime,
               "min_cosine_vs_keras": agreement(ref, emb).min_cosine,
               "held_out_accuracy_at_threshold": accuracy_at(d, same, tau)}
        out.update(_gallery_check(enc, x, y))
    return out


def _gallery_check(enc, x: np.ndarray, y: np.ndarray) -> dict:
    """One-shot enrollment of each held-out identity in an sdk.Gallery, then identify."""
    from sdk import Gallery

    gallery = Gallery(enc)
    first = {}
    for i, label in enumerate(y):
        first.setdefault(int(label), i)
    for label, i in first.items():
        gallery.enroll_embeddings(f"id{label}", enc.embed(x[i]))
    probes = [i for i in range(len(y)) if i not in set(first.values())]
    hits = unknown = 0
    for i in probes:
        r = gallery.identify_embedding(enc.embed(x[i]))
        hits += r.label == f"id{y[i]}"
        unknown += not r.is_known
    return {"gallery_rank1_at_threshold": hits / len(probes),
            "gallery_unknown_rate": unknown / len(probes)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m export nd", description=__doc__)
    ap.add_argument("example", choices=sorted(EXAMPLES))
    ap.add_argument("--out", type=Path, help="default: runs/nd/<example>")
    ap.add_argument("--identities", type=int, default=48, help="speech: speakers")
    ap.add_argument("--samples", type=int, default=12, help="utterances/clips per identity")
    ap.add_argument("--images", type=Path,
                    default=Path(__file__).resolve().parents[2].parent / "shared" / "data" /
                    "faces" / "att-orl", help="clips: AT&T/ORL folder")
    ap.add_argument("--frames", type=int, default=6, help="clips: frames per clip")
    ap.add_argument("--size", type=int, default=24, help="clips: frame side in pixels")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    args.out = args.out or Path("runs") / "nd" / args.example
    try:
        _check_arguments(args.example, args)
        result = run(args.example, args)
    except (ValueError, FileNotFoundError) as e:
        print(f"python -m export nd: error: {e}", file=sys.stderr)
        return 2
    m = result["held_out"]
    print(f"{args.example}: held-out {result['held_out_identities']} identities: "
          f"accuracy@τ {result['held_out_accuracy_at_threshold']:.3f}, AUC {m['auc']:.3f}, "
          f"EER {m['eer']:.3f}, one-shot rank-1 {result['held_out_one_shot_rank1']:.3f}")
    for k, v in result["exports"].items():
        print(f"  {k}: {v['bytes'] / 1024:.0f} KiB, cos vs Keras {v['min_cosine_vs_keras']:.4f}, "
              f"accuracy@τ {v['held_out_accuracy_at_threshold']:.3f}, gallery rank-1 "
              f"{v['gallery_rank1_at_threshold']:.3f}")
    return 0
