"""The project's state: one SQLite file (WAL) behind this one module.

Holds the embedding cache, items (cluster, density), cluster centroids, rounds with their selections and
full ranking, model parameters and push progress. Nothing is pickled: arrays are raw little-endian bytes
with dtype and shape, model parameters are JSON with arrays encoded the same way.

A round is written in one transaction (`Store.record_round`), so a crash or a kill mid-round leaves the
previous round intact. The embedding cache is committed as it fills: it is a cache, and keeping it means a
killed run never embeds the same text twice.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import sqlite3
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import LockedError, StateError, WriteError

APP_ID = "al-backend"
SCHEMA_VERSION = 1
SQLITE_HEADER = b"SQLite format 3\x00"
_IN_CHUNK = 900  # SQLite's default limit on host parameters is 999
SCAN_MIN_ROWS = 50_000  # above this, a pool asking for most of the cache reads it in one sequential scan

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS embeddings (
    model TEXT NOT NULL, text_hash BLOB NOT NULL, vector BLOB NOT NULL,
    PRIMARY KEY (model, text_hash)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS items (
    item_id TEXT PRIMARY KEY, text_hash BLOB NOT NULL, cluster INTEGER NOT NULL DEFAULT -1,
    density REAL, label TEXT, seeded INTEGER NOT NULL DEFAULT 0, first_round INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS arrays (name TEXT PRIMARY KEY, dtype TEXT NOT NULL, shape TEXT NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS rounds (
    round_id INTEGER PRIMARY KEY, started_at REAL NOT NULL, finished_at REAL NOT NULL,
    strategy TEXT NOT NULL, phase TEXT NOT NULL, model_version TEXT NOT NULL,
    pool_size INTEGER NOT NULL, labeled INTEGER NOT NULL, batch_size INTEGER NOT NULL,
    metrics TEXT NOT NULL, ranking BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS selections (
    round_id INTEGER NOT NULL, position INTEGER NOT NULL, item_id TEXT NOT NULL,
    priority REAL NOT NULL, components TEXT NOT NULL, PRIMARY KEY (round_id, position));
CREATE TABLE IF NOT EXISTS models (
    version TEXT PRIMARY KEY, created_at REAL NOT NULL, round_id INTEGER NOT NULL, state TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS disagreements (
    item_id TEXT PRIMARY KEY, labels TEXT NOT NULL, chosen TEXT, round_id INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS push_progress (
    round_id INTEGER NOT NULL, target TEXT NOT NULL, chunks_done INTEGER NOT NULL,
    chunks_total INTEGER NOT NULL, updated_at REAL NOT NULL, PRIMARY KEY (round_id, target));
"""


def encode_array(a: np.ndarray) -> dict[str, Any]:
    a = np.ascontiguousarray(a)
    return {
        "__ndarray__": base64.b64encode(a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()).decode(),
        "dtype": a.dtype.newbyteorder("<").str,
        "shape": list(a.shape),
    }


def decode_array(d: dict[str, Any]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(d["__ndarray__"]), dtype=np.dtype(d["dtype"])).reshape(d["shape"]).copy()


def dumps_state(obj: Any) -> str:
    """JSON with numpy arrays and scalars encoded explicitly (the no-pickle model format)."""

    def default(o: Any) -> Any:
        if isinstance(o, np.ndarray):
            return encode_array(o)
        if isinstance(o, np.generic):
            return o.item()
        raise TypeError(f"cannot store {type(o).__name__} in state")

    return json.dumps(obj, default=default, sort_keys=True)


def loads_state(text: str) -> Any:
    return json.loads(text, object_hook=lambda d: decode_array(d) if "__ndarray__" in d else d)


@dataclass
class RoundRecord:
    round_id: int
    started_at: float
    finished_at: float
    strategy: str
    phase: str
    model_version: str
    pool_size: int
    labeled: int
    batch_size: int
    metrics: dict[str, Any]


@dataclass
class RoundWrite:
    """What `Store.record_round` writes. item_rows: (item_id, text_hash, cluster, density, label, seeded,
    first_round) for new or changed items only; disagreements: (item_id, labels, chosen label);
    model: (version, state_dict) or None; arrays and meta: named extras (centroids, stopping state)."""

    ranking: Any
    phase: str
    started_at: float
    pool_size: int
    labeled: int
    metrics: dict[str, Any]
    item_rows: list[tuple[Any, ...]]
    gone: list[str]
    disagreements: list[tuple[str, list[str], str | None]]
    model: tuple[str, dict[str, Any]] | None = None
    centroids: np.ndarray | None = None
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, str] = field(default_factory=dict)
    identity: tuple[Any, str] | None = None  # (pool, embedding space) for set_identity
    item_columns: ItemColumnsWrite | None = None


def _clean(x: Any) -> Any:
    x = float(x)
    return None if np.isnan(x) else x


def _json(obj: Any) -> str:
    return json.dumps(obj, default=lambda o: o.item() if isinstance(o, np.generic) else str(o), sort_keys=True)


ITEM_COLUMNS_KEY = "item_columns"
ITEM_ARRAY_PREFIX = "items/"
TEXT_BLOCK_ROWS = 4096  # rows per text digest: an unchanged block of texts is not hashed row by row


def digest_strings(strings: Sequence[str]) -> bytes:
    """16-byte digest of a sequence of strings: one C-level join and one hash instead of a hash per row.
    Newline-joined when no string holds a newline (n - 1 of them in the join), else lengths + contents;
    either way the split is unambiguous, and the two forms are told apart."""
    h = hashlib.blake2b(digest_size=16)
    n = len(strings)
    joined = "\n".join(strings)
    if joined.count("\n") == max(n - 1, 0):
        h.update(b"lines %d\n" % n)
    else:
        h.update(b"lengths %d\n" % n)
        h.update(np.fromiter(map(len, strings), dtype="<i8", count=n).tobytes())
        joined = "".join(strings)
    h.update(joined.encode("utf-8", "surrogatepass"))
    return h.digest()


def text_block_digests(texts: Sequence[str], block_rows: int = TEXT_BLOCK_ROWS) -> np.ndarray:
    """(ceil(n / block_rows), 16) uint8: the digest of each block of texts."""
    out = b"".join(digest_strings(texts[s : s + block_rows]) for s in range(0, len(texts), block_rows))
    return np.frombuffer(out, dtype=np.uint8).reshape(-1, 16).copy()


@dataclass
class ItemColumns:
    """The items, as columns in the row order of the pool that recorded them last: a mirror of the items table,
    written in the same transaction, so that a round compares a pool with the state without one Python object
    per row. ids is None until needed (`Store.item_ids`): a pool with the same ids in the same order
    (ids_digest) never needs them."""

    n: int
    ids_digest: str
    hashes: np.ndarray  # (n, 16) uint8: text_hash per row
    cluster: np.ndarray  # (n,) int64, -1: none
    density: np.ndarray  # (n,) float64, NaN: none
    seeded: np.ndarray  # (n,) int8
    label: np.ndarray  # (n,) int32 index into label_vocab, -1: unlabeled
    label_vocab: list[Any]
    text_blocks: np.ndarray | None  # (blocks, 16) uint8, see text_block_digests; None: unknown
    block_rows: int = TEXT_BLOCK_ROWS
    ids: list[str] | None = None


@dataclass
class ItemColumnsWrite:
    """What a round leaves in the item columns: every column of the new snapshot (arrays aligned with the
    pool) and which of them changed (only those are written); ids when the pool's ids changed."""

    n: int
    ids_digest: str
    columns: dict[str, np.ndarray]
    changed: set[str]
    label_vocab: list[Any]
    ids: list[str] | None = None
    block_rows: int = TEXT_BLOCK_ROWS


_ITEM_COLUMN_DTYPES = {
    "hash": np.uint8,
    "cluster": np.int64,
    "density": np.float64,
    "seeded": np.int8,
    "label": np.int32,
    "text_blocks": np.uint8,
}


def _encode_ids(ids: Sequence[str]) -> tuple[str, bytes]:
    """("lines", newline-joined UTF-8) when no id holds a newline (checked in C), else ("json", ...)."""
    ids = ids if isinstance(ids, list) else list(ids)
    try:
        joined = "\n".join(ids)
    except TypeError:
        joined = None
    if joined is not None and joined.count("\n") == max(len(ids) - 1, 0):
        return "lines", joined.encode("utf-8", "surrogatepass")
    return "json", json.dumps(ids).encode()


def _decode_ids(fmt: str, blob: bytes, n: int) -> list[str]:
    if fmt == "json":
        return json.loads(blob)
    return blob.decode("utf-8", "surrogatepass").split("\n") if n else []


def _narrow_int(lo: int, hi: int) -> str:
    """The narrowest little-endian signed integer dtype holding lo..hi."""
    for dtype in ("<i1", "<i2", "<i4"):
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return dtype
    return "<i8"


RANKING_MAGIC = b"ALRANK1\n"  # not a zlib header: rankings written as zlib-compressed JSON still read


class Store:
    """One project's state file. Open with `Store.open(path)`; close() or use as a context manager."""

    def __init__(self, path: Path, conn: sqlite3.Connection):
        self.path = path
        self.conn = conn

    # ---------------------------------------------------------------- opening
    @classmethod
    def open(cls, path: str | Path, *, create: bool = True, reset: bool = False) -> Store:
        """Open (or create) the state. reset=True first moves an existing state aside (never deletes it)."""
        path = Path(path)
        if reset:
            move_aside(path)
        if path.exists():
            _check_foreign(path)
        elif not create:
            raise StateError(f"state file {path} does not exist (run `al-backend prioritize` or `seed` first)")
        else:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise WriteError(f"cannot create the state file's directory {path.parent}: {e.strerror or e}") from None
        if path.exists() and path.stat().st_size > 0:
            _check_tables_readonly(path)  # before any PRAGMA writes to a file that may not be ours
        existed = path.exists()
        try:
            conn = sqlite3.connect(str(path), timeout=30.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            existing = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as e:
            if not existed or isinstance(e, sqlite3.OperationalError) and "unable to open" in str(e):
                raise WriteError(
                    f"cannot create or open the state file {path}: {e}; its directory must be "
                    "writable (SQLite keeps -wal and -shm files next to it)"
                ) from None
            raise StateError(_foreign_message(path, f"SQLite cannot read it ({e})")) from None
        store = cls(path, conn)
        if not existing:
            store._create_schema()
        else:
            app = store.get_meta("app")
            if app != APP_ID:
                conn.close()
                raise StateError(_foreign_message(path, f"its meta table belongs to {app!r}"))
            version = int(store.get_meta("schema_version") or 0)
            if version > SCHEMA_VERSION:
                conn.close()
                raise StateError(
                    f"state file {path} has schema version {version}, newer than this al-backend "
                    f"({SCHEMA_VERSION}); upgrade al-backend or use another --state path"
                )
        return store

    @classmethod
    def memory(cls) -> Store:
        """A state that lives in memory only (simulations, the Python API): the same schema and code paths as a
        file, nothing written to disk."""
        conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        store = cls(Path(":memory:"), conn)
        store._create_schema()
        return store

    def _create_schema(self) -> None:
        with self.transaction() as conn:
            # statement by statement: executescript() would COMMIT in the middle of this transaction
            for stmt in SCHEMA.strip().split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            conn.execute("INSERT INTO meta VALUES ('app', ?)", (APP_ID,))
            conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            conn.execute("INSERT INTO meta VALUES ('created_at', ?)", (str(time.time()),))

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT; ROLLBACK on any exception (including KeyboardInterrupt)."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        else:
            self.conn.execute("COMMIT")

    # ---------------------------------------------------------------- meta
    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # ---------------------------------------------------------------- embedding cache
    def embedding_dim(self, model: str) -> int | None:
        """Dimension of the model's cached vectors, None when nothing is cached for it."""
        row = self.conn.execute("SELECT length(vector) FROM embeddings WHERE model=? LIMIT 1", (model,)).fetchone()
        return None if row is None else row[0] // 4

    def fill_embeddings(self, model: str, hashes: Sequence[bytes], out: np.ndarray) -> np.ndarray:
        """Write cached vectors straight into out[i] for hashes[i]; returns the (n,) mask of rows found.

        No per-row array objects and no second copy: at 1M x 384 this is the difference between 1.5 GB and
        4.5 GB held at once."""
        first: dict[bytes, int] = {}
        repeats: list[tuple[int, int]] = []
        for i, h in enumerate(hashes):
            j = first.setdefault(h, i)
            if j != i:
                repeats.append((i, j))
        found = np.zeros(len(hashes), dtype=bool)
        unique = list(first)
        width = out.shape[1] * 4
        for rows in self._cached_rows(model, unique):
            for h, blob in rows:
                row = first.get(h)
                if row is None:
                    continue  # a full scan also meets vectors of texts not in this pool
                if len(blob) != width:
                    raise StateError(
                        f"{self.path}: cached vectors of model {model!r} have {len(blob) // 4} dimensions, "
                        f"expected {out.shape[1]}"
                    )
                out[row] = np.frombuffer(blob, dtype="<f4")
                found[row] = True
        for i, j in repeats:
            if found[j]:
                out[i] = out[j]
                found[i] = True
        return found

    def _cached_rows(self, model: str, unique: list[bytes]) -> Iterator[Iterable[tuple[bytes, bytes]]]:
        """(hash, blob) rows for the wanted hashes: keyed lookups for a few, one sequential scan of the model's
        rows when the pool asks for a large share of the cache (measured at 1M rows: 35 s of lookups)."""
        if len(unique) > SCAN_MIN_ROWS and len(unique) * 2 > self.embedding_count(model):
            yield self.conn.execute("SELECT text_hash, vector FROM embeddings WHERE model=?", (model,))
            return
        for start in range(0, len(unique), _IN_CHUNK):
            chunk = unique[start : start + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            yield self.conn.execute(
                f"SELECT text_hash, vector FROM embeddings WHERE model=? AND text_hash IN ({marks})", (model, *chunk)
            )

    def put_embeddings(self, model: str, hashes: Sequence[bytes], vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype="<f4")
        with self.transaction() as c:
            c.executemany(
                "INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?)",
                ((model, h, vectors[i].tobytes()) for i, h in enumerate(hashes)),
            )

    def embedding_count(self, model: str | None = None) -> int:
        if model is None:
            return self.conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]
        return self.conn.execute("SELECT COUNT(*) FROM embeddings WHERE model=?", (model,)).fetchone()[0]

    # ---------------------------------------------------------------- arrays
    def get_array(self, name: str) -> np.ndarray | None:
        row = self.conn.execute("SELECT dtype, shape, data FROM arrays WHERE name=?", (name,)).fetchone()
        if row is None:
            return None
        return np.frombuffer(row[2], dtype=np.dtype(row[0])).reshape(json.loads(row[1])).copy()

    def put_array(self, name: str, a: np.ndarray) -> None:
        """Write inside the caller's transaction."""
        a = np.ascontiguousarray(a)
        le = a.astype(a.dtype.newbyteorder("<"), copy=False)
        self.conn.execute(
            "INSERT OR REPLACE INTO arrays VALUES (?, ?, ?, ?)",
            (name, le.dtype.str, json.dumps(list(a.shape)), le.tobytes()),
        )

    # ---------------------------------------------------------------- items
    def load_items(self) -> dict[str, tuple[bytes, int, float | None, str | None, int]]:
        """item_id -> (text_hash, cluster, density, label, seeded): the items table, one tuple per row (tests,
        tools). A round reads `load_item_columns` instead."""
        return {
            r[0]: (r[1], r[2], r[3], r[4], r[5])
            for r in self.conn.execute("SELECT item_id, text_hash, cluster, density, label, seeded FROM items")
        }

    def load_item_columns(self) -> ItemColumns:
        """The items as columns: the snapshot the last round wrote when it is current (it was written by the
        newest round), else rebuilt from the items table (a state written before the snapshot existed)."""
        raw = self.get_meta(ITEM_COLUMNS_KEY)
        info = json.loads(raw) if raw else None
        if info is not None and info.get("round") == self.next_round_id() - 1:
            got = {name: self.get_array(ITEM_ARRAY_PREFIX + name) for name in _ITEM_COLUMN_DTYPES}
            blocks = got.pop("text_blocks")
            n = int(info["n"])
            cols = {k: v for k, v in got.items() if v is not None and len(v) == n}
            if len(cols) == len(got):
                return ItemColumns(
                    n=n,
                    ids_digest=info["ids_digest"],
                    hashes=cols["hash"].reshape(n, 16),
                    cluster=cols["cluster"].astype(np.int64, copy=False),
                    density=cols["density"].astype(np.float64, copy=False),
                    seeded=cols["seeded"].astype(np.int8, copy=False),
                    label=cols["label"].astype(np.int32, copy=False),
                    label_vocab=list(info["label_vocab"]),
                    text_blocks=None if blocks is None else blocks.reshape(-1, 16),
                    block_rows=int(info["block_rows"]),
                )
        return self._item_columns_from_table()

    def item_ids(self) -> list[str]:
        """The ids of the current item snapshot, in its row order."""
        info = json.loads(self.get_meta(ITEM_COLUMNS_KEY) or "{}")
        blob = self.get_array(ITEM_ARRAY_PREFIX + "ids")
        if not info or blob is None:
            return self._item_columns_from_table().ids or []
        return _decode_ids(info["ids_format"], blob.tobytes(), int(info["n"]))

    def _item_columns_from_table(self) -> ItemColumns:
        rows = self.conn.execute("SELECT item_id, text_hash, cluster, density, label, seeded FROM items").fetchall()
        n = len(rows)
        ids = [r[0] for r in rows]
        hashes = np.zeros((n, 16), dtype=np.uint8)
        for i, r in enumerate(rows):
            h = bytes(r[1])
            if len(h) == 16:
                hashes[i] = np.frombuffer(h, dtype=np.uint8)
        vocab = list(dict.fromkeys(r[4] for r in rows if r[4] is not None))
        index = {lab: i for i, lab in enumerate(vocab)}
        return ItemColumns(
            n=n,
            ids_digest="",
            hashes=hashes,
            cluster=np.fromiter((r[2] for r in rows), dtype=np.int64, count=n),
            density=np.fromiter((np.nan if r[3] is None else r[3] for r in rows), dtype=np.float64, count=n),
            seeded=np.fromiter((r[5] for r in rows), dtype=np.int8, count=n),
            label=np.fromiter((-1 if r[4] is None else index[r[4]] for r in rows), dtype=np.int32, count=n),
            label_vocab=vocab,
            text_blocks=None,
            ids=ids,
        )

    def _write_item_columns(self, cols: ItemColumnsWrite, round_id: int) -> None:
        """Write inside the caller's transaction: the changed columns, the ids if they changed, and the marker
        that says the snapshot is current as of this round."""
        for name in _ITEM_COLUMN_DTYPES:
            if name in cols.changed:
                self.put_array(
                    ITEM_ARRAY_PREFIX + name, np.asarray(cols.columns[name], dtype=_ITEM_COLUMN_DTYPES[name])
                )
        info = json.loads(self.get_meta(ITEM_COLUMNS_KEY) or "{}")
        if cols.ids is not None:
            fmt, blob = _encode_ids(cols.ids)
            self.put_array(ITEM_ARRAY_PREFIX + "ids", np.frombuffer(blob, dtype=np.uint8))
            info["ids_format"] = fmt
        info.update(
            round=round_id,
            n=cols.n,
            ids_digest=cols.ids_digest,
            label_vocab=cols.label_vocab,
            block_rows=cols.block_rows,
        )
        self.set_meta(ITEM_COLUMNS_KEY, json.dumps(info, default=str))

    # ---------------------------------------------------------------- recording a round
    def record_round(self, rec: RoundWrite) -> None:
        """Everything a round leaves behind, in one transaction: changed items, clusters, the model, the round
        with its full ranking, the selected batch with its score components, disagreements and stopping state.
        A crash before COMMIT leaves the previous state intact."""
        ranking = rec.ranking
        with self.transaction() as c:
            if rec.centroids is not None:
                self.put_array("centroids", rec.centroids)
            for key, value in rec.meta.items():
                self.set_meta(key, value)
            if rec.identity is not None:
                self.set_identity(*rec.identity)
            for name, arr in rec.arrays.items():
                self.put_array(name, arr)
            c.executemany(
                "INSERT INTO items (item_id, text_hash, cluster, density, label, seeded, first_round)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(item_id) DO UPDATE SET text_hash=excluded.text_hash,"
                " cluster=excluded.cluster, density=excluded.density, label=excluded.label, seeded=excluded.seeded",
                rec.item_rows,
            )
            if rec.gone:
                c.executemany("DELETE FROM items WHERE item_id=?", ((g,) for g in rec.gone))
            if rec.item_columns is not None:
                self._write_item_columns(rec.item_columns, ranking.round_id)
            else:  # items written without their columns: the snapshot is stale, rebuilt from the table next time
                c.execute("DELETE FROM meta WHERE key=?", (ITEM_COLUMNS_KEY,))
            c.executemany(
                "INSERT OR REPLACE INTO disagreements VALUES (?, ?, ?, ?)",
                ((tid, json.dumps(labels), chosen, ranking.round_id) for tid, labels, chosen in rec.disagreements),
            )
            if rec.model is not None:
                self.put_model(rec.model[0], ranking.round_id, rec.model[1])
            c.execute(
                "INSERT INTO rounds VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    ranking.round_id,
                    rec.started_at,
                    time.time(),
                    ranking.strategy,
                    rec.phase,
                    ranking.model_version,
                    rec.pool_size,
                    rec.labeled,
                    ranking.batch_size,
                    _json(rec.metrics),
                    Store.encode_ranking(ranking),
                ),
            )
            c.executemany(
                "INSERT INTO selections VALUES (?, ?, ?, ?, ?)",
                (
                    (
                        ranking.round_id,
                        i,
                        ranking.ids[i],
                        float(ranking.priority[i]),
                        _json(
                            {
                                "cluster": int(ranking.cluster[i]),
                                **{k: _clean(v[i]) for k, v in ranking.components.items()},
                            }
                        ),
                    )
                    for i in range(ranking.batch_size)
                ),
            )

    # ---------------------------------------------------------------- rounds
    def last_round(self) -> RoundRecord | None:
        row = self.conn.execute(
            "SELECT round_id, started_at, finished_at, strategy, phase, model_version, pool_size, labeled,"
            " batch_size, metrics FROM rounds ORDER BY round_id DESC LIMIT 1"
        ).fetchone()
        return None if row is None else _round_record(row)

    def rounds(self) -> list[RoundRecord]:
        rows = self.conn.execute(
            "SELECT round_id, started_at, finished_at, strategy, phase, model_version, pool_size, labeled,"
            " batch_size, metrics FROM rounds ORDER BY round_id"
        ).fetchall()
        return [_round_record(r) for r in rows]

    def next_round_id(self) -> int:
        row = self.conn.execute("SELECT MAX(round_id) FROM rounds").fetchone()
        return (row[0] or 0) + 1

    def load_ranking(self, round_id: int):
        """The Ranking a round recorded, with what a push needs (ids, priorities, predictions, clusters)."""
        from .pool import Ranking

        row = self.conn.execute(
            "SELECT ranking, strategy, model_version, batch_size FROM rounds WHERE round_id=?", (round_id,)
        ).fetchone()
        if row is None:
            raise StateError(f"round {round_id} is not in {self.path}")
        d = Store.decode_ranking(bytes(row[0]))
        return Ranking(
            ids=d["ids"],
            priority=d["priority"],
            batch_size=row[3],
            components={},
            predicted=d["predicted"],
            confidence=d["confidence"],
            cluster=d["cluster"],
            round_id=round_id,
            model_version=row[2],
            strategy=row[1],
            classes=d["classes"],
        )

    @staticmethod
    def encode_ranking(ranking) -> bytes:
        """Columnar and binary: a header (JSON) then raw little-endian arrays, the ids one newline-joined blob,
        predictions as codes into their distinct values, integers in the narrowest type that holds them. No
        per-row Python objects (JSON-encoding 1M rows took seconds), no compression (zlib of the ids alone
        took 0.1-0.5 s at 1M); 1M rows take about 19 MB, about what the compressed JSON took."""
        from .pool import Ranking

        n = len(ranking.ids)
        ids_format, ids_blob = _encode_ids(ranking.ids)
        priority = np.asarray(ranking.priority, dtype=np.float64)
        header: dict[str, Any] = {"n": n, "ids": ids_format, "classes": list(ranking.classes)}
        parts: list[tuple[str, bytes]] = [("ids", ids_blob)]
        if priority.shape == (n,) and np.array_equal(priority, Ranking.priorities(n)):
            header["priority"] = "standard"  # 1 - rank / n, recomputed on reading
        else:
            parts.append(("priority", priority.astype("<f8").tobytes()))
        predicted = list(ranking.predicted)
        try:
            vocab = list(dict.fromkeys(predicted))
            index = {v: i for i, v in enumerate(vocab)}
            codes = np.fromiter(map(index.__getitem__, predicted), dtype=np.int64, count=n)
            json.dumps(vocab)
        except (TypeError, ValueError):  # unhashable or unusual predictions: one JSON list
            header["predicted"] = "json"
            parts.append(("predicted", json.dumps(predicted, default=str).encode()))
        else:
            code_dtype = _narrow_int(0, len(vocab))
            header["predicted"] = {"vocab": vocab, "dtype": code_dtype}
            parts.append(("predicted", codes.astype(code_dtype).tobytes()))
        parts.append(("confidence", np.asarray(ranking.confidence, dtype=np.float64).astype("<f8").tobytes()))
        cluster = np.asarray(ranking.cluster, dtype=np.int64)
        header["cluster"] = _narrow_int(int(cluster.min()) if n else 0, int(cluster.max()) if n else 0)
        parts.append(("cluster", cluster.astype(header["cluster"]).tobytes()))
        header["parts"] = [[name, len(blob)] for name, blob in parts]
        head = json.dumps(header).encode()
        return b"".join([RANKING_MAGIC, len(head).to_bytes(8, "little"), head, *(blob for _, blob in parts)])

    @staticmethod
    def decode_ranking(blob: bytes) -> dict[str, Any]:
        """ids, priority, predicted, confidence, cluster, classes of an encoded ranking: the binary format, or
        the zlib-compressed JSON that earlier versions wrote."""
        from .pool import Ranking

        if not blob.startswith(RANKING_MAGIC):
            d = json.loads(zlib.decompress(blob))
            n = len(d["ids"])
            return {
                "ids": d["ids"],
                "priority": np.asarray(d["priority"], dtype=np.float64),
                "predicted": d.get("predicted", [None] * n),
                "confidence": np.asarray(
                    [np.nan if c is None else c for c in d.get("confidence", [None] * n)], dtype=np.float64
                ),
                "cluster": np.asarray(d.get("cluster", [-1] * n), dtype=np.int64),
                "classes": d.get("classes", []),
            }
        pos = len(RANKING_MAGIC)
        size = int.from_bytes(blob[pos : pos + 8], "little")
        pos += 8
        header = json.loads(blob[pos : pos + size])
        pos += size
        parts: dict[str, bytes] = {}
        for name, length in header["parts"]:
            parts[name] = blob[pos : pos + length]
            pos += length
        n = int(header["n"])
        if header["predicted"] == "json":
            predicted = json.loads(parts["predicted"])
        else:
            vocab = header["predicted"]["vocab"]
            codes = np.frombuffer(parts["predicted"], dtype=header["predicted"]["dtype"])
            values = np.empty(len(vocab), dtype=object)
            for i, v in enumerate(vocab):
                values[i] = v
            predicted = values[codes].tolist() if n else []
        return {
            "ids": _decode_ids(header["ids"], parts["ids"], n),
            "priority": Ranking.priorities(n)
            if header.get("priority") == "standard"
            else np.frombuffer(parts["priority"], dtype="<f8").astype(np.float64),
            "predicted": predicted,
            "confidence": np.frombuffer(parts["confidence"], dtype="<f8").astype(np.float64),
            "cluster": np.frombuffer(parts["cluster"], dtype=header["cluster"]).astype(np.int64),
            "classes": header.get("classes", []),
        }

    # ---------------------------------------------------------------- models
    def put_model(self, version: str, round_id: int, state: dict[str, Any]) -> None:
        """Write inside the caller's transaction."""
        self.conn.execute(
            "INSERT OR REPLACE INTO models VALUES (?, ?, ?, ?)", (version, time.time(), round_id, dumps_state(state))
        )

    def latest_model(self) -> tuple[str, dict[str, Any]] | None:
        row = self.conn.execute(
            "SELECT version, state FROM models ORDER BY round_id DESC, created_at DESC LIMIT 1"
        ).fetchone()
        return None if row is None else (row[0], loads_state(row[1]))

    # ---------------------------------------------------------------- push progress
    def push_progress(self, round_id: int, target: str) -> int:
        row = self.conn.execute(
            "SELECT chunks_done FROM push_progress WHERE round_id=? AND target=?", (round_id, target)
        ).fetchone()
        return row[0] if row else 0

    def set_push_progress(self, round_id: int, target: str, done: int, total: int) -> None:
        with self.transaction() as c:
            c.execute(
                "INSERT OR REPLACE INTO push_progress VALUES (?, ?, ?, ?, ?)",
                (round_id, target, done, total, time.time()),
            )

    def unfinished_push(self, target: str) -> tuple[int, int, int] | None:
        """(round_id, chunks_done, chunks_total) of the newest round whose push to target did not finish."""
        row = self.conn.execute(
            "SELECT round_id, chunks_done, chunks_total FROM push_progress WHERE target=? ORDER BY round_id DESC LIMIT 1",
            (target,),
        ).fetchone()
        if row and row[1] < row[2]:
            return row
        return None

    # ---------------------------------------------------------------- identity: which pool, which embedding space
    IDENTITY_SAMPLE = 32  # vectors kept to recognise a --vectors embedding space

    def check_identity(self, pool, space: str) -> None:
        """Refuse a state built from another pool or another embedding space (StateError, exit 4).

        space: "model:<model id>" for embeddings al-backend computes, "vectors" for precomputed ones.
        Another pool: the state holds tasks and not one of this pool's tasks (same id and same text) is
        among them; a growing pool (tasks added, labeled, some edited) always shares most of them.
        Another embedding space: a different model id; for precomputed vectors, the vectors of sampled tasks
        whose text is unchanged differ from the ones stored at the last round (a different dimension is left to
        the dimension check). Reads only; `set_identity` records, inside the round's transaction."""
        from .embedding import text_hash

        hint = (
            "Use another --state for this pool, or pass --reset-state to move this state aside "
            "(it is kept, renamed) and start over"
        )
        stored_space = self.get_meta("embedding_space")
        stored_source = self.get_meta("pool_source") or "another pool"
        if stored_space is not None and stored_space != space:
            raise StateError(
                f"state file {self.path} was built from embeddings of {_space_words(stored_space)}, this run uses "
                f"{_space_words(space)}; rankings would mix two embedding spaces. {hint}."
            )
        n_items = self.conn.execute("SELECT COUNT(*) FROM items").fetchone()[0]
        if n_items and not self._shares_a_task(pool.ids, pool.texts, text_hash):
            raise StateError(
                f"state file {self.path} belongs to another pool ({stored_source}, {n_items} tasks): none of the "
                f"{len(pool)} tasks of {pool.source} (same id and same text) is in it. {hint}."
            )
        if space == "vectors" and pool.vectors is not None:
            self._check_vector_sample(pool, text_hash, hint)

    def set_identity(self, pool, space: str) -> None:
        """Record the pool's source and embedding space (the first time) and a sample of its precomputed vectors.
        Write inside the round's transaction, so a round that fails records nothing."""
        from .embedding import text_hash

        if self.get_meta("embedding_space") is None:
            self.set_meta("embedding_space", space)
        self.set_meta("pool_source", str(pool.source))
        if space == "vectors" and pool.vectors is not None:
            k = min(self.IDENTITY_SAMPLE, len(pool))
            sample = {"ids": list(pool.ids[:k]), "hashes": [text_hash(t).hex() for t in pool.texts[:k]]}
            self.set_meta("vector_sample", json.dumps(sample))
            self.put_array("vector_sample", np.asarray(pool.vectors[:k], dtype=np.float32))

    def _shares_a_task(self, ids: Sequence[str], texts: Sequence[str], text_hash) -> bool:
        for start in range(0, len(ids), _IN_CHUNK):
            chunk = list(ids[start : start + _IN_CHUNK])
            marks = ",".join("?" * len(chunk))
            stored = dict(self.conn.execute(f"SELECT item_id, text_hash FROM items WHERE item_id IN ({marks})", chunk))
            if any(stored.get(tid) == text_hash(texts[start + j]) for j, tid in enumerate(chunk) if tid in stored):
                return True
        return False

    def _check_vector_sample(self, pool, text_hash, hint: str) -> None:
        raw = self.get_meta("vector_sample")
        old = self.get_array("vector_sample")
        if raw is None or old is None:
            return
        sample = json.loads(raw)
        index = {tid: i for i, tid in enumerate(pool.ids)}
        compared = differ = 0
        for j, (tid, h) in enumerate(zip(sample["ids"], sample["hashes"])):
            i = index.get(tid)
            if i is None or text_hash(pool.texts[i]).hex() != h:
                continue  # gone or edited: its vector may rightly differ
            a, b = old[j], np.asarray(pool.vectors[i], dtype=np.float32)
            if a.shape != b.shape:
                continue  # another dimension: the engine's dimension check says so
            compared += 1
            denom = float(np.linalg.norm(a) * np.linalg.norm(b)) or 1.0
            if float(a @ b) / denom < 0.99:
                differ += 1
        if compared and differ * 2 > compared:
            raise StateError(
                f"state file {self.path} was built from other vectors: {differ} of {compared} sampled tasks with "
                f"unchanged text now have different vectors in {pool.source} (another embedding model?). {hint}."
            )

    # ---------------------------------------------------------------- summaries
    def summary(self) -> dict[str, Any]:
        c = self.conn
        n_items = c.execute("SELECT COUNT(*) FROM items").fetchone()[0]
        n_labeled = c.execute("SELECT COUNT(*) FROM items WHERE label IS NOT NULL").fetchone()[0]
        classes = dict(c.execute("SELECT label, COUNT(*) FROM items WHERE label IS NOT NULL GROUP BY label").fetchall())
        clusters = [
            {"cluster": cl, "size": size, "seeded": seeded or 0, "labeled": labeled or 0}
            for cl, size, seeded, labeled in c.execute(
                "SELECT cluster, COUNT(*), SUM(seeded), SUM(label IS NOT NULL) FROM items WHERE cluster >= 0"
                " GROUP BY cluster ORDER BY cluster"
            )
        ]
        last = self.last_round()
        return {
            "state": str(self.path),
            "pool_size": n_items,
            "labeled": n_labeled,
            "classes": classes,
            "clusters": clusters,
            "clusters_covered": sum(1 for cl in clusters if cl["labeled"] > 0),
            "rounds": c.execute("SELECT COUNT(*) FROM rounds").fetchone()[0],
            "embeddings_cached": self.embedding_count(),
            "disagreements": c.execute("SELECT COUNT(*) FROM disagreements").fetchone()[0],
            "last_round": None
            if last is None
            else {
                "round": last.round_id,
                "finished_at": last.finished_at,
                "duration_s": round(last.finished_at - last.started_at, 3),
                "strategy": last.strategy,
                "phase": last.phase,
                "model_version": last.model_version,
                "batch_size": last.batch_size,
                "metrics": last.metrics,
            },
        }


def embedding_space(pool, model_id) -> str:
    """What `check_identity` compares: the model's id, or "vectors" when the pool brings its own.
    model_id: the id, or a function returning it (not called for a pool with vectors: no embedder needed)."""
    if pool.vectors is not None:
        return "vectors"
    return f"model:{model_id() if callable(model_id) else model_id}"


def _space_words(space: str) -> str:
    if space.startswith("model:"):
        return f"model {space[6:]!r}"
    return "precomputed vectors (--vectors / vectors_field)" if space == "vectors" else space


def move_aside(path: str | Path) -> Path | None:
    """Rename the state file (and its -wal/-shm) to <name>.replaced-<UTC time>; returns the new path.
    Nothing is deleted: the old state can be restored by renaming it back."""
    path = Path(path)
    if not path.exists():
        return None
    if path.is_dir():
        raise StateError(f"state path {path} is a directory; pass a file path such as {path}/project.sqlite")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.replaced-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.replaced-{stamp}-{n}")
    try:
        for suffix in ("-wal", "-shm"):
            side = Path(str(path) + suffix)
            if side.exists():
                os.replace(side, str(target) + suffix)
        os.replace(path, target)
    except OSError as e:
        raise WriteError(f"cannot move the state {path} aside: {e.strerror or e}") from None
    import logging

    logging.getLogger(__name__).warning("--reset-state: moved %s aside to %s; starting a fresh state", path, target)
    return target


def _round_record(row: Sequence[Any]) -> RoundRecord:
    return RoundRecord(
        round_id=row[0],
        started_at=row[1],
        finished_at=row[2],
        strategy=row[3],
        phase=row[4],
        model_version=row[5],
        pool_size=row[6],
        labeled=row[7],
        batch_size=row[8],
        metrics=json.loads(row[9]),
    )


def _foreign_message(path: Path, why: str) -> str:
    return (
        f"{path} is not a usable al-backend state file: {why}. Nothing was changed. "
        f"Move it aside together with its -wal and -shm files, if any (or restore a backup), and rerun, "
        f"or pass --state with another path; "
        f"al-backend then rebuilds its state from the labeling tool (labels live there, not here)."
    )


def _check_tables_readonly(path: Path) -> None:
    """Refuse an SQLite file that is corrupted or belongs to another program, without writing to it."""
    try:
        ro = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            tables = {r[0] for r in ro.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            app = None
            if "meta" in tables:
                row = ro.execute("SELECT value FROM meta WHERE key='app'").fetchone()
                app = row[0] if row else None
        finally:
            ro.close()
    except sqlite3.DatabaseError as e:
        raise StateError(_foreign_message(path, f"SQLite cannot read it ({e})")) from None
    if tables and "meta" not in tables:
        raise StateError(_foreign_message(path, "it is an SQLite database of another program"))
    if tables and app != APP_ID:
        raise StateError(_foreign_message(path, f"its meta table belongs to {app!r}"))


def _check_foreign(path: Path) -> None:
    if path.is_dir():
        raise StateError(f"state path {path} is a directory; pass a file path such as {path}/project.sqlite")
    size = path.stat().st_size
    if size == 0:
        return  # an empty file (e.g. from `touch`) is a fresh state
    with open(path, "rb") as f:
        header = f.read(16)
    if header != SQLITE_HEADER:
        raise StateError(_foreign_message(path, "it is not an SQLite database (corrupted or another file)"))


# -------------------------------------------------------------------- locking
@contextlib.contextmanager
def project_lock(state_path: str | Path, wait: float = 0.0) -> Iterator[None]:
    """Hold an exclusive lock for the project's state. A second holder fails at once with LockedError,
    or polls for up to `wait` seconds. The lock is released by the kernel if the process dies."""
    lock_path = Path(str(state_path) + ".lock")
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise WriteError(
            f"cannot create the lock file {lock_path}: {e.strerror or e}; the state's directory must be writable"
        ) from None
    deadline = time.monotonic() + max(wait, 0.0)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    holder = ""
                    with contextlib.suppress(OSError):
                        holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
                    who = f" (pid {holder})" if holder else ""
                    raise LockedError(
                        f"another al-backend run holds the lock on {state_path}{who}; "
                        f"it exits when its round is done. Use --wait SECONDS to wait for it."
                    ) from None
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the flock
