"""Triplet loss with online mining over P×K batches, and the distillation term.

All distances are :func:`squared_l2`, the TensorFlow twin of
``sdk.distance.squared_l2`` (d(a,b)=||a-b||^2 on L2-normalised embeddings), so
training, threshold calibration and the runtime use one definition.

Mining (Hermans et al. 2017; Schroff et al. 2015) on the batch's distance
matrix D and labels y:

* ``batch_hard``: per anchor a, the hardest positive argmax_{p: y_p=y_a, p≠a} D[a,p]
  and the hardest negative argmin_{n: y_n≠y_a} D[a,n]: the "A and P far, A and N
  close" case; loss = mean_a max(D[a,p*] - D[a,n*] + α, 0).
* ``semi_hard``: per positive pair (a,p), the closest negative that is still
  farther than the positive (FaceNet: argmin_{n: D[a,n] > D[a,p]} D[a,n], which
  is the semi-hard D[a,p] < D[a,n] < D[a,p] + α one whenever such exists); if no
  negative is farther than p, the farthest negative is used (the tf-addons
  convention).  loss = mean over positive pairs of max(D[a,p] - D[a,n] + α, 0).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def squared_l2(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """d(a, b) = sum_k (a_k - b_k)^2 over the last axis, broadcasting (TF twin of
    ``sdk.distance.squared_l2``)."""
    diff = tf.cast(a, tf.float32) - tf.cast(b, tf.float32)
    return tf.reduce_sum(diff * diff, axis=-1)


def pairwise_distances(emb: tf.Tensor) -> tf.Tensor:
    """(B, B) matrix D[i, j] = squared_l2(emb_i, emb_j)."""
    return squared_l2(emb[:, None, :], emb[None, :, :])


def _masks(labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    labels = tf.reshape(labels, [-1])
    same = tf.equal(labels[:, None], labels[None, :])
    eye = tf.eye(tf.shape(labels)[0], dtype=tf.bool)
    return tf.logical_and(same, tf.logical_not(eye)), tf.logical_not(same)


def batch_hard_indices(dist: tf.Tensor, labels: tf.Tensor
                       ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Per anchor: (hardest positive index, hardest negative index, valid).

    ``valid`` is False for anchors without a positive or without a negative."""
    pos, neg = _masks(labels)
    big = tf.reduce_max(dist) + 1.0
    hard_pos = tf.argmax(tf.where(pos, dist, -1.0), axis=1)
    hard_neg = tf.argmin(tf.where(neg, dist, big), axis=1)
    valid = tf.logical_and(tf.reduce_any(pos, 1), tf.reduce_any(neg, 1))
    return hard_pos, hard_neg, valid


def semi_hard_negatives(dist: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """For every (anchor a, positive p) cell: the chosen negative index and the
    positive-pair mask (only cells where the mask is True are used).

    The chosen negative is the closest one farther than p from a; when there
    is none, the farthest negative."""
    pos, neg = _masks(labels)
    big = tf.reduce_max(dist) + 1.0
    d_ap = dist[:, :, None]                       # (a, p, 1)
    d_an = dist[:, None, :]                       # (a, 1, n)
    negm = neg[:, None, :]
    farther = tf.logical_and(negm, d_an > d_ap)   # (a, p, n)
    semi = tf.argmin(tf.where(farther, d_an + tf.zeros_like(d_ap), big), axis=2)
    easiest = tf.argmax(tf.where(neg, dist, -1.0), axis=1)            # (a,)
    has_semi = tf.reduce_any(farther, axis=2)
    easiest = tf.broadcast_to(easiest[:, None], tf.shape(semi))
    chosen = tf.where(has_semi, semi, easiest)
    mask = tf.logical_and(pos, tf.reduce_any(neg, 1)[:, None])
    return chosen, mask


def triplet_loss(emb: tf.Tensor, labels: tf.Tensor, margin: float = 0.3,
                 mining: str = "batch_hard") -> tuple[tf.Tensor, dict]:
    """Triplet loss max(d(A,P) - d(A,N) + α, 0) with online mining.

    Returns (loss, stats) where stats holds the fraction of active triplets
    and the mean positive and negative distances of the mined triplets.
    """
    dist = pairwise_distances(emb)
    rows = tf.range(tf.shape(dist)[0], dtype=tf.int64)
    if mining == "batch_hard":
        p, n, valid = batch_hard_indices(dist, labels)
        d_ap = tf.gather_nd(dist, tf.stack([rows, p], 1))
        d_an = tf.gather_nd(dist, tf.stack([rows, n], 1))
        w = tf.cast(valid, tf.float32)
    elif mining == "semi_hard":
        n, mask = semi_hard_negatives(dist, labels)
        d_ap = dist
        a_idx = tf.broadcast_to(rows[:, None], tf.shape(n))
        d_an = tf.gather_nd(dist, tf.stack([a_idx, n], -1))
        w = tf.cast(mask, tf.float32)
    else:
        raise ValueError(f"mining must be 'batch_hard' or 'semi_hard', got {mining!r}")
    per = tf.nn.relu(d_ap - d_an + margin) * w
    count = tf.maximum(tf.reduce_sum(w), 1.0)
    loss = tf.reduce_sum(per) / count
    stats = {"active": tf.reduce_sum(tf.cast(per > 0, tf.float32)) / count,
             "d_pos": tf.reduce_sum(d_ap * w) / count,
             "d_neg": tf.reduce_sum(d_an * w) / count}
    return loss, stats


def distillation_loss(student: tf.Tensor, teacher: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Mean squared_l2(student, teacher) over rows where ``mask`` (teacher known).

    Both are unit vectors, so this is 2·(1 − cos); 0 when no row has a teacher."""
    w = tf.cast(tf.reshape(mask, [-1]), tf.float32)
    return tf.reduce_sum(squared_l2(student, teacher) * w) / tf.maximum(tf.reduce_sum(w), 1.0)


def projected_distillation_loss(student: tf.Tensor, teacher: tf.Tensor, mask: tf.Tensor,
                                projection: tf.Variable) -> tf.Tensor:
    """:func:`distillation_loss` between the teacher and ``normalise(student @ projection)``.

    ``projection`` (D_s, D_t) is a training-only linear map (never exported): it absorbs
    the rotation between the student's own axes (chosen by the CosFace term) and dlib's,
    so each face's whole teacher descriptor can be matched, not only the distances within
    a batch as in :func:`relational_distillation_loss`."""
    projected = student @ projection
    projected = projected * tf.math.rsqrt(
        tf.maximum(tf.reduce_sum(projected * projected, -1, keepdims=True), 1e-12))
    return distillation_loss(projected, teacher, mask)


def procrustes(student: np.ndarray, teacher: np.ndarray) -> np.ndarray:
    """The orthogonal W minimising ‖student·W − teacher‖_F (SVD solution): the starting
    point of the projection, so the first steps pull on the encoder no harder than the
    two spaces really differ."""
    u, _, vt = np.linalg.svd(student.T @ teacher)
    return (u @ vt).astype(np.float32)


def relational_distillation_loss(student: tf.Tensor, teacher: tf.Tensor,
                                 mask: tf.Tensor) -> tf.Tensor:
    """Mean (d_s(i,j)/μ_s − d_t(i,j)/μ_t)² over pairs i≠j of the batch where both
    teacher embeddings are known; d = squared_l2, μ = the mean of d over those pairs
    (relational knowledge distillation, Park et al. 2019, distance term).

    Unlike :func:`distillation_loss` it asks the student to reproduce which faces the
    teacher finds alike, not the teacher's coordinates or scale, so any rotation or
    uniform scaling of the teacher's space is as good: a small student that already
    has its own embedding space can learn from it without first being dragged onto
    dlib's axes."""
    w = tf.cast(tf.reshape(mask, [-1]), tf.float32)
    pair_w = w[:, None] * w[None, :] * (1.0 - tf.eye(tf.shape(w)[0]))
    count = tf.maximum(tf.reduce_sum(pair_w), 1.0)

    def normalised(emb):
        d = pairwise_distances(emb)
        return d / tf.maximum(tf.reduce_sum(d * pair_w) / count, 1e-6)

    diff = normalised(student) - normalised(teacher)
    return tf.reduce_sum(diff * diff * pair_w) / count


def cosface_loss(emb: tf.Tensor, classes: tf.Tensor, weights: tf.Variable,
                 scale: float = 30.0, margin: float = 0.2) -> tf.Tensor:
    """Auxiliary identity-classification loss (CosFace / large-margin cosine).

    logits = scale · (cos(emb, w_c) − margin·[c = class]); softmax cross-entropy.
    ``weights`` is (D, C); its columns are L2-normalised here.  Used next to the
    triplet loss because it converges much faster from scratch on little compute.
    """
    w = weights * tf.math.rsqrt(tf.maximum(tf.reduce_sum(weights * weights, 0, keepdims=True),
                                           1e-12))
    cos = tf.matmul(emb, w)
    onehot = tf.one_hot(classes, tf.shape(w)[1])
    logits = scale * (cos - margin * onehot)
    return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(onehot, logits))
