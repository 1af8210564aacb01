"""The numbers the docs quote for a face release, each rounded once from the JSON reports.

The report (`python -m export faces report`) prints percentages with two decimals; rounding
those strings again to the docs' one decimal gave 22.5 % for a TAR of 22.449 % (session 16).
This prints every headline figure of one model straight from the raw values, so README,
FACES.md, the model card, RESULTS.md and STATUS quote the same, correctly rounded, numbers:

    python scripts/headline.py docs/data/faces/eval18.json \\
        --model runs/faces/export18/face_encoder_int8.onnx \\
        --enroll3 docs/data/faces/eval18_enroll3.json --release docs/data/faces/release18.json

Without --model it lists the models the evaluation report holds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Iterator

FARS = ("0.01", "0.001", "0.0001", "1e-05")
POINTS = ("far_1e-2", "far_1e-3", "far_1e-4", "far_1e-5")


def pct(v: float | None) -> str:
    """A fraction as a percentage with one decimal, rounded once ('–' when absent)."""
    return "–" if v is None else f"{100.0 * v:.1f}"


def _pairs(m: dict, name: str) -> dict | None:
    for p in m.get("pairs", []):
        if os.path.basename(p.get("pairs_file", "")) == name:
            return p
    return None


def _ident(m: dict, root: str) -> dict | None:
    for i in m.get("identification", []):
        if os.path.basename(i.get("root", "").rstrip("/")) == root:
            return i
    return None


def _draws(r: dict, prefix: str = "") -> str:
    """' (over N more draws: X of Y unknown probes in, Z % accepted)' where reported."""
    if f"{prefix}draws" not in r:
        return ""
    return (f" (over {r[prefix + 'draws']} more draws of who is unknown: "
            f"{r[prefix + 'draws_unknown_let_in']} of {r[prefix + 'draws_unknown_probes']} "
            f"unknown probes in, {pct(r[prefix + 'draws_known_correct_and_accepted'])} % "
            "accepted)")


def point_lines(m: dict) -> Iterator[str]:
    """Identification at each named operating point of one model's entry."""
    for p in POINTS:
        op = m.get("operating_points", {}).get(p)
        if op:
            yield f"{p} (τ {op['threshold']:.3f}): " + "; ".join(
                f"{root} accepted {pct(r.get('known_correct_and_accepted'))} %, "
                f"unknown in {pct(1.0 - r['unknown_rejected'])} %{_draws(r)}"
                for root, r in op.get("identification", {}).items())


def eval_lines(m: dict) -> Iterator[str]:
    """Headline lines of one model's entry in an evaluation report."""
    source = m.get("threshold_source") or "τ"
    dense = (m.get("dense") or [None])[0]
    if dense:
        tars = [pct(dense["at_far"].get(f, {}).get("tar")) for f in FARS]
        yield "every-pair TAR at FAR 1e-2 / 1e-3 / 1e-4 / 1e-5: " + " / ".join(tars) + " %"
        thr = dense.get("at_threshold", {})
        if "threshold" in thr:
            t = thr["threshold"]
            yield (f"at τ {t['threshold']:.3f} ({source}): every-pair FAR "
                   f"{t['far']:.3g}, TAR {pct(t['tar'])} %")
        for s, g in sorted(dense.get("genuine_by_set", {}).items()):
            yield (f"  {s}: TAR at FAR 1e-3 / 1e-4 {pct(g.get('tar_at_far_0.001'))} / "
                   f"{pct(g.get('tar_at_far_0.0001'))} % ({g.get('pairs')} genuine pairs)")
        fa = dense.get("false_accepts_at_far_1e-3", {})
        if fa:
            yield "false accepts at FAR 1e-3: " + ", ".join(f"{k} {v}" for k, v in fa.items())
    held = _pairs(m, "pairs.txt")
    if held:
        tf = held.get("ten_fold", {})
        yield (f"held-out pairs: 10-fold {pct(tf.get('accuracy_mean'))} ± "
               f"{pct(tf.get('accuracy_std'))} %, AUC {held['auc']:.3f}, EER {pct(held['eer'])} %")
    dp = _pairs(m, "master.csv")
    if dp:
        yield (f"deepface: accuracy at τ {pct(dp.get('accuracy_at_threshold'))} %, "
               f"AUC {dp['auc']:.4f}")
    for root in ("att-orl", "yale"):
        i = _ident(m, root)
        if i:
            yield (f"{root}: rank-1 {pct(i.get('rank1_closed_set'))} %, at τ ({source}) "
                   f"unknown refused {pct(i.get('open_set_unknown_rejected'))} %, enrolled "
                   f"accepted {pct(i.get('open_set_known_correct_and_accepted'))} % "
                   f"({i.get('photos_per_person')} photo(s) per person)"
                   f"{_draws(i, 'open_set_')}")
    yield from point_lines(m)
    t = m.get("embed_ms")
    if t:
        yield (f"embed {t['threads']} thread(s): median {t['median']:.2f} ms, "
               f"p90 {t['p90']:.2f} ms over {t['runs']} runs")


def _change(drop: float) -> str:
    """A drop (float minus quantised, points) as a signed change, never '-0.00'."""
    return f"{round(-drop, 2) + 0.0:+.2f}"


def release_lines(r: dict) -> Iterator[str]:
    """Gate drops, thresholds and sizes of each file of a release report."""
    for name, f in r.get("files", {}).items():
        g = f.get("gate") or {}
        size = f.get("bytes") or f.get("size")
        parts = [f"τ {f['threshold']:.3f}" if f.get("threshold") is not None else ""]
        if g:
            # drops are float minus quantised, in points; the docs write them as changes
            parts.append(f"every-pair accuracy {_change(g.get('accuracy_drop', 0.0))}, "
                         f"TAR at FAR {g.get('far')} {_change(g.get('tar_drop', 0.0))} points")
        if f.get("drop_points") is not None:
            parts.append(f"10-fold {_change(f['drop_points'])} points")
        if size:
            parts.append(f"{size} B")
        yield f"{name}: " + ", ".join(p for p in parts if p)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("eval", help="evaluation report (evaluate --json)")
    ap.add_argument("--model", action="append", default=[],
                    help="a model key of the report (repeatable); default: list them")
    ap.add_argument("--enroll3", help="the --enroll 3 evaluation report of the same file")
    ap.add_argument("--release", help="the release report (release --json)")
    args = ap.parse_args(argv)
    with open(args.eval) as fh:
        models: dict[str, Any] = json.load(fh)["models"]
    if not args.model:
        print("\n".join(models))
        return 0
    for key in args.model:
        if key not in models:
            print(f"{key}: not in {args.eval}; it holds: {', '.join(models)}", file=sys.stderr)
            return 2
        print(f"# {key}")
        for line in eval_lines(models[key]):
            print(line)
    if args.enroll3:
        with open(args.enroll3) as fh:
            e3 = json.load(fh)["models"]
        # the --enroll 3 run of the same file(s): keys are the paths as evaluated; match on
        # the file name only when no key matches exactly (the directories differ), since
        # two candidates' files share a name (face_encoder_int8.onnx)
        exact = [k for k in e3 if k in args.model]
        wanted = {Path(k).name for k in args.model}
        for key, m in e3.items():
            if key not in exact and (exact or Path(key).name not in wanted):
                continue
            print(f"# {key}, three photos per person")
            for line in point_lines(m):
                print(line)
    if args.release:
        with open(args.release) as fh:
            rel = json.load(fh)
        print(f"# release report {args.release}")
        for line in release_lines(rel):
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
