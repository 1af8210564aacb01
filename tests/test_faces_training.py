"""Tests of the face-encoder training code (export/faces): distance twin, mining,
losses, metrics, pairs generation, sampler, model building.  Tiny tensors only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow", reason="TensorFlow is needed for the training code "
                                             "(pip install -e '.[train]')")

from export.faces import data as fdata  # noqa: E402
from export.faces import losses, metrics  # noqa: E402
from export.faces.train import PKSampler, merged_labels  # noqa: E402
from sdk.distance import l2_normalize, squared_l2  # noqa: E402

SHARED_FACES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "faces"


def test_tf_squared_l2_matches_numpy():
    rng = np.random.default_rng(0)
    a = l2_normalize(rng.normal(size=(5, 128)))
    b = l2_normalize(rng.normal(size=(7, 128)))
    want = squared_l2(a[:, None], b[None])
    got = losses.squared_l2(tf.constant(a)[:, None], tf.constant(b)[None]).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(losses.pairwise_distances(tf.constant(a)).numpy(),
                               squared_l2(a[:, None], a[None]), atol=1e-6)


# four 1-D "embeddings" (as 2-D vectors) with hand-computable distances
EMB = np.array([[0.0, 0], [1.0, 0], [0.5, 0], [3.0, 0], [2.0, 0], [10.0, 0]], np.float32)
LAB = np.array([0, 0, 1, 1, 2, 2])


def test_batch_hard_picks_farthest_positive_and_closest_negative():
    d = losses.pairwise_distances(tf.constant(EMB))
    p, n, valid = losses.batch_hard_indices(d, tf.constant(LAB))
    # anchor 0 (x=0): only positive is 1; closest negative is x=0.5 (index 2)
    # anchor 2 (x=0.5): positive 3; closest negative: x=0 or x=1 -> both 0.25, argmin takes 0
    # anchor 4 (x=2): positive 5 (x=10); closest negative x=3 (index 3, d=1) vs x=1 (d=1) -> 1
    assert p.numpy().tolist() == [1, 0, 3, 2, 5, 4]
    assert n.numpy().tolist()[:3] == [2, 2, 0]
    assert n.numpy()[3] == 4  # x=3: closest negative x=2
    assert n.numpy()[4] == 1  # d=1 to x=1 (index 1) and x=3 (index 3, same label 1? no)
    assert valid.numpy().all()


def test_batch_hard_loss_value():
    d = squared_l2(EMB[:, None], EMB[None])
    margin = 0.3
    want = []
    for a in range(len(EMB)):
        pos = [d[a, j] for j in range(len(EMB)) if LAB[j] == LAB[a] and j != a]
        neg = [d[a, j] for j in range(len(EMB)) if LAB[j] != LAB[a]]
        want.append(max(max(pos) - min(neg) + margin, 0))
    loss, stats = losses.triplet_loss(tf.constant(EMB), tf.constant(LAB), margin, "batch_hard")
    assert loss.numpy() == pytest.approx(np.mean(want), rel=1e-5)
    assert 0 < stats["active"].numpy() <= 1


def test_semi_hard_picks_closest_farther_negative_or_farthest():
    d = losses.pairwise_distances(tf.constant(EMB))
    chosen, mask = losses.semi_hard_negatives(d, tf.constant(LAB))
    chosen, mask = chosen.numpy(), mask.numpy()
    dn = squared_l2(EMB[:, None], EMB[None])
    for a in range(len(EMB)):
        for p in range(len(EMB)):
            assert mask[a, p] == (LAB[a] == LAB[p] and a != p)
            if not mask[a, p]:
                continue
            negs = [j for j in range(len(EMB)) if LAB[j] != LAB[a]]
            farther = [j for j in negs if dn[a, j] > dn[a, p]]
            if farther:
                assert dn[a, chosen[a, p]] == pytest.approx(min(dn[a, j] for j in farther))
            else:
                assert dn[a, chosen[a, p]] == pytest.approx(max(dn[a, j] for j in negs))
    # anchor 0 (x=0), positive 1 (d=1): negatives farther than 1 -> x=2 (d=4) is closest
    assert chosen[0, 1] == 4
    # anchor 4 (x=2), positive 5 (d=64): no negative farther -> farthest one, x=0 (d=4)
    assert chosen[4, 5] == 0


def test_semi_hard_loss_is_not_batch_hard_loss():
    a, _ = losses.triplet_loss(tf.constant(EMB), tf.constant(LAB), 0.3, "semi_hard")
    b, _ = losses.triplet_loss(tf.constant(EMB), tf.constant(LAB), 0.3, "batch_hard")
    assert a.numpy() != pytest.approx(b.numpy())
    with pytest.raises(ValueError):
        losses.triplet_loss(tf.constant(EMB), tf.constant(LAB), 0.3, "hardest")


def test_distillation_loss_masked():
    rng = np.random.default_rng(1)
    s = l2_normalize(rng.normal(size=(4, 8)))
    t = s.copy()
    t[2] = -t[2]
    mask = np.array([True, True, False, True])
    assert losses.distillation_loss(tf.constant(s), tf.constant(t), mask).numpy() == 0
    full = losses.distillation_loss(tf.constant(s), tf.constant(t), np.ones(4, bool)).numpy()
    assert full == pytest.approx(4.0 / 4)  # d(x, -x) = 4 on one row out of four


def test_metrics_threshold_and_folds():
    rng = np.random.default_rng(0)
    same = np.r_[np.ones(100, bool), np.zeros(100, bool)]
    d = np.r_[rng.uniform(0, 1, 100), rng.uniform(1.2, 2, 100)]
    m = metrics.roc_metrics(d, same)
    assert m["auc"] == pytest.approx(1.0) and m["eer"] == 0 and m["best_accuracy"] == 1
    assert 1.0 < m["best_threshold"] < 1.2
    folds = np.tile(np.arange(10), 20)
    tf_ = metrics.ten_fold(d, same, folds)
    assert tf_["accuracy_mean"] == 1.0 and len(tf_["fold_accuracies"]) == 10
    noise = metrics.roc_metrics(rng.uniform(size=200), same)
    assert 0.3 < noise["auc"] < 0.7
    with pytest.raises(ValueError):
        metrics.roc_curve(d[:10], same[:10])


def test_normalise_name_merges_across_sets():
    assert (fdata.normalise_name("001_50_Cent", "cfp-500")
            == fdata.normalise_name("50_cent", "pins-14"))
    assert fdata.normalise_name("Alex_Lawther", "pins-14") == "alexlawther"
    assert fdata.normalise_name("07201", "celeba-299") == "celeba-299:07201"
    assert fdata.normalise_name("9336923", "faces94-18") != fdata.normalise_name("9336923", "x")


def _fake_tree(tmp_path: Path, people: int = 20, per: int = 5) -> dict:
    paths, labels, names, sources = [], [], [], []
    for i in range(people):
        folder = tmp_path / "set-a" / f"person{i:02d}"
        folder.mkdir(parents=True)
        for j in range(per):
            (folder / f"img{j}.jpg").write_bytes(b"x")
            paths.append(f"set-a/person{i:02d}/img{j}.jpg")
            labels.append(i)
            sources.append("set-a")
        names.append(f"person{i:02d}")
    return {"paths": np.array(paths), "labels": np.array(labels), "names": np.array(names),
            "sources": np.array(sources)}


def test_pairs_file_identity_disjoint_folds(tmp_path):
    d = _fake_tree(tmp_path)
    train, hold = fdata.split_identities(d["labels"], 0.5, seed=0, sources=d["sources"])
    assert len(np.intersect1d(train, hold)) == 0 and len(hold) == 10
    out = tmp_path / "pairs.txt"
    fdata.write_pairs(out, d, hold, root=tmp_path, folds=5, pairs_per_fold=4, seed=0)
    pairs, folds = fdata.parse_lfw_pairs(out)
    assert folds == 5 and len(pairs) == 40
    fold_people = []
    for f in range(5):
        chunk = pairs[f * 8:(f + 1) * 8]
        assert [p[4] for p in chunk] == [True] * 4 + [False] * 4
        fold_people.append({p[0] for p in chunk} | {p[2] for p in chunk})
        for a, i, b, j, same in chunk:
            pa = fdata.resolve_lfw_image(tmp_path, a, i)
            assert pa.is_file() and (a == b) == same
    for f in range(5):
        for g in range(f + 1, 5):
            assert not fold_people[f] & fold_people[g]
    held = {f"set-a/{d['names'][i]}" for i in hold}
    assert set().union(*fold_people) <= held
    with pytest.raises(fdata.FacesDataError):
        fdata.resolve_lfw_image(tmp_path, "set-a/person00", 99)


def test_pairs_file_refuses_folds_without_enough_different_pairs(tmp_path):
    """People with 25 and 2 photos make 301 same-person pairs but only 100 ordered
    different-person draws: asking for 150 per fold is refused at once (it used to loop
    forever)."""
    d = _fake_tree(tmp_path, people=2, per=25)
    keep = (d["labels"] == 0) | np.isin(d["paths"], ["set-a/person01/img0.jpg",
                                                    "set-a/person01/img1.jpg"])
    d = {k: (v[keep] if k != "names" else v) for k, v in d.items()}
    with pytest.raises(fdata.FacesDataError, match="301 same-person and 100 different"):
        fdata.write_pairs(tmp_path / "p.txt", d, np.array([0, 1]), root=tmp_path, folds=1,
                          pairs_per_fold=150, seed=0)


def test_prepare_refuses_a_cache_of_other_photos_and_a_moved_split(tmp_path, capsys):
    """`faces prepare` reuses a cache only when made from the same photos, and does not
    replace a split.json that trained runs rely on unless given --force."""
    import json as _json

    from export.faces import cli

    d = _fake_tree(tmp_path / "photos", people=40, per=5)
    root = tmp_path / "photos"
    cache = tmp_path / "aligned.npz"
    arrays = {**d, "images": np.zeros((len(d["labels"]), 2, 2, 3), np.uint8),
              "n_failed": np.array(0), "n_scanned": np.array(len(d["labels"]))}
    np.savez(cache, **arrays,
             settings=np.array(_json.dumps(fdata.cache_settings(root, fdata.TRAIN_SETS, None))))
    args = ["prepare", "--root", str(root), "--cache", str(cache), "--pairs",
            str(tmp_path / "pairs.txt"), "--holdout", "0.5", "--pairs-per-fold", "4"]
    assert cli.main(args) == 0
    split = _json.loads((tmp_path / "split.json").read_text())["holdout"]
    assert cli.main(args + ["--limit", "10"]) == 2
    assert "limit None -> 10" in capsys.readouterr().err
    assert cli.main(args + ["--seed", "3"]) == 2          # another split: refused ...
    assert "holds another split" in capsys.readouterr().err
    assert _json.loads((tmp_path / "split.json").read_text())["holdout"] == split
    old = {k: v for k, v in arrays.items()}
    np.savez(cache, **old)                                  # ... and a cache without settings
    assert cli.main(args) == 2
    assert "records no settings" in capsys.readouterr().err


def test_pk_sampler_and_merged_labels():
    labels = np.repeat(np.arange(10), 5)
    ok = np.zeros(len(labels), bool)
    ok[::5] = True
    s = PKSampler(labels, np.arange(len(labels)), p=4, k=4, teacher_ok=ok, seed=0)
    rows = s.batch()
    assert len(rows) == 16
    groups = labels[rows].reshape(4, 4)
    assert (groups == groups[:, :1]).all() and len(set(groups[:, 0])) == 4
    assert ok[rows].sum() == 4  # one teacher face per identity (all it has)
    # an identity with 2 photos, both with a teacher embedding, still fills K=4
    small = np.array([0, 0, 1, 1, 1, 1])
    s2 = PKSampler(small, np.arange(6), p=2, k=4, teacher_ok=np.array([1, 1, 0, 0, 0, 0], bool),
                   seed=0)
    assert sorted(small[s2.batch()].tolist()) == [0] * 4 + [1] * 4
    # without a teacher, an identity of 3 photos shows all 3 in every K=4 batch (drawn
    # with replacement, one photo could fill all four slots: no real positive pair)
    three = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    s3 = PKSampler(three, np.arange(8), p=2, k=4, teacher_ok=None, seed=0)
    for _ in range(50):
        rows = s3.batch()
        assert set(rows[three[rows] == 0].tolist()) == {0, 1, 2}
    m = merged_labels(labels, np.array([[3, 7, 0.01]]))
    assert (m[labels == 7] == 3).all() and len(np.unique(m)) == 9


def test_lookalike_batches_draw_from_the_nearest_identities():
    labels = np.repeat(np.arange(12), 3)
    # class centres: identities 0-5 point one way, 6-11 the opposite way
    centres = np.zeros((4, 12))
    centres[0, :6] = 1.0
    centres[0, 6:] = -1.0
    centres[1] = np.linspace(0, 0.1, 12)
    column_of = np.arange(12)
    s = PKSampler(labels, np.arange(len(labels)), p=3, k=2, teacher_ok=None, seed=1,
                  hard_fraction=1.0, hard_pool=4)
    s.set_lookalikes(centres, column_of)
    assert s.lookalikes.shape == (12, 4)
    for _ in range(20):
        ids = set(labels[s.batch()].tolist())
        assert len(ids) == 3 and (ids <= set(range(6)) or ids <= set(range(6, 12)))
    # without look-alike batches, both halves meet in some batch
    r = PKSampler(labels, np.arange(len(labels)), p=3, k=2, teacher_ok=None, seed=1)
    mixed = [set(labels[r.batch()].tolist()) for _ in range(20)]
    assert any(not (m <= set(range(6)) or m <= set(range(6, 12))) for m in mixed)
    with pytest.raises(ValueError, match="hard_pool"):
        PKSampler(labels, np.arange(len(labels)), p=6, k=2, teacher_ok=None, seed=0,
                  hard_fraction=0.5, hard_pool=3)
    with pytest.raises(ValueError, match="no class centre"):
        s.set_lookalikes(centres, np.full(12, -1))


def test_one_set_batches_draw_from_one_photo_set():
    labels = np.repeat(np.arange(14), 3)
    # identities 0-7 from set "a", 8-11 from "b" (too few for P = 5), 12-13 from "c";
    # identity 7 has one photo in "b" but most in "a"
    sources = np.array(["a"] * 24 + ["b"] * 12 + ["c"] * 6)
    sources[23] = "b"
    s = PKSampler(labels, np.arange(len(labels)), p=5, k=2, teacher_ok=None, seed=0,
                  source_fraction=1.0, sources=sources)
    for _ in range(20):
        ids = set(labels[s.batch()].tolist())
        assert len(ids) == 5 and ids <= set(range(8))  # only set "a" can fill a batch
    mixed = PKSampler(labels, np.arange(len(labels)), p=5, k=2, teacher_ok=None, seed=0,
                      source_fraction=0.0, sources=sources)
    assert any(not set(labels[mixed.batch()].tolist()) <= set(range(8)) for _ in range(20))
    with pytest.raises(ValueError, match="sources"):
        PKSampler(labels, np.arange(len(labels)), p=5, k=2, teacher_ok=None, seed=0,
                  source_fraction=0.5)
    with pytest.raises(fdata.FacesDataError, match="no photo set"):
        PKSampler(labels, np.arange(len(labels)), p=9, k=2, teacher_ok=None, seed=0,
                  source_fraction=0.5, sources=sources)


def test_augment_batch_shapes_and_change():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, size=(6, 112, 112, 3), dtype=np.uint8)
    out = fdata.augment_batch(imgs, rng)
    assert out.shape == imgs.shape and out.dtype == np.uint8
    assert not np.array_equal(out, imgs)
    x = fdata.bgr_to_model_input(imgs[:1])
    assert x.dtype == np.float32 and x[0, 0, 0, 0] == imgs[0, 0, 0, 2]


def test_augment_side_light_shades_one_side():
    grey = np.full((8, 112, 112, 3), 128, np.uint8)
    # strength 0: no jitter, blur or occlusion, so only the shading changes a flat face
    out = fdata.augment_batch(grey, np.random.default_rng(0), strength=0.0, side_light=1.0)
    for img in out.astype(np.float32):
        lit, far = np.percentile(img, 99), np.percentile(img, 1)
        assert far <= 0.72 * lit, (far, lit)  # the far side at least 30 % darker
    # off by default, and then drawing nothing: earlier runs' augmentation is unchanged
    imgs = np.random.default_rng(1).integers(0, 255, size=(4, 112, 112, 3), dtype=np.uint8)
    a = fdata.augment_batch(imgs, np.random.default_rng(2))
    b = fdata.augment_batch(imgs, np.random.default_rng(2), side_light=0.0)
    assert np.array_equal(a, b)


def test_greyscale_batch():
    imgs = np.random.default_rng(3).integers(0, 255, size=(2, 8, 8, 3), dtype=np.uint8)
    g = fdata.greyscale(imgs)
    assert g.shape == imgs.shape and g.dtype == np.uint8
    assert np.array_equal(g[..., 0], g[..., 2]) and np.array_equal(g[..., 0], g[..., 1])
    b, gr, r = (imgs[0, 0, 0].astype(float))
    assert abs(int(g[0, 0, 0, 0]) - (0.114 * b + 0.587 * gr + 0.299 * r)) <= 0.5


def test_encoder_contract_and_l2norm():
    from export.faces.model import build_encoder, build_pair_head, count_macs, pair_features

    default = build_encoder()
    assert default.count_params() <= 1_000_000
    import keras

    # seeded: an unlucky random init can give a pre-norm vector below the eps floor
    keras.utils.set_random_seed(1)
    m = build_encoder(width=0.25, blocks=(1, 1, 1), final=64)
    x = np.random.default_rng(0).uniform(0, 255, size=(2, 112, 112, 3)).astype(np.float32)
    y = m(x, training=False).numpy()
    assert y.shape == (2, 128)
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1.0, rtol=1e-5)
    assert count_macs(m) < count_macs(default)
    assert not any(type(layer).__name__ == "UnitNormalization" for layer in m.layers)
    fi = tf.constant([[0.5, -0.5, 0.0]])
    fj = tf.constant([[-0.5, -0.25, 0.0]])
    chi = pair_features(fi, fj, "chi2").numpy()
    assert (chi >= 0).all() and chi[0, 2] == 0
    assert chi[0, 0] == pytest.approx(1.0 / (1.0 + 1e-3))
    head = build_pair_head("abs", 3)
    assert head([fi, fj]).shape == (1, 1)


def test_widen_preserves_the_embedding():
    """Net2WiderNet: a width-0.5 copy of a trained-looking width-0.25 encoder (residual
    adds included) computes the same embedding; noise only nudges it; narrowing fails."""
    import keras

    from export.faces.model import build_encoder
    from export.faces.widen import WidenError, widen

    keras.utils.set_random_seed(2)
    narrow = build_encoder(width=0.25, blocks=(2, 2, 2), final=64)
    rng = np.random.default_rng(0)
    for layer in narrow.layers:   # non-trivial batch-norm statistics, as after training
        if isinstance(layer, keras.layers.BatchNormalization):
            g, b, m, v = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, g.shape), rng.normal(0, 0.1, b.shape),
                               rng.normal(0, 0.1, m.shape), rng.uniform(0.5, 2, v.shape)])
    x = rng.uniform(0, 255, size=(4, 112, 112, 3)).astype(np.float32)
    y0 = narrow(x, training=False).numpy()
    wide = widen(narrow, build_encoder(width=0.5, blocks=(2, 2, 2), final=64), noise=0.0)
    assert wide.count_params() > 2 * narrow.count_params()
    np.testing.assert_allclose(wide(x, training=False).numpy(), y0, atol=1e-5)
    nudged = widen(narrow, build_encoder(width=0.5, blocks=(2, 2, 2), final=64), noise=0.01)
    y1 = nudged(x, training=False).numpy()
    assert 0 < np.abs(y1 - y0).max() and (y1 * y0).sum(axis=1).min() > 0.99
    with pytest.raises(WidenError, match="narrow"):
        widen(wide, build_encoder(width=0.25, blocks=(2, 2, 2), final=64))
    with pytest.raises(WidenError, match="not in the narrow"):
        widen(narrow, build_encoder(width=0.5, blocks=(3, 2, 2), final=64))


def test_weight_soup_averages_runs_and_refuses_other_networks(tmp_path, capsys):
    """scripts/weight_soup.py: the soup's every weight (BatchNorm statistics included) and
    learnt heads are the runs' mean in their dtype, `train --init` reads it as a run folder
    with its parents' record, and what cannot be averaged is refused before anything is
    written."""
    import keras

    from conftest import load_app
    from export.faces.model import build_encoder
    from export.faces.report import training_legs
    from export.faces.train import earlier_heads

    ws = load_app("weight_soup", folder="scripts")
    runs = []
    for i in range(2):
        keras.utils.set_random_seed(10 + i)
        m = build_encoder(width=0.25, blocks=(1, 1, 1), final=64)
        for layer in m.layers:   # distinct moving statistics per run, as after training
            if isinstance(layer, keras.layers.BatchNormalization):
                g, b, mu, v = layer.get_weights()
                layer.set_weights([g, b, mu + i, v * (1 + i)])
        run = tmp_path / f"run{i}"
        run.mkdir()
        m.save(run / "model.keras")
        np.save(run / "classifier.npy", np.full((128, 3), float(i), np.float32))
        np.save(run / "projection.npy", np.eye(128, dtype=np.float32) * (i + 1))
        (run / "state.json").write_text(json.dumps({"history": [{"epoch": 1}], "run": i}))
        runs.append((run, m))
    out = tmp_path / "soup"
    (out / "stale").mkdir(parents=True)   # a folder already there is replaced whole
    assert ws.main([str(runs[0][0]), str(runs[1][0]), "--out", str(out)]) == 0
    mixed = keras.models.load_model(out / "model.keras", compile=False)
    for k, var in enumerate(mixed.weights):
        want = (np.asarray(runs[0][1].weights[k]) + np.asarray(runs[1][1].weights[k])) / 2
        np.testing.assert_allclose(np.asarray(var), want, rtol=1e-6, atol=1e-6, err_msg=var.path)
    assert not (out / "stale").exists()
    heads = earlier_heads(out / "model.keras")   # what `train --init out` starts from
    assert heads["classifier"].dtype == np.float32
    np.testing.assert_allclose(heads["classifier"], 0.5)
    np.testing.assert_allclose(heads["projection"], np.eye(128) * 1.5)
    state = heads["state"]
    assert state["soup_of"] == [str(r) for r, _ in runs]
    assert state["params"] == mixed.count_params() and state["epoch"] == 0
    assert [leg.get("run") for leg in training_legs(state)] == [1, None]

    other = tmp_path / "other"
    other.mkdir()
    build_encoder(width=0.25, blocks=(2, 1, 1), final=64).save(other / "model.keras")
    with pytest.raises(ws.SoupError, match="differ"):
        ws.soup([runs[0][0], other], tmp_path / "bad")
    (runs[1][0] / "projection.npy").unlink()
    with pytest.raises(ws.SoupError, match="projection.npy is in some runs"):
        ws.soup([runs[0][0], runs[1][0]], tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    with pytest.raises(ws.SoupError, match="overwritten"):
        ws.soup([runs[0][0], runs[1][0]], runs[1][0])
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        ws.main([str(runs[0][0]), str(tmp_path / "missing"), "--out", str(tmp_path / "bad")])
    assert stop.value.code == 2 and "no model.keras" in capsys.readouterr().err


@pytest.mark.skipif(not (SHARED_FACES / "att-orl" / "s1").is_dir(),
                    reason="../shared/data/faces/att-orl not present")
def test_runtime_alignment_on_a_real_face():
    from sdk.faces.detector import FaceDetector, align_face

    img = fdata.read_bgr(SHARED_FACES / "att-orl" / "s1" / "1.png")
    faces = FaceDetector.create().detect(img)
    assert faces, "YuNet should find the face in att-orl s1/1.png (with pad retry)"
    crop = align_face(img, faces[0].landmarks)
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8


def test_evaluate_pipeline_on_tiny_model(tmp_path):
    """pairs.txt + CSV through the evaluator with a tiny saved Keras encoder (random
    images: no face is found, so every image takes the counted resize fallback)."""
    import cv2

    from export.faces import evaluate
    from export.faces.model import build_encoder

    rng = np.random.default_rng(0)
    for person in ("set/a", "set/b"):
        (tmp_path / person).mkdir(parents=True)
        for j in range(2):
            cv2.imwrite(str(tmp_path / person / f"{j}.png"),
                        rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    (tmp_path / "pairs.txt").write_text("2 1\nset/a 1 2\nset/a 1 set/b 1\n"
                                        "set/b 1 2\nset/a 2 set/b 2\n")
    (tmp_path / "m.csv").write_text("file_x,file_y,Decision\n0.png,1.png,Yes\n0.png,0.png,No\n")
    for person in ("ids/p0", "ids/p1", "ids/p2", "ids/p3"):   # an identification set
        (tmp_path / person).mkdir(parents=True)
        for j in range(2):
            cv2.imwrite(str(tmp_path / person / f"{j}.png"),
                        rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    path = tmp_path / "enc.keras"
    build_encoder(width=0.25, blocks=(1, 1, 1), final=64).save(path)
    report = evaluate.run([str(path)], [(tmp_path / "pairs.txt", tmp_path)], [tmp_path / "ids"],
                          None, None)
    m = next(iter(report["models"].values()))
    # the identification set at each operating point: seed 0's split and ten more draws
    ids = m["operating_points"]["far_1e-3"]["identification"]["ids"]
    assert ids["draws"] == 10 and ids["draws_unknown_probes"] == 10 * 2   # 1 of 4 people
    assert 0 <= ids["draws_unknown_let_in"] <= 20
    assert m["identification"][0]["open_set_draws"] == 10                  # at the model's τ
    assert "_draws" not in m["identification"][0] and "_du" not in m["identification"][0]
    json.dumps(report)                                       # plain Python numbers only
    assert any("more draws of who is unknown" in line for line in evaluate.summary_lines(report))
    r = m["pairs"][0]
    assert r["pairs"] == 4 and r["same"] == 2 and r["no_face_fallbacks"] == 4
    assert len(r["ten_fold"]["fold_accuracies"]) == 2
    impostors = r["closest_impostors"]   # both different-person pairs, nearest first
    assert {(c["a"], c["b"]) for c in impostors} == {("set/a/0.png", "set/b/0.png"),
                                                     ("set/a/1.png", "set/b/1.png")}
    assert impostors[0]["d"] <= impostors[1]["d"]
    assert m["threshold_source"].startswith("fitted on all pairs")
    # no operating points in a Keras file: fitted on the first pair list, applied to all
    op = m["operating_points"]["far_1e-3"]
    assert m["operating_points_source"] == "fitted on pairs.txt"
    assert set(op["pairs"]) == {"pairs.txt"} and 0 <= op["pairs"]["pairs.txt"]["far"] <= 1
    from export.faces.report import impostor_table, operating_point_table

    assert len(operating_point_table(report, "far_1e-3")) == 3
    assert len(operating_point_table(report)) == 2       # no far_1e-4 on 4 listed pairs
    assert len(impostor_table(report)) == 2 + 2          # header + the 2 different pairs
    csv_pairs = evaluate.load_csv_pairs(tmp_path / "m.csv", tmp_path / "set" / "a")
    assert [p[2] for p in csv_pairs] == [True, False]
    # --flip: a face and its mirror image get one embedding, the normalised sum of both
    faces = rng.integers(0, 255, (3, 112, 112, 3), dtype=np.uint8)
    plain, flip = evaluate.Encoder(path), evaluate.Encoder(path, flip=True)
    mirrored = faces[:, :, ::-1]
    both = plain(faces) + plain(mirrored)
    np.testing.assert_allclose(flip(faces), both / np.linalg.norm(both, axis=1, keepdims=True),
                               atol=1e-5)
    np.testing.assert_allclose(flip(faces), flip(mirrored), atol=1e-5)
    assert not np.allclose(plain(faces), plain(mirrored), atol=1e-3)
    flipped = evaluate.run([str(path)], [(tmp_path / "pairs.txt", tmp_path)], [], None, None,
                           flip=True)
    assert flipped["flip"] and next(iter(flipped["models"].values()))["name"].endswith("+ flip")
    # --dense: every pair of the 4 photos the list names (6: 2 same-person, 4 different),
    # not only the 4 listed; the τ of each operating point gets its rates there
    dense = evaluate.run([str(path)], [(tmp_path / "pairs.txt", tmp_path)], [], None, None,
                         dense=True)
    m = next(iter(dense["models"].values()))
    r = m["dense"][0]
    # a model without operating points gets a release's: fitted on every pair of the photos
    assert m["operating_points_source"] == "fitted on every pair of pairs.txt's photos"
    assert set(m["operating_points"]) == {"far_1e-2", "far_1e-3", "far_1e-4", "far_1e-5"}
    assert (r["at_threshold"]["far_1e-4"]["threshold"]
            == m["operating_points"]["far_1e-4"]["threshold"]
            == r["at_far"]["0.0001"]["threshold"])
    assert "_dist" not in r
    assert (r["photos"], r["identities"], r["same"], r["different"]) == (4, 2, 2, 4)
    assert set(r["at_far"]) == {"0.01", "0.001", "0.0001", "1e-05"}
    assert {"threshold", "far_1e-3", "far_1e-4"} <= set(r["at_threshold"])
    assert len(r["closest_impostors"]) == 4
    assert all(c["a"].split("/")[1] != c["b"].split("/")[1] for c in r["closest_impostors"])
    ds = [c["d"] for c in r["closest_impostors"]]
    assert ds == sorted(ds)
    emb = evaluate.Encoder(path)(np.stack([cv2.resize(cv2.imread(str(tmp_path / q)), (112, 112),
                                                      interpolation=cv2.INTER_AREA)
                                           for q in ("set/a/0.png", "set/b/1.png")]))
    pair = [c for c in r["closest_impostors"] if {c["a"], c["b"]} == {"set/a/0.png",
                                                                       "set/b/1.png"}]
    assert pair and pair[0]["d"] == pytest.approx(float(np.sum((emb[0] - emb[1]) ** 2)),
                                                  abs=1e-5)
    from export.faces.report import dense_table

    table = dense_table(dense)
    assert table[2].startswith(f"| {next(iter(dense['models'].values()))['name']} |")
    assert len(table) == 3 + 3 + 1 + 6 + 5 + 2   # table; false-accept origins; by set; pairs
    # same-person pairs by photo set: one set here, so its TAR is the overall one
    g = r["genuine_by_set"]
    assert set(g) == {"set"} and g["set"]["pairs"] == 2
    assert g["set"]["tar_at_far_0.001"] == pytest.approx(r["at_far"]["0.001"]["tar"])
    by_hand = evaluate.genuine_by_set(
        np.array([0.1, 0.5, 0.2, 0.9]), np.array([True, True, True, False]),
        np.array(["x", "x", "y", "x"]),
        {"0.001": {"threshold": 0.3}, "0.0001": {"threshold": 0.15}})
    assert by_hand == {"x": {"pairs": 2, "tar_at_far_0.001": 0.5, "tar_at_far_0.0001": 0.5},
                       "y": {"pairs": 1, "tar_at_far_0.001": 1.0, "tar_at_far_0.0001": 0.0}}
    # the false accepts at FAR 1e-3 grouped by photo set: here none (4 different pairs);
    # by hand, only different-person pairs at or under τ count, under their sorted sets
    assert r["false_accepts_at_far_1e-3"] == {}
    assert evaluate.false_accepts_by_set(
        np.array([0.1, 0.2, 0.3, 0.25, 0.9]), np.array([True, False, False, False, False]),
        np.array(["x", "y", "x", "x", "x"]), np.array(["x", "x", "x", "y", "y"]), 0.3
    ) == {"x ~ y": 2, "x ~ x": 1}
    # report: several evaluate reports (e.g. a new run, the teacher) fill the same tables

    from export.faces import report as freport

    (tmp_path / "a.json").write_text(json.dumps(dense, default=float))
    other = json.loads(json.dumps(dense, default=float))
    other["models"] = {"teacher": {**next(iter(other["models"].values())), "name": "T"}}
    (tmp_path / "b.json").write_text(json.dumps(other))
    assert freport.main(["--eval", str(tmp_path / "a.json"), "--eval", str(tmp_path / "b.json"),
                         "--dense", str(tmp_path / "a.json"), "--dense", str(tmp_path / "b.json"),
                         "--out", str(tmp_path / "r.md")]) == 0
    md = (tmp_path / "r.md").read_text()
    first = next(iter(dense["models"].values()))["name"]
    # every table has the second report's model as often as the first's (8 rows here)
    assert md.count("| T |") == md.count(f"| {first} |") == 8
    # two runs' files with the same display name are told apart by their folders
    (tmp_path / "c.json").write_text(json.dumps(
        {"models": {"runs/r1/f.onnx": {"name": "f.onnx"}, "runs/r2/f.onnx": {"name": "f.onnx"},
                    "peer.tflite": {"name": "peer"}}}))
    merged = freport.merged_reports([tmp_path / "c.json"])
    assert [m["name"] for m in merged["models"].values()] == ["r1/f.onnx", "r2/f.onnx", "peer"]
    # the speed cell says how many threads the evaluation timed with
    assert freport._ms({"median": 2.3, "p90": 2.41, "runs": 100, "threads": 2}) == \
        "2.30 / 2.41 (2 thr.)"
    assert freport._ms(None) == "–"


def test_identification_with_several_enrolled_photos(tmp_path):
    """--enroll N: a person's distance is the smallest over their N enrolled photos (as in
    sdk.Gallery), and their remaining photos are the probes."""
    import cv2

    from export.faces import evaluate

    # each photo is a flat grey level g; the fake encoder puts it at g degrees on a
    # circle.  seed 0 leaves p2 unknown; p0's later photos are far from its first one
    degrees = {"p0": [0, 100, 95], "p1": [40, 42, 44], "p2": [200, 202, 204],
               "p3": [250, 252, 254]}
    for person, grey in degrees.items():
        (tmp_path / person).mkdir()
        for j, g in enumerate(grey):
            cv2.imwrite(str(tmp_path / person / f"{j}.png"), np.full((8, 8, 3), g, np.uint8))

    class Crop:
        fallbacks: list = []

        def __call__(self, path):
            return cv2.imread(str(path))

    def encoder(faces):
        a = np.deg2rad(faces[:, 0, 0, 0].astype(float))
        return np.stack([np.cos(a), np.sin(a)], axis=1)

    r = {n: evaluate.evaluate_identification(tmp_path, encoder, Crop(), None, seed=0, enroll=n)
         for n in (1, 2)}
    assert r[1]["enrolled"] == 3 and r[1]["probes_unknown"] == 3
    # one photo each: p0's probes (100, 95 degrees) are nearer p1's photo (40) than p0's (0)
    assert r[1]["probes_known"] == 6 and r[1]["rank1_closed_set"] == pytest.approx(4 / 6)
    # two each: p0's second photo (100) claims its probe at 95
    assert r[2]["photos_per_person"] == 2 and r[2]["probes_known"] == 3
    assert r[2]["rank1_closed_set"] == 1.0
    with pytest.raises(evaluate.EvaluationError, match="no photo left"):
        evaluate.evaluate_identification(tmp_path, encoder, Crop(), None, enroll=3)
    # the further draws of who stays unknown (seeds 1..10), one of the four people each
    draws = r[1]["_draws"]
    assert len(draws) == 10 and all(len(du) == 3 and len(dk) == 6 for du, dk in draws)
    tau = 2 - 2 * np.cos(np.deg2rad(45))   # p1's photos are within 45 degrees of p0's first
    want_in, who = 0, set()
    for s, (du, _) in zip(range(1, 11), draws):
        (u,) = evaluate.unknown_people(4, 0.25, s)
        who.add(u)
        enrolled = [np.deg2rad(v[0]) for k, v in enumerate(degrees.values()) if k != u]
        probes = np.deg2rad(list(degrees.values())[u])
        want = [min(2 - 2 * np.cos(a - e) for e in enrolled) for a in probes]
        assert du == pytest.approx(want)
        want_in += sum(w <= tau for w in want)
    assert len(who) > 1 and want_in > 0     # the draws differ, and some let a stranger in
    over = evaluate.open_set_over_draws(draws, tau)
    assert over["draws"] == 10 and over["draws_unknown_probes"] == 30
    assert over["draws_unknown_let_in"] == want_in
    assert over["draws_unknown_in"] == pytest.approx(want_in / 30)


def test_closest_impostors_are_the_nearest_different_pairs():
    from export.faces.evaluate import closest_impostors

    d = np.array([0.10, 0.15, 0.20, 0.40, 0.50, 0.60, 0.70])
    same = np.array([True, False, True, True, False, False, False])
    names = [(f"a{i}", f"b{i}") for i in range(7)]
    top = closest_impostors(d, same, names, n=2)
    assert [(c["a"], c["d"]) for c in top] == [("a1", 0.15), ("a4", 0.50)]
    assert top[0]["tar_below"] == pytest.approx(1 / 3)   # only 0.10 is closer
    assert top[1]["tar_below"] == pytest.approx(1.0)


def test_threshold_at_far_is_the_loosest_safe_tau():
    """A door wants the largest τ whose false-accept rate stays under the target."""
    from export.faces import metrics

    # 3 same pairs, 4 different ones; one different pair (0.15) is closer than a same pair
    d = np.array([0.10, 0.15, 0.20, 0.40, 0.50, 0.60, 0.70])
    same = np.array([True, False, True, True, False, False, False])
    m = metrics.roc_metrics(d, same)
    assert m["threshold_at_far_1e-2"] == pytest.approx(0.10)   # 0.15 would admit 1/4
    assert m["tar_at_far_1e-2"] == pytest.approx(1 / 3)
    # nothing is safe: accept nobody, with a τ just below the closest pair (0 let d = 0 in)
    m0 = metrics.roc_metrics(np.array([0.1, 0.2]), np.array([False, True]))
    assert 0.0 < m0["threshold_at_far_1e-3"] < 0.1
    with pytest.raises(ValueError, match="distance 0"):
        metrics.roc_metrics(np.array([0.0, 0.2]), np.array([False, True]))


def test_no_face_fallbacks_are_counted_for_every_model(tmp_path):
    """The crops are cached across models: the second model's evaluation reported 0
    photos without a face (it counted only new ones)."""
    import cv2

    from export.faces import evaluate

    for person in ("p0", "p1", "p2", "p3"):
        (tmp_path / person).mkdir()
        for j in range(3):
            cv2.imwrite(str(tmp_path / person / f"{j}.png"), np.full((8, 8, 3), 10 * j, np.uint8))

    class Crop:  # as FaceCropper: p3's photos have no face, found once, then cached
        def __init__(self):
            self.fallbacks, self.seen = [], set()

        def __call__(self, path):
            if "p3" in str(path) and str(path) not in self.seen:
                self.fallbacks.append(str(path))
            self.seen.add(str(path))
            return cv2.imread(str(path))

    def encoder(faces):
        a = faces[:, 0, 0, 0].astype(float)
        return np.stack([np.cos(a), np.sin(a)], axis=1)

    crop = Crop()
    counts = [evaluate.evaluate_identification(tmp_path, encoder, crop, None, seed=0)
              ["no_face_fallbacks"] for _ in ("model A", "model B")]
    assert counts == [3, 3]


def test_equal_error_rate_is_interpolated_at_the_crossing():
    """Between the ROC points (FRR 0.5, FAR 0) and (FRR 0, FAR 2/3) false rejects equal
    false accepts at 2/7; the nearest point read 0.25."""
    from export.faces import metrics

    d = np.array([1.0, 2.0, 2.0, 2.0, 3.0])
    same = np.array([True, True, False, False, False])
    assert metrics.roc_metrics(d, same)["eer"] == pytest.approx(2 / 7)


def test_best_threshold_separates_float32_neighbours():
    """A float64 midpoint of two float32 distances one ulp apart compared as the upper one."""
    from export.faces import metrics

    d = np.array([0.99999994, 1.0], np.float32)
    same = np.array([True, False])
    tau, acc = metrics.best_threshold(d, same)
    assert acc == 1.0 and metrics.accuracy_at(d, same, tau) == 1.0


def test_relational_distillation_ignores_rotation_and_masks():
    """The relational loss is 0 for any rotation or scaling of the teacher's space,
    positive when the student's neighbours differ, and ignores faces without a teacher."""
    rng = np.random.default_rng(2)
    t = l2_normalize(rng.normal(size=(6, 8))).astype(np.float32)
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    s = (0.5 * t @ q).astype(np.float32)                # same geometry, other axes and scale
    full = np.ones(6, bool)
    assert losses.relational_distillation_loss(s, t, full).numpy() == pytest.approx(0, abs=1e-6)
    assert losses.distillation_loss(s, t, full).numpy() > 0.1  # the absolute form is not
    s2 = s.copy()
    s2[0] = -s2[0]
    assert losses.relational_distillation_loss(s2, t, full).numpy() > 0.01
    mask = full.copy()
    mask[0] = False                                     # the changed face has no teacher
    assert losses.relational_distillation_loss(s2, t, mask).numpy() == pytest.approx(0, abs=1e-6)


def test_projected_distillation_learns_the_rotation():
    """Procrustes finds the rotation between two spaces; through it the projected loss is
    0 where the plain one is not, and it still sees a face whose neighbours differ."""
    rng = np.random.default_rng(3)
    t = l2_normalize(rng.normal(size=(40, 8))).astype(np.float32)
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    s = (t @ q.T).astype(np.float32)                    # the student: the teacher, rotated
    w = losses.procrustes(s, t)
    np.testing.assert_allclose(w @ w.T, np.eye(8), atol=1e-5)   # orthogonal
    np.testing.assert_allclose(s @ w, t, atol=1e-5)
    full = np.ones(40, bool)
    proj = tf.Variable(w)
    assert losses.distillation_loss(s, t, full).numpy() > 0.1
    assert losses.projected_distillation_loss(s, t, full, proj).numpy() == pytest.approx(
        0, abs=1e-6)
    s2 = s.copy()
    s2[0] = -s2[0]
    assert losses.projected_distillation_loss(s2, t, full, proj).numpy() > 0.05
    mask = full.copy()
    mask[0] = False
    assert losses.projected_distillation_loss(s2, t, mask, proj).numpy() == pytest.approx(
        0, abs=1e-6)
    # the gradient reaches the projection, which is how it keeps up with the student
    with tf.GradientTape() as tape:
        loss = losses.projected_distillation_loss(s2, t, full, proj)
    assert float(tf.norm(tape.gradient(loss, proj))) > 0


def _tiny_training_set(root: Path) -> dict:
    """8 people × 4 random 112×112 'faces' on disk and as a cache; 2 people held out."""
    import json

    import cv2

    rng = np.random.default_rng(0)
    names = [f"p{i}" for i in range(8)]
    images, labels, paths = [], [], []
    for i, n in enumerate(names):
        (root / "set" / n).mkdir(parents=True)
        for j in range(4):
            img = rng.integers(0, 255, (112, 112, 3), dtype=np.uint8)
            cv2.imwrite(str(root / "set" / n / f"{j}.png"), img)
            images.append(img)
            labels.append(i)
            paths.append(f"set/{n}/{j}.png")
    cache = root / "aligned.npz"
    np.savez(cache, images=np.stack(images), labels=np.array(labels),
             names=np.array([f"set/{n}" for n in names]), paths=np.array(paths))
    (root / "split.json").write_text(json.dumps({"holdout": ["set/p6", "set/p7"]}))
    (root / "pairs.txt").write_text("2 1\nset/p6 1 2\nset/p6 3 set/p7 1\n"
                                    "set/p7 2 3\nset/p6 4 set/p7 4\n")
    teacher = root / "teacher.npz"
    np.savez(teacher, emb=l2_normalize(rng.normal(size=(32, 128))).astype(np.float32),
             ok=np.arange(32) < 24, mode=np.array("aligned"), duplicates=np.zeros((0, 3)))
    return {"cache": cache, "teacher": teacher}


def test_train_then_new_leg_from_init(tmp_path):
    """Two tiny training legs: the second starts from the first's weights and CosFace
    centres (--init) with relational distillation, and records where it came from."""
    import keras

    from export.faces import train

    files = _tiny_training_set(tmp_path)
    common = ["--cache", str(files["cache"]), "--teacher", str(files["teacher"]),
              "--split", str(tmp_path / "split.json"), "--pairs", str(tmp_path / "pairs.txt"),
              "--root", str(tmp_path), "--epochs", "1", "--p", "4", "--k", "2",
              "--width", "0.25", "--blocks", "1", "1", "1", "--final", "64",
              "--threads", "1", "--cls", "1.0"]
    first = train.train(train.build_parser().parse_args(common + ["--out", str(tmp_path / "a")]))
    assert first["epoch"] == 1 and len(first["history"]) == 1
    assert (tmp_path / "a" / "curve.png").is_file()
    second = train.train(train.build_parser().parse_args(
        common + ["--out", str(tmp_path / "b"), "--init", str(tmp_path / "a"),
                  "--distill-mode", "relational", "--lr", "0", "--dropout", "0",
                  "--merge-duplicates"]))   # reads the teacher's (empty) duplicate list
    assert second["init"]["from"] == str(tmp_path / "a")
    assert second["init"]["state"]["epoch"] == 1
    from export.faces.report import history_table

    rows = history_table(second)[2:]                     # the report shows both legs
    assert [r.split("|")[1].strip() for r in rows] == ["1 (a, absolute)", "2 (b, relational)"]
    # lr 0 (only the 1e-5 floor): the new leg starts from, and stays near, the old weights
    # (trainable weights: batch-norm statistics move with any forward pass in training)
    wa = [v.numpy() for v in keras.models.load_model(tmp_path / "a" / "model.keras")
          .trainable_weights]
    wb = [v.numpy() for v in keras.models.load_model(tmp_path / "b" / "model.keras")
          .trainable_weights]
    assert max(float(np.abs(x - y).max()) for x, y in zip(wa, wb)) < 0.01
    # --dropout 0: the leg trains (and saves) the model without it
    rates = [layer.rate for layer in keras.models.load_model(tmp_path / "b" / "model.keras")
             .layers if isinstance(layer, keras.layers.Dropout)]
    assert rates == [0.0]
    with pytest.raises(SystemExit):
        train.build_parser().parse_args(common + ["--out", "x", "--dropout", "1"])
    # from a bare .keras file (a released encoder): its class centres are imprinted from
    # its own embeddings and fitted to them, not random
    import shutil

    (tmp_path / "released").mkdir()
    shutil.copy2(tmp_path / "a" / "model.keras", tmp_path / "released" / "enc.keras")
    from_file = train.train(train.build_parser().parse_args(
        common + ["--out", str(tmp_path / "h"), "--init",
                  str(tmp_path / "released" / "enc.keras"), "--lr", "0"]))
    assert from_file["init"]["from"] == str(tmp_path / "released" / "enc.keras")
    assert set(from_file["init"]["fitted_heads"]) == {"cls"}   # absolute distillation: no map
    assert from_file["init"]["fitted_heads"]["cls"]["after"] < from_file["init"]["fitted_heads"]["cls"]["before"]
    centres = np.load(tmp_path / "h" / "classifier.npy")
    assert centres.shape == np.load(tmp_path / "a" / "classifier.npy").shape
    # a release keeps a run's training state beside its .keras file; the next leg from
    # that file takes the learnt centres and the record up again (no imprinting)
    packed = train.save_heads(tmp_path / "h", train.heads_file(tmp_path / "released" / "enc.keras"))
    assert packed == tmp_path / "released" / "enc.train.npz"
    again = train.train(train.build_parser().parse_args(
        common + ["--out", str(tmp_path / "i"), "--init",
                  str(tmp_path / "released" / "enc.keras"), "--lr", "0"]))
    assert again["init"]["state"]["epoch"] == 1
    assert np.abs(np.load(tmp_path / "i" / "classifier.npy") - centres).max() < 0.01
    assert train.save_heads(tmp_path / "nothing", tmp_path / "x.train.npz") is None
    with pytest.raises(fdata.FacesDataError, match="no .keras file"):
        train.train(train.build_parser().parse_args(
            common + ["--out", str(tmp_path / "c"), "--init", str(tmp_path / "nowhere")]))
    # a wider leg from the narrow run: widened first, then trained
    wider = [a if a != "0.25" else "0.5" for a in common]
    third = train.train(train.build_parser().parse_args(
        wider + ["--out", str(tmp_path / "d"), "--init", str(tmp_path / "a"), "--lr", "0"]))
    assert third["params"] > 2 * second["params"] and third["init"]["from"] == str(tmp_path / "a")
    # no --width: a leg keeps its --init run's width (the 0.5 default would mean narrowing)
    no_width = [a for i, a in enumerate(common) if a != "--width" and common[i - 1] != "--width"]
    # (and the grey batches and side light of run 9 go through a real step)
    fourth = train.train(train.build_parser().parse_args(
        no_width + ["--out", str(tmp_path / "e"), "--init", str(tmp_path / "a"), "--lr", "0",
                    "--grey-batches", "1", "--side-light", "1"]))
    assert fourth["params"] == second["params"] and fourth["config"]["width"] == 0.25
    assert fourth["config"]["grey_batches"] == 1.0 and fourth["config"]["side_light"] == 1.0
    # projected distillation: the map is saved next to the model and taken up on resume
    proj_args = common + ["--out", str(tmp_path / "f"), "--init", str(tmp_path / "a"),
                          "--distill-mode", "projected", "--fit-heads", "0"]
    train.train(train.build_parser().parse_args(proj_args))
    w1 = np.load(tmp_path / "f" / "projection.npy")
    assert w1.shape == (128, 128)
    assert float(np.abs(w1 @ w1.T - np.eye(128)).max()) < 0.1   # near its Procrustes start
    more = train.build_parser().parse_args(proj_args + ["--resume"])
    more.epochs = 2
    resumed = train.train(more)
    assert resumed["epoch"] == 2
    assert not np.allclose(np.load(tmp_path / "f" / "projection.npy"), w1)
    split = tmp_path / "split.json"
    assert resumed["holdout"] == sorted(json.loads(split.read_text())["holdout"])
    # resuming with another option that shaped the checkpoint, or another held-out split,
    # is refused by name; a fresh run into a used folder too (its heads would be reused)
    other_seed = train.build_parser().parse_args(proj_args + ["--resume", "--seed", "9"])
    with pytest.raises(fdata.FacesDataError, match=r"--seed 0 -> 9"):
        train.train(other_seed)
    moved = tmp_path / "split_moved.json"
    record = json.loads(split.read_text())
    moved.write_text(json.dumps({**record, "holdout": sorted(record["holdout"])[:-1]}))
    other_split = [a if a != str(split) else str(moved) for a in proj_args]
    with pytest.raises(fdata.FacesDataError, match="holdout"):
        train.train(train.build_parser().parse_args(other_split + ["--resume"]))
    with pytest.raises(fdata.FacesDataError, match="holds a run"):
        train.train(train.build_parser().parse_args(proj_args))
    # a leg after a projected one (here widened) starts from its learnt map, not from a
    # fresh Procrustes rotation (a map at half scale tells the two apart)
    learnt = 0.5 * np.load(tmp_path / "f" / "projection.npy")
    np.save(tmp_path / "f" / "projection.npy", learnt)
    wide_proj = [a if a != "0.25" else "0.5" for a in common]
    train.train(train.build_parser().parse_args(
        wide_proj + ["--out", str(tmp_path / "g"), "--init", str(tmp_path / "f"),
                     "--distill-mode", "projected", "--lr", "0"]))
    assert np.allclose(np.load(tmp_path / "g" / "projection.npy"), learnt, atol=1e-3)
    # --imprint starts both heads afresh: a Procrustes rotation, not the learnt map
    train.train(train.build_parser().parse_args(
        common + ["--out", str(tmp_path / "k"), "--init", str(tmp_path / "f"),
                  "--distill-mode", "projected", "--lr", "0", "--imprint", "--fit-heads", "0"]))
    w = np.load(tmp_path / "k" / "projection.npy")
    assert float(np.abs(w @ w.T - np.eye(128)).max()) < 0.1


def test_imprint_and_fit_heads_on_a_frozen_encoder():
    """Heads for a leg from a bare encoder: imprinted centres are each class's normalised
    mean embedding (a class without faces keeps a unit random centre); fitting then lowers
    the CosFace and projected-distillation losses on the frozen embeddings."""
    import tensorflow as tf

    from export.faces.train import fit_heads, imprint_classes, per_class_sample

    rng = np.random.default_rng(3)
    rows = np.arange(100, 160)
    classes = np.repeat(np.arange(6), 10)
    s_rows, s_cls = per_class_sample(rows, classes, 7, per_class=4, seed=0)
    assert len(s_rows) == 24 and np.all(np.diff(s_rows) > 0)
    assert np.array_equal(np.bincount(s_cls), [4] * 6)
    assert np.array_equal(classes[s_rows - 100], s_cls)
    means = l2_normalize(rng.normal(size=(6, 128)))
    emb = l2_normalize(means[s_cls] + 0.3 * rng.normal(size=(24, 128))).astype(np.float32)
    centres = imprint_classes(emb, s_cls, 7)
    assert centres.shape == (128, 7)
    for c in range(6):
        m = emb[s_cls == c].mean(0)
        assert np.allclose(centres[:, c], m / np.linalg.norm(m), atol=1e-5)
    assert abs(np.linalg.norm(centres[:, 6]) - 1) < 1e-5
    rotation = np.linalg.qr(rng.normal(size=(128, 128)))[0]
    teacher = (emb @ rotation).astype(np.float32)
    ok = np.arange(24) % 3 > 0
    classifier = tf.Variable(centres)
    projection = tf.Variable(np.eye(128, dtype=np.float32))
    fitted = fit_heads(emb, s_cls, teacher, ok, classifier, projection, margin=0.4, steps=50)
    assert fitted["cls"]["after"] < fitted["cls"]["before"]
    assert fitted["distill"]["after"] < 0.5 * fitted["distill"]["before"]
    only_cls = fit_heads(emb, s_cls, None, None, tf.Variable(centres), None, steps=5)
    assert set(only_cls) == {"cls"}


def test_release_gate_reads_every_pair():
    """The int8 gate: balanced accuracy and TAR at FAR 1e-3 over every pair; a file that
    only jitters the distances passes, one that blurs them is refused with its reasons."""
    from export.faces.gate import GateScores, judge

    same = np.array([True, True, False, False, False, False])
    assert GateScores.from_distances(np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]),
                                     same).accuracy == 1.0
    # τ=0.2 takes 2/2 same, 1/4 different: ½(1 + 0.75); τ=0.1 ½(0.5 + 1)
    mixed = GateScores.from_distances(np.array([0.1, 0.2, 0.15, 0.4, 0.5, 0.6]), same, far=0.0)
    assert mixed.accuracy == 0.875
    assert mixed.tar == 0.5

    rng = np.random.default_rng(0)
    s = np.r_[np.ones(2000, bool), np.zeros(200_000, bool)]
    d = np.where(s, rng.normal(0.8, 0.3, s.size), rng.normal(1.9, 0.3, s.size))
    ref = GateScores.from_distances(d, s)
    assert 0.9 < ref.accuracy < 1.0 and 0.3 < ref.tar < 0.9
    jitter = GateScores.from_distances(d + rng.normal(0, 0.01, d.size), s)
    verdict = judge(ref, jitter)
    assert verdict.ok and abs(verdict.accuracy_drop) < 0.5 and verdict.reasons == ()
    blurred = GateScores.from_distances(d + rng.normal(0, 0.2, d.size), s)
    verdict = judge(ref, blurred)
    assert not verdict.ok and verdict.accuracy_drop > 0.5 and verdict.tar_drop > 0.5
    assert len(verdict.reasons) == 2 and "TAR at FAR 0.001" in verdict.reasons[1]
    # only the strict end worse (the 400 closest different pairs pulled in): TAR refused alone
    tail = d.copy()
    tail[np.flatnonzero(~s)[np.argsort(d[~s])[:400]]] = 0.3
    verdict = judge(ref, GateScores.from_distances(tail, s))
    assert not verdict.ok and len(verdict.reasons) == 1 and "TAR" in verdict.reasons[0]
    assert judge(ref, GateScores.from_distances(tail, s), max_tar_drop=100).ok
    with pytest.raises(ValueError, match="same FAR"):
        judge(ref, GateScores.from_distances(d, s, far=1e-4))
    # NaN fails every comparison: a NaN limit passed any model, a NaN score any limit
    with pytest.raises(ValueError, match="max_accuracy_drop"):
        judge(ref, blurred, float("nan"))
    with pytest.raises(ValueError, match="max_tar_drop"):
        judge(ref, blurred, 0.5, float("nan"))
    broken = GateScores(accuracy=float("nan"), tar=float("nan"), far=ref.far)
    verdict = judge(ref, broken)
    assert not verdict.ok and len(verdict.reasons) == 2


def test_release_publishes_whole_files_and_no_mixed_set(tmp_path, capsys):
    """A release replaces each released file in one rename (no half-written model, no
    temporary file left), and a refused file's earlier copy is removed rather than kept
    beside files of other weights."""
    from export.faces.release import RELEASED_FILES, publish

    out, rel = tmp_path / "export", tmp_path / "models"
    out.mkdir()
    rel.mkdir()
    for name in RELEASED_FILES:
        (out / name).write_bytes(b"new " + name.encode())
        (rel / name).write_bytes(b"old " + name.encode())
    model = tmp_path / "run" / "model.keras"
    model.parent.mkdir()
    model.write_bytes(b"new weights")
    released = publish(out, rel, ["face_encoder_int8.onnx"], model)
    assert sorted(Path(p).name for p in released) == [
        "face_encoder.keras", "face_encoder_fp32.onnx", "face_encoder_int8.tflite"]
    assert not (rel / "face_encoder_int8.onnx").exists()        # old weights: removed
    assert (rel / "face_encoder_int8.tflite").read_bytes().startswith(b"new ")
    assert (rel / "face_encoder.keras").read_bytes() == b"new weights"
    assert not list(rel.glob("*.partial"))
    assert "its new version was refused" in capsys.readouterr().out
    # the released folder's own Keras file as the model: kept, not copied onto itself
    assert publish(out, rel, [], rel / "face_encoder.keras")[-1] == str(rel / "face_encoder.keras")
    assert (rel / "face_encoder_int8.onnx").read_bytes().startswith(b"new ")


def test_release_table_shows_the_every_pair_gate():
    """The report's exported-files table: the gate's drops and its reasons for a refusal;
    a release JSON written before the every-pair gate still renders."""
    from export.faces.report import release_table

    old_file = {"bytes": 2048, "ten_fold": 0.87, "ten_fold_std": 0.03, "drop_points": 0.6,
                "auc": 0.94, "threshold": 1.6, "min_cosine_vs_keras": 0.99, "accepted": False}
    old = {"keras_fp32": {"ten_fold": 0.876, "auc": 0.945, "threshold": 1.6},
           "files": {"a.onnx": old_file}, "released": [], "refused": ["a.onnx"]}
    rows = release_table(old)
    assert rows[2].count("|") == 10 and "REFUSED (> max drop)" in rows[4]
    gate = {"accuracy": 0.86, "tar": 0.16, "far": 1e-3, "accuracy_drop": -0.001,
            "tar_drop": 1.81, "reasons": ["every-pair TAR at FAR 0.001 16.00% is 1.81 points "
                                          "below float's (limit 0.5)"]}
    new = {**old, "keras_fp32": {**old["keras_fp32"], "gate": {"accuracy": 0.86, "tar": 0.178,
                                                               "far": 1e-3}},
           "files": {"a.onnx": {**old_file, "gate": gate}}}
    rows = release_table(new)
    assert "TAR at FAR 0.001 17.80 %" in rows[0]
    assert rows[2].count("|") == 11 and "+0.00 / +1.81" in rows[4]
    assert "REFUSED (every-pair TAR at FAR 0.001" in rows[4]


def _tfjs_model(tmp_path: Path, nodes: list[dict], weights: dict[str, np.ndarray],
                fmt: str = "graph-model", pad_bytes: int = 0) -> Path:
    """A TF.js graph model written the way the TF.js converter lays one out."""
    import base64

    blob = b"".join(np.ascontiguousarray(w).tobytes() for w in weights.values())
    (tmp_path / "w.bin").write_bytes(blob + b"\0" * pad_bytes)
    manifest = [{"paths": ["w.bin"], "weights": [
        {"name": k, "shape": list(v.shape), "dtype": str(v.dtype)} for k, v in weights.items()]}]
    for n in nodes:  # attribute strings are base64 in the protobuf-JSON form
        for key, val in n.get("attr", {}).items():
            if "s" in val:
                val["s"] = base64.b64encode(val["s"].encode()).decode()
            if "list" in val and "s" in val["list"]:
                val["list"]["s"] = [base64.b64encode(s.encode()).decode() for s in val["list"]["s"]]
    consts = [{"name": k, "op": "Const"} for k in weights]
    path = tmp_path / "model.json"
    path.write_text(json.dumps({"format": fmt, "modelTopology": {"node": consts + nodes},
                                "weightsManifest": manifest}))
    return path


def _conv_net(tmp_path: Path, rng: np.random.Generator, **kw) -> tuple[Path, dict]:
    w = {"k": rng.normal(size=(3, 3, 3, 4)).astype(np.float32),
         "b": rng.normal(size=4).astype(np.float32),
         "dk": rng.normal(size=(3, 3, 4, 1)).astype(np.float32),
         "db": rng.normal(size=4).astype(np.float32),
         "axes": np.array([1, 2], np.int32),
         "fc": rng.normal(size=(4, 2)).astype(np.float32),
         "fb": rng.normal(size=2).astype(np.float32)}
    same = {"padding": {"s": "SAME"}, "strides": {"list": {"i": ["1", "2", "2", "1"]}}}
    nodes = [
        {"name": "x", "op": "Placeholder"},
        {"name": "c", "op": "_FusedConv2D", "input": ["x", "k", "b"],
         "attr": {**same, "fused_ops": {"list": {"s": ["BiasAdd", "Relu"]}}}},
        {"name": "d", "op": "FusedDepthwiseConv2dNative", "input": ["c", "dk", "db"],
         "attr": {"padding": {"s": "VALID"}, "strides": {"list": {"i": ["1", "1", "1", "1"]}},
                  "fused_ops": {"list": {"s": ["BiasAdd"]}}}},
        {"name": "m", "op": "Mean", "input": ["d", "axes"]},
        {"name": "y", "op": "_FusedMatMul", "input": ["m", "fc", "fb"],
         "attr": {"fused_ops": {"list": {"s": ["BiasAdd"]}}}},
    ]
    return _tfjs_model(tmp_path, nodes, w, **kw), w


def test_tfjs_graph_runs_fused_ops_like_tensorflow(tmp_path):
    # the runner that scored the npm face networks as teachers (scripts/tfjs_teacher_scope.py):
    # TF.js-only fused ops against the plain TensorFlow ops they stand for
    from export.faces.tfjs_graph import TfjsGraph

    rng = np.random.default_rng(0)
    path, w = _conv_net(tmp_path, rng)
    x = rng.normal(size=(2, 9, 9, 3)).astype(np.float32)
    c = tf.nn.relu(tf.nn.conv2d(x, w["k"], [1, 2, 2, 1], "SAME") + w["b"])
    d = tf.nn.depthwise_conv2d(c, w["dk"], [1, 1, 1, 1], "VALID") + w["db"]
    want = tf.reduce_mean(d, axis=[1, 2]) @ w["fc"] + w["fb"]
    got = TfjsGraph.load(path, "y")(x)
    assert got.shape == (2, 2)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(TfjsGraph.load(path, "m")(x), tf.reduce_mean(d, axis=[1, 2]).numpy(),
                               rtol=1e-5, atol=1e-5)


def test_tfjs_graph_refuses_what_it_cannot_run(tmp_path):
    from export.faces.tfjs_graph import TfjsGraph, TfjsGraphError

    rng = np.random.default_rng(1)
    with pytest.raises(TfjsGraphError, match="not a TF.js graph model"):
        TfjsGraph.load(_conv_net(tmp_path, rng, fmt="layers-model")[0], "y")
    with pytest.raises(TfjsGraphError, match="no node named 'z'"):
        TfjsGraph.load(_conv_net(tmp_path, rng)[0], "z")
    with pytest.raises(TfjsGraphError, match="weights use"):
        TfjsGraph.load(_conv_net(tmp_path, rng, pad_bytes=4)[0], "y")
    path = _tfjs_model(tmp_path, [{"name": "x", "op": "Placeholder"},
                                  {"name": "y", "op": "Erf", "input": ["x"]}], {})
    with pytest.raises(TfjsGraphError, match=r"unsupported ops \['Erf'\]"):
        TfjsGraph.load(path, "y")(np.zeros((1, 2, 2, 1), np.float32))
    # a fused batch norm has other inputs than a bias: refused, never misread
    w = {"k": np.ones((1, 1, 1, 1), np.float32), "s": np.ones(1, np.float32)}
    for ops in (["FusedBatchNorm"], ["BiasAdd", "LeakyRelu"]):
        path = _tfjs_model(tmp_path, [{"name": "x", "op": "Placeholder"},
                                      {"name": "y", "op": "_FusedConv2D", "input": ["x", "k", "s"],
                                       "attr": {"padding": {"s": "SAME"},
                                                "strides": {"list": {"i": ["1"] * 4}},
                                                "fused_ops": {"list": {"s": ops}}}}], w)
        with pytest.raises(TfjsGraphError, match="unsupported fused ops"):
            TfjsGraph.load(path, "y")(np.zeros((1, 2, 2, 1), np.float32))


def test_tfjs_graph_fused_prelu_takes_its_slopes(tmp_path):
    from export.faces.tfjs_graph import TfjsGraph

    rng = np.random.default_rng(2)
    w = {"fc": rng.normal(size=(3, 4)).astype(np.float32),
         "fb": rng.normal(size=4).astype(np.float32),
         "alpha": np.array([0.1, 0.2, 0.3, 0.4], np.float32)}
    path = _tfjs_model(tmp_path, [{"name": "x", "op": "Placeholder"},
                                  {"name": "y", "op": "_FusedMatMul",
                                   "input": ["x", "fc", "fb", "alpha"],
                                   "attr": {"fused_ops": {"list": {"s": ["BiasAdd", "Prelu"]}}}}], w)
    x = rng.normal(size=(5, 3)).astype(np.float32)
    y = x @ w["fc"] + w["fb"]
    want = np.where(y > 0, y, w["alpha"] * y)
    assert (y < 0).any() and (y > 0).any()
    np.testing.assert_allclose(TfjsGraph.load(path, "y")(x), want, rtol=1e-5, atol=1e-6)


def test_release_checks_its_arguments_before_any_work(tmp_path, capsys):
    """Too few calibration faces, a missing file, or a split naming people the cache does
    not have: refused at once, by name (they used to fail after the evaluation)."""
    from export.faces import release

    files = _tiny_training_set(tmp_path)
    model = tmp_path / "m.keras"
    model.write_bytes(b"")        # never loaded: the checks come first
    base = ["--model", str(model), "--cache", str(files["cache"]), "--split",
            str(tmp_path / "split.json"), "--pairs", str(tmp_path / "pairs.txt"),
            "--out", str(tmp_path / "out"), "--calibration", "16"]
    for extra, message in ((["--calibration", "8"], "at least 16"),
                           (["--max-drop", "-1"], "not negative"),
                           (["--max-tar-drop", "nan"], "must be finite"),
                           (["--pairs", str(tmp_path / "none.txt")], "--pairs")):
        with pytest.raises(SystemExit) as stop:
            release.main(base + extra)
        assert stop.value.code == 2 and message in capsys.readouterr().err
    (tmp_path / "other.json").write_text(json.dumps({"holdout": ["set/nobody"]}))
    with pytest.raises(SystemExit) as stop:
        release.main(base + ["--split", str(tmp_path / "other.json")])
    assert stop.value.code == 2 and "set/nobody" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
