"""The state file: no pickle, transactional rounds, foreign files refused, locks."""

import multiprocessing as mp
import sqlite3

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from al_backend.errors import LockedError, StateError
from al_backend.store import Store, dumps_state, loads_state, project_lock


@settings(max_examples=50, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 6), st.integers(1, 5)), elements=st.floats(-1e6, 1e6, width=32)))
def test_state_roundtrip_arrays_exactly(a):
    back = loads_state(dumps_state({"coef": a, "n": np.int64(3), "names": ["x", "y"]}))
    assert back["coef"].dtype == a.dtype and np.array_equal(back["coef"], a)
    assert back["n"] == 3 and back["names"] == ["x", "y"]


def test_embedding_cache_roundtrip(tmp_path):
    with Store.open(tmp_path / "s.sqlite") as s:
        v = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
        s.put_embeddings("m", [b"a" * 16, b"b" * 16, b"c" * 16], v)
        out = np.zeros((3, 4), np.float32)
        found = s.fill_embeddings("m", [b"c" * 16, b"a" * 16, b"z" * 16], out)
        assert found.tolist() == [True, True, False]
        assert np.array_equal(out[0], v[2]) and np.array_equal(out[1], v[0]) and not out[2].any()
        assert not s.fill_embeddings("other-model", [b"a" * 16], np.zeros((1, 4), np.float32)).any()


def test_transaction_rolls_back_on_crash(tmp_path):
    with Store.open(tmp_path / "s.sqlite") as s:
        with pytest.raises(KeyboardInterrupt):
            with s.transaction() as c:
                c.execute("INSERT INTO meta VALUES ('half', 'written')")
                raise KeyboardInterrupt
        assert s.get_meta("half") is None


def test_foreign_files_are_refused_and_left_untouched(tmp_path):
    text = tmp_path / "notes.sqlite"
    text.write_bytes(b"hello, this is not a database at all")
    with pytest.raises(StateError, match="not an SQLite database") as e:
        Store.open(text)
    assert "Move it aside" in str(e.value)
    assert text.read_bytes() == b"hello, this is not a database at all"

    other = tmp_path / "other.sqlite"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE invoices (id INTEGER)")
    conn.commit()
    conn.close()
    before = other.read_bytes()
    with pytest.raises(StateError, match="another program"):
        Store.open(other)
    assert other.read_bytes() == before


def test_corrupted_state_is_refused(tmp_path):
    p = tmp_path / "s.sqlite"
    Store.open(p).close()
    data = bytearray(p.read_bytes())
    data[100:4000] = b"\xff" * 3900  # scribble over the schema page
    p.write_bytes(bytes(data))
    with pytest.raises(StateError):
        Store.open(p)


def test_missing_state_without_create(tmp_path):
    with pytest.raises(StateError, match="does not exist"):
        Store.open(tmp_path / "none.sqlite", create=False)


def _hold_lock(path, ready, release):
    with project_lock(path):
        ready.set()
        release.wait(10)


def test_lock_excludes_a_second_process(tmp_path):
    path = tmp_path / "s.sqlite"
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_hold_lock, args=(str(path), ready, release))
    p.start()
    try:
        assert ready.wait(20)
        with pytest.raises(LockedError, match="--wait") as e:
            with project_lock(path):
                pass
        assert e.value.exit_code == 75
        release.set()
        with project_lock(path, wait=10):  # waits until the holder is gone
            pass
    finally:
        release.set()
        p.join(10)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.text(min_size=1, max_size=30), min_size=1, max_size=20, unique=True),
    st.integers(0, 2**32 - 1),
)
def test_embedding_cache_returns_identical_vectors(tmp_path_factory, texts, seed):
    from al_backend.embedding import text_hash

    path = tmp_path_factory.mktemp("cache") / "s.sqlite"
    vectors = np.random.default_rng(seed).normal(size=(len(texts), 8)).astype(np.float32)
    hashes = [text_hash(t) for t in texts]
    with Store.open(path) as s:
        s.put_embeddings("model-a", hashes, vectors)
    with Store.open(path) as s:  # a later process reads what an earlier one wrote
        out = np.zeros_like(vectors)
        found = s.fill_embeddings("model-a", list(reversed(hashes)), out)
    assert found.all()
    assert out[::-1].tobytes() == vectors.tobytes()


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 12), min_size=1, max_size=40), st.sets(st.integers(0, 12)))
def test_fill_embeddings_matches_a_dict_lookup(tmp_path_factory, keys, cached_keys):
    """Rows (with repeats) filled in place equal a slow dict lookup; missing rows are reported, untouched."""
    path = tmp_path_factory.mktemp("fill") / "s.sqlite"
    vec = {k: np.full(3, k + 0.5, dtype=np.float32) for k in range(13)}
    h = {k: k.to_bytes(16, "big") for k in range(13)}
    with Store.open(path) as s:
        if cached_keys:
            ks = sorted(cached_keys)
            s.put_embeddings("m", [h[k] for k in ks], np.stack([vec[k] for k in ks]))
        out = np.full((len(keys), 3), -1.0, dtype=np.float32)
        found = s.fill_embeddings("m", [h[k] for k in keys], out)
    for i, k in enumerate(keys):
        assert found[i] == (k in cached_keys)
        assert np.array_equal(out[i], vec[k] if k in cached_keys else np.full(3, -1.0, dtype=np.float32))


def test_fill_embeddings_refuses_a_dimension_mismatch(tmp_path):
    with Store.open(tmp_path / "s.sqlite") as s:
        s.put_embeddings("m", [b"a" * 16], np.ones((1, 4), dtype=np.float32))
        assert s.embedding_dim("m") == 4 and s.embedding_dim("other") is None
        with pytest.raises(StateError, match="4 dimensions, expected 3"):
            s.fill_embeddings("m", [b"a" * 16], np.zeros((1, 3), dtype=np.float32))


@pytest.mark.parametrize("scan_min", [0, 10**9], ids=["sequential-scan", "keyed-lookups"])
def test_fill_embeddings_both_read_paths_agree(tmp_path, monkeypatch, scan_min):
    import al_backend.store as store_mod

    monkeypatch.setattr(store_mod, "SCAN_MIN_ROWS", scan_min)
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(50, 4)).astype(np.float32)
    hashes = [i.to_bytes(16, "big") for i in range(50)]
    with Store.open(tmp_path / "s.sqlite") as s:
        s.put_embeddings("m", hashes[:40], vectors[:40])
        s.put_embeddings("other", hashes[:40], vectors[:40] + 1)  # another model's rows must not leak in
        idx = [5, 5] + list(range(45))  # most of the cache, so the scan path is taken when allowed
        out = np.zeros((len(idx), 4), dtype=np.float32)
        statements = []
        s.conn.set_trace_callback(statements.append)
        found = s.fill_embeddings("m", [hashes[i] for i in idx], out)
        s.conn.set_trace_callback(None)
    keyed = any("text_hash IN (" in q for q in statements)
    assert keyed == (scan_min > 0)  # the path under test was really taken
    assert found.tolist() == [i < 40 for i in idx]
    for row, i in enumerate(idx):
        expected = vectors[i] if i < 40 else np.zeros(4, dtype=np.float32)
        assert np.array_equal(out[row], expected)
