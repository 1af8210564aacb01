"""Judge candidate stylizers against the released ones from two ``export style evaluate``
results (same content samples, size, iterations and optimiser), per style:

 1. the total J = alpha J_content + beta J_style (each entry's alpha, beta; TV excluded) of
    every candidate file (each precision evaluated) is lower than the released file's of
    the same precision on each content sample;
 2. the geometric mean over the samples of J_style / optimiser J_style is lower too.

With ``--bench RELEASED_DIR CANDIDATE_DIR`` it also judges the camera-frame size: each
directory holds one ``export style bench --runs 1 --no-johnson`` result per content sample
and style (``<content>_<style>/bench.json``), and a candidate must have the lower total
J = alpha J_content + (side / 256)^2 beta J_style (the files' alpha and beta from the
evaluations, beta scaled to the pixel count as the students' own is) on each sample, for
the fp32 and the int8 TFLite file. With ``--frame-only`` (the frame-size rule of session 22)
only the bench half decides; the evaluations' half is printed for the record.

Prints one line per style and precision and a verdict per style; exit 0 when every style
passes, 1 otherwise.

    python scripts/style_release_rule.py runs/style/evaluate_s20_released/results.json \
        runs/style/evaluate_s20_recal/results.json
    python scripts/style_release_rule.py OLD/results.json NEW/results.json \
        --bench runs/style/bench_old runs/style/bench_new
    python scripts/style_release_rule.py OLD/results.json NEW/results.json \
        --bench runs/style/bench_old runs/style/bench_new --frame-only
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path


def _by_pair(summary: dict) -> dict[tuple[str, str], dict]:
    return {(r["style"], r["content"]): r for r in summary["results"]}


def judge(released: dict, candidate: dict, at: str = "") -> dict[str, bool]:
    """{style: passes} for every style both evaluations hold; prints the evidence."""
    for key in ("max_side", "iterations"):
        if released.get(key) != candidate.get(key):
            raise SystemExit(f"the evaluations differ in {key}: "
                             f"{released.get(key)} vs {candidate.get(key)}")
    old, new = _by_pair(released), _by_pair(candidate)
    styles = sorted({s for s, _ in old} & {s for s, _ in new})
    verdict = {}
    for style in styles:
        contents = sorted(c for s, c in old if s == style and (s, c) in new)
        precisions = sorted(k for k in old[(style, contents[0])] if k.startswith("student_"))
        ok = True
        for p in precisions:
            lower_j, ratios = [], {"released": [], "candidate": []}
            for c in contents:
                pair = {"released": old[(style, c)], "candidate": new[(style, c)]}
                j = {}
                for side, r in pair.items():
                    if r["optimizer"]["J_style"] != pair["released"]["optimizer"]["J_style"]:
                        raise SystemExit(f"{style}/{c}: the optimiser references differ")
                    s = r[p]
                    j[side] = r["alpha"] * s["J_content"] + r["beta"] * s["J_style"]
                    ratios[side].append(s["J_style"] / r["optimizer"]["J_style"])
                lower_j.append(j["candidate"] < j["released"])
                print(f"{style} {p} {c}: J {j['released']:.4g} -> {j['candidate']:.4g}")
            gm = {k: math.exp(sum(map(math.log, v)) / len(v)) for k, v in ratios.items()}
            rule1, rule2 = all(lower_j), gm["candidate"] < gm["released"]
            print(f"{style} {p}: rule 1 (J lower on {sum(lower_j)}/{len(lower_j)} samples) "
                  f"{'pass' if rule1 else 'FAIL'}; rule 2 (J_style x optimiser, geometric "
                  f"mean {gm['released']:.2f} -> {gm['candidate']:.2f}) "
                  f"{'pass' if rule2 else 'FAIL'}")
            ok = ok and rule1 and rule2
        verdict[style] = ok
        print(f"{style}{at}: {'RELEASE the candidate' if ok else 'keep the released files'}")
    return verdict


def costs_of(released: dict, candidate: dict) -> dict[str, tuple[float, float]]:
    """{style: (alpha, beta)} the two evaluations' files were trained with; they must agree
    (a candidate trained at another beta is weighed by another J)."""
    weights: dict[str, tuple[float, float]] = {}
    for summary in (released, candidate):
        for r in summary["results"]:
            ab = (float(r["alpha"]), float(r["beta"]))
            if weights.setdefault(r["style"], ab) != ab:
                raise SystemExit(f"{r['style']}: the files' alpha, beta differ "
                                 f"({weights[r['style']]} vs {ab})")
    return weights


def judge_bench(released: dict[tuple[str, str], dict], candidate: dict[tuple[str, str], dict],
                weights: dict[str, tuple[float, float]],
                precisions: tuple[str, ...] = ("fp32", "int8")) -> dict[str, bool]:
    """{style: passes} from ``bench`` results keyed by (content, style): the candidate's
    total J = alpha J_content + (side / 256)^2 beta J_style (``weights[style]`` = (alpha,
    beta)) must be lower on each sample for each TFLite precision. Every style the
    candidates hold is judged on every sample the released files were benched on."""
    verdict: dict[str, bool] = {}
    styles = {style for _, style in candidate}
    for content, style in sorted(k for k in released if k[1] in styles):
        if (content, style) not in candidate:
            raise SystemExit(f"no candidate bench for {content} / {style}")
        if style not in weights:
            raise SystemExit(f"no alpha, beta for {style} in the evaluations")
        old, new = released[(content, style)], candidate[(content, style)]
        if old["size"] != new["size"]:
            raise SystemExit(f"{content}/{style}: bench sizes differ")
        alpha, beta = weights[style]
        beta *= (old["size"] / 256) ** 2
        for p in precisions:
            label = f"ours {style} {p} tflite"
            j = [alpha * r["strength"][label]["J_content"] + beta * r["strength"][label]["J_style"]
                 for r in (old, new)]
            ok = j[1] < j[0]
            print(f"{style} {p} {content} at {old['size']} px: J {j[0]:.4g} -> {j[1]:.4g} "
                  f"{'pass' if ok else 'FAIL'}")
            verdict[style] = verdict.get(style, True) and ok
    for style, ok in verdict.items():
        print(f"{style} at the frame size: {'pass' if ok else 'FAIL'}")
    return verdict


def bench_dir(folder: Path) -> dict[tuple[str, str], dict]:
    """{(content, style): bench.json} of ``folder/<content>_<style>/bench.json``; the style
    is read from the results (style names may hold underscores), the content is the rest
    of the folder's name."""
    found = {}
    for f in sorted(folder.glob("*/bench.json")):
        result = json.loads(f.read_text())
        styles = {k.split()[1] for k in result.get("strength", {}) if k.startswith("ours ")}
        if len(styles) != 1 or not f.parent.name.endswith("_" + next(iter(styles))):
            raise SystemExit(f"{f}: expected one of our styles' results in a folder named "
                             f"<content>_<style>, found styles {sorted(styles)}")
        style = styles.pop()
        found[(f.parent.name[:-len(style) - 1], style)] = result
    if not found:
        raise SystemExit(f"no <content>_<style>/bench.json under {folder}")
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("released", help="results.json of the released files' evaluation")
    ap.add_argument("candidate", help="results.json of the candidates' evaluation")
    ap.add_argument("--bench", nargs=2, metavar=("RELEASED_DIR", "CANDIDATE_DIR"),
                    help="also judge bench results at the frame size (see above)")
    ap.add_argument("--frame-only", action="store_true",
                    help="only the bench half decides (needs --bench); the evaluations "
                         "give alpha, beta and are printed, not judged")
    args = ap.parse_args(argv)
    if args.frame_only and not args.bench:
        ap.error("--frame-only needs --bench")
    released = json.loads(Path(args.released).read_text())
    candidate = json.loads(Path(args.candidate).read_text())
    if args.frame_only:
        print("evaluations (printed for the record, not judged):")
    verdict = judge(released, candidate, at=" at 256 px" if args.bench else "")
    if args.bench:
        frame = judge_bench(bench_dir(Path(args.bench[0])), bench_dir(Path(args.bench[1])),
                            costs_of(released, candidate))
        for style in verdict:
            verdict[style] = ((args.frame_only or verdict[style])
                              and frame.get(style, False))
            print(f"{style}: "
                  f"{'RELEASE the candidate' if verdict[style] else 'keep the released files'}"
                  f" ({'the frame size only' if args.frame_only else 'both sizes'})")
    return 0 if verdict and all(verdict.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
