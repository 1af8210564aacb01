"""Verification metrics on distances (smaller = more alike): ROC, AUC, EER, TAR@FAR,
best threshold, and the LFW 10-fold protocol."""

from __future__ import annotations

import numpy as np


def roc_curve(dist: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(far, tar, thresholds): accepting ``dist <= t`` for every distinct t, ascending."""
    dist = np.asarray(dist, np.float64)
    same = np.asarray(same, bool)
    if same.all() or not same.any():
        raise ValueError("ROC needs both same and different pairs")
    order = np.argsort(dist, kind="mergesort")
    d, s = dist[order], same[order]
    tp = np.cumsum(s)
    fp = np.cumsum(~s)
    last = np.r_[d[1:] != d[:-1], True]  # keep the last index of each distinct distance
    tar = np.r_[0.0, tp[last] / s.sum()]
    far = np.r_[0.0, fp[last] / (~s).sum()]
    thr = np.r_[-np.inf, d[last]]
    return far, tar, thr


def tar_on_roc(far: np.ndarray, tar: np.ndarray, target: float) -> float:
    """The highest TAR of a :func:`roc_curve` whose FAR is at most ``target`` (0 if none)."""
    ok = far <= target
    return float(tar[ok].max()) if ok.any() else 0.0


def tau_on_roc(far: np.ndarray, thr: np.ndarray, target: float) -> float:
    """The loosest τ of a :func:`roc_curve` whose FAR is at most ``target`` (a door's
    setting; far rises with τ, so the last such point).  When only accepting nobody
    meets it (the closest pair is a different-person one), τ is just below the smallest
    distance.

    Raises:
        ValueError: the closest different-person pair is at distance 0 (the same photo
            under two names?): no τ above 0 accepts nobody.
    """
    tau = float(thr[far <= target][-1])
    if tau != -np.inf:
        return tau
    smallest = float(thr[1])
    if smallest <= 0.0:
        raise ValueError("a different-person pair is at distance 0 (the same photo under "
                         f"two names?): no threshold keeps the false-accept rate <= {target}")
    return float(np.nextafter(np.float32(smallest), np.float32(0.0)))


def best_threshold(dist: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """(τ, accuracy): the τ maximising accuracy of ``same = dist <= τ``; τ is the
    midpoint between the chosen distance and the next one."""
    raw = np.asarray(dist)
    raw = raw if raw.dtype in (np.float32, np.float64) else raw.astype(np.float64)
    dist = raw.astype(np.float64)
    same = np.asarray(same, bool)
    order = np.argsort(dist, kind="mergesort")
    d, s = dist[order], same[order]
    # accept the first k pairs (k = 0..n): correct = same accepted + different rejected
    correct = np.r_[0, np.cumsum(s)] + np.r_[(~s).sum(), (~s).sum() - np.cumsum(~s)]
    valid = np.r_[True, np.r_[d[1:] != d[:-1], True]]  # cut only between distinct values
    k = int(np.argmax(np.where(valid, correct, -1)))
    if k == 0:
        tau = d[0] - 1e-6
    elif k == len(d):
        tau = d[-1] + 1e-6
    else:
        # the midpoint in the distances' own precision: a float64 midpoint of two float32
        # neighbours one ulp apart rounds onto the upper one when compared with them
        lo, hi = raw[order][k - 1], raw[order][k]
        tau = lo + (hi - lo) / 2
        if not lo <= tau < hi:
            tau = lo
    return float(tau), float(correct[k] / len(d))


#: The named false-accept targets a released face encoder carries thresholds for.
FAR_TARGETS = {"far_1e-2": 1e-2, "far_1e-3": 1e-3}


def operating_points(roc: dict) -> dict[str, float]:
    """``{"far_1e-2": τ, "far_1e-3": τ}`` from a :func:`roc_metrics` result."""
    return {name: roc[f"threshold_at_{name}"] for name in FAR_TARGETS}


def pair_rates(dist: np.ndarray, same: np.ndarray, tau: float) -> dict[str, float]:
    """False-accept and true-accept rates of pairs at ``tau`` (match when d <= τ)."""
    d, same = np.asarray(dist), np.asarray(same, bool)
    return {"far": float(np.mean(d[~same] <= tau)), "tar": float(np.mean(d[same] <= tau))}


def equal_error_rate(far: np.ndarray, tar: np.ndarray) -> float:
    """The rate where false rejects equal false accepts, interpolated linearly between the
    two ROC points around the crossing (reading the nearest point was off by up to a few
    points on coarse ROCs)."""
    gap = (1.0 - tar) - far                      # falls from 1 to -1 as τ rises
    i = int(np.argmax(gap <= 0))                 # the first point past the crossing
    if gap[i] == 0 or i == 0:
        return float(far[i])
    t = gap[i - 1] / (gap[i - 1] - gap[i])
    return float(far[i - 1] + t * (far[i] - far[i - 1]))


def roc_metrics(dist: np.ndarray, same: np.ndarray) -> dict:
    """AUC, EER, TAR at FAR 1e-3 / 1e-2, best accuracy and its τ."""
    far, tar, thr = roc_curve(dist, same)
    auc = float(np.trapezoid(tar, far))
    eer = equal_error_rate(far, tar)
    tau, acc = best_threshold(dist, same)

    n_diff = int((~np.asarray(same, bool)).sum())
    at_far = {}
    for name, target in FAR_TARGETS.items():
        at_far[f"tar_at_{name}"] = tar_on_roc(far, tar, target)
        at_far[f"threshold_at_{name}"] = tau_on_roc(far, thr, target)
    return {"auc": auc, "eer": eer, **at_far, "best_accuracy": acc, "best_threshold": tau,
            "pairs": int(len(dist)), "same": int(np.sum(same)), "different": n_diff,
            "far_resolution": 1.0 / max(n_diff, 1)}


def accuracy_at(dist: np.ndarray, same: np.ndarray, tau: float) -> float:
    """Accuracy of ``same = dist <= tau``."""
    return float(np.mean((np.asarray(dist) <= tau) == np.asarray(same, bool)))


def ten_fold(dist: np.ndarray, same: np.ndarray, folds: np.ndarray) -> dict:
    """LFW protocol: for each fold, τ chosen on the other folds, accuracy on it.

    Returns mean and standard deviation (population, ddof 0, over the folds; the
    standard error of the mean is it / 3 for 10 folds) of the fold accuracies, the
    per-fold values and τs, and the τ fitted on all pairs (the one to ship)."""
    dist, same, folds = np.asarray(dist), np.asarray(same, bool), np.asarray(folds)
    accs, taus = [], []
    for f in np.unique(folds):
        train = folds != f
        tau, _ = best_threshold(dist[train], same[train])
        taus.append(tau)
        accs.append(accuracy_at(dist[~train], same[~train], tau))
    tau_all, _ = best_threshold(dist, same)
    return {"accuracy_mean": float(np.mean(accs)), "accuracy_std": float(np.std(accs)),
            "fold_accuracies": [float(a) for a in accs], "fold_thresholds": taus,
            "threshold_all": tau_all}
