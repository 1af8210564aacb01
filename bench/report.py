"""Benchmark results as a text table, JSON, Markdown and a PNG plot.

JSON schema (``schema`` 1)::

    {"schema": 1, "command": str, "machine": {...}, "settings": {...},
     "models":   [{name, path, role, kind, backend, runtime, precision, precision_source,
                   threads, file_mb, input_shapes, input_made_from, load_ms, first_ms,
                   latency_ms: {median, p90, p99, mean, min, max, n}, throughput_per_s,
                   peak_rss_delta_mb (null where unmeasurable)}],
     "pipeline": [{encoder, path, backend, runtime, precision, threads, detector, photos,
                   faces, aligned_size, detect_ms, align_ms, quality_ms, embed_ms,
                   total_ms}],
     "skipped":  [{path, reason}]}
"""

from __future__ import annotations

import datetime
import importlib
import json
import os
import platform
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


def _label(r: dict) -> str:
    t = "" if r.get("threads") is None else f" t{r['threads']}"
    return f"{r['name']} [{r['backend']} {r['precision']}{t}]"


def table(results: dict) -> str:
    """Plain-text table for stdout."""
    head = (f"{'model':44s} {'MB':>6s} {'load':>7s} {'first':>7s} {'n':>5s} {'median':>8s} "
            f"{'p90':>8s} {'p99':>8s} {'inf/s':>7s} {'peakMB':>7s}")
    lines = [head, "-" * len(head)]
    for r in results["models"]:
        lat = r["latency_ms"]
        mem = "-" if r["peak_rss_delta_mb"] is None else f"{r['peak_rss_delta_mb']:.0f}"
        lines.append(f"{_label(r)[:44]:44s} {r['file_mb']:6.2f} {r['load_ms']:7.1f} "
                     f"{r['first_ms']:7.1f} {lat.get('n', '?'):>5} {lat['median']:8.2f} "
                     f"{_pct(lat, 'p90', 8)} {_pct(lat, 'p99', 8)} "
                     f"{r['throughput_per_s']:7.1f} {mem:>7s}")
    if results["pipeline"]:
        lines += ["", "face pipeline (median ms per photo; largest face)",
                  f"{'encoder':44s} {'faces':>7s} {'detect':>8s} {'align':>8s} {'quality':>8s} "
                  f"{'embed':>8s} {'total':>8s} {'p90':>8s}"]
        for p in results["pipeline"]:
            t = "" if p["threads"] is None else f" t{p['threads']}"
            label = f"{p['encoder']} [{p['backend']} {p['precision']}{t}]"
            lines.append(f"{label[:44]:44s} {p['faces']:>3d}/{p['photos']:<3d} "
                         f"{p['detect_ms']['median']:8.2f} {p['align_ms']['median']:8.2f} "
                         f"{_stage(p, 'quality_ms'):>8s} {p['embed_ms']['median']:8.2f} "
                         f"{p['total_ms']['median']:8.2f} {_pct(p['total_ms'], 'p90', 8)}")
    for s in results["skipped"]:
        lines.append(f"skipped {s['path']}: {s['reason']}")
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
           "| model | role | backend | precision | threads | size MB | load ms | first ms | "
           "n | median ms | p90 ms | p99 ms | inf/s | peak RSS MB |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["models"]:
        lat = r["latency_ms"]
        mem = "n/a" if r["peak_rss_delta_mb"] is None else f"{r['peak_rss_delta_mb']:.0f}"
        out.append(f"| {r['name']} | {r['role']} | {r['runtime']} | {r['precision']} | "
                   f"{r['threads'] if r['threads'] is not None else 'default'} | "
                   f"{r['file_mb']:.2f} | {r['load_ms']:.1f} | {r['first_ms']:.1f} | "
                   f"{lat.get('n', '?')} | {lat['median']:.2f} | {_pct(lat, 'p90')} | "
                   f"{_pct(lat, 'p99')} | {r['throughput_per_s']:.1f} | {mem} |")
    if results["pipeline"]:
        out += ["", "Face pipeline on real photos (per photo, largest face; median / p90 ms):",
                "", "| encoder | backend | precision | threads | faces/photos | detect | align | "
                    "quality | embed | total |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for p in results["pipeline"]:
            def mp(k):  # results written before the quality stage existed lack it
                return f"{p[k]['median']:.2f} / {_pct(p[k], 'p90')}" if k in p else "-"
            out.append(f"| {p['encoder']} | {p['runtime']} | {p['precision']} | "
                       f"{p['threads'] if p['threads'] is not None else 'default'} | "
                       f"{p['faces']}/{p['photos']} | {mp('detect_ms')} | {mp('align_ms')} | "
                       f"{mp('quality_ms')} | {mp('embed_ms')} | {mp('total_ms')} |")
    if results["skipped"]:
        out += ["", "Not measured:", ""] + [f"- `{x['path']}`: {x['reason']}"
                                           for x in results["skipped"]]
    return "\n".join(out) + "\n"


def plot(results: dict, path: Path) -> Path:
    """Bar chart: median latency per model (p90 as the whisker), and the face
    pipeline's stages stacked."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on a device
    import matplotlib.pyplot as plt

    models = results["models"]
    pipes = results["pipeline"]
    rows = 2 if pipes else 1
    height = max(2.5, 0.35 * len(models) + 1.2) + (max(2.0, 0.4 * len(pipes) + 1.2) if pipes else 0)
    fig, axes = plt.subplots(rows, 1, figsize=(10, height), squeeze=False)
    ax = axes[0][0]
    if models:
        labels = [_label(r) for r in models]
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
        labels = [f"{p['encoder']} [{p['backend']} {p['precision']}]" for p in pipes]
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
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1))
    return path
