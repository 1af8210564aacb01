"""Student vs optimiser on the content samples: J_content and J_style of each
(same loss network, weights and layers), time of each, and a picture grid
(content x style x method).

The student is measured as it ships: the released model files run through
``sdk.Stylizer``; the optimiser is the teacher of :mod:`export.style.optimize`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from .lossnet import DEFAULT_LAYERS
from .optimize import (CostModel, OptimizeOptions, check_side, fit_side, layers_record,
                       optimize, style_image_for, trained_layers)
from .student import SIZE_MULTIPLE
from .train import list_images, read_rgb, write_rgb


def student_costs(cost_model: CostModel, content: np.ndarray, style: np.ndarray,
                  generated: np.ndarray) -> dict[str, float]:
    """J_content and J_style (unweighted) of ``generated`` for this content/style pair."""
    c = content.astype(np.float32)[None]
    s = style_image_for(style, content.shape[0], content.shape[1]).astype(np.float32)[None]
    cost_model.set_targets(c, s)
    parts = cost_model.costs(generated.astype(np.float32)[None])
    return {k: float(np.asarray(parts[k])[0]) for k in ("J_content", "J_style")}


def evaluate(models: dict[str, dict[str, Path]], styles_dir: str | Path, content_dir: str | Path,
             out_dir: str | Path, *, max_side: int = 256, iterations: int = 200,
             threads: int = 1, repeats: int = 5, extractor=None,
             reuse_optimizer: str | Path | Sequence[str | Path] | None = None,
             optimizer_beta: float | None = None, costs=None,
             vgg_weights: str | Path | None = None) -> dict:
    """Run the comparison.

    Args:
        models: ``{style: {"fp32": path, "int8": path, ...}}`` released stylizers.
        styles_dir: the style images (``<style>.jpg``).
        content_dir: content images (the samples).
        out_dir: where images, ``results.json`` and ``grid.png`` go.
        max_side: content images are fitted to this (multiple of 4) for both methods;
            a fitted side under ``optimize.MIN_SIDE`` is a ValueError before any work.
        iterations: optimiser iterations (Adam, from the content image).
        reuse_optimizer: an earlier evaluation's ``out_dir`` (or several, searched
            in order); an optimiser result there with the same content, style, size,
            loss network, layers, α, β, γ and iterations is read back (image and its
            measured seconds) instead of being recomputed, since the optimiser is
            deterministic and ~1 CPU-minute per pair. Its costs are recomputed here.
        optimizer_beta: the optimiser's β instead of the one each file was trained
            with. J_content is a sum over pixels and J_style is normalised by them, so
            a student trained on 160-px crops with β balances the terms like β·(256/160)²
            on 256-px images; this lets the reference minimise that balance.
        costs: a ``CostWeights`` naming the loss network and layers (default: the
            training defaults); α, β, γ still come from each file. Each file is
            scored with the loss network it was trained against (its metadata's
            ``loss_network``) and with its layers and λ where it records them
            (``content_layer``, ``style_layers``; else those of ``costs`` or the
            defaults, and stdout says so); ``costs`` naming another network or other
            layers is a ValueError.
        extractor: one feature extractor for every file (tests); by default one per
            loss network and set of layers, built when first needed.
        vgg_weights: a local VGG19 notop weights file for students trained against
            VGG19 (else Keras' cache or download).
    """
    from sdk import Stylizer, StylizerOptions

    from .lossnet import feature_extractor
    from .optimize import CostWeights

    import sdk

    # every picture is checked before any model is opened or optimiser run: one too small
    # for the loss network would otherwise fail deep inside TensorFlow, minutes in
    contents = [(p, fit_side(read_rgb(p), max_side, SIZE_MULTIPLE))
                for p in list_images(content_dir)]
    for cpath, content in contents:
        check_side(*content.shape[:2], f"content image {cpath.name} (fitted to max_side="
                                       f"{max_side}) and its style image")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows, results = [], []
    reuse_folders = ([] if reuse_optimizer is None else
                     [reuse_optimizer] if isinstance(reuse_optimizer, (str, Path)) else
                     list(reuse_optimizer))
    costs_of = {}
    for style_name, files in models.items():
        # the optimiser gets the same alpha, beta, gamma the student was trained with
        # (beta: unless optimizer_beta says otherwise)
        with sdk.load_model(next(iter(files.values()))) as m:
            extra = m.info.extra
        # costs are measured with the loss network the student was trained against: a
        # VGG19 student scored (and its optimiser run) on SqueezeNet would be judged on a
        # loss it never saw
        trained = extra.get("loss_network", CostWeights.network)
        base = costs or CostWeights(network=trained)
        if base.network != trained:
            raise ValueError(f"stylizer {style_name!r} was trained with the {trained} loss "
                             f"network; its costs cannot be measured with {base.network}")
        costs_of[style_name] = base.with_trained_weights(extra)
        recorded = trained_layers(extra)
        if recorded is None:
            print(f"{style_name}: the file records no loss-network layers; scored with the "
                  f"{'given' if base.layers else 'default'} {base.network} layers "
                  f"{layers_record(base.layer_choice)}", flush=True)
        elif base.layers is not None and base.layers != recorded:
            raise ValueError(f"stylizer {style_name!r} was trained with the layers "
                             f"{layers_record(recorded)}; its costs cannot be measured with "
                             f"{layers_record(base.layers)}")
        else:
            costs_of[style_name] = dataclasses.replace(costs_of[style_name], layers=recorded)
        if optimizer_beta is not None:
            costs_of[style_name] = dataclasses.replace(costs_of[style_name], beta=optimizer_beta)
    extractors = {}  # one feature extractor per loss network and set of layers in use

    def extractor_for(weights: CostWeights):
        if extractor is not None:
            return extractor
        key = (weights.network, tuple(weights.layer_choice.names))
        if key not in extractors:
            local = vgg_weights if weights.network == "vgg19" and vgg_weights else "default"
            extractors[key] = feature_extractor(
                weights.network, weights.layer_choice.names, weights=local)
        return extractors[key]
    for cpath, content in contents:
        row = [content]
        for style_name, files in models.items():
            style = read_rgb(Path(styles_dir) / f"{style_name}.jpg")
            weights = costs_of[style_name]
            cost_model = CostModel(extractor_for(weights), weights)
            entry = {"content": cpath.stem, "style": style_name,
                     "loss_network": weights.network,
                     "alpha": weights.alpha, "beta": weights.beta, "gamma": weights.gamma,
                     "layers": layers_record(weights.layer_choice),
                     "size": [int(content.shape[1]), int(content.shape[0])]}
            earlier = source = None
            for source in reuse_folders:
                earlier = _earlier_optimizer(source, entry, iterations, max_side)
                if earlier is not None:
                    break
            if earlier is not None:
                image, seconds = earlier
            else:
                opt = optimize(content, style, OptimizeOptions(iterations=iterations,
                                                               max_side=max_side, costs=weights),
                               extractor=extractor_for(weights), progress=False)
                image, seconds = opt.image, opt.seconds
            write_rgb(out / f"{cpath.stem}_{style_name}_optimizer.png", image)
            entry["optimizer"] = {**student_costs(cost_model, content, style, image),
                                  "seconds": round(seconds, 2), "iterations": iterations}
            if earlier is not None:
                entry["optimizer"]["reused_from"] = str(source)
            row.append(image)
            for precision, path in files.items():
                with Stylizer.create_from_options(StylizerOptions(model_path=path,
                                                                  threads=threads)) as st:
                    bgr = np.ascontiguousarray(content[:, :, ::-1])
                    st(bgr)  # warm-up (allocation, first-run costs)
                    times = []
                    for _ in range(repeats):
                        t0 = time.perf_counter()
                        y = st(bgr)
                        times.append(time.perf_counter() - t0)
                rgb = np.ascontiguousarray(y[:, :, ::-1])
                write_rgb(out / f"{cpath.stem}_{style_name}_student_{precision}.png", rgb)
                entry[f"student_{precision}"] = {
                    **student_costs(cost_model, content, style, rgb),
                    "seconds": round(float(np.median(times)), 4), "model": str(path)}
                row.append(rgb)
            for k, v in entry.items():
                if k.startswith("student_"):
                    v["J_style_vs_optimizer"] = round(v["J_style"] / entry["optimizer"]["J_style"], 3)
                    v["J_content_vs_optimizer"] = round(
                        v["J_content"] / entry["optimizer"]["J_content"], 3)
                    v["speedup"] = round(entry["optimizer"]["seconds"] / v["seconds"], 1)
            results.append(entry)
            print(json.dumps(entry), flush=True)
        rows.append(row)
    columns = ["content"] + [f"{s} {m}" for s, f in models.items()
                             for m in ["optimizer", *(f"student {p}" for p in f)]]
    write_rgb(out / "grid.png", picture_grid(rows, columns))
    summary = {"max_side": max_side, "iterations": iterations, "threads": threads,
               "optimizer_beta": optimizer_beta, "columns": columns, "results": results,
               "geometric_mean_vs_optimizer": geometric_means(results)}
    print("geometric mean of the ratios to the optimiser: "
          + json.dumps(summary["geometric_mean_vs_optimizer"]), flush=True)
    (out / "results.json").write_text(json.dumps(summary, indent=1))
    (out / "results.md").write_text(results_markdown(summary))
    return summary


def geometric_means(results: Sequence[dict]) -> dict[str, dict[str, float]]:
    """Per student precision, the geometric mean over content × style pairs of its
    J_style and J_content ratios to the optimiser (one number to compare students)."""
    out: dict[str, dict[str, float]] = {}
    keys = sorted({k for r in results for k in r if k.startswith("student_")})
    for key in keys:
        rows = [r[key] for r in results if key in r]
        out[key] = {cost: round(float(np.exp(np.mean(np.log([v[f"{cost}_vs_optimizer"]
                                                               for v in rows])))), 3)
                    for cost in ("J_style", "J_content")}
    return out


def _earlier_optimizer(folder, entry: dict, iterations: int, max_side: int):
    """(image, seconds) of a matching optimiser result in an earlier evaluation, or None."""
    if folder is None:
        return None
    folder = Path(folder)
    summary_file = folder / "results.json"
    if not summary_file.is_file():
        raise FileNotFoundError(f"--reuse-optimizer {folder}: no results.json there")
    summary = json.loads(summary_file.read_text())
    if summary.get("iterations") != iterations or summary.get("max_side") != max_side:
        return None
    keys = ("content", "style", "alpha", "beta", "gamma", "size")

    def layers(result: dict):
        # results written before the layers were recorded used their network's defaults
        return result.get("layers", layers_record(DEFAULT_LAYERS[result.get(
            "loss_network", "squeezenet")]))

    for old in summary.get("results", []):
        # results written before the network was recorded were all SqueezeNet's
        if (all(old.get(k) == entry[k] for k in keys)
                and old.get("loss_network", "squeezenet")
                == entry.get("loss_network", "squeezenet")
                and layers(old) == layers(entry)):
            image_file = folder / f"{entry['content']}_{entry['style']}_optimizer.png"
            if image_file.is_file():
                return read_rgb(image_file), float(old["optimizer"]["seconds"])
    return None


def results_markdown(summary: dict) -> str:
    """The comparison as a Markdown table (what docs/RESULTS_style.md shows), from
    the ``results.json`` summary alone."""
    def e(v: float) -> str:
        return f"{v:.2e}".replace("e+0", "e")

    lines = ["| content | style | size | optimiser J_style | J_content | s "
             "| student fp32 J_style (× opt) | J_content (× opt) | ms "
             "| student int8 J_style (× opt) | J_content (× opt) | ms | speed-up (fp32) |",
             "|" + "---|" * 13]
    for r in summary["results"]:
        o = r["optimizer"]
        cells = [r["content"], r["style"], f"{r['size'][0]}×{r['size'][1]}",
                 e(o["J_style"]), e(o["J_content"]), f"{o['seconds']:.1f}"]
        for key in ("student_fp32", "student_int8"):
            st = r.get(key)
            if st is None:
                cells += ["–", "–", "–"]
                continue
            cells += [f"{e(st['J_style'])} ({st['J_style_vs_optimizer']:.2f})",
                      f"{e(st['J_content'])} ({st['J_content_vs_optimizer']:.2f})",
                      f"{1000 * st['seconds']:.0f}"]
        fp32 = r.get("student_fp32")
        cells.append(f"{fp32['speedup']:.0f}×" if fp32 else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def picture_grid(rows: Sequence[Sequence[np.ndarray]], labels: Sequence[str],
                 cell: tuple[int, int] = (200, 150)) -> np.ndarray:
    """Rows of RGB images as one picture: every image centre-cropped to the cell's aspect
    ratio and resized to ``cell`` (width, height), with a label above each column."""
    import cv2

    w, h = cell
    header = np.full((22, w * len(labels), 3), 255, np.uint8)
    for j, label in enumerate(labels):
        cv2.putText(header, label, (j * w + 4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.42,
                    (0, 0, 0), 1, cv2.LINE_AA)
    lines = [header]
    for row in rows:
        cells = []
        for im in row:
            ih, iw = im.shape[:2]
            if iw * h > ih * w:   # too wide: crop the sides
                cw = ih * w // h
                im = im[:, (iw - cw) // 2:(iw - cw) // 2 + cw]
            else:
                ch = iw * h // w
                im = im[(ih - ch) // 2:(ih - ch) // 2 + ch]
            cells.append(cv2.resize(im, (w, h), interpolation=cv2.INTER_AREA))
        line = np.concatenate(cells, axis=1)
        lines.append(np.pad(line, ((0, 0), (0, header.shape[1] - line.shape[1]), (0, 0)),
                            constant_values=255))
    return np.concatenate(lines)
