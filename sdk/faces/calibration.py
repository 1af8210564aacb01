"""A site's own threshold: τ from photos taken by the camera that will use it.

The operating points inside a released face model were fitted on in-the-wild photos of
celebrities.  How close two strangers come depends on how alike their photos are taken
(one camera, one light, one crop brings them closer), so a door camera's strangers can sit
closer or farther apart than the ones τ was fitted on.  :func:`calibrate_threshold` fits
τ on photos of people taken by the site's own camera, and states how sure the fit is.

The statistics: two upper bounds on the false-accept rate, and τ must meet both.

- Pairs.  With the different-person distances sorted, ``d(1) <= d(2) <= ...``, a τ just
  below ``d(k+1)`` accepts k of the n different-person pairs.  For independent pairs the
  true rate of a τ chosen that way is Beta(k+1, n−k) distributed, and its one-sided upper
  confidence bound is the Clopper-Pearson bound for k in n (:func:`far_upper_bound`; with
  k = 0 about 3/n at 95 %).  So a target of 1e-4 needs about 30,000 different-person pairs
  (for example 30 people with 6 photos each) before any τ qualifies.
- People.  Pairs are not independent: a look-alike brings all of their photos close to
  all of another person's, and the next visitor is a new person, not a new photo.  The
  second bound resamples the *people* (a bootstrap over people: each draw weighs each
  pair of people by how often both were drawn) and takes the ``confidence`` quantile of
  the resampled false-accept rate.

Neither bound foresees a look-alike pair that is not among the photos: fitted on 7–20
people of one camera, τ went over its target on the camera's other people in 5–7 of 20
random splits (scripts/site_calibration_probe.py, docs/FACES.md).  Photograph more people.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..distance import check_unit_rows, squared_l2
from ..errors import CalibrationError, InputError, InputShapeError

#: Fewest people a site calibration accepts: with fewer, "strangers" are a handful of faces.
MIN_PEOPLE = 5


def _binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space (n may be millions)."""
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 1.0 if k >= n else 0.0
    i = np.arange(min(k, n), dtype=np.float64)
    # log C(n, i) p^i q^(n-i), built term by term: C(n, i+1)/C(n, i) = (n-i)/(i+1)
    steps = np.log((n - i) / (i + 1)) + math.log(p) - math.log1p(-p)
    terms = n * math.log1p(-p) + np.concatenate(([0.0], np.cumsum(steps)))
    top = terms.max()
    return min(1.0, float(math.exp(top) * np.exp(terms - top).sum()))


def far_upper_bound(false_accepts: int, pairs: int, confidence: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper bound on a false-accept rate.

    ``false_accepts`` of ``pairs`` different-person pairs were accepted; the true rate is
    at most the returned value with probability ``confidence`` (independent pairs).
    ``far_upper_bound(0, n)`` is ``1 - (1 - confidence) ** (1 / n)``, about 3/n at 95 %.
    """
    if pairs < 1:
        raise ValueError(f"pairs must be >= 1, got {pairs}")
    if not 0 <= false_accepts <= pairs:
        raise ValueError(f"false_accepts must be in [0, {pairs}], got {false_accepts}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if false_accepts == pairs:
        return 1.0
    alpha = 1.0 - confidence
    if false_accepts == 0:
        return -math.expm1(math.log(alpha) / pairs)
    lo, hi = 0.0, 1.0  # the CDF falls from 1 at p = 0 to 0 at p = 1
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if _binom_cdf(false_accepts, pairs, mid) > alpha:
            lo = mid
        else:
            hi = mid
    return hi


@dataclass(frozen=True)
class PairRates:
    """How one τ fares on a site's pairs."""

    threshold: float
    #: different-person pairs at d <= τ, of ``impostor_pairs``
    false_accepts: int
    impostor_pairs: int
    #: the measured false-accept rate and its upper bounds at the calibration's
    #: confidence: over independent pairs (Clopper-Pearson) and over people (bootstrap)
    far: float
    far_upper_pairs: float
    far_upper_people: float
    #: same-person pairs accepted (None when no person has two photos)
    tar: float | None
    genuine_pairs: int

    @property
    def far_upper(self) -> float:
        """The larger, i.e. the honest, of the two bounds."""
        return max(self.far_upper_pairs, self.far_upper_people)


@dataclass(frozen=True)
class SiteThreshold:
    """The result of :func:`calibrate_threshold`."""

    #: the fitted τ: the largest whose false-accept bounds are both at most ``target_far``
    threshold: float
    target_far: float
    confidence: float
    #: ``threshold``'s rates on the calibration pairs
    rates: PairRates
    people: int
    photos: int
    #: the closest different-person pairs: (label a, label b, distance), nearest first
    nearest_impostors: list[tuple[str, str, float]] = field(default_factory=list)


def _upper_pairs(e: np.ndarray, rows: int = 64) -> tuple[tuple[np.ndarray, np.ndarray],
                                                          np.ndarray]:
    """(i, j) with i < j in ``np.triu_indices`` order, and d(e[i], e[j]) by
    :func:`~sdk.distance.squared_l2` itself (the runtime's d to the last bit), a block of
    rows at a time: all rows at once would hold N·N·D floats (1 GB for 1400 photos)."""
    n = len(e)
    ii, jj, dd = [], [], []
    for start in range(0, n - 1, rows):
        r = np.arange(start, min(start + rows, n))
        block = squared_l2(e[r, None, :], e[None, :, :])
        keep = np.arange(n)[None, :] > r[:, None]
        i, j = np.nonzero(keep)
        ii.append(r[i])
        jj.append(j)
        dd.append(block[i, j])
    return (np.concatenate(ii), np.concatenate(jj)), np.concatenate(dd)


#: Bootstrap draws of people behind ``far_upper_people``.
DRAWS = 2000


class SitePairs:
    """Every pair of a site's labelled embeddings, computed once: the same-person and
    different-person distances (``genuine``, ``impostor``; sorted) and the people
    bootstrap's fixed draws.  Measure any number of thresholds with :meth:`rates` and fit
    one with :meth:`calibrate` without computing the pairs again.

    ``embeddings``: (N, D) unit vectors, one per photo, from the encoder that will use τ;
    ``labels[i]``: the person of photo i.  ``InputShapeError`` on mismatched inputs.
    """

    def __init__(self, embeddings: np.ndarray, labels: Sequence[str], *, draws: int = DRAWS,
                 seed: int = 0) -> None:
        e = np.asarray(embeddings, dtype=np.float32)
        if e.ndim != 2 or len(e) < 2:
            raise InputShapeError(f"embeddings must be (N >= 2, D), got shape {e.shape}")
        if not np.all(np.isfinite(e)):
            # a NaN distance is never <= τ, so it would count as refused and understate
            # the false-accept rate: refuse the input instead
            bad = np.flatnonzero(~np.all(np.isfinite(e), axis=1))
            raise InputError(f"embeddings contain NaN or infinity (rows {bad[:5].tolist()}"
                             f"{' ...' if len(bad) > 5 else ''})")
        check_unit_rows(e)  # a τ fitted on scaled embeddings would mean nothing
        if isinstance(draws, bool) or not isinstance(draws, (int, np.integer)) or draws < 1:
            raise ValueError(f"draws must be an int >= 1, got {draws!r}")
        lab = np.asarray([str(x) for x in labels])
        if lab.shape != (len(e),):
            raise InputShapeError(f"{len(lab)} labels for {len(e)} embeddings")
        self.labels = lab
        self.names, person = np.unique(lab, return_inverse=True)
        iu, d = _upper_pairs(e)
        same = person[iu[0]] == person[iu[1]]
        order = np.argsort(d[~same], kind="stable")
        self.impostor = d[~same][order]
        self.impostor_ij = (iu[0][~same][order], iu[1][~same][order])
        self.impostor_people = (person[self.impostor_ij[0]], person[self.impostor_ij[1]])
        self.genuine = np.sort(d[same])
        p = len(self.names)
        photos = np.bincount(person, minlength=p).astype(np.float64)
        # different-person pairs between each two people (a person drawn twice is still
        # one person: the diagonal stays empty)
        self._pair_counts = np.outer(photos, photos) - np.diag(photos * photos)
        self._weights = np.random.default_rng(seed).multinomial(
            p, np.full(p, 1.0 / p), size=draws).astype(np.float64)

    def people_bound(self, k: int, confidence: float) -> float:
        """``confidence`` quantile of the false-accept rate of the nearest ``k``
        different-person pairs' τ over the bootstrap's draws of people."""
        p = len(self.names)
        accepted = np.zeros((p, p))
        np.add.at(accepted, (self.impostor_people[0][:k], self.impostor_people[1][:k]), 1.0)
        accepted += accepted.T
        w = self._weights
        num = np.einsum("bp,pq,bq->b", w, accepted, w)
        den = np.einsum("bp,pq,bq->b", w, self._pair_counts, w)
        far = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
        return float(np.quantile(far, confidence))

    def rates(self, threshold: float, confidence: float = 0.95) -> PairRates:
        """False- and true-accept rates of ``threshold``, with both upper bounds on the
        false-accept rate (module docstring)."""
        tau = float(threshold)
        if not np.isfinite(tau):
            raise ValueError(f"threshold must be finite, got {threshold!r}")
        self._check_pairs()
        n = len(self.impostor)
        k = int(np.searchsorted(self.impostor, tau, side="right"))
        g = len(self.genuine)
        tar = float(np.searchsorted(self.genuine, tau, side="right") / g) if g else None
        return PairRates(threshold=tau, false_accepts=k, impostor_pairs=n, far=k / n,
                         far_upper_pairs=far_upper_bound(k, n, confidence),
                         far_upper_people=self.people_bound(k, confidence),
                         tar=tar, genuine_pairs=g)

    def _check_pairs(self) -> None:
        if len(self.impostor) == 0:
            raise CalibrationError(f"photos of {len(self.names)} person: no different-person "
                                   "pairs, so no false-accept rate can be measured; add photos "
                                   "of other people")

    def calibrate(self, target_far: float = 1e-4, confidence: float = 0.95,
                  min_people: int = MIN_PEOPLE) -> SiteThreshold:
        """The largest τ whose false-accept rate is at most ``target_far`` with
        probability ``confidence``, over pairs and over people alike.  Raises
        :class:`~sdk.errors.CalibrationError` when the photos cannot support the target
        (too few people or different-person pairs: the message says how many are needed).
        """
        if not 0.0 < target_far < 1.0:
            raise ValueError(f"target_far must be in (0, 1), got {target_far}")
        if not 0.0 < confidence < 1.0:
            raise ValueError(f"confidence must be in (0, 1), got {confidence}")
        people = len(self.names)
        if people < min_people:
            raise CalibrationError(f"{people} people: a site calibration needs photos of "
                                   f"at least {min_people} different people")
        self._check_pairs()
        n = len(self.impostor)
        if far_upper_bound(0, n, confidence) > target_far:
            need = math.ceil(math.log(1.0 - confidence) / math.log1p(-target_far))
            raise CalibrationError(
                f"{n} different-person pairs cannot show a false-accept rate of "
                f"{target_far:g} at {confidence:.0%} confidence, even with none accepted: "
                f"that needs at least {need}; photograph more people (N photos of P people "
                f"give about N²/2·(1−1/P) such pairs), or ask for a looser target")

        def meets(k: int) -> bool:  # both bounds grow with k
            return (far_upper_bound(k, n, confidence) <= target_far
                    and self.people_bound(k, confidence) <= target_far)

        # the most false accepts whose bounds still meet the target (0 always does)
        k, hi = 0, n - 1
        while k < hi:
            mid = (k + hi + 1) // 2
            if meets(mid):
                k = mid
            else:
                hi = mid - 1
        # just below the (k+1)-th nearest different-person pair: it accepts at most k
        tau = float(np.nextafter(np.float32(self.impostor[k]), np.float32(-np.inf)))
        i, j = self.impostor_ij
        nearest = [(str(self.labels[a]), str(self.labels[b]), float(d))
                   for a, b, d in zip(i[:5], j[:5], self.impostor[:5])]
        if tau <= 0.0:
            # d = 0 between two people: the same photo (or a copy) filed under both names
            a, b = int(i[k]), int(j[k])
            raise CalibrationError(
                f"photos {a} ({self.labels[a]}) and {b} ({self.labels[b]}) are identical to the "
                f"encoder (d = {self.impostor[k]:.3g}) but filed as different people: no τ "
                "above 0 meets the target; remove the duplicate or fix its label")
        return SiteThreshold(threshold=tau, target_far=float(target_far),
                             confidence=confidence, rates=self.rates(tau, confidence),
                             people=people, photos=len(self.labels),
                             nearest_impostors=nearest)


def pair_distances(embeddings: np.ndarray, labels: Sequence[str]
                   ) -> tuple[np.ndarray, np.ndarray]:
    """d over every pair of ``embeddings``: (same-person, different-person), each sorted."""
    pairs = SitePairs(embeddings, labels, draws=1)
    return pairs.genuine, pairs.impostor


def pair_rates(embeddings: np.ndarray, labels: Sequence[str], threshold: float,
               confidence: float = 0.95, draws: int = DRAWS) -> PairRates:
    """:meth:`SitePairs.rates` of one threshold (build a :class:`SitePairs` to measure
    several).  ``labels[i]`` names the person of ``embeddings[i]``."""
    return SitePairs(embeddings, labels, draws=draws).rates(threshold, confidence)


def calibrate_threshold(embeddings: np.ndarray, labels: Sequence[str], *,
                        target_far: float = 1e-4, confidence: float = 0.95,
                        min_people: int = MIN_PEOPLE, draws: int = DRAWS) -> SiteThreshold:
    """Fit τ on a site's own photos (:meth:`SitePairs.calibrate`; module docstring for
    the statistics).

    ``embeddings``: (N, D) unit vectors, one per photo, from the encoder that will use
    τ; ``labels[i]``: the person of photo i.  Raises :class:`~sdk.errors.CalibrationError`
    when the photos cannot support the target, ``InputShapeError`` on mismatched inputs,
    ``ValueError`` on a target or confidence outside (0, 1).
    """
    return SitePairs(embeddings, labels, draws=draws).calibrate(target_far, confidence,
                                                                 min_people)
