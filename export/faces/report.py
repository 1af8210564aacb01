"""Write the measured face numbers as Markdown tables from the JSON reports.

``python -m export faces report --eval runs/faces/eval_all.json
--release runs/faces/release.json --heads runs/faces/heads.json
--state runs/faces/run2/state.json --out docs/RESULTS_faces.md``

Only numbers found in those files are written; nothing is typed in by hand.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


#: The operating point ``apps/door_lock.py`` gates the door with by default (its
#: DEFAULT_OPERATING_POINT; export never imports apps, a test keeps the two equal).
DOOR_POINT = "far_1e-4"


def _pct(v: float | None, std: float | None = None) -> str:
    if v is None:
        return "–"
    return f"{100 * v:.2f}" + (f" ± {100 * std:.2f}" if std is not None else "")


def _ms(t: dict | None) -> str:
    if not t:
        return "–"
    threads = f" ({t['threads']} thr.)" if t.get("threads") else ""
    return f"{t['median']:.2f} / {t['p90']:.2f}{threads}"


def eval_table(ev: dict) -> list[str]:
    """One row per model: every pair set and identification set."""
    lines = ["| model | τ (source) | held-out pairs 10-fold acc % (± std over the folds, "
             "ddof 0) | AUC | EER % | TAR@FAR=1e-3 % "
             "| deepface acc@τ % | deepface AUC | deepface best-τ acc % (optimistic) "
             "| att-orl rank-1 % | att-orl unknown rejected @τ % | yale rank-1 % "
             "| yale unknown rejected @τ % | embed ms median / p90 (threads) |",
             "|" + "---|" * 14]
    for _, m in ev["models"].items():
        pairs = {Path(r["pairs_file"]).name: r for r in m["pairs"]}
        ident = {Path(r["root"]).name: r for r in m["identification"]}
        p = pairs.get("pairs.txt", {})
        d = pairs.get("master.csv", {})
        a, y = ident.get("att-orl", {}), ident.get("yale", {})
        tf_ = p.get("ten_fold", {})
        t = m.get("embed_ms")
        lines.append(
            f"| {m['name']} | {m['threshold']:.3f} ({m['threshold_source']}) "
            f"| {_pct(tf_.get('accuracy_mean'), tf_.get('accuracy_std'))} "
            f"| {p.get('auc', float('nan')):.4f} | {_pct(p.get('eer'))} "
            f"| {_pct(p.get('tar_at_far_1e-3'))} | {_pct(d.get('accuracy_at_threshold'))} "
            f"| {d.get('auc', float('nan')):.4f} | {_pct(d.get('best_accuracy'))} "
            f"| {_pct(a.get('rank1_closed_set'))} | {_pct(a.get('open_set_unknown_rejected'))} "
            f"| {_pct(y.get('rank1_closed_set'))} | {_pct(y.get('open_set_unknown_rejected'))} "
            f"| {_ms(t)} |")
    return lines


def operating_point_table(ev: dict, name: str | None = None) -> list[str]:
    """Every model at one named operating point (default: the door's), on every
    evaluation set."""
    name = name or DOOR_POINT
    lines = [f"| model | τ {name} (source) | held-out FAR / TAR % | deepface FAR / TAR % "
             "| att-orl unknown rejected / enrolled accepted % "
             "| yale unknown rejected / enrolled accepted % |", "|---|---|---|---|---|---|"]
    for _, m in ev["models"].items():
        op = m.get("operating_points", {}).get(name)
        if op is None:
            continue
        pr, idn = op["pairs"], op["identification"]

        def pair(k):
            v = pr.get(k)
            return "–" if v is None else f"{_pct(v['far'])} / {_pct(v['tar'])}"

        def ident(k):
            v = idn.get(k)
            if v is None:
                return "–"
            cell = f"{_pct(v['unknown_rejected'])} / {_pct(v['known_correct_and_accepted'])}"
            if "draws" in v:  # reports since session 17: who stays unknown, drawn again
                cell += (f" ({v['draws']} more draws: {v['draws_unknown_let_in']} of "
                         f"{v['draws_unknown_probes']} unknown probes in, "
                         f"{_pct(v['draws_known_correct_and_accepted'])} accepted)")
            return cell

        lines.append(f"| {m['name']} | {op['threshold']:.3f} ({m['operating_points_source']}) "
                     f"| {pair('pairs.txt')} | {pair('master.csv')} | {ident('att-orl')} "
                     f"| {ident('yale')} |")
    return lines


def impostor_table(ev: dict, pairs_file: str = "pairs.txt", n: int = 3) -> list[str]:
    """Each model's nearest different-person pairs on one pair list: the pairs the
    low-FAR operating points rest on."""
    lines = ["| model | different-person pair | d | TAR of a τ just below |", "|---|---|---|---|"]
    for _, m in ev["models"].items():
        r = next((r for r in m["pairs"] if Path(r["pairs_file"]).name == pairs_file), None)
        for c in (r or {}).get("closest_impostors", [])[:n]:
            lines.append(f"| {m['name']} | {c['a']} ~ {c['b']} | {c['d']:.3f} "
                         f"| {_pct(c['tar_below'])} |")
    return lines


def dense_table(ev: dict) -> list[str]:
    """Every pair of the held-out photos (``evaluate --dense``): TAR at each FAR, and
    the false-accept rate of each model's operating points there (in-sample: the file's
    ``far_1e-N`` points were fitted on these pairs, so they meet their targets here by
    construction)."""
    rows = [(m["name"], r) for m in ev["models"].values() for r in m.get("dense", [])]
    if not rows:
        return []
    fars = list(rows[0][1]["at_far"])
    lines = ["| model | " + " | ".join(f"TAR % at FAR {f} (τ)" for f in fars)
             + f" | FAR / TAR % at its {DOOR_POINT} τ (fitted on these pairs) "
               "| FAR / TAR % at its best-accuracy τ |",
             "|---|" + "---|" * (len(fars) + 2)]
    for name, r in rows:
        cells = [f"{_pct(r['at_far'][f]['tar'])} ({r['at_far'][f]['threshold']:.3f})"
                 for f in fars]
        for key in (DOOR_POINT, "threshold"):
            v = r["at_threshold"].get(key)
            cells.append(f"{v['far']:.1e} / {_pct(v['tar'])}" if v else "–")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Where each model's false accepts at FAR 1e-3 come from (photo sets of the "
                  "two sides):", ""]
    for name, r in rows:
        fa = r.get("false_accepts_at_far_1e-3", {})
        total = sum(fa.values())
        top = ", ".join(f"{k} {v}" for k, v in list(fa.items())[:3])
        lines.append(f"- {name}: {total} pairs; {top}")
    by_set = [(name, r["genuine_by_set"]) for name, r in rows if r.get("genuine_by_set")]
    if by_set:
        sets = list(by_set[0][1])
        lines += ["", "Where the true accepts are lost: TAR % at FAR 1e-3 / 1e-4 (each "
                      "model's own τ) on the same-person pairs of each photo set:", "",
                  "| model | " + " | ".join(f"{k} ({by_set[0][1][k]['pairs']} pairs)"
                                           for k in sets) + " |",
                  "|---|" + "---|" * len(sets)]
        for name, g in by_set:
            cells = [f"{_pct(g[k]['tar_at_far_0.001'])} / {_pct(g[k]['tar_at_far_0.0001'])}"
                     if k in g else "–" for k in sets]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    first = rows[0][1]
    lines += ["", f"{first['photos']} photos of {first['identities']} identities: "
                  f"{first['same']} same-person and {first['different']} different-person "
                  "pairs. Nearest different-person pairs:", "",
              "| model | different-person pair | d |", "|---|---|---|"]
    for name, r in rows:
        for c in r["closest_impostors"][:2]:
            lines.append(f"| {name} | {c['a']} ~ {c['b']} | {c['d']:.3f} |")
    return lines


def release_table(rel: dict) -> list[str]:
    """Exported files: size, held-out accuracy, drop vs Keras, agreement, verdict."""
    k = rel["keras_fp32"]
    gated = "gate" in k  # session 12 on: the gate reads every pair of the held-out photos
    ref = (f"; every pair: best balanced accuracy {_pct(k['gate']['accuracy'])} %, TAR at "
           f"FAR {k['gate']['far']:g} {_pct(k['gate']['tar'])} %" if gated else "")
    lines = [f"Keras fp32 reference: 10-fold {_pct(k['ten_fold'])} %, AUC {k['auc']:.4f}{ref}.",
             "", "| file | size KB | 10-fold acc % | drop vs Keras (points) | AUC | τ in file "
             "| operating points in file: τ (TAR there %) | min cosine vs Keras "
             + ("| gate, every pair: accuracy / TAR drop (points) " if gated else "")
             + "| verdict |", "|---" * (10 if gated else 9) + "|"]
    for name, f in rel["files"].items():
        ops = {k: v for k, v in (f.get("operating_points") or {}).items()
               if k.startswith("far_")}
        dense = f.get("dense_at_far") or {}

        def tar(point: str) -> float | None:
            # fitted on every pair of the held-out photos (session 6 on): TAR there;
            # earlier releases fitted them on the listed pairs
            hit = dense.get(f"{float(point[4:]):g}")
            return hit["tar"] if hit else f.get(f"tar_at_{point}")

        op = " / ".join(f"{k} {v:.3f} ({_pct(tar(k))})" for k, v in sorted(
            ops.items(), key=lambda kv: -kv[1])) or "–"
        lines.append(f"| {name} | {f['bytes'] / 1024:.0f} "
                     f"| {_pct(f['ten_fold'], f.get('ten_fold_std'))} "
                     f"| {f['drop_points']:+.2f} | {f['auc']:.4f} | {f['threshold']:.3f} | {op} "
                     f"| {f['min_cosine_vs_keras']:.4f} | "
                     + (f"{round(f['gate']['accuracy_drop'], 2) + 0.0:+.2f} / "
                        f"{round(f['gate']['tar_drop'], 2) + 0.0:+.2f} | "
                        if gated else "")
                     + ("accepted" if f["accepted"] else
                        "REFUSED (" + ("; ".join(f["gate"]["reasons"]) if gated
                                       else "> max drop") + ")") + " |")
    lines += ["", f"Released: {', '.join(Path(p).name for p in rel['released']) or 'none'}; "
                  f"refused: {', '.join(rel['refused']) or 'none'}."]
    return lines


def heads_table(h: dict) -> list[str]:
    """Distance vs the two learned pair heads on the held-out pairs."""
    lines = ["| decision | 10-fold acc % | AUC | EER % | TAR@FAR=1e-3 % |",
             "|---|---|---|---|---|"]
    for k, v in h.items():
        lines.append(f"| {k} | {_pct(v['ten_fold'])} | {v['auc']:.4f} | {_pct(v['eer'])} "
                     f"| {_pct(v['tar_at_far_1e-3'])} |")
    return lines


def training_legs(state: dict) -> list[dict]:
    """The states of every leg, first leg first (a leg started with ``--init``
    carries the state of the run it started from)."""
    legs = [state]
    while (legs[0].get("init") or {}).get("state"):
        legs.insert(0, legs[0]["init"]["state"])
    return legs


def history_table(state: dict) -> list[str]:
    """Per-epoch training record of every leg (held-out pairs monitored, not used
    for selection)."""
    lines = ["| leg (run, distillation) | encoder | epoch | minutes | loss | triplet | distill "
             "| cls | held-out 10-fold acc % | AUC |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for leg, st in enumerate(training_legs(state), 1):
        config = st.get("config") or {}
        width = config.get("width")
        encoder = (f"w {width:g}, " if width else "") + f"{st.get('params', 0) / 1e3:.0f} k"
        label = str(leg)
        if config.get("out"):
            label += f" ({Path(config['out']).name}, {config.get('distill_mode', 'absolute')})"
        for r in st["history"]:
            lines.append(f"| {label} | {encoder} | {r['epoch']:.2f} | {r['minutes']:.1f} "
                         f"| {r['loss']:.3f} "
                         f"| {r['triplet']:.3f} | {r['distill']:.3f} | {r.get('cls', 0):.3f} "
                         f"| {_pct(r['val_accuracy'])} | {r['val_auc']:.4f} |")
    return lines


def merged_reports(paths: list[Path]) -> dict:
    """Several `evaluate` reports as one: their models in the order given (a model
    evaluated twice keeps its last report)."""
    merged: dict = {"models": {}}
    for path in paths:
        merged["models"].update(json.loads(Path(path).read_text())["models"])
    # two runs' files share a display name ("face_encoder_int8.onnx (int8, onnxruntime)"):
    # name those by their folder too, so the tables say which is which
    names = [m["name"] for m in merged["models"].values()]
    for key, m in merged["models"].items():
        if names.count(m["name"]) > 1 and Path(key).parent.name:
            m["name"] = f"{Path(key).parent.name}/{m['name']}"
    return merged


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m export faces report``."""
    ap = argparse.ArgumentParser(prog="python -m export faces report")
    ap.add_argument("--eval", type=Path, action="append", required=True,
                    help="an `evaluate` report; repeat to put several runs' models in "
                         "the same tables")
    ap.add_argument("--release", type=Path, default=None)
    ap.add_argument("--heads", type=Path, default=None)
    ap.add_argument("--state", type=Path, default=None)
    ap.add_argument("--dense", type=Path, default=None,
                    action="append",
                    help="an `evaluate --dense` report: every pair of the held-out photos "
                         "(repeatable)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--header", type=Path, default=None, help="Markdown to put first")
    ap.add_argument("--footer", type=Path, default=None, help="Markdown to put last")
    args = ap.parse_args(argv)
    parts = [args.header.read_text().rstrip() if args.header else "# Face encoder results", ""]
    ev = merged_reports(args.eval)
    parts += ["## Accuracy and speed next to the peer", ""] + eval_table(ev)
    op_rows = operating_point_table(ev)
    if len(op_rows) > 2:
        parts += ["", f"## At the door lock's operating point ({DOOR_POINT})", "",
                  "The strict threshold `apps/door_lock.py` uses by default, applied unchanged "
                  "to every set (identification: same protocol as above, τ replaced).", ""]
        parts += op_rows
    imp_rows = impostor_table(ev)
    if len(imp_rows) > 2:
        parts += ["", "## Where the low-FAR tail comes from (held-out pairs)", "",
                  "Each model's nearest different-person pairs: a τ below the nearest one "
                  "admits no stranger of this set, and accepts the share of same-person "
                  "pairs in the last column.", ""]
        parts += imp_rows
    if args.dense:
        dense_rows = dense_table(merged_reports(args.dense))
        if dense_rows:
            parts += ["", "## Every pair of the held-out photos (low FAR, resolved)", "",
                      "The 10-fold list has 1500 different-person pairs, so its TAR at FAR "
                      "1e-3 rests on one or two of them. `evaluate --dense` scores every pair "
                      "of the same photos instead; the last two columns are the real "
                      "false-accept rate of each model's thresholds there.", ""]
            parts += dense_rows
    if args.release:
        parts += ["", "## Exported files (held-out pairs, through sdk.load_model)", ""]
        parts += release_table(json.loads(args.release.read_text()))
    if args.heads:
        parts += ["", "## Pair verification heads vs the distance (held-out pairs)", ""]
        parts += heads_table(json.loads(args.heads.read_text()))
    if args.state:
        st = json.loads(args.state.read_text())
        parts += ["", f"## Training record (released encoder: {st['params']} parameters, "
                      f"{st['macs'] / 1e6:.1f} M MACs)", ""] + history_table(st)
    if args.footer:
        parts += ["", args.footer.read_text().rstrip()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(parts) + "\n")
    print(f"wrote {args.out}")
    return 0
