"""The round: seeding then model-based selection, recorded transactionally, deterministic for the same inputs.

Uses precomputed vectors (Pool.vectors), so no model is loaded: the real-model path is in tests/integration.
"""

import numpy as np
import pytest

from al_backend.config import load_config
from al_backend.errors import EmptyPoolError, InputError
from al_backend.pool import Pool
from al_backend.round import Round
from al_backend.store import Store


def blobs(n_per=40, d=16, centers=3, seed=0):
    """Well separated Gaussian blobs on the unit sphere; labels = blob name."""
    rng = np.random.default_rng(seed)
    mus = rng.normal(size=(centers, d))
    mus /= np.linalg.norm(mus, axis=1, keepdims=True)
    X, y = [], []
    for c in range(centers):
        pts = mus[c] + 0.25 * rng.normal(size=(n_per, d)) / np.sqrt(d)
        X.append(pts)
        y += [f"c{c}"] * n_per
    X = np.concatenate(X).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X, y


def make_pool(X, y, labeled_idx, ids=None):
    n = len(X)
    ids = ids or [f"t{i}" for i in range(n)]
    labels = [y[i] if i in set(labeled_idx) else None for i in range(n)]
    return Pool(ids=ids, texts=[f"text {i}" for i in ids], labels=labels, vectors=X, source="blobs")


def engine(tmp_path, **over):
    cfg = load_config(None, env={}, overrides={"strategy.batch_size": 6, "seeding.n_clusters": 6, **over})
    store = Store.open(tmp_path / "state.sqlite")
    return Round(cfg, store, progress=False), store


def test_cold_start_seeds_across_clusters_and_records_them(tmp_path):
    X, y = blobs()
    eng, store = engine(tmp_path)
    r = eng.run(make_pool(X, y, []))
    assert r.strategy == "seed" and r.batch_size == 6
    assert len(r.ids) == len(X) and len(set(r.ids)) == len(X)  # every unlabeled task ranked once
    assert np.all(np.diff(r.priority) < 0) and r.priority[0] == 1.0
    batch_clusters = r.cluster[: r.batch_size]
    assert len(set(batch_clusters.tolist())) >= 4  # spread over clusters, not piled in one
    summary = store.summary()
    assert summary["rounds"] == 1 and summary["pool_size"] == len(X)
    assert sum(c["seeded"] for c in summary["clusters"]) == 6
    assert all(r.predicted[i] is None for i in range(len(r)))


def test_model_phase_selects_by_margin_and_is_deterministic(tmp_path):
    X, y = blobs()
    labeled = [0, 1, 2, 3, 40, 41, 42, 43, 80, 81, 82, 83]
    eng, store = engine(tmp_path, **{"seeding.min_cluster_coverage": 0.0, "strategy.name": "margin"})
    pool = make_pool(X, y, labeled)
    r1 = eng.run(pool)
    assert r1.strategy == "margin"
    # the batch is exactly the k highest margin-uncertainty rows, worked out from the head's probabilities
    p = r1.probabilities
    top2 = np.sort(p, axis=1)[:, -2:]
    unc = 1 - (top2[:, 1] - top2[:, 0])
    assert np.all(unc[: r1.batch_size].min() >= unc[r1.batch_size :].max() - 1e-12)
    assert r1.predicted[0] in {"c0", "c1", "c2"}
    r2 = eng.run(pool)  # nothing changed: same ranking, same version
    assert r2.ids == r1.ids and r2.model_version == r1.model_version
    assert r2.round_id == r1.round_id + 1


def test_seeding_moves_to_model_once_classes_and_clusters_are_covered(tmp_path):
    X, y = blobs()
    eng, _ = engine(tmp_path, **{"seeding.min_labels_per_class": 2, "seeding.min_cluster_coverage": 0.5})
    r = eng.run(make_pool(X, y, [0, 40, 80]))  # one label a class: not enough
    assert r.strategy == "seed"
    assert r.predicted[0] is not None  # a model exists for predictions while still seeding
    idx = [0, 1, 40, 41, 80, 81] + [int(t[1:]) for t in r.ids[:6]]
    r2 = eng.run(make_pool(X, y, idx))
    assert r2.strategy != "seed"


def test_dry_run_records_nothing(tmp_path):
    X, y = blobs()
    eng, store = engine(tmp_path)
    eng.run(make_pool(X, y, []), dry_run=True)
    assert store.summary()["rounds"] == 0 and store.summary()["pool_size"] == 0


def test_a_crash_while_recording_leaves_the_previous_round(tmp_path, monkeypatch):
    X, y = blobs()
    eng, store = engine(tmp_path)
    eng.run(make_pool(X, y, []))
    before = store.summary()
    import al_backend.store as store_mod

    def crash(ranking):
        raise KeyboardInterrupt("killed mid-round")

    monkeypatch.setattr(store_mod.Store, "encode_ranking", staticmethod(crash))
    with pytest.raises(KeyboardInterrupt):
        eng.run(make_pool(X, y, [0, 40, 80]))
    monkeypatch.undo()
    after = store.summary()
    assert after["rounds"] == before["rounds"] and after["labeled"] == before["labeled"] == 0
    r = eng.run(make_pool(X, y, [0, 40, 80]))  # the next run picks up
    assert r.round_id == 2 and store.summary()["labeled"] == 3


def test_new_tasks_join_existing_clusters(tmp_path):
    X, y = blobs()
    eng, store = engine(tmp_path)
    eng.run(make_pool(X[:100], y[:100], []))
    centroids = store.get_array("centroids")
    eng.run(make_pool(X, y, []))
    assert np.array_equal(store.get_array("centroids"), centroids)  # not refitted
    items = store.load_items()
    new_ids = [f"t{i}" for i in range(100, 120)]
    d = ((X[100:120, None, :] - centroids[None]) ** 2).sum(-1)  # slow reference, 20 x 6
    assert [items[t][1] for t in new_ids] == d.argmin(1).tolist()
    assert store.summary()["pool_size"] == 120


def test_every_label_known_and_bad_inputs(tmp_path):
    X, y = blobs(n_per=5)
    eng, _ = engine(tmp_path)
    with pytest.raises(InputError, match="unknown label 'c2'"):
        eng.run(make_pool(X, y, [0, 5, 10]), label_set=["c0", "c1"])
    with pytest.raises(EmptyPoolError, match="every task is labeled"):
        eng.run(make_pool(X, y, list(range(15))))
    bad = X.copy()
    bad[3, 0] = np.nan
    with pytest.raises(InputError, match="'t3' contains NaN"):
        eng.run(make_pool(bad, y, []))
    eng.run(make_pool(X, y, []))
    with pytest.raises(InputError, match="dimensions"):
        eng.run(make_pool(X[:, :8].copy(), y, []))


def test_unknown_strategy_is_a_config_error(tmp_path):
    from al_backend.errors import ConfigError

    X, y = blobs(n_per=5)
    eng, store = engine(tmp_path)
    with pytest.raises(ConfigError, match="marginn"):
        eng.run(make_pool(X, y, []), strategy="marginn")
    assert store.summary()["rounds"] == 0


def test_committee_strategy_uses_the_committee(tmp_path):
    X, y = blobs()
    eng, _ = engine(tmp_path, **{"seeding.min_cluster_coverage": 0.0, "strategy.name": "vote_entropy"})
    r = eng.run(make_pool(X, y, [0, 1, 2, 40, 41, 42, 80, 81, 82]))
    assert r.strategy == "vote_entropy" and "vote_entropy" in r.components
    ve = r.components["vote_entropy"]
    assert ve[: r.batch_size].min() >= ve[r.batch_size :].max() - 1e-12  # the batch is the top by vote entropy
    assert ve.min() >= 0 and ve.max() <= np.log(3) + 1e-9


def test_seeding_gives_way_to_the_model_past_max_labels(tmp_path):
    X, y = blobs()
    # a fixed label set with a class nobody has labeled: classes are never "ready"
    eng, _ = engine(tmp_path, **{"seeding.min_cluster_coverage": 0.0, "seeding.max_labels": 12})
    few = [0, 1, 40, 41]
    assert eng.run(make_pool(X, y, few), label_set=["c0", "c1", "c2", "c3"]).strategy == "seed"
    enough = few + [2, 3, 4, 5, 42, 43, 44, 45]
    pool = make_pool(X, y, enough)
    pool.labels = [lab if lab != "c2" else None for lab in pool.labels]
    assert eng.run(pool, label_set=["c0", "c1", "c2", "c3"]).strategy == "margin"


def test_items_track_labels_text_changes_and_removals(tmp_path):
    from al_backend.embedding import text_hash

    X, y = blobs()
    eng, store = engine(tmp_path, **{"strategy.name": "margin_density", "seeding.min_cluster_coverage": 0.0})
    pool = make_pool(X, y, [0, 1, 40, 41, 80, 81])
    eng.run(pool)
    first = store.load_items()
    assert all(first[t][2] is not None for t in pool.ids)  # density cached for every item
    # next round: t5 labeled, t7's text edited, t9 deleted from the tool
    keep = [i for i in range(len(X)) if i != 9]
    pool2 = make_pool(X[keep], [y[i] for i in keep], [], ids=[f"t{i}" for i in keep])
    pool2.labels = [pool.labels[i] for i in keep]
    pool2.labels[5] = y[5]
    pool2.texts[keep.index(7)] = "an edited text"
    eng.run(pool2)
    items = store.load_items()
    assert "t9" not in items and len(items) == len(keep)
    assert items["t5"][3] == y[5] and items["t0"][3] == y[0] and items["t6"][3] is None
    assert items["t7"][0] == text_hash("an edited text") and items["t7"][0] != first["t7"][0]
    assert items["t8"][2] == first["t8"][2]  # unchanged text keeps its cached density
    assert items["t7"][2] is not None  # recomputed for the edited text
    assert store.summary()["labeled"] == 7
