"""Probe (session 25): the face evaluation data's known flaws, and what they move.

1. yale: byte-identical photos of one person under different names; one-shot and
   three-photo identification (rank-1, enrolled probes let in at the file's
   ``far_1e-4``) with and without them.
2. The held-out pairs list: different-person pairs listed twice, once each way round;
   10-fold accuracy and AUC with and without the repeats (each pair keeps its fold).
3. The 10-fold "±": the standard deviation over folds with ddof 0 (what is reported),
   ddof 1, and the standard error of the mean.

    python scripts/eval_data_audit.py [--model models/faces/face_encoder_int8.onnx]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sdk  # noqa: E402
from export.faces import data as fdata  # noqa: E402
from export.faces.evaluate import (Encoder, FaceCropper, _embed_paths,  # noqa: E402
                                   evaluate_identification)
from export.faces.metrics import roc_metrics, ten_fold  # noqa: E402


def duplicates(root: Path) -> dict[Path, list[Path]]:
    """Per photo kept, the later files of the same person with the same bytes."""
    out = {}
    for person in sorted(p for p in root.iterdir() if p.is_dir()):
        seen: dict[str, Path] = {}
        for f in sorted(person.iterdir()):
            digest = hashlib.sha256(f.read_bytes()).hexdigest()
            if digest in seen:
                out.setdefault(seen[digest], []).append(f)
            else:
                seen[digest] = f
    return out


def without(root: Path, dropped: set[Path], into: Path) -> Path:
    """A copy of ``root`` (symlinks) without the ``dropped`` files."""
    for person in sorted(p for p in root.iterdir() if p.is_dir()):
        (into / person.name).mkdir(parents=True)
        for f in sorted(person.iterdir()):
            if f not in dropped:
                (into / person.name / f.name).symlink_to(f.resolve())
    return into


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(ROOT / "models/faces/face_encoder_int8.onnx"))
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--pairs", default=str(ROOT / "runs/faces/pairs.txt"))
    args = ap.parse_args(argv)
    faces = Path(args.shared) / "data" / "faces"
    with sdk.load_model(args.model) as m:
        tau = m.info.operating_points["far_1e-4"]
    enc, crop = Encoder(args.model, threads=1), FaceCropper()

    yale = faces / "yale"
    dups = duplicates(yale)
    dropped = {f for fs in dups.values() for f in fs}
    print(f"yale: {len(dropped)} byte-identical copies of {len(dups)} photos")
    for kept, copies in dups.items():
        print(f"  {kept.parent.name}/{kept.name} = " + ", ".join(f.name for f in copies))
    with tempfile.TemporaryDirectory() as tmp:
        clean = without(yale, dropped, Path(tmp) / "yale")
        for enroll in (1, 3):
            for label, root in (("as it is", yale), ("without the copies", clean)):
                r = evaluate_identification(root, enc, crop, tau, enroll=enroll)
                print(f"  enrol {enroll}, {label}: rank-1 {100 * r['rank1_closed_set']:.2f} %,"
                      f" enrolled probes let in at far_1e-4 ({tau:.4f}) "
                      f"{100 * r['open_set_known_correct_and_accepted']:.2f} %")

    parsed, n_folds = fdata.parse_lfw_pairs(args.pairs)
    per = len(parsed) // n_folds
    items = [(fdata.resolve_lfw_image(faces, a, i), fdata.resolve_lfw_image(faces, b, j), s)
             for a, i, b, j, s in parsed]
    folds = np.arange(len(items)) // per
    emb = _embed_paths([p for a, b, _ in items for p in (a, b)], crop, enc)
    d = np.array([sdk.distance.squared_l2(emb[str(a)], emb[str(b)]) for a, b, _ in items])
    same = np.array([s for _, _, s in items])
    seen, keep = set(), np.ones(len(items), bool)
    for k, (a, b, s) in enumerate(items):
        key = frozenset((str(a), str(b)))
        if not s and key in seen:
            keep[k] = False
        seen.add(key)
    print(f"\n{Path(args.pairs).name}: {int((~keep).sum())} of {int((~same).sum())} "
          "different-person pairs repeat an earlier one the other way round")
    for label, m_ in (("as it is", np.ones(len(items), bool)), ("without the repeats", keep)):
        tf_ = ten_fold(d[m_], same[m_], folds[m_])
        auc = roc_metrics(d[m_], same[m_])["auc"]
        accs = np.array(tf_["fold_accuracies"])
        print(f"  {label}: 10-fold {100 * tf_['accuracy_mean']:.2f} % ± "
              f"{100 * tf_['accuracy_std']:.2f} (ddof 0; ddof 1 "
              f"{100 * accs.std(ddof=1):.2f}, standard error "
              f"{100 * accs.std(ddof=1) / np.sqrt(len(accs)):.2f}), AUC {auc:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
