"""Triplet training, evaluation and export of a 1D or 3D encoder.

The same pieces as the face encoder: P persons x K samples batches, the
triplet loss with online mining (``export.faces.losses``), the one distance
(squared L2 on unit vectors), τ calibrated on training identities, and the
same writers (``export.formats``) with the contract inside each file.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class TrainOptions:
    """Hyper-parameters of :func:`train`."""

    steps: int = 600
    persons: int = 8          # P identities per batch
    per_person: int = 4       # K samples per identity
    margin: float = 0.4       # α of the triplet loss (squared L2 on unit vectors)
    mining: str = "batch_hard"
    learning_rate: float = 2e-3
    checkpoint_every: int = 100
    seed: int = 0


def pk_batches(labels: np.ndarray, persons: int, per_person: int, rng: np.random.Generator):
    """Endless index batches of ``persons`` identities x ``per_person`` samples."""
    ids = np.unique(labels)
    by_id = {i: np.flatnonzero(labels == i) for i in ids}
    while True:
        chosen = rng.choice(ids, size=min(persons, len(ids)), replace=False)
        yield np.concatenate([rng.choice(by_id[i], size=per_person,
                                         replace=len(by_id[i]) < per_person) for i in chosen])


def train(model, x: np.ndarray, y: np.ndarray, options: TrainOptions, out_dir: Path,
          augment=None, log=print) -> dict:
    """Train ``model`` with the triplet loss; checkpoints to ``out_dir`` and resumes from it.

    Returns the loss history (one value per step, including resumed ones).
    """
    import keras
    import tensorflow as tf

    from export.faces.losses import triplet_loss

    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt, state_file = out_dir / "checkpoint.weights.h5", out_dir / "state.json"
    history: list[float] = []
    start = 0
    if ckpt.is_file() and state_file.is_file():
        model.load_weights(ckpt)
        state = json.loads(state_file.read_text())
        start, history = state["step"], state["history"]
        if start > options.steps:
            raise ValueError(f"the checkpoint in {out_dir} has trained {start} steps, more than "
                             f"--steps {options.steps}: give at least {start} or another folder")
        log(f"resumed from step {start}")
    rng = np.random.default_rng(options.seed + start)
    optimizer = keras.optimizers.Adam(options.learning_rate)

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            emb = model(xb, training=True)
            loss, _ = triplet_loss(emb, yb, margin=options.margin, mining=options.mining)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    batches = pk_batches(y, options.persons, options.per_person, rng)
    t0 = time.time()
    for s in range(start, options.steps):
        idx = next(batches)
        xb = x[idx] if augment is None else augment(x[idx], rng)
        history.append(float(step(tf.constant(xb, tf.float32), tf.constant(y[idx]))))
        if (s + 1) % options.checkpoint_every == 0 or s + 1 == options.steps:
            model.save_weights(ckpt)
            state_file.write_text(json.dumps({"step": s + 1, "history": history}))
            recent = np.mean(history[-options.checkpoint_every:])
            log(f"step {s + 1}/{options.steps}  loss {recent:.4f}  ({time.time() - t0:.0f} s)")
    return {"history": history}


def embed(model, x: np.ndarray, batch: int = 64) -> np.ndarray:
    """Embeddings of ``x`` with the Keras model (inference mode)."""
    return np.concatenate([np.asarray(model(x[i:i + batch], training=False))
                           for i in range(0, len(x), batch)])


def all_pairs(labels: np.ndarray, max_different: int | None = None,
              rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i < j): every same-identity pair, and different ones (subsampled)."""
    i, j = np.triu_indices(len(labels), k=1)
    same = labels[i] == labels[j]
    diff_idx = np.flatnonzero(~same)
    if max_different is not None and len(diff_idx) > max_different:
        rng = rng or np.random.default_rng(0)
        diff_idx = rng.choice(diff_idx, size=max_different, replace=False)
    keep = np.sort(np.concatenate([np.flatnonzero(same), diff_idx]))
    return np.stack([i[keep], j[keep]], axis=1), same[keep]


def rank1_one_shot(emb: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> float:
    """Enroll one random sample per identity, identify all others by nearest (rank-1)."""
    from sdk.distance import squared_l2

    ids = np.unique(labels)
    enrolled = np.array([rng.choice(np.flatnonzero(labels == i)) for i in ids])
    probes = np.setdiff1d(np.arange(len(labels)), enrolled)
    d = squared_l2(emb[probes][:, None, :], emb[enrolled][None, :, :])
    return float(np.mean(ids[d.argmin(axis=1)] == labels[probes]))
