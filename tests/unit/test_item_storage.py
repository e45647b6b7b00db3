"""The items as columns (the round's view of the items table) and the binary ranking: both must say exactly
what the items table and the old JSON ranking said, and a round must behave the same whichever path it takes."""

import json
import zlib

import numpy as np
import pytest

from al_backend.config import load_config
from al_backend.embedding import text_hash
from al_backend.pool import Pool, Ranking
from al_backend.round import Round
from al_backend.store import ITEM_COLUMNS_KEY, TEXT_BLOCK_ROWS, Store


def _pool(n=300, d=8, labeled=(), seed=0, ids=None, texts=None):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    ids = ids or [f"t{i}" for i in range(n)]
    labels = [f"c{i % 3}" if i in set(labeled) else None for i in range(n)]
    return Pool(ids=ids, texts=texts or [f"text of {t}" for t in ids], labels=labels, vectors=X, source="test")


def _engine(store, **over):
    cfg = load_config(
        None,
        env={},
        overrides={"strategy.batch_size": 5, "seeding.n_clusters": 4, "seeding.min_cluster_coverage": 0.0, **over},
    )
    return Round(cfg, store, progress=False)


def _table_as_columns(store, ids):
    items = store.load_items()
    return [items[t] for t in ids]


def _columns_as_rows(cols, ids):
    return [
        (
            cols.hashes[i].tobytes(),
            int(cols.cluster[i]),
            None if np.isnan(cols.density[i]) else float(cols.density[i]),
            None if cols.label[i] < 0 else cols.label_vocab[cols.label[i]],
            int(cols.seeded[i]),
        )
        for i in range(len(ids))
    ]


def _assert_mirror(store, pool):
    """The snapshot is current and says what the items table says, row for row in the pool's order."""
    cols = store.load_item_columns()
    assert cols.ids is None and cols.n == len(pool)  # read from the snapshot, not rebuilt from the table
    assert store.item_ids() == list(pool.ids)
    assert _columns_as_rows(cols, pool.ids) == _table_as_columns(store, pool.ids)
    assert len(store.load_items()) == len(pool)


def test_item_columns_mirror_the_items_table_through_rounds(tmp_path):
    store = Store.open(tmp_path / "s.sqlite")
    eng = _engine(store, **{"strategy.name": "margin_density"})
    pool = _pool(labeled=[0, 1, 2, 3, 4, 5])
    eng.run(pool)
    _assert_mirror(store, pool)
    assert all(h == text_hash(t) for (h, *_), t in zip(_table_as_columns(store, pool.ids), pool.texts))
    # the same pool again: nothing to write, the snapshot stays current
    eng.run(pool)
    _assert_mirror(store, pool)
    # a label, an edited text in a later block, a task gone, a new task, a reordered pool
    n = len(pool)
    keep = [i for i in range(n) if i != 9]
    ids = [pool.ids[i] for i in keep][::-1] + ["new"]
    texts = [pool.texts[i] for i in keep][::-1] + ["a new task"]
    labels = [pool.labels[i] for i in keep][::-1] + [None]
    labels[ids.index("t7")] = "c1"
    texts[ids.index("t250")] = "edited"
    X = np.concatenate([pool.vectors[keep][::-1], pool.vectors[:1]])
    pool2 = Pool(ids=ids, texts=texts, labels=labels, vectors=X, source="test")
    eng.run(pool2)
    _assert_mirror(store, pool2)
    items = store.load_items()
    assert "t9" not in items and items["t7"][3] == "c1" and items["t250"][0] == text_hash("edited")
    assert items["new"][0] == text_hash("a new task")
    assert store.summary()["pool_size"] == n and store.summary()["labeled"] == 7


def test_an_edited_text_in_an_unchanged_pool_is_found_by_its_block(tmp_path):
    n = 2 * TEXT_BLOCK_ROWS + 10
    store = Store.open(tmp_path / "s.sqlite")
    eng = _engine(store, **{"strategy.name": "margin_density"})
    pool = _pool(n=n, labeled=[0, 1, 2, 3, 4, 5])
    eng.run(pool)
    density_before = store.load_items()["t5000"][2]
    pool.texts[5000] = "edited in place"
    eng.run(pool)
    assert store.last_round().metrics["new_items"] == 1
    items = store.load_items()
    assert items["t5000"][0] == text_hash("edited in place")
    assert items["t5000"][2] is not None and items["t5001"][0] == text_hash(pool.texts[5001])
    assert density_before is not None
    _assert_mirror(store, pool)


def test_a_stale_snapshot_is_rebuilt_from_the_items_table(tmp_path):
    store = Store.open(tmp_path / "s.sqlite")
    eng = _engine(store)
    pool = _pool(labeled=[0, 1, 2, 3, 4, 5])
    eng.run(pool)
    first = store.load_items()
    # a round written without the snapshot (e.g. by an earlier al-backend): the marker no longer matches
    with store.transaction():
        store.set_meta(ITEM_COLUMNS_KEY, json.dumps({**json.loads(store.get_meta(ITEM_COLUMNS_KEY)), "round": 0}))
    cols = store.load_item_columns()
    assert cols.ids is not None and sorted(cols.ids) == sorted(pool.ids)  # from the table
    pool.labels[10] = "c1"
    r = eng.run(pool)
    assert r.round_id == 2
    items = store.load_items()
    assert items["t10"][3] == "c1" and {k: v for k, v in items.items() if k != "t10"} == {
        k: v for k, v in first.items() if k != "t10"
    }
    _assert_mirror(store, pool)


def test_a_killed_round_leaves_items_and_snapshot_as_they_were(tmp_path, monkeypatch):
    import al_backend.store as store_mod

    store = Store.open(tmp_path / "s.sqlite")
    eng = _engine(store)
    pool = _pool(labeled=[0, 1, 2, 3, 4, 5])
    eng.run(pool)
    items, snapshot = store.load_items(), store.get_meta(ITEM_COLUMNS_KEY)

    def crash(*a, **k):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(store_mod.Store, "encode_ranking", staticmethod(crash))
    pool.labels[20] = "c2"
    pool.texts[30] = "edited"
    with pytest.raises(KeyboardInterrupt):
        eng.run(pool)
    monkeypatch.undo()
    assert store.load_items() == items and store.get_meta(ITEM_COLUMNS_KEY) == snapshot
    eng.run(pool)
    assert store.load_items()["t20"][3] == "c2"
    _assert_mirror(store, pool)


@pytest.mark.parametrize("ids", [["a\nb", "c", "d\x00e"], ["", "x", "ü"]])
def test_odd_ids_round_trip(tmp_path, ids):
    ids = ids + [f"t{i}" for i in range(40)]
    store = Store.open(tmp_path / "s.sqlite")
    eng = _engine(store)
    pool = _pool(n=len(ids), ids=ids, labeled=[3, 4, 5, 6, 7, 8])
    r = eng.run(pool)
    _assert_mirror(store, pool)
    assert store.load_ranking(r.round_id).ids == r.ids


def _ranking(n=50, predicted=None, priority=None, seed=0):
    rng = np.random.default_rng(seed)
    conf = rng.random(n)
    conf[::7] = np.nan
    return Ranking(
        ids=[f"id{i}" for i in rng.permutation(n)],
        priority=Ranking.priorities(n) if priority is None else priority,
        batch_size=5,
        components={},
        predicted=predicted or [["a", "b", None][i % 3] for i in range(n)],
        confidence=conf,
        cluster=rng.integers(-1, 9, n),
        round_id=1,
        model_version="m",
        strategy="margin",
        classes=["a", "b"],
    )


@pytest.mark.parametrize("variant", ["plain", "priority", "json_predicted", "newline_ids", "empty", "wide_cluster"])
def test_ranking_encoding_round_trips(variant):
    n = 0 if variant == "empty" else 50
    r = _ranking(n)
    if variant == "wide_cluster":
        r.cluster = r.cluster * 2**40
    if variant == "priority":
        r.priority = np.linspace(1, 0.5, n)
    if variant == "json_predicted":
        r.predicted = [["a", "b"] if i % 2 else None for i in range(n)]
    if variant == "newline_ids":
        r.ids[3] = "x\ny"
    d = Store.decode_ranking(Store.encode_ranking(r))
    assert d["ids"] == r.ids and d["predicted"] == list(r.predicted) and d["classes"] == r.classes
    assert np.array_equal(d["priority"], r.priority) and np.array_equal(d["cluster"], r.cluster)
    assert np.array_equal(d["confidence"], r.confidence, equal_nan=True)


def test_rankings_written_as_json_still_load(tmp_path):
    """A state written by an earlier version: its rounds' rankings are zlib-compressed JSON."""
    store = Store.open(tmp_path / "s.sqlite")
    r = _ranking()
    old = zlib.compress(
        json.dumps(
            {
                "ids": r.ids,
                "priority": r.priority.tolist(),
                "predicted": r.predicted,
                "confidence": [None if np.isnan(c) else float(c) for c in r.confidence],
                "cluster": r.cluster.tolist(),
                "classes": r.classes,
            }
        ).encode(),
        1,
    )
    store.conn.execute("INSERT INTO rounds VALUES (1, 0, 0, 'margin', 'model', 'm', 50, 3, 5, '{}', ?)", (old,))
    back = store.load_ranking(1)
    assert back.ids == r.ids and back.predicted == r.predicted and back.classes == r.classes
    assert np.array_equal(back.confidence, r.confidence, equal_nan=True) and np.array_equal(back.cluster, r.cluster)


def test_labeled_mask_and_validate():
    from al_backend.errors import InputError

    pool = _pool(n=5, labeled=[1, 3])
    assert pool.labeled_mask.tolist() == [False, True, False, True, False]
    for bad, match in [("", "empty"), ("\u00a0 \n", "empty"), (3, "must be a string")]:
        p = _pool(n=5)
        p.texts[2] = bad
        with pytest.raises(InputError, match=match):
            p.validate()
    p = _pool(n=5)
    p.ids[4] = "t0"
    with pytest.raises(InputError, match="duplicate id 't0'"):
        p.validate()
