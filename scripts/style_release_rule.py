"""Judge candidate stylizers against the released ones from two ``export style evaluate``
results (same content samples, size, iterations and optimiser), per style:

 1. the total J = alpha J_content + beta J_style (each entry's alpha, beta; TV excluded) of
    every candidate file (each precision evaluated) is lower than the released file's of
    the same precision on each content sample;
 2. the geometric mean over the samples of J_style / optimiser J_style is lower too.

Prints one line per style and precision and a verdict per style; exit 0 when every style
passes, 1 otherwise.

    python scripts/style_release_rule.py runs/style/evaluate_s20_released/results.json \
        runs/style/evaluate_s20_recal/results.json
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path


def _by_pair(summary: dict) -> dict[tuple[str, str], dict]:
    return {(r["style"], r["content"]): r for r in summary["results"]}


def judge(released: dict, candidate: dict) -> dict[str, bool]:
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
        print(f"{style}: {'RELEASE the candidate' if ok else 'keep the released files'}")
    return verdict


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("released", help="results.json of the released files' evaluation")
    ap.add_argument("candidate", help="results.json of the candidates' evaluation")
    args = ap.parse_args()
    verdict = judge(json.loads(Path(args.released).read_text()),
                    json.loads(Path(args.candidate).read_text()))
    return 0 if verdict and all(verdict.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
