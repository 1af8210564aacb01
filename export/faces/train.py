"""Train the face encoder: triplet loss (online mining over P×K batches) plus
distillation to dlib's ResNet embeddings, with checkpoints, resume and a curve.

``python -m export faces train --out runs/faces/run1 --minutes 40``

Every epoch (and when the time budget runs out, or on Ctrl-C) the weights, the
optimizer state and ``state.json`` (epoch, step, elapsed seconds, RNG seed,
history) are written to ``--out``; ``--resume`` continues from there.  After
each epoch the held-out identities' pairs (``pairs.txt``, on the cached
aligned crops) are scored for monitoring only: the released model is the last
one, not the best on these pairs, so the pairs stay a fair test.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from . import data as fdata

DEFAULT_WIDTH = 0.5  # a fresh run's encoder width (a leg started with --init keeps its run's)


def merged_labels(labels: np.ndarray, duplicates: np.ndarray) -> np.ndarray:
    """Labels with the identity pairs in ``duplicates`` (rows ``a, b, d``) merged,
    so a person found under two names is never a negative of itself."""
    parent = {int(i): int(i) for i in np.unique(labels)}

    def find(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for a, b, _ in np.asarray(duplicates).reshape(-1, 3):
        ra, rb = find(int(a)), find(int(b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([find(int(v)) for v in labels], dtype=np.int32)


def centre_teacher(emb: np.ndarray, ok: np.ndarray, labels: np.ndarray,
                   hold: np.ndarray) -> np.ndarray:
    """Teacher embeddings minus their mean over training faces, re-normalised.

    dlib's unit descriptors sit in a narrow cone (their mean has norm ~0.9;
    different people are only ~0.33 apart in squared L2), which would squeeze
    the student into that cone against the triplet margin.  Centring spreads
    them over the sphere (different people ~2.0 apart, the same person ~0.7)."""
    from sdk.distance import l2_normalize

    use = ok & ~np.isin(labels, hold)
    out = np.zeros_like(emb)
    out[ok] = l2_normalize(emb[ok] - emb[use].mean(0))
    return out


class PKSampler:
    """P identities × K photos per batch; with a teacher, at least min(its teacher photos,
    K/2) of each identity's K are ones the teacher has embedded (the rest are drawn from
    all its photos, so with a teacher on every face all K are).  An identity with fewer
    than K photos shows each of them once before any repeats.

    With ``hard_fraction`` > 0 and look-alike lists set (:meth:`set_lookalikes`), that
    share of batches is one random identity and P−1 of its ``hard_pool`` nearest
    identities (doppelgänger batches, Smirnov et al. 2017): batch-hard mining can only
    find the negatives a batch holds, and in random batches of 16 out of 656 people
    the look-alikes that decide a strict threshold almost never meet.

    With ``source_fraction`` > 0 and ``sources`` (each row's photo set), that share of
    batches draws all P identities from one photo set (one with at least P identities,
    chosen in proportion to its identities): in mixed batches a stranger from another
    set can be told apart by the set's camera, light and crop, and an encoder that
    learns those cues puts strangers photographed alike (one door camera) too close."""

    def __init__(self, labels: np.ndarray, rows: np.ndarray, p: int, k: int,
                 teacher_ok: np.ndarray | None, seed: int, hard_fraction: float = 0.0,
                 hard_pool: int = 24, source_fraction: float = 0.0,
                 sources: np.ndarray | None = None) -> None:
        self.p, self.k = p, k
        if not 0.0 <= source_fraction <= 1.0:
            raise ValueError(f"source_fraction must be in [0, 1], got {source_fraction}")
        if source_fraction > 0 and sources is None:
            raise ValueError("source_fraction > 0 needs each row's photo set (sources)")
        self.source_fraction = source_fraction
        if not 0.0 <= hard_fraction <= 1.0:
            raise ValueError(f"hard_fraction must be in [0, 1], got {hard_fraction}")
        if hard_fraction > 0 and hard_pool < p - 1:
            raise ValueError(f"hard_pool ({hard_pool}) must hold at least P-1 = {p - 1} "
                             "identities")
        self.hard_fraction, self.hard_pool = hard_fraction, hard_pool
        self.lookalikes: np.ndarray | None = None
        self.rng = np.random.default_rng(seed)
        self.by_id: dict[int, np.ndarray] = {}
        self.teach_by_id: dict[int, np.ndarray] = {}
        for i in np.unique(labels[rows]):
            r = rows[labels[rows] == i]
            if len(r) >= 2:
                self.by_id[int(i)] = r
                if teacher_ok is not None:
                    self.teach_by_id[int(i)] = r[teacher_ok[r]]
        self.ids = np.array(sorted(self.by_id))
        if len(self.ids) < p:
            raise fdata.FacesDataError(f"need at least {p} identities with 2+ photos, "
                                       f"have {len(self.ids)}")
        self.by_source: list[np.ndarray] = []
        if source_fraction > 0:
            # an identity's set is that of most of its photos (a few names are in two sets)
            of = {}
            for i, r in self.by_id.items():
                values, counts = np.unique(np.asarray(sources)[r], return_counts=True)
                of[i] = values[np.argmax(counts)]
            for src in sorted(set(of.values())):
                members = np.array([i for i in self.ids if of[int(i)] == src])
                if len(members) >= p:
                    self.by_source.append(members)
            if not self.by_source:
                raise fdata.FacesDataError(f"no photo set has {p} identities for "
                                           "one-set batches")
            sizes = np.array([len(m) for m in self.by_source], float)
            self.source_weights = sizes / sizes.sum()

    def set_lookalikes(self, centres: np.ndarray, column_of: np.ndarray) -> None:
        """Nearest identities of each identity by the cosine of their class centres.

        ``centres`` is (d, C) (the CosFace weights); ``column_of[label]`` is the label's
        column there. Called again as the centres move during training."""
        cols = column_of[self.ids]
        if (cols < 0).any():
            raise ValueError("an identity of the sampler has no class centre")
        from sdk.distance import l2_normalize

        c = l2_normalize(centres[:, cols].T)
        sim = c @ c.T
        np.fill_diagonal(sim, -np.inf)
        pool = min(self.hard_pool, len(self.ids) - 1)
        self.lookalikes = np.argsort(-sim, axis=1)[:, :pool]

    def _identities(self) -> np.ndarray:
        if (self.lookalikes is not None and self.hard_fraction > 0
                and self.rng.random() < self.hard_fraction):
            seed = int(self.rng.integers(len(self.ids)))
            near = self.rng.choice(self.lookalikes[seed], size=self.p - 1, replace=False)
            return self.ids[np.r_[seed, near]]
        if self.by_source and self.rng.random() < self.source_fraction:
            members = self.by_source[self.rng.choice(len(self.by_source),
                                                     p=self.source_weights)]
            return self.rng.choice(members, size=self.p, replace=False)
        return self.rng.choice(self.ids, size=self.p, replace=False)

    def batch(self) -> np.ndarray:
        """Row indices of one P×K batch, grouped by identity."""
        out = []
        for i in self._identities():
            r, t = self.by_id[int(i)], self.teach_by_id.get(int(i), np.array([], np.int64))
            nt = min(len(t), self.k // 2)
            chosen = list(self.rng.choice(t, size=nt, replace=False)) if nt else []
            rest = np.setdiff1d(r, chosen)
            need = self.k - nt
            if len(rest) >= need:
                chosen += list(self.rng.choice(rest, size=need, replace=False))
            else:
                # a small identity: every photo once, then repeats (drawn with replacement
                # the K slots could all hold one photo: no real positive pair)
                chosen += list(self.rng.permutation(rest))
                chosen += list(self.rng.choice(r, size=need - len(rest), replace=True))
            out.extend(chosen)
        return np.array(out, dtype=np.int64)


def embed_images(model, images_bgr: np.ndarray, batch: int = 128) -> np.ndarray:
    """Embeddings of aligned BGR uint8 faces with a Keras encoder."""
    outs = [np.asarray(model(fdata.bgr_to_model_input(images_bgr[s:s + batch]), training=False))
            for s in range(0, len(images_bgr), batch)]
    return np.concatenate(outs)


def heads_file(model_path: Path) -> Path:
    """Where a released ``<stem>.keras`` keeps the training state its next leg starts
    from: ``<stem>.train.npz`` beside it (written by ``export faces release``)."""
    return model_path.with_name(model_path.stem + ".train.npz")


def run_heads(run_dir: Path) -> dict:
    """A run folder's ``classifier`` (D, C), ``projection`` and ``state`` (dict): those
    its ``classifier.npy``, ``projection.npy`` and ``state.json`` hold."""
    found = {name: np.load(run_dir / f"{name}.npy") for name in ("classifier", "projection")
             if (run_dir / f"{name}.npy").is_file()}
    if (run_dir / "state.json").is_file():
        found["state"] = json.loads((run_dir / "state.json").read_text())
    return found


def save_heads(run_dir: Path, dst: Path) -> Path | None:
    """Pack :func:`run_heads` of a run folder into one ``.npz`` (numbers and a JSON
    string, no pickle); None if the folder has none of them."""
    parts = run_heads(run_dir)
    if not parts:
        return None
    if "state" in parts:
        parts["state"] = np.array(json.dumps(parts["state"]))
    tmp = dst.with_name(dst.name + ".tmp.npz")
    np.savez(tmp, **parts)
    os.replace(tmp, dst)
    return dst


def earlier_heads(model_path: Path) -> dict:
    """The training state of the leg that wrote ``model_path`` (as :func:`run_heads`):
    from its :func:`heads_file` for a released file, else from the run folder it is in."""
    packed = heads_file(model_path)
    if not packed.is_file():
        return run_heads(model_path.parent)
    with np.load(packed) as z:
        found = {k: z[k] for k in z.files}
    if "state" in found:
        found["state"] = json.loads(str(found["state"]))
    return found


def per_class_sample(rows: np.ndarray, classes: np.ndarray, n_classes: int,
                     per_class: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(rows, classes) of up to ``per_class`` faces of each class, in row order."""
    rng = np.random.default_rng(seed)
    pick = np.concatenate([rng.permutation(np.flatnonzero(classes == c))[:per_class]
                           for c in range(n_classes)]).astype(np.int64)
    pick = pick[np.argsort(rows[pick], kind="stable")]
    return rows[pick], classes[pick]


def imprint_classes(emb: np.ndarray, classes: np.ndarray, n_classes: int,
                    seed: int = 0) -> np.ndarray:
    """(D, n_classes) class centres for the CosFace head from a frozen encoder's
    embeddings ``emb`` of faces of class ``classes``: each class's L2-normalised mean
    embedding ("weight imprinting").  A class without faces keeps a random centre."""
    centres = np.random.default_rng(seed).normal(0, 0.05, size=(n_classes, emb.shape[1]))
    sums = np.zeros_like(centres)
    np.add.at(sums, classes, emb)
    seen = np.bincount(classes, minlength=n_classes) > 0
    centres[seen] = sums[seen]
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    return centres.T.astype(np.float32)


def fit_heads(emb: np.ndarray, classes: np.ndarray, teacher: np.ndarray | None,
              teacher_ok: np.ndarray | None, classifier=None, projection=None, *,
              scale: float = 30.0, margin: float = 0.2, steps: int = 200,
              lr: float = 1e-2) -> dict:
    """Fit the CosFace centres (``classifier``, a tf.Variable) and/or the distillation map
    (``projection``) to a frozen encoder's embeddings ``emb`` of faces of class
    ``classes`` (and their teacher embeddings, where ``teacher_ok``), in place, by Adam
    on the whole set.  A leg from a released encoder whose heads were lost starts with
    heads that fit it, so the first steps do not pull the encoder towards fresh ones.
    Returns each fitted loss ``before`` and ``after``."""
    import keras
    import tensorflow as tf

    from . import losses

    e = tf.constant(emb, tf.float32)
    y = tf.constant(classes, tf.int32)

    def terms() -> dict:
        out = {}
        if classifier is not None:
            out["cls"] = losses.cosface_loss(e, y, classifier, scale, margin)
        if projection is not None:
            out["distill"] = losses.projected_distillation_loss(
                e, tf.constant(teacher, tf.float32), tf.constant(teacher_ok), projection)
        return out

    variables = [v for v in (classifier, projection) if v is not None]
    report = {k: {"before": float(v)} for k, v in terms().items()}
    opt = keras.optimizers.Adam(learning_rate=lr)
    for _ in range(steps):
        with tf.GradientTape() as tape:
            total = tf.add_n(list(terms().values()))
        opt.apply_gradients(zip(tape.gradient(total, variables), variables))
    for k, v in terms().items():
        report[k]["after"] = float(v)
    return report


def plot_curves(history: list[dict], path: Path) -> None:
    """Training curve PNG: losses per epoch and held-out pair accuracy / AUC."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    for key in ("loss", "triplet", "distill", "cls"):
        if any(key in h for h in history):
            ax[0].plot(ep, [h.get(key, np.nan) for h in history], marker="o", label=key)
    ax[0].set_xlabel("epoch")
    ax[0].set_title("training loss")
    ax[0].legend()
    for key in ("val_accuracy", "val_auc"):
        ax[1].plot(ep, [h.get(key, np.nan) for h in history], marker="o", label=key)
    ax[1].set_xlabel("epoch")
    ax[1].set_title("held-out pairs (10-fold accuracy, AUC)")
    ax[1].legend()
    ax[1].grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


#: options a resumed run may change: where files are, how long and on how many threads it
#: runs; every other option shaped the checkpoint and must stay as it was
RESUMABLE = frozenset({"out", "cache", "teacher", "split", "pairs", "root", "epochs", "minutes",
                       "resume", "init", "threads", "log_every"})
#: files of a run besides its model: left over from an earlier run, a fresh one removes them
_RUN_FILES = ("classifier.npy", "projection.npy", "optimizer.npz")


def resume_mismatch(saved: dict, now: dict, split: dict) -> list[str]:
    """What differs between a checkpoint's record and the options/split it is resumed with.

    ``saved`` is the checkpoint's ``state.json``; ``now`` the new options (``vars(args)``;
    an option left at ``None`` was not given and keeps the checkpoint's); ``split`` the
    held-out names and the cache's identity count now. Older checkpoints without a split
    record are compared on their options only.
    """
    config = saved.get("config", {})
    diffs = [f"--{k.replace('_', '-')} {config[k]!r} -> {v!r}" for k, v in sorted(now.items())
             if k not in RESUMABLE and k in config and v is not None and config[k] != v]
    for key, value in split.items():
        if key in saved and saved[key] != value:
            diffs.append(f"{key}: the checkpoint's differs from the one given now")
    return diffs


def _save(out: Path, model, optimizer, state: dict, classifier=None, projection=None) -> None:
    for name, var in (("classifier", classifier), ("projection", projection)):
        if var is not None:
            np.save(out / f"{name}.tmp.npy", np.asarray(var))
            os.replace(out / f"{name}.tmp.npy", out / f"{name}.npy")
    model.save(out / "model.keras.tmp.keras")
    os.replace(out / "model.keras.tmp.keras", out / "model.keras")
    opt_vars = {f"v{i}": np.asarray(v) for i, v in enumerate(optimizer.variables)}
    np.savez(out / "optimizer.tmp.npz", **opt_vars)
    os.replace(out / "optimizer.tmp.npz", out / "optimizer.npz")
    (out / "state.tmp.json").write_text(json.dumps(state, indent=1))
    os.replace(out / "state.tmp.json", out / "state.json")


def train(args: argparse.Namespace) -> dict:
    """Run (or resume) training as configured by ``args``; returns the final state."""
    import keras
    import tensorflow as tf

    from . import losses
    from .metrics import roc_metrics, ten_fold
    from .model import build_encoder, count_macs, encoder_width
    from .widen import widen

    from ..tf_threads import set_threads

    set_threads(args.threads, inter=1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = fdata.load_cache(args.cache)
    names = list(cache["names"])
    hold_names = json.loads(Path(args.split).read_text())["holdout"]
    hold = np.array([names.index(h) for h in hold_names])
    labels = cache["labels"]
    teacher_emb = teacher_ok = None
    dups = np.zeros((0, 3))
    if args.teacher and Path(args.teacher).is_file() and args.distill > 0:
        with np.load(args.teacher) as z:
            teacher_emb, teacher_ok = z["emb"], z["ok"]
            if args.merge_duplicates:  # read while the file is open
                dups = z["duplicates"]
        if args.centre_teacher:
            teacher_emb = centre_teacher(teacher_emb, teacher_ok, labels, hold)
        print(f"teacher: {int(teacher_ok.sum())} faces; merging {len(dups)} flagged "
              "cross-set duplicates")
    elif args.distill > 0:
        print(f"no teacher file at {args.teacher}: training with the triplet loss only")
    train_labels = merged_labels(labels, dups)
    train_rows = np.flatnonzero(~np.isin(labels, hold))
    if np.isin(train_labels[train_rows], train_labels[np.isin(labels, hold)]).any():
        raise fdata.FacesDataError("a held-out identity is merged with a training one")
    steps_per_epoch = max(1, len(train_rows) // (args.p * args.k))
    class_ids = np.unique(train_labels[train_rows])
    class_of = np.full(train_labels.max() + 1, -1, np.int32)
    class_of[class_ids] = np.arange(len(class_ids))

    state_file = out / "state.json"
    split_record = {"holdout": sorted(hold_names), "cache_identities": len(names)}
    if state_file.is_file() and not args.resume:
        raise fdata.FacesDataError(f"{out} holds a run (state.json): give --resume to "
                                   "continue it, or another --out")
    if args.resume and state_file.is_file():
        diffs = resume_mismatch(json.loads(state_file.read_text()), vars(args), split_record)
        if diffs:
            raise fdata.FacesDataError(
                f"--resume {out}: the checkpoint was trained with other settings ("
                + "; ".join(diffs) + "): give them as they were, or another --out")
    init_model, earlier = None, {}
    if args.init and not (args.resume and state_file.is_file()):
        # a run folder (its model.keras, classifier.npy, projection.npy) or a .keras file,
        # e.g. the released models/faces/face_encoder.keras (+ face_encoder.train.npz)
        init_model = Path(args.init)
        if not init_model.is_file():
            init_model = init_model / "model.keras"
        if not init_model.is_file():
            raise fdata.FacesDataError(f"--init {args.init}: no .keras file, nor a run "
                                       "folder with model.keras")
        earlier = earlier_heads(init_model)
    if args.resume and state_file.is_file():
        state = json.loads(state_file.read_text())
        model = keras.models.load_model(out / "model.keras")
        print(f"resumed {out} at epoch {state['epoch']}, {state['elapsed'] / 60:.1f} min")
    else:
        if args.resume:
            print(f"--resume: nothing in {out}, starting fresh")
        for name in _RUN_FILES:  # an earlier run's heads must not be trained on or released
            (out / name).unlink(missing_ok=True)
        keras.utils.set_random_seed(args.seed)
        if init_model is not None:
            # a new leg (fresh optimiser, schedule and history) from earlier weights
            model = keras.models.load_model(init_model)
            print(f"initialised from {init_model}")
            if args.width is None:  # no --width: keep the earlier run's
                args.width = encoder_width(model)
            if encoder_width(model) != args.width:
                # another --width than the earlier run's: keep what it learnt (Net2WiderNet;
                # narrowing is refused by widen)
                target = build_encoder(args.width, args.expand, blocks=tuple(args.blocks),
                                       final=args.final)
                model = widen(model, target, seed=args.seed)
                print(f"widened to width {args.width} (function-preserving copy, "
                      f"{model.count_params()} parameters)")
        else:
            if args.width is None:
                args.width = DEFAULT_WIDTH
            model = build_encoder(args.width, args.expand, blocks=tuple(args.blocks),
                                  final=args.final)
        state = {"epoch": 0, "step": 0, "elapsed": 0.0, "history": [], "config": vars(args),
                 "params": int(model.count_params()), "macs": count_macs(model),
                 **split_record}
        if init_model is not None:
            state["init"] = {"from": str(args.init), "state": earlier.get("state")}
        print(f"encoder: {state['params']} parameters, {state['macs'] / 1e6:.1f} M MACs")
    if args.dropout is not None:
        # Dropout's rate is read when the training step is traced, i.e. after this; a
        # checkpoint saves it, so a resumed leg keeps the rate it was started with
        for layer in model.layers:
            if isinstance(layer, keras.layers.Dropout):
                layer.rate = args.dropout
    optimizer = keras.optimizers.AdamW(learning_rate=args.lr, weight_decay=args.weight_decay)
    # heads a new leg has to start afresh (a released encoder without its training state,
    # or --imprint): fitted to the frozen encoder's embeddings of a per-class sample
    fresh_cls = (args.cls > 0 and init_model is not None
                 and (args.imprint or "classifier" not in earlier))
    fresh_proj = (args.distill_mode == "projected" and teacher_emb is not None
                  and init_model is not None and (args.imprint or "projection" not in earlier))
    sample = None
    if fresh_cls or fresh_proj:
        s_rows, s_cls = per_class_sample(train_rows, class_of[train_labels[train_rows]],
                                         len(class_ids), seed=args.seed)
        sample = (s_rows, s_cls, embed_images(model, cache["images"][s_rows]))
    classifier = None
    if args.cls > 0:
        init = np.random.default_rng(args.seed).normal(
            0, 0.05, size=(128, len(class_ids))).astype(np.float32)
        learnt = None
        if args.resume and (out / "classifier.npy").is_file():
            learnt = np.load(out / "classifier.npy")
        elif "classifier" in earlier and not args.imprint:
            learnt = earlier["classifier"]
        if learnt is not None and learnt.shape == init.shape:
            init = learnt  # same identities: keep the learnt class centres
        elif sample is not None and fresh_cls:
            # random centres would make the first steps' CosFace gradients tear down what
            # the encoder learnt: start from each class's mean embedding instead
            init = imprint_classes(sample[2], sample[1], len(class_ids), seed=args.seed)
            print(f"class centres imprinted from {init_model.name}'s embeddings "
                  f"({len(sample[0])} faces)")
        classifier = tf.Variable(init, name="classifier")
    projection = None
    if args.distill_mode == "projected" and teacher_emb is not None:
        if args.resume and (out / "projection.npy").is_file():
            init = np.load(out / "projection.npy")
        elif "projection" in earlier and not args.imprint:
            # a new leg after a projected one: its learnt map still fits, since widening
            # keeps the encoder's function (a Procrustes restart would throw that map away)
            init = earlier["projection"]
        else:
            # start from the best rotation of the student's space onto the teacher's,
            # fitted on up to 2048 training faces the teacher knows
            rows = np.flatnonzero(teacher_ok & ~np.isin(labels, hold))
            rows = np.sort(np.random.default_rng(args.seed).permutation(rows)[:2048])
            init = losses.procrustes(embed_images(model, cache["images"][rows]),
                                     teacher_emb[rows])
        projection = tf.Variable(init, name="projection")
    if sample is not None and args.fit_heads > 0:
        fitted = fit_heads(sample[2], sample[1], teacher_emb[sample[0]] if fresh_proj else None,
                           teacher_ok[sample[0]] if fresh_proj else None,
                           classifier if fresh_cls else None,
                           projection if fresh_proj else None,
                           scale=args.cls_scale, margin=args.cls_margin, steps=args.fit_heads)
        print("heads fitted to the frozen encoder: " + ", ".join(
            f"{k} {v['before']:.3f} -> {v['after']:.3f}" for k, v in fitted.items()))
        state.setdefault("init", {})["fitted_heads"] = fitted
    train_vars = (list(model.trainable_variables)
                  + [v for v in (classifier, projection) if v is not None])
    optimizer.build(train_vars)
    if args.resume and (out / "optimizer.npz").is_file():
        with np.load(out / "optimizer.npz") as z:
            if len(z.files) == len(optimizer.variables):
                for i, v in enumerate(optimizer.variables):
                    v.assign(z[f"v{i}"])
            else:
                print("optimizer state does not match the new variables: fresh optimizer")
    budget = args.minutes * 60 if args.minutes else float("inf")
    sampler = PKSampler(train_labels, train_rows, args.p, args.k, teacher_ok,
                        seed=args.seed + state["step"], hard_fraction=args.hard_identities,
                        hard_pool=args.hard_pool, source_fraction=args.source_batches,
                        sources=cache.get("sources"))
    aug_rng = np.random.default_rng(args.seed + 7 * state["step"] + 1)
    va, vb, vsame, vfold = fdata.holdout_pairs_on_cache(cache, Path(args.pairs), Path(args.root))
    use_teacher = teacher_emb is not None

    @tf.function(reduce_retracing=True)
    def step(x, y, t, tmask, lr, cls_y):
        optimizer.learning_rate.assign(lr)
        with tf.GradientTape() as tape:
            emb = model(x, training=True)
            trip, st = losses.triplet_loss(emb, y, args.margin, args.mining)
            if args.distill_mode == "relational":
                dist = losses.relational_distillation_loss(emb, t, tmask)
            elif projection is not None:
                dist = losses.projected_distillation_loss(emb, t, tmask, projection)
            else:
                dist = losses.distillation_loss(emb, t, tmask)
            loss = trip + args.distill * dist
            cls = tf.constant(0.0)
            if classifier is not None:
                cls = losses.cosface_loss(emb, cls_y, classifier, args.cls_scale, args.cls_margin)
                loss = loss + args.cls * cls
        grads = tape.gradient(loss, train_vars)
        optimizer.apply_gradients(zip(grads, train_vars))
        return loss, trip, dist, st["active"], st["d_pos"], st["d_neg"], cls

    def lr_at(elapsed: float, epoch: int) -> float:
        frac = elapsed / budget if budget != float("inf") else epoch / max(args.epochs, 1)
        warm = min(1.0, (state["step"] + 1) / 100)
        return float(args.lr * warm * 0.5 * (1 + np.cos(np.pi * min(frac, 1.0))) + 1e-5)

    t_start = time.time() - state["elapsed"]
    stop = False
    import signal

    def _term(signum, frame):  # background jobs ignore SIGINT: make SIGTERM save too
        raise KeyboardInterrupt

    old_term = signal.signal(signal.SIGTERM, _term)
    try:
        while state["epoch"] < args.epochs and not stop:
            sums = np.zeros(7)
            n = 0
            for _ in range(steps_per_epoch):
                if args.hard_identities > 0 and (sampler.lookalikes is None
                                                 or state["step"] % 50 == 0):
                    # the centres move: refresh who looks like whom (and at once on resume)
                    sampler.set_lookalikes(classifier.numpy(), class_of)
                rows = sampler.batch()
                faces = fdata.augment_batch(cache["images"][rows], aug_rng, args.augment,
                                            args.side_light)
                if args.grey_batches > 0 and aug_rng.random() < args.grey_batches:
                    # every face grey, the negatives too: per-face greyscale alone almost
                    # never pairs two grey strangers (strangers on grey studio photos came
                    # out too close; greying in-the-wild photos alone did not do that)
                    faces = fdata.greyscale(faces)
                x = fdata.bgr_to_model_input(faces)
                y = train_labels[rows]
                if use_teacher:
                    t, tm = teacher_emb[rows], teacher_ok[rows]
                else:
                    t, tm = np.zeros((len(rows), 128), np.float32), np.zeros(len(rows), bool)
                elapsed = time.time() - t_start
                r = step(tf.constant(x), tf.constant(y), tf.constant(t), tf.constant(tm),
                         tf.constant(lr_at(elapsed, state["epoch"]), tf.float32),
                         tf.constant(class_of[y]))
                sums += np.array([float(v) for v in r])
                n += 1
                state["step"] += 1
                if state["step"] % args.log_every == 0:
                    m = sums / n
                    print(f"epoch {state['epoch'] + 1} step {n}/{steps_per_epoch} "
                          f"loss {m[0]:.4f} triplet {m[1]:.4f} distill {m[2]:.4f} "
                          f"cls {m[6]:.3f} active {m[3]:.2f} d+ {m[4]:.3f} d- {m[5]:.3f} "
                          f"{(time.time() - t_start) / 60:.1f} min", flush=True)
                if time.time() - t_start > budget:
                    stop = True
                    break
            state["elapsed"] = time.time() - t_start
            m = sums / max(n, 1)
            emb = embed_images(model, cache["images"][np.unique(np.r_[va, vb])])
            lookup = {r: k for k, r in enumerate(np.unique(np.r_[va, vb]))}
            ea = emb[[lookup[r] for r in va]]
            eb = emb[[lookup[r] for r in vb]]
            from sdk.distance import squared_l2

            d = squared_l2(ea, eb)
            tf_ = ten_fold(d, vsame, vfold)
            rm = roc_metrics(d, vsame)
            state["epoch"] += 0 if stop and n < steps_per_epoch else 1
            rec = {"epoch": state["epoch"] if not stop else state["epoch"] + n / steps_per_epoch,
                   "loss": m[0], "triplet": m[1], "distill": m[2], "active": m[3], "cls": m[6],
                   "val_accuracy": tf_["accuracy_mean"], "val_auc": rm["auc"],
                   "minutes": state["elapsed"] / 60, "steps": n}
            state["history"].append(rec)
            print(f"== epoch {rec['epoch']:.2f}: loss {m[0]:.4f} held-out pairs 10-fold "
                  f"acc {tf_['accuracy_mean']:.4f}±{tf_['accuracy_std']:.4f} "
                  f"AUC {rm['auc']:.4f} ({state['elapsed'] / 60:.1f} min)", flush=True)
            _save(out, model, optimizer, state, classifier, projection)
            plot_curves(state["history"], out / "curve.png")
    except KeyboardInterrupt:
        state["elapsed"] = time.time() - t_start
        _save(out, model, optimizer, state, classifier, projection)
        print("interrupted: checkpoint saved; continue with --resume", flush=True)
    finally:
        signal.signal(signal.SIGTERM, old_term)
    return state


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"a dropout rate is in [0, 1), got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``python -m export faces train``."""
    from .cli import FACES, RUNS

    ap = argparse.ArgumentParser(prog="python -m export faces train",
                                 description="train the face encoder (triplet + distillation)")
    ap.add_argument("--out", default=str(RUNS / "run"))
    ap.add_argument("--cache", default=str(RUNS / "aligned.npz"))
    ap.add_argument("--teacher", default=str(RUNS / "teacher.npz"),
                    help="teacher embeddings (export faces teacher); missing: no distillation")
    ap.add_argument("--split", default=str(RUNS / "split.json"))
    ap.add_argument("--pairs", default=str(RUNS / "pairs.txt"))
    ap.add_argument("--root", default=str(FACES))
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--minutes", type=float, default=None, help="wall-clock budget")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--init", default=None,
                    help="start a new run from the weights (and CosFace centres and "
                         "distillation map) of an earlier run directory, or of a .keras file "
                         "such as the released models/faces/face_encoder.keras (those from its "
                         "face_encoder.train.npz; without one, fresh heads: see --fit-heads); "
                         "fresh optimiser, schedule and history. With "
                         "a larger --width than that run's, its encoder is widened first "
                         "(function-preserving channel copies)")
    ap.add_argument("--imprint", action="store_true",
                    help="with --init: start the CosFace centres (each class's mean embedding) "
                         "and the distillation map (a Procrustes rotation) afresh even when "
                         "the earlier run has learnt ones (what a leg from a .keras file "
                         "without its training state does anyway)")
    ap.add_argument("--fit-heads", type=int, default=200, metavar="STEPS",
                    help="with --init and no learnt CosFace centres or distillation map: fit "
                         "the fresh ones to the frozen encoder's embeddings for this many "
                         "Adam steps before training (0: imprinted centres and a Procrustes "
                         "rotation as they are)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--width", type=float, default=None,
                    help=f"encoder width multiplier (default: the --init run's, else "
                         f"{DEFAULT_WIDTH})")
    ap.add_argument("--expand", type=int, default=2)
    ap.add_argument("--blocks", type=int, nargs=3, default=[2, 3, 1])
    ap.add_argument("--final", type=int, default=256)
    ap.add_argument("--p", type=int, default=16, help="identities per batch")
    ap.add_argument("--k", type=int, default=4, help="photos per identity per batch")
    ap.add_argument("--margin", type=float, default=0.3)
    ap.add_argument("--mining", choices=("batch_hard", "semi_hard"), default="batch_hard",
                    help="triplet mining within each P x K batch: batch_hard (each anchor's "
                    "farthest positive and closest negative) or semi_hard (the closest "
                    "negative farther than the positive; the farthest negative when none "
                    "is); the loss is the mean over valid anchors (batch_hard) or positive "
                    "pairs (semi_hard), zero-loss ones included (export/faces/losses.py)")
    ap.add_argument("--hard-identities", type=float, default=0.0,
                    help="share of batches made of one identity and P-1 of its nearest "
                         "identities by class centre (look-alike batches; needs --cls)")
    ap.add_argument("--hard-pool", type=int, default=24,
                    help="how many nearest identities a look-alike batch draws P-1 from")
    ap.add_argument("--source-batches", type=float, default=0.0,
                    help="share of batches whose identities all come from one photo set, "
                         "so set-specific cues (camera, light, crop) cannot tell strangers "
                         "apart")
    ap.add_argument("--distill", type=float, default=1.0, help="weight of the distillation term")
    ap.add_argument("--distill-mode", choices=("absolute", "relational", "projected"),
                    default="absolute",
                    help="absolute: d(student, teacher) per face; relational: match the "
                         "teacher's pairwise distances within the batch; projected: "
                         "d(student·W, teacher) per face through a learnt linear map W "
                         "(training only, starts at the Procrustes rotation)")
    ap.add_argument("--no-centre-teacher", dest="centre_teacher", action="store_false",
                    help="distil to dlib's raw descriptors instead of centred ones")
    ap.add_argument("--merge-duplicates", action="store_true",
                    help="merge the identity pairs the teacher flagged as one person "
                         "(off: with 3 teacher faces per identity the flags were not reliable)")
    ap.add_argument("--cls", type=float, default=0.0,
                    help="weight of the auxiliary CosFace identity-classification loss")
    ap.add_argument("--cls-scale", type=float, default=30.0)
    ap.add_argument("--cls-margin", type=float, default=0.2)
    ap.add_argument("--augment", type=float, default=1.0, help="augmentation strength")
    ap.add_argument("--side-light", type=float, default=0.0,
                    help="probability of light from one side (a shading ramp that darkens "
                         "the far side of the face); 0 keeps earlier runs' augmentation")
    ap.add_argument("--grey-batches", type=float, default=0.0,
                    help="share of batches made wholly grey (anchors, positives and "
                         "negatives), so strangers are told apart without colour; 0: none")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--weight-decay", type=float, default=1e-4,
                    help="AdamW's decoupled decay: each step shrinks every weight by lr x this "
                         "(the default at lr 1e-3: 1e-7 per step, next to nothing; AdamW "
                         "setups elsewhere use 0.01-0.05)")
    ap.add_argument("--dropout", type=_rate, default=None,
                    help="rate of the dropout before the embedding layer (default: the "
                         "model's own, 0.1 since run 1); 0 turns it off, so batch-hard mining "
                         "ranks the distances the exported model gives")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--log-every", type=int, default=20)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m export faces train``."""
    args = build_parser().parse_args(argv)
    if args.epochs < 1:
        raise SystemExit("--epochs must be >= 1")
    if args.hard_identities > 0 and args.cls <= 0:
        raise SystemExit("--hard-identities picks look-alikes by CosFace class centre: "
                         "give --cls > 0 too")
    state = train(args)
    h = state["history"][-1] if state["history"] else {}
    print(f"done: epoch {state['epoch']}, {state['elapsed'] / 60:.1f} min, "
          f"last held-out accuracy {h.get('val_accuracy', float('nan')):.4f}; "
          f"model in {Path(args.out) / 'model.keras'}")
    return 0
