"""Decide a face training leg's release rule from one evaluation run.

Every leg since run 13 is released only if, in ONE ``evaluate --standard --dense`` run next
to the released int8 ONNX file (``runs/faces/runNN_rule.md``):

 1. both int8 files passed the release gate (``release --json``: no refused file);
 2. the candidate's every-pair TAR at FAR 1e-3 and at FAR 1e-4 is at least the released
    file's;
 3. at the ``far_1e-4`` operating point, one-shot enrolled att-orl / yale probes are
    accepted at most ``--max-drop`` points below the released file's, and no unknown person
    is let in;
 4. (rules written since session 17, with ``--enroll3``) with three photos enrolled per
    person (``evaluate --enroll 3``), at ``far_1e-4`` no unknown person is let in either:
    the door tells users to enrol three, and more photos per person give a stranger more
    chances to land near one (run 19 let 3 % of unknown att-orl probes in that way).

This reads those numbers from the JSON reports instead of by hand and prints them side by
side with the verdict; the exit status is 0 when every rule holds, 1 otherwise.

Rules since session 18 judge two candidates of one evaluation run (a leg and a weight
average); give ``--candidate`` (and ``--release-json``) once per candidate, in the rule's
order. Each is judged alone; of those that hold, the one with the higher every-pair TAR at
FAR 1e-4 is chosen, a tie going to the one given first (as the rules say).

    python scripts/release_rule.py runs/faces/eval18.json \\
        --candidate runs/faces/export18/face_encoder_int8.onnx \\
        --released models/faces/face_encoder_int8.onnx --release-json runs/faces/release18.json \\
        --enroll3 runs/faces/eval18_enroll3.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

FARS = ("0.001", "0.0001")
SETS = ("att-orl", "yale")


def _model(report: dict, key: str) -> dict:
    models = report["models"]
    if key in models:
        return models[key]
    # the report keys models by the path as given; accept any unique suffix of it
    hits = [k for k in models if k.endswith(key) or key.endswith(k)]
    if len(hits) != 1:
        raise SystemExit(f"{key!r}: {'no' if not hits else 'several'} models match in the "
                         f"report ({', '.join(models)})")
    return models[hits[0]]


def _dense_tar(model: dict, far: str) -> float:
    dense = model["dense"][0] if isinstance(model["dense"], list) else model["dense"]
    return float(dense["at_far"][far]["tar"])


def _strict(model: dict) -> dict:
    return model["operating_points"]["far_1e-4"]["identification"]


def decide(report: dict, candidate: str, released: str, release: dict | None = None,
           max_drop: float = 2.0, enroll3: dict | None = None) -> tuple[bool, list[str]]:
    """The rule's verdict and one line per check (``ok`` / ``FAILS``)."""
    cand, rel = _model(report, candidate), _model(report, released)
    lines: list[str] = []
    ok = True

    def check(passed: bool, text: str) -> None:
        nonlocal ok
        ok &= passed
        lines.append(f"{'ok   ' if passed else 'FAILS'} {text}")

    if release is None:
        lines.append("?     1. gate: no --release-json given, not checked")
        ok = False
    else:
        refused = {f: r["gate"]["reasons"] for f, r in release.get("files", {}).items()
                   if r.get("gate", {}).get("reasons")}
        int8 = [f for f in release.get("files", {}) if "int8" in f]
        check(not refused and len(int8) >= 2,
              f"1. gate: {len(int8)} int8 files, refused: {refused or 'none'}")
    for far in FARS:
        c, r = _dense_tar(cand, far), _dense_tar(rel, far)
        check(c >= r, f"2. every-pair TAR at FAR {float(far):g}: {100 * c:.2f} % "
                      f"vs released {100 * r:.2f} %")
    cs, rs = _strict(cand), _strict(rel)
    for name in SETS:
        c = 100 * cs[name]["known_correct_and_accepted"]
        r = 100 * rs[name]["known_correct_and_accepted"]
        check(c >= r - max_drop, f"3. far_1e-4 one-shot {name} accepted: {c:.1f} % vs "
                                 f"released {r:.1f} % (at most {max_drop:g} points below)")
        rejected = cs[name]["unknown_rejected"]
        check(rejected == 1.0, f"3. far_1e-4 {name} unknown people refused: "
                               f"{100 * rejected:.1f} %")
    lines += _draws_info("one photo", cs, rs)
    if enroll3 is not None:
        m3 = _model(enroll3, candidate)
        shots = {i.get("photos_per_person") for i in m3.get("identification", [])}
        if shots != {3}:  # a one-photo report passed by mistake would pass rule 4 silently
            raise SystemExit(f"--enroll3: the report enrolled {sorted(shots)} photo(s) per "
                             "person, not 3 (evaluate --enroll 3)")
        three = _strict(m3)
        for name in SETS:
            rejected = three[name]["unknown_rejected"]
            check(rejected == 1.0, f"4. far_1e-4 three photos, {name} unknown people refused: "
                                   f"{100 * rejected:.1f} %")
        lines += _draws_info("three photos", three, None)
    return ok, lines


def _draws_info(what: str, cand: dict, rel: dict | None) -> list[str]:
    """Not part of the verdict (rules 3-4 use evaluate's seed-0 split, as written before
    session 17): unknown probes let in over the further random draws of who stays unknown,
    where the reports have them (evaluate since session 17)."""
    out = []
    for name in SETS:
        c = cand.get(name, {})
        if "draws" not in c:
            continue
        r = (rel or {}).get(name, {})
        ref = (f" (released: {r['draws_unknown_let_in']} of {r['draws_unknown_probes']})"
               if "draws" in r else "")
        out.append(f"info  far_1e-4 {what}, {name}: {c['draws_unknown_let_in']} of "
                   f"{c['draws_unknown_probes']} unknown probes in over {c['draws']} more "
                   f"draws of who is unknown{ref}")
    return out


def choose(report: dict, passing: list[str]) -> str | None:
    """Of the candidates whose rule holds (in the order given), the one with the highest
    every-pair TAR at FAR 1e-4; the first given wins a tie; None when none holds."""
    best = None
    for key in passing:
        if best is None or _dense_tar(_model(report, key), "0.0001") > \
                _dense_tar(_model(report, best), "0.0001"):
            best = key
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("report", type=Path, help="the evaluate --standard --dense JSON report")
    ap.add_argument("--candidate", required=True, action="append",
                    help="the leg's int8 ONNX file, as evaluated (repeatable: one per candidate)")
    ap.add_argument("--released", required=True, help="the released int8 ONNX file, as evaluated")
    ap.add_argument("--release-json", type=Path, action="append",
                    help="the leg's release --json report (rule 1; one per --candidate, same order)")
    ap.add_argument("--enroll3", type=Path,
                    help="the candidate's evaluate --enroll 3 JSON report (rule 4)")
    ap.add_argument("--max-drop", type=float, default=2.0,
                    help="rule 3: points of one-shot acceptance the candidate may lose")
    args = ap.parse_args(argv)
    if args.release_json and len(args.release_json) != len(args.candidate):
        ap.error(f"{len(args.candidate)} --candidate but {len(args.release_json)} "
                 "--release-json: give one release report per candidate, in the same order")
    report = json.loads(args.report.read_text())
    releases = ([json.loads(p.read_text()) for p in args.release_json] if args.release_json
                else [None] * len(args.candidate))
    enroll3 = json.loads(args.enroll3.read_text()) if args.enroll3 else None
    passing = []
    for candidate, release in zip(args.candidate, releases):
        ok, lines = decide(report, candidate, args.released, release, args.max_drop, enroll3)
        if len(args.candidate) > 1:
            print(f"# {candidate}")
        print("\n".join(lines))
        if len(args.candidate) > 1:   # the release is the choice below, not each verdict
            print("rule holds" if ok else "rule fails")
        else:
            print("rule holds: release" if ok else "rule fails: keep the released file")
        if ok:
            passing.append(candidate)
    if len(args.candidate) > 1:
        best = choose(report, passing)
        print(f"chosen: {best} (highest every-pair TAR at FAR 1e-4 of those that hold)" if best
              else "no candidate holds: keep the released file")
    return 0 if passing else 1


if __name__ == "__main__":
    sys.exit(main())
