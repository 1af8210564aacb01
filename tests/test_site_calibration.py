"""Site calibration (sdk.faces.calibration): the bounds, the fitted τ, the errors, the app.

The statistics are checked on synthetic embeddings against independent computations
(exact binomial sums, a direct count of accepted pairs); the app runs the released
encoder on att-orl photos from ../shared (skipped when absent).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

import sdk
from sdk.errors import CalibrationError, InputError, InputShapeError
from sdk.faces.calibration import (calibrate_threshold, far_upper_bound, pair_distances,
                                   pair_rates)

from conftest import load_app, shared_path

ROOT = Path(__file__).resolve().parent.parent


def _exact_cdf(k: int, n: int, p: float) -> float:
    return sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k + 1))


def test_far_upper_bound_is_clopper_pearson():
    for n in (1, 7, 20):
        for k in range(n):
            u = far_upper_bound(k, n, 0.95)
            # one-sided: the binomial CDF at the bound is exactly 1 - confidence
            assert _exact_cdf(k, n, u) == pytest.approx(0.05, abs=1e-9)
        assert far_upper_bound(n, n) == 1.0
    assert far_upper_bound(0, 29956) <= 1e-4 < far_upper_bound(0, 29955)  # "about 3/n"
    assert far_upper_bound(0, 1000, 0.99) > far_upper_bound(0, 1000, 0.95)
    bounds = [far_upper_bound(k, 10**6) for k in range(0, 200, 20)]
    assert bounds == sorted(bounds) and all(b > k / 10**6 for b, k in zip(bounds, range(0, 200, 20)))
    for bad in ((-1, 10, 0.95), (11, 10, 0.95), (0, 0, 0.95), (0, 10, 1.0)):
        with pytest.raises(ValueError):
            far_upper_bound(*bad)


def _people(n_people: int, photos: int, spread: float = 0.6, seed: int = 0):
    """Unit embeddings: each person a random direction, each photo noise around it."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_people, 32))
    e = np.repeat(centres, photos, axis=0) + spread * rng.normal(size=(n_people * photos, 32))
    return sdk.l2_normalize(e), [f"p{i}" for i in range(n_people) for _ in range(photos)]


def _impostor_distances(e: np.ndarray, labels: list[str]) -> np.ndarray:
    lab = np.array(labels)
    i, j = np.triu_indices(len(e), 1)
    d = sdk.squared_l2(e[i], e[j])
    return np.sort(d[lab[i] != lab[j]])


def test_calibrated_threshold_is_the_largest_that_meets_the_target():
    e, labels = _people(40, 8)
    site = calibrate_threshold(e, labels, target_far=1e-3)
    imp = _impostor_distances(e, labels)
    k = site.rates.false_accepts
    assert k == int((imp <= site.threshold).sum()) and 0 < k  # counted like a direct count
    assert site.threshold < imp[k]                            # just below the next pair
    assert site.rates.far_upper <= 1e-3
    assert site.rates.far_upper == max(site.rates.far_upper_pairs, site.rates.far_upper_people)
    # one more accepted pair would break a bound
    looser = pair_rates(e, labels, float(imp[k]))
    assert looser.false_accepts > k and looser.far_upper > 1e-3
    assert (site.people, site.photos) == (40, 320)
    assert site.rates.impostor_pairs == len(imp) and site.rates.genuine_pairs == 40 * 28
    assert 0.0 < site.rates.tar < 1.0
    assert site.nearest_impostors[0][2] == pytest.approx(float(imp[0]))
    assert sdk.SitePairs(e, labels).rates(site.threshold) == site.rates  # one pair set, reused
    same, diff = pair_distances(e, labels)
    assert np.array_equal(diff, imp) and len(same) == 40 * 28
    # a stricter target gives a smaller τ
    assert calibrate_threshold(e, labels, target_far=2e-4).threshold < site.threshold


def test_people_bound_sees_a_look_alike():
    """Two people who look alike put many close pairs on one pair of people: the pair
    count alone would call that rare, the people bootstrap does not."""
    e, labels = _people(30, 6, seed=1)
    e[6:12] = sdk.l2_normalize(e[0:6] + 0.05)  # p1 looks like p0
    near = float(np.sort(sdk.squared_l2(e[0:6, None], e[None, 6:12]).ravel())[-1])
    r = pair_rates(e, labels, near)
    assert r.false_accepts >= 36
    assert r.far_upper_people > 2 * r.far_upper_pairs
    site = calibrate_threshold(e, labels, target_far=1e-2)
    assert site.rates.far_upper_people <= 1e-2


def test_calibration_refuses_what_the_photos_cannot_show():
    e, labels = _people(10, 5)  # 1,125 different-person pairs
    with pytest.raises(CalibrationError, match="needs at least 29956"):
        calibrate_threshold(e, labels, target_far=1e-4)
    with pytest.raises(CalibrationError, match="at least 5 different people"):
        calibrate_threshold(e[:20], labels[:20], target_far=1e-1)
    with pytest.raises(InputShapeError):
        calibrate_threshold(e, labels[:-1])
    with pytest.raises(InputShapeError):
        calibrate_threshold(e[0], labels[:1])
    with pytest.raises(ValueError):
        calibrate_threshold(e, labels, target_far=0.0)
    assert issubclass(CalibrationError, ValueError)
    # one person: no different-person pair, so no false-accept rate to measure
    with pytest.raises(CalibrationError, match="no different-person pairs"):
        pair_rates(e[:5], ["a"] * 5, 1.0)
    # a NaN distance is never <= τ: counted, it would hide false accepts
    bad = e.copy()
    bad[3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        pair_rates(bad, labels, 1.0)
    # edge inputs that escaped as numpy's or the bound's own errors
    with pytest.raises(CalibrationError, match="no different-person pairs"):
        calibrate_threshold(e[:5], ["a"] * 5, min_people=1)
    with pytest.raises(ValueError, match="draws"):
        pair_rates(e, labels, 1.0, draws=0)
    with pytest.raises(ValueError, match="finite"):
        pair_rates(e, labels, float("nan"))
    with pytest.raises(InputError, match="unit vectors"):   # τ is defined on those
        calibrate_threshold(e * 3, labels, target_far=1e-1)
    # the same photo filed under two people: d = 0, so no τ above 0 can keep them apart
    # (it gave a negative τ, which the SDK's own options then refused)
    dup = np.concatenate([e, e[:1]])
    with pytest.raises(CalibrationError, match="identical to the encoder"):
        calibrate_threshold(dup, [*labels, "someone else"], target_far=3e-3)


def test_door_lock_calibrate(tmp_path, capsys):
    """The app on eight att-orl people through the released encoder: the file's points
    measured, a τ fitted at 1e-2, the JSON written; 1e-4 refused with the reason."""
    att = shared_path("data", "faces", "att-orl")
    yunet = shared_path("models", "yunet", "yunet_s_640_640.onnx")
    model = ROOT / "models" / "faces" / "face_encoder_int8.onnx"
    site = tmp_path / "site"
    site.mkdir()
    for person in sorted(p for p in att.iterdir() if p.is_dir())[:8]:
        (site / person.name).symlink_to(person)
    door_lock = load_app("door_lock")
    common = ["--model", str(model), "--yunet", str(yunet), "--source", str(site)]
    out_json = tmp_path / "site.json"
    png = tmp_path / "site.png"
    assert door_lock.main(["calibrate", "--far", "1e-2", "--json", str(out_json),
                           "--plot", str(png), "--no-quality-check", *common]) == 0
    assert cv2.imread(str(png)) is not None
    out = capsys.readouterr().out
    assert "80 photos of 8 people" in out and "--threshold" in out
    report = json.loads(out_json.read_text())
    assert set(report["model_points"]) >= {"far_1e-4", "far_1e-3", "far_1e-2"}
    pts = report["model_points"]
    assert pts["far_1e-4"]["false_accepts"] <= pts["far_1e-2"]["false_accepts"]
    assert report["site"]["impostor_pairs"] == 80 * 79 // 2 - 8 * 45
    assert max(report["site"]["far_upper_pairs"], report["site"]["far_upper_people"]) <= 1e-2
    # by default only the faces the door would judge: s1's turned face (photo 3) is left
    # out, with its reason
    assert door_lock.main(["calibrate", "--far", "1e-2", *common]) == 0
    out = capsys.readouterr().out
    skipped = [line for line in out.splitlines() if ": skipped (" in line]
    assert 0 < len(skipped) < 20 and all("need" in line for line in skipped)
    assert f"{80 - len(skipped)} photos of 8 people ({len(skipped)} skipped)" in out
    assert any("s1/3.png" in line and "turned sideways" in line for line in skipped)
    assert door_lock.main(["calibrate", *common]) == 2  # default 1e-4: too few pairs
    err = capsys.readouterr().err
    assert "cannot show a false-accept rate of 0.0001" in err and "29956" in err
    assert door_lock.main(["calibrate", "--model", str(model), "--yunet", str(yunet),
                           "--source", str(tmp_path / "nowhere")]) == 2


def test_people_bound_matches_copying_the_drawn_people():
    """The bootstrap's closed form against its definition: draw people with replacement,
    copy each drawn person's photos as often as drawn, count different-person pairs."""
    from sdk.faces.calibration import SitePairs

    e, labels = _people(6, 3, spread=1.0, seed=2)
    pairs = SitePairs(e, labels, draws=7, seed=3)
    k = len(pairs.impostor) // 3
    tau = float(pairs.impostor[k - 1] + pairs.impostor[k]) / 2  # clear of rounding
    lab = np.array(labels)
    brute = []
    for w in pairs._weights.astype(int):
        idx = [i for p, name in enumerate(pairs.names) for _ in range(w[p])
               for i in np.flatnonzero(lab == name)]
        who, x = lab[idx], e[idx]
        i, j = np.triu_indices(len(idx), 1)
        diff = who[i] != who[j]
        d = sdk.squared_l2(x[i[diff]], x[j[diff]])
        brute.append((d <= tau).mean() if diff.any() else 0.0)
    assert pairs.people_bound(k, 0.95) == pytest.approx(float(np.quantile(brute, 0.95)))
    assert pairs.people_bound(k, 0.5) == pytest.approx(float(np.quantile(brute, 0.5)))


def test_pairs_by_blocks_equal_every_pair_at_once():
    """The block-wise pair distances are squared_l2's, bit for bit, in triu order."""
    from sdk.faces.calibration import _upper_pairs

    e, _ = _people(13, 5, seed=4)
    (i, j), d = _upper_pairs(e, rows=7)  # blocks that do not divide the 65 rows
    iu = np.triu_indices(len(e), 1)
    assert np.array_equal(i, iu[0]) and np.array_equal(j, iu[1])
    assert np.array_equal(d, sdk.squared_l2(e[:, None, :], e[None, :, :])[iu])
