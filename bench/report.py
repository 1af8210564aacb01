"""Benchmark results as a text table, JSON, Markdown and a PNG plot.

JSON schema (``schema`` 1)::

    {"schema": 1, "command": str, "machine": {...}, "settings": {...},
     "models":   [{name, path, role, kind, backend, runtime, precision, precision_source,
                   threads, file_mb, input_shapes, input_made_from, image_size ([H, W] or
                   null), input_note (only where an input is not what it should be), load_ms,
                   first_ms, latency_ms: {median, p90, p99, mean, min, max, n},
                   throughput_per_s, peak_rss_delta_mb (null where unmeasurable),
                   vs_peers: [{peer, path, peer_median_ms, ratio, peer_image_size}]}],
     "pipeline": [{encoder, path, backend, runtime, precision, threads, detector, photos,
                   faces, aligned_size, warmup, detect_ms, align_ms, quality_ms, embed_ms,
                   total_ms}],
     "skipped":  [{path, threads (where one thread count failed), reason}]}

Fields added to schema 1 later (``image_size``, ``input_note``, ``vs_peers``,
``warmup``, the skip's ``threads``) may be absent from older files: the tables show
them as unknown, and compute the peer ratios afresh from the rows.
"""

from __future__ import annotations

import datetime
import importlib
import json
import os
import platform
import textwrap
from pathlib import Path

from sdk.backends.tensorrt import board_model  # CUDA-free at import

from .measure import cpu_count

SCHEMA = 1


def _version(module: str) -> str | None:
    try:
        return getattr(importlib.import_module(module), "__version__", "?")
    except Exception:  # absent, or broken (tflite_runtime under numpy 2)
        return None


def machine_info() -> dict:
    """What the numbers were measured on (including how busy the CPU was)."""
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware")):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    board = board_model()  # the same reading the engine header records
    runtimes = {m: _version(m) for m in ("numpy", "cv2", "onnxruntime", "ai_edge_litert",
                                         "tflite_runtime", "tensorrt")}
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(), "python": platform.python_version(),
        "cpu": cpu, "cpus_usable": cpu_count(), "board": board,
        "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "runtimes": {k: v for k, v in runtimes.items() if v is not None},
    }


#: Fewest timings a percentile is shown from: below them p90 / p99 is (nearly) the
#: slowest run, which the tables would otherwise print as if it were a tail estimate.
MIN_SAMPLES = {"p90": 10, "p99": 100}


def _pct(stats: dict, key: str, width: int = 0) -> str:
    """``stats[key]`` formatted, or "-" when ``stats`` holds too few samples for it."""
    n = stats.get("n")
    text = "-" if n is not None and n < MIN_SAMPLES[key] else f"{stats[key]:.2f}"
    return f"{text:>{width}s}" if width else text


def _where(row: dict) -> str:
    """The thread budget of a row: ``t4``; ``gpu`` for an engine (no CPU thread count)."""
    if row.get("threads") is not None:
        return f"t{row['threads']}"
    return "gpu" if row.get("backend") == "tensorrt" else "default threads"


def _label(r: dict) -> str:
    return f"{r['name']} [{r['backend']} {r['precision']} {_where(r)}]"


def _pipe_label(p: dict) -> str:
    return f"{p['encoder']} [{p['backend']} {p['precision']} {_where(p)}]"


def _unique(labels: list[str], rows: list[dict]) -> list[str]:
    """``labels`` with each one that occurs more than once told apart: by the row's
    folder (two files of one name), else by a running number."""
    out = list(labels)
    for i, lab in enumerate(labels):
        if labels.count(lab) > 1:
            out[i] = f"{lab} ({Path(rows[i].get('path', '')).parent.name or '?'})"
    for i, lab in enumerate(list(out)):
        if out.count(lab) > 1:
            out[i] = f"{lab} #{out[:i + 1].count(lab)}"
    return out


def model_labels(results: dict) -> list[str]:
    """One distinct label per model row (name, backend, precision, thread count)."""
    return _unique([_label(r) for r in results["models"]], results["models"])


def pipeline_labels(results: dict) -> list[str]:
    """One distinct label per pipeline row (encoder, backend, precision, thread count)."""
    return _unique([_pipe_label(p) for p in results["pipeline"]], results["pipeline"])


def _size_text(size) -> str:
    return "-" if not size else f"{size[0]}x{size[1]}"


#: How the peer ratio column is computed, for the tables' header text.
RATIO_RULE = ("x peers: this row's median latency divided by the median of each third-party "
              "peer measured in this same run with the same model kind (face_encoder, "
              "stylizer, ...: from the SDK contract, or for peers the peer table in "
              "bench/models.py) and the same thread count; a peer measured at another input "
              "size has its size in brackets. \"-\": no such peer in this run.")


def peer_ratios(row: dict, models: list[dict]) -> list[dict]:
    """Our row's median as a ratio to each matching peer's, from the same run.

    A peer matches when its ``kind`` equals the row's (known, not "unknown") and its
    thread count is the row's: the kind says what the model does (a face encoder
    against MobileFaceNet, a stylizer against Magenta's transfer network, not its
    style-prediction network), and the same thread budget keeps the comparison fair.
    Peer rows themselves get none.
    """
    if row.get("role") == "peer" or row.get("kind") in (None, "unknown"):
        return []
    med = row["latency_ms"]["median"]
    return [{"peer": p["name"], "path": p["path"],
             "peer_median_ms": p["latency_ms"]["median"],
             "ratio": med / p["latency_ms"]["median"],
             "peer_image_size": p.get("image_size")}
            for p in models
            if p.get("role") == "peer" and p.get("kind") == row["kind"]
            and p.get("threads") == row.get("threads") and p["latency_ms"]["median"] > 0]


def _ratio_text(row: dict, models: list[dict]) -> str:
    """The peer ratios of a row for a table cell ("-" where none)."""
    parts = []
    for v in peer_ratios(row, models):
        size = v["peer_image_size"]
        at = f" ({_size_text(size)})" if size != row.get("image_size") else ""
        parts.append(f"{v['ratio']:.2f}x {v['peer']}{at}")
    return ", ".join(parts) or "-"


def input_notes(r: dict) -> list[str]:
    """Why a row's input is not what the model would see in use (e.g. noise instead of a
    face), for the tables; empty when nothing is to be said."""
    notes = [r["input_note"]] if r.get("input_note") else []
    if not notes and any(str(m).startswith("noise") for m in r.get("input_made_from", [])):
        notes.append("image input is seeded noise (no photo, or no known pre-processing)")
    return notes


def _skip_text(s: dict, markdown: bool = False) -> str:
    """A skipped entry: path, the thread count it failed at (where one did), reason."""
    path = f"`{s['path']}`" if markdown else s["path"]
    at = "" if "threads" not in s else f" ({_where(s)})"
    return f"{path}{at}: {s['reason']}"


def table(results: dict) -> str:
    """Plain-text table for stdout."""
    models = results["models"]
    labels = model_labels(results)
    w = max([len("model")] + [len(x) for x in labels])  # labels are never cut: they are unique
    head = (f"{'model':{w}s} {'input':>9s} {'MB':>6s} {'load':>7s} {'first':>7s} {'n':>5s} "
            f"{'median':>8s} {'p90':>8s} {'p99':>8s} {'inf/s':>7s} {'peakMB':>7s}  x peers")
    lines = [head, "-" * len(head)]
    notes = []
    for label, r in zip(labels, models):
        lat = r["latency_ms"]
        mem = "-" if r["peak_rss_delta_mb"] is None else f"{r['peak_rss_delta_mb']:.0f}"
        lines.append(f"{label:{w}s} {_size_text(r.get('image_size')):>9s} "
                     f"{r['file_mb']:6.2f} {r['load_ms']:7.1f} "
                     f"{r['first_ms']:7.1f} {lat.get('n', '?'):>5} {lat['median']:8.2f} "
                     f"{_pct(lat, 'p90', 8)} {_pct(lat, 'p99', 8)} "
                     f"{r['throughput_per_s']:7.1f} {mem:>7s}  {_ratio_text(r, models)}")
        notes += [f"note: {label}: {n}" for n in input_notes(r)]
    if models:
        lines += notes + textwrap.wrap(RATIO_RULE, 99)
    if results["pipeline"]:
        plabels = pipeline_labels(results)
        w = max([len("encoder")] + [len(x) for x in plabels])
        lines += ["", "face pipeline (median ms per photo; largest face)",
                  f"{'encoder':{w}s} {'input':>9s} {'faces':>7s} {'detect':>8s} {'align':>8s} "
                  f"{'quality':>8s} {'embed':>8s} {'total':>8s} {'p90':>8s}"]
        for label, p in zip(plabels, results["pipeline"]):
            size = p.get("aligned_size")
            lines.append(f"{label:{w}s} {_size_text(size and (size, size)):>9s} "
                         f"{p['faces']:>3d}/{p['photos']:<3d} "
                         f"{p['detect_ms']['median']:8.2f} {p['align_ms']['median']:8.2f} "
                         f"{_stage(p, 'quality_ms'):>8s} {p['embed_ms']['median']:8.2f} "
                         f"{p['total_ms']['median']:8.2f} {_pct(p['total_ms'], 'p90', 8)}")
    for s in results["skipped"]:
        lines.append(f"skipped {_skip_text(s)}")
    return "\n".join(lines)


def _stage(p: dict, key: str) -> str:
    """A stage's median for the text table; "-" for results written before it existed."""
    return f"{p[key]['median']:.2f}" if key in p else "-"


def markdown(results: dict) -> str:
    """The Markdown report (docs/RESULTS_bench.md style)."""
    m, s = results["machine"], results["settings"]
    out = [f"Measured {m['date']} on {m['board'] or m['cpu']} ({m['cpus_usable']} usable CPUs, "
           f"load average at start {', '.join(f'{v:.2f}' for v in m['loadavg_start'] or [])}); "
           f"Python {m['python']}; "
           + ", ".join(f"{k} {v}" for k, v in m["runtimes"].items()) + ".",
           "",
           f"Command: `{results['command']}`",
           "",
           f"Settings: {s['runs']} timed runs after {s['warmup']} warm-up runs, batch 1, "
           f"threads {s['threads']}, dynamic image sizes set to {s['frame']}.",
           "",
           f"p90 is shown from {MIN_SAMPLES['p90']} timings on, p99 from "
           f"{MIN_SAMPLES['p99']} (\"-\": too few to tell it from the slowest run).",
           "",
           "Input: the image input's size (H x W) as measured; peers with a fixed size "
           "(e.g. Magenta's 384x384) do not follow the setting above.",
           "",
           RATIO_RULE,
           "",
           "| model | role | backend | precision | threads | input | size MB | load ms | "
           "first ms | n | median ms | p90 ms | p99 ms | inf/s | peak RSS MB | x peers |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    models = results["models"]
    notes = []
    for label, r in zip(model_labels(results), models):
        lat = r["latency_ms"]
        mem = "n/a" if r["peak_rss_delta_mb"] is None else f"{r['peak_rss_delta_mb']:.0f}"
        out.append(f"| {r['name']} | {r['role']} | {r['runtime']} | {r['precision']} | "
                   f"{_threads_cell(r)} | {_size_text(r.get('image_size'))} | "
                   f"{r['file_mb']:.2f} | {r['load_ms']:.1f} | {r['first_ms']:.1f} | "
                   f"{lat.get('n', '?')} | {lat['median']:.2f} | {_pct(lat, 'p90')} | "
                   f"{_pct(lat, 'p99')} | {r['throughput_per_s']:.1f} | {mem} | "
                   f"{_ratio_text(r, models)} |")
        notes += [f"- `{label}`: {n}" for n in input_notes(r)]
    if notes:
        out += ["", "Input notes:", ""] + notes
    if results["pipeline"]:
        out += ["", "Face pipeline on real photos (per photo, largest face; median / p90 ms):",
                "", "| encoder | backend | precision | threads | input | faces/photos | detect | "
                    "align | quality | embed | total |",
                "|---|---|---|---|---|---|---|---|---|---|---|"]
        for p in results["pipeline"]:
            def mp(k):  # results written before the quality stage existed lack it
                return f"{p[k]['median']:.2f} / {_pct(p[k], 'p90')}" if k in p else "-"
            size = p.get("aligned_size")
            out.append(f"| {p['encoder']} | {p['runtime']} | {p['precision']} | "
                       f"{_threads_cell(p)} | {_size_text(size and (size, size))} | "
                       f"{p['faces']}/{p['photos']} | {mp('detect_ms')} | {mp('align_ms')} | "
                       f"{mp('quality_ms')} | {mp('embed_ms')} | {mp('total_ms')} |")
    if results["skipped"]:
        out += ["", "Not measured:", ""] + [f"- {_skip_text(x, markdown=True)}"
                                           for x in results["skipped"]]
    return "\n".join(out) + "\n"


def _threads_cell(row: dict) -> str:
    return str(row["threads"]) if row.get("threads") is not None else _where(row)


def plot(results: dict, path: Path) -> Path:
    """Bar chart: median latency per model (p90 as the whisker), and the face
    pipeline's stages stacked."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on a device
    import matplotlib.pyplot as plt

    models = results["models"]
    pipes = results["pipeline"]
    rows = 2 if pipes else 1
    height = max(2.5, 0.35 * len(models) + 1.2) + (max(2.0, 0.4 * len(pipes) + 1.2)
                                                   if pipes else 0)
    fig, axes = plt.subplots(rows, 1, figsize=(10, height), squeeze=False)
    ax = axes[0][0]
    if models:
        # the input size in the label: peers may run at another size than ours
        labels = [f"{lab} {_size_text(r.get('image_size'))}"
                  for lab, r in zip(model_labels(results), models)]
        med = [r["latency_ms"]["median"] for r in models]
        # no whisker from too few timings: it would be the slowest run, not a tail estimate
        p90 = [r["latency_ms"]["p90"] if r["latency_ms"].get("n", MIN_SAMPLES["p90"])
               >= MIN_SAMPLES["p90"] else r["latency_ms"]["median"] for r in models]
        err = [max(0.0, b - a) for a, b in zip(med, p90)]
        colors = {"onnxruntime": "tab:blue", "tflite": "tab:orange", "tensorrt": "tab:green"}
        ax.barh(labels, med, xerr=[[0] * len(err), err], capsize=3,
                color=[colors.get(r["backend"], "tab:gray") for r in models])
        if max(med) / max(min(med), 1e-9) > 50:
            ax.set_xscale("log")
        ax.invert_yaxis()
    ax.set_xlabel(f"latency per inference, ms (bar: median, whisker: p90 from "
                  f"{MIN_SAMPLES['p90']}+ timings), batch 1")
    ax.set_title(f"{results['machine']['board'] or results['machine']['cpu']}")
    if pipes:
        ax = axes[1][0]
        # distinct labels: barh stacks bars of equal labels (t1 / t2 rows) on one another
        labels = pipeline_labels(results)
        left = [0.0] * len(pipes)
        for stage, color in (("detect_ms", "tab:purple"), ("align_ms", "tab:cyan"),
                             ("quality_ms", "tab:olive"), ("embed_ms", "tab:red")):
            vals = [p[stage]["median"] if stage in p else 0.0 for p in pipes]
            ax.barh(labels, vals, left=left, color=color, label=stage[:-3])
            left = [a + b for a, b in zip(left, vals)]
        ax.invert_yaxis()
        ax.legend(loc="lower right")
        ax.set_xlabel("face pipeline per photo, median ms by stage")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_json(results: dict, path: Path) -> Path:
    """``results`` as indented JSON at ``path`` (folders made); returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1))
    return path
