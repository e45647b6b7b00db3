"""The one active-learning round, used by every entry point: the CLI (`prioritize`, `seed`), the Label Studio
backend's retrains, the Argilla watch, `simulate`, the benchmarks and the Python API.

    run_project_round(cfg, connector)     lock -> resume an interrupted push -> pull -> Round.run -> push
    Round.run(pool)                       embed (cached) -> items -> clusters -> density -> phase -> head
                                          -> select -> rank -> stopping evidence -> record (one transaction)

`Round` knows nothing of labeling tools: a connector hands it a Pool and takes back a Ranking. The state is a
`Store`: a SQLite file for projects, `Store.memory()` for simulations and the Python API, so that the same
code decides every batch. What a label *is* belongs to the task type (al_backend/tasks); what a strategy
needs is declared in the strategy registry (al_backend/strategies.py).

Determinism: the same pool, labels, configuration and random state give the same batch, ranking and model
version, so a repeated round pushes the same thing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager as ContextManager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import seeding, strategies
from .config import Config
from .errors import ConfigError, EmptyPoolError, InputError
from .pool import Pool, Ranking
from .store import ItemColumnsWrite, RoundWrite, Store, embedding_space, project_lock
from .tasks import ModelOutputs, TaskType, get_task

log = logging.getLogger(__name__)

SEED_STRATEGY = "seed"
MAX_CLUSTERS_UNKNOWN_CLASSES = 50
STOP_SET_SIZE = 2000


@dataclass
class Prediction:
    """Head output for arbitrary texts (the ML backend's /predict)."""

    labels: list[Any]
    confidence: np.ndarray
    probabilities: np.ndarray | None
    classes: list[str]
    model_version: str


def default_cluster_count(n_pool: int, label_set: Sequence[str] | None, labels: Sequence[Any]) -> int:
    """2 x classes when the label set is known (from the tool, or the labels seen so far); otherwise the
    pool-size rule capped at 50, so cold start does not wait for hundreds of clusters to be covered."""
    if label_set:
        return seeding.default_n_clusters(n_pool, len(label_set))
    seen = {lab for lab in labels if lab is not None}
    if len(seen) >= 2:
        return seeding.default_n_clusters(n_pool, len(seen))
    return min(seeding.default_n_clusters(n_pool, None), MAX_CLUSTERS_UNKNOWN_CLASSES)


def fingerprint(*parts: Any) -> str:
    h = hashlib.sha1()
    for p in parts:
        if isinstance(p, np.ndarray):
            h.update(np.ascontiguousarray(p).tobytes())
        else:
            h.update(repr(p).encode())
        h.update(b"\x00")
    return h.hexdigest()


def _gather(values: Sequence[Any], rows: np.ndarray) -> list[Any]:
    """[values[i] for i in rows] through an object array: a C-level take, no Python bytecode per row."""
    return np.fromiter(values, dtype=object, count=len(values)).take(rows).tolist()


@dataclass
class _Items:
    """The pool's rows against the items the state recorded last round (all arrays aligned with the pool)."""

    hashes: np.ndarray  # (n, 16) uint8: text_hash per row
    fresh: np.ndarray  # new task or changed text
    cluster: np.ndarray
    density: np.ndarray
    before: dict[str, np.ndarray]
    gone: list[str]
    label: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))  # index into label_vocab, -1: none
    label_vocab: list[Any] = field(default_factory=list)
    ids_digest: str = ""
    text_blocks: np.ndarray | None = None
    aligned: bool = False  # the pool has the stored items' ids in the stored order
    stored_text_blocks: np.ndarray | None = None


@dataclass
class _Work:
    """Everything one round computes, step by step."""

    pool: Pool
    label_set: Sequence[str] | None
    name: str  # the strategy as asked ("default", "seed", "margin", ...)
    k: int
    started: float
    X: np.ndarray | None = None
    F: np.ndarray | None = None  # the features head and strategies see: X, or X smoothed over the pool graph
    graph_changed: bool = False
    labeled_idx: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    unlabeled_idx: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    items: _Items | None = None
    centroids: np.ndarray | None = None
    new_clusters: bool = False
    need_density: bool = False
    phase: str = "seed"
    counts: Counter = field(default_factory=Counter)
    known_classes: list[str] = field(default_factory=list)
    coverage: float = 0.0
    covered: int = 0
    head: Any = None
    head_reused: bool = False
    outputs: ModelOutputs = field(default_factory=lambda: ModelOutputs(probs=None))
    batch: np.ndarray | None = None
    order: np.ndarray | None = None
    components: dict[str, np.ndarray] = field(default_factory=dict)
    strategy_used: str = SEED_STRATEGY
    stopping: dict[str, Any] = field(default_factory=dict)
    stop_set_ids: list[str] | None = None  # a stop set drawn this round, recorded with it
    timings: dict[str, float] = field(default_factory=dict)


class Round:
    """Runs rounds over a project's state. One object per state; `run` is the round, the other public
    methods (`fit`, `predict`, `current_head`) reuse its steps."""

    def __init__(
        self,
        config: Config,
        store: Store,
        embedder: Any = None,
        *,
        task: TaskType | None = None,
        progress: bool = True,
    ):
        self.config = config
        self.store = store
        self._embedder = embedder
        self.task = task or get_task("single_label")
        self.progress = progress
        self._head_cache: tuple[str, Any] | None = None
        self.last_head: Any = None  # the head the last run fitted (simulate evaluates it)
        self._fit_key = ""  # the key of the head fitted last (labels, configuration, graph version)
        self._graph: Any = None  # the pool's kNN graph (graph.PoolGraph), cached between runs
        self._graph_version: int | None = None
        self._pool_X: np.ndarray | None = None
        self.pool_features: np.ndarray | None = None  # (n, d) the last run's features of its pool rows

    @property
    def embedder(self):
        """The text embedder, created on first use: rounds over precomputed vectors never load the model."""
        if self._embedder is None:
            from .embedding import Embedder

            self._embedder = Embedder.from_config(self.config, self.store, progress=self.progress)
        return self._embedder

    @property
    def random_state(self) -> int:
        return int(self.config.strategy.seed)

    # ------------------------------------------------------------------ the round
    def run(
        self,
        pool: Pool,
        *,
        batch_size: int | None = None,
        strategy: str | None = None,
        dry_run: bool = False,
        label_set: Sequence[str] | None = None,
    ) -> Ranking:
        """Run one round over the pool and (unless dry_run) record it. Returns the ranking of unlabeled tasks."""
        w = self._start(pool, batch_size, strategy, label_set)
        # another pool or embedding space than the state's: a clear error before any work (exit 4)
        self.store.check_identity(pool, self._space(pool))
        self._embed(w)
        self._load_items(w)
        self._clusters(w)
        self._density(w)
        self._phase(w)
        self._features(w)
        self._fit_head(w)
        self._select(w)
        ranking = self._rank(w)
        self._stopping(w, ranking)
        ranking.stopping = w.stopping.get("decision")
        if not dry_run:
            self._record(w, ranking)
        return ranking

    def _timed(self, w: _Work, key: str) -> ContextManager[None]:
        @contextlib.contextmanager
        def timer():
            t = time.perf_counter()
            yield
            w.timings[key] = w.timings.get(key, 0.0) + time.perf_counter() - t

        return timer()

    def _start(
        self, pool: Pool, batch_size: int | None, strategy: str | None, label_set: Sequence[str] | None
    ) -> _Work:
        cfg = self.config
        pool.validate()
        self.task.check_labels(pool.ids, pool.labels, label_set, pool.source)
        name = strategy or cfg.strategy.name
        if name != SEED_STRATEGY:
            try:
                strategies.resolve_name(name)
            except ValueError as e:
                raise ConfigError(f"--strategy / [strategy] name: {e}") from None
        labeled = pool.labeled_mask
        w = _Work(pool=pool, label_set=label_set, name=name, k=0, started=time.time())
        w.labeled_idx = np.flatnonzero(labeled)
        w.unlabeled_idx = np.flatnonzero(~labeled)
        if w.unlabeled_idx.size == 0:
            raise EmptyPoolError(f"{pool.source}: every task is labeled; nothing left to prioritise")
        requested = batch_size or cfg.strategy.batch_size
        if requested < 1:
            raise ConfigError(f"batch size must be at least 1, got {requested}")
        w.k = min(requested, w.unlabeled_idx.size)
        return w

    def _space(self, pool: Pool) -> str:
        # the lambda keeps pools with their own vectors from creating the embedder
        return embedding_space(pool, lambda: self.embedder.model_id)

    def embed_pool(self, pool: Pool) -> np.ndarray:
        """(n, d) float32: the pool's own vectors when it has them, else the cached embedder's."""
        if pool.vectors is not None:
            X = np.ascontiguousarray(pool.vectors, dtype=np.float32)
            stored_dim = self.store.get_meta("vector_dim")
            if stored_dim is not None and int(stored_dim) != X.shape[1]:
                raise InputError(
                    f"{pool.source}: vectors have {X.shape[1]} dimensions but this project's state was built "
                    f"with {stored_dim}; use another --state or the same vectors"
                )
            return X
        return self.embedder.embed(pool.texts)

    def _embed(self, w: _Work) -> None:
        with self._timed(w, "embed_s"):
            w.X = self.embed_pool(w.pool)

    def _load_items(self, w: _Work) -> None:
        """Compare the pool with the stored items: clusters and density are only computed for new or changed text.

        The state keeps its items as columns in the last pool's row order (Store.load_item_columns): a pool with
        the same ids in the same order (one digest) is compared column by column, and only blocks of texts whose
        digest changed are hashed row by row. Otherwise the pool's rows are matched to the stored ones by id."""
        from .embedding import text_hash
        from .store import TEXT_BLOCK_ROWS, digest_strings, text_block_digests

        pool = w.pool
        n = len(pool)
        with self._timed(w, "items_s"):
            stored = self.store.load_item_columns()
            ids_digest = digest_strings(pool.ids).hex()
            blocks = text_block_digests(pool.texts)
            aligned = stored.n == n and stored.ids_digest == ids_digest
            if aligned:
                rows = None
                known = np.ones(n, dtype=bool)
                gone: list[str] = []
            else:
                stored_ids = stored.ids if stored.ids is not None else self.store.item_ids()
                position = dict(zip(stored_ids, range(len(stored_ids))))
                rows = np.fromiter(map(position.get, pool.ids, itertools.repeat(-1)), dtype=np.int64, count=n)
                known = rows >= 0
                kept = np.zeros(len(stored_ids), dtype=bool)
                kept[rows[known]] = True
                gone = [stored_ids[j] for j in np.flatnonzero(~kept)]

            def take(col: np.ndarray, fill: Any, dtype: Any) -> np.ndarray:
                if rows is None:
                    return col.astype(dtype, copy=True)
                out = np.full((n, *col.shape[1:]), fill, dtype=dtype)
                out[known] = col[rows[known]]
                return out

            hashes = take(stored.hashes, 0, np.uint8)
            cluster = take(stored.cluster, -1, np.int64)
            density = take(stored.density, np.nan, np.float64)
            seeded = take(stored.seeded, 0, np.int64)
            label_before = take(stored.label, -1, np.int32)
            # texts: a block whose digest is the stored one keeps its rows' hashes; the others are hashed per row
            if (
                aligned
                and stored.text_blocks is not None
                and stored.block_rows == TEXT_BLOCK_ROWS
                and stored.text_blocks.shape == blocks.shape
            ):
                stale = np.flatnonzero((stored.text_blocks != blocks).any(axis=1))
                rehash = (
                    np.concatenate([np.arange(b * TEXT_BLOCK_ROWS, min((b + 1) * TEXT_BLOCK_ROWS, n)) for b in stale])
                    if stale.size
                    else np.zeros(0, dtype=np.int64)
                )
            else:
                rehash = np.arange(n)
            fresh = ~known
            if rehash.size:
                texts = pool.texts
                new = np.frombuffer(b"".join(map(text_hash, (texts[i] for i in rehash.tolist()))), dtype=np.uint8)
                new = new.reshape(-1, 16)
                fresh[rehash] |= (new != hashes[rehash]).any(axis=1)
                hashes[rehash] = new
            # labels as codes into the stored label values (a loop over labeled rows only)
            vocab = list(stored.label_vocab)
            index = {lab: i for i, lab in enumerate(vocab)}
            label_now = np.full(n, -1, dtype=np.int32)
            labels = pool.labels
            for i in w.labeled_idx.tolist():
                lab = labels[i]
                code = index.get(lab)
                if code is None:
                    code = index[lab] = len(vocab)
                    vocab.append(lab)
                label_now[i] = code
            before = {
                "known": known,
                "label_same": known & (label_now == label_before),
                "cluster": cluster.copy(),
                "density": density.copy(),
                "seeded": seeded,
            }
        w.items = _Items(
            hashes=hashes,
            fresh=fresh,
            cluster=cluster,
            density=density,
            before=before,
            gone=gone,
            label=label_now,
            label_vocab=vocab,
            ids_digest=ids_digest,
            text_blocks=blocks,
            aligned=aligned,
            stored_text_blocks=stored.text_blocks if aligned else None,
        )

    def _clusters(self, w: _Work) -> None:
        """Cold-start clusters: fitted once per state (FAISS k-means), new or changed items assigned to them."""
        cfg, X, items = self.config, w.X, w.items
        assert X is not None and items is not None
        with self._timed(w, "clusters_s"):
            centroids = self.store.get_array("centroids")
            if centroids is not None and centroids.shape[1] != X.shape[1]:
                raise InputError(
                    f"{w.pool.source}: embeddings have {X.shape[1]} dimensions, the state's clusters "
                    f"{centroids.shape[1]}; the model changed: use a new --state"
                )
            w.new_clusters = centroids is None
            if centroids is None:
                n_clusters = cfg.seeding.n_clusters or default_cluster_count(len(w.pool), w.label_set, w.pool.labels)
                n_clusters = max(1, min(n_clusters, len(w.pool)))
                # k-means trains on a sample (256 a centroid), so its cost grows with clusters, not the pool;
                # one restart instead of three keeps a 1M pool's first round in seconds
                centroids = seeding.fit_clusters(
                    X, n_clusters, seed=self.random_state, n_redo=3 if len(w.pool) <= 50_000 else 1
                )
                items.cluster = seeding.assign_clusters(X, centroids)
            else:
                need = items.fresh | (items.cluster < 0)
                if need.any():
                    items.cluster[need] = seeding.assign_clusters(X[need], centroids)
            w.centroids = centroids

    def _density(self, w: _Work) -> None:
        """kNN density (FAISS), only when the strategy or outlier exclusion needs it, cached per item."""
        cfg, X, items = self.config, w.X, w.items
        assert X is not None and items is not None
        needs = w.name != SEED_STRATEGY and strategies.get_strategy(w.name).needs_density
        w.need_density = cfg.strategy.outlier_quantile > 0 or needs
        if not w.need_density:
            return
        with self._timed(w, "density_s"):
            from .density import knn_density

            missing = items.fresh | np.isnan(items.density)
            if missing.all():
                items.density = knn_density(X).astype(np.float64)
            elif missing.any():
                items.density[missing] = knn_density(X, queries=X[missing])

    def _phase(self, w: _Work) -> None:
        """Seeding until every known class has enough labels and the clusters are covered; then the model leads."""
        cfg, items = self.config, w.items
        assert items is not None and w.centroids is not None
        labels_l = [w.pool.labels[i] for i in w.labeled_idx]
        w.counts = Counter(labels_l)
        w.known_classes = list(w.label_set) if w.label_set else sorted(w.counts)
        n_clusters = w.centroids.shape[0]
        w.covered = int(np.unique(items.cluster[w.labeled_idx]).size) if w.labeled_idx.size else 0
        w.coverage = w.covered / n_clusters
        classes_ready = len(w.counts) >= 2 and all(
            w.counts.get(c, 0) >= cfg.seeding.min_labels_per_class for c in w.known_classes
        )
        # a class nobody has found yet must not keep a project seeding forever: past max_labels, the model leads
        max_seed_labels = cfg.seeding.max_labels or 5 * n_clusters
        ready = (classes_ready and w.coverage >= cfg.seeding.min_cluster_coverage) or (
            len(w.counts) >= 2 and w.labeled_idx.size >= max_seed_labels
        )
        if w.name == SEED_STRATEGY:
            w.phase = "seed"
        elif strategies.resolve_name(w.name) == "random":
            w.phase = "model" if len(w.counts) >= 2 else "random"
        else:
            w.phase = "model" if ready else "seed"

    def _features(self, w: _Work) -> None:
        """What the head and the strategies see: the embeddings smoothed over the pool's kNN graph
        ([head] smoothing; al_backend/graph.py), or the embeddings themselves. The graph is built once per
        pool (FAISS), kept in the state, and extended for new items; a steady round only re-averages."""
        X = w.X
        assert X is not None
        alpha = float(self.config.head.smoothing)
        if alpha <= 0 or len(w.pool) < 2:
            w.F = self.pool_features = X
            self._pool_X = None
            return
        with self._timed(w, "features_s"):
            graph = self._pool_graph(w)
            w.F = self.pool_features = graph.smooth(X, alpha)
            self._pool_X = X  # kept for features() of rows outside the pool (predict, evaluation)

    def _pool_graph(self, w: _Work):
        from .graph import PoolGraph

        X = w.X
        assert X is not None
        k = int(self.config.head.smoothing_k)
        graph = self._graph
        if graph is None or graph.k != k:
            graph = self._load_graph(k)
            self._graph_version = int(self.store.get_meta("graph_version") or 0) if graph is not None else None
        keys = np.asarray(w.pool.ids, dtype=str)
        edited = bool((w.items.fresh & w.items.before["known"]).any()) if w.items is not None else False
        if graph is None or edited:
            # no graph yet, or texts changed under known ids (their vectors and neighbours changed): build
            new = PoolGraph.build(keys, X, k, seed=self.random_state)
        else:
            new = graph.update(keys, X)
        if new is not graph:
            w.graph_changed = True
            version = int(self.store.get_meta("graph_version") or 0) + 1
            self._graph_version = version
        self._graph = new
        return new

    def _load_graph(self, k: int):
        from .graph import PoolGraph

        ids, sq, keys = (self.store.get_array(n) for n in ("graph_ids", "graph_sq", "graph_keys"))
        if ids is None or sq is None or keys is None or ids.shape[1] != k:
            return None
        names = keys.tobytes().decode("utf-8").split("\n") if keys.size else []
        if len(names) != ids.shape[0]:
            return None
        return PoolGraph(names, ids.astype(np.int64), sq, k, seed=self.random_state)

    def _graph_arrays(self) -> dict[str, np.ndarray]:
        graph = self._graph
        assert graph is not None
        keys = "\n".join(str(k) for k in graph.keys).encode("utf-8")
        small = len(graph) < 2**31
        return {
            "graph_ids": graph.ids.astype(np.int32 if small else np.int64),
            "graph_sq": graph.sq_dist.astype(np.float32),
            "graph_keys": np.frombuffer(keys, dtype=np.uint8),
        }

    def features(self, X_new: np.ndarray) -> np.ndarray:
        """The head's features for rows outside the pool (predictions, held-out evaluation): with smoothing,
        each row averaged with its k nearest rows of the last pool (one hop, as the pool's own rows); the raw
        rows when smoothing is off or no pool has been seen in this process."""
        X_new = np.ascontiguousarray(X_new, dtype=np.float32)
        alpha = float(self.config.head.smoothing)
        if alpha <= 0 or self._pool_X is None:
            return X_new
        from .graph import knn_query, smooth_queries

        ids, _ = knn_query(self._pool_X, X_new, int(self.config.head.smoothing_k))
        return smooth_queries(self._pool_X, X_new, ids, alpha)

    def _head_key(self, labeled_ids: Sequence[str], labels: Sequence[Any], committee: bool, label_set) -> str:
        cfg = self.config
        return fingerprint(
            self.task.name,
            list(label_set or []),
            list(labeled_ids),
            list(labels),
            cfg.head.class_weight,
            cfg.head.calibrate,
            cfg.head.committee_size if committee else 0,
            self.random_state,
            cfg.head.smoothing,
            cfg.head.smoothing_k,
            self._graph_version if cfg.head.smoothing else None,
        )

    def _fit_head(self, w: _Work) -> None:
        """The head, fitted whenever two classes exist (so predictions are there even while seeding), and
        reused from the state when the labels have not changed since it was fitted."""
        X = w.F
        assert X is not None
        with self._timed(w, "head_s"):
            committee = False
            if w.phase == "model" and w.name != SEED_STRATEGY:
                committee = strategies.get_strategy(w.name).needs_committee and self.config.head.committee_size > 1
            if len(w.counts) >= 2:
                w.head, w.head_reused = self.fit(
                    X[w.labeled_idx],
                    [w.pool.ids[i] for i in w.labeled_idx],
                    [w.pool.labels[i] for i in w.labeled_idx],
                    committee=committee,
                    label_set=w.label_set,
                )
            self.last_head = w.head
        with self._timed(w, "score_s"):
            if w.head is not None:
                # one pass over the whole pool, then the unlabeled rows of the (n, C) output: no (n, d) copy
                full = self.task.outputs(w.head, X, committee=committee)
                w.outputs = ModelOutputs(
                    probs=None if full.probs is None else full.probs[w.unlabeled_idx],
                    committee=None if full.committee is None else full.committee[:, w.unlabeled_idx],
                )
                del full
        if w.head is None and w.phase == "model" and strategies.resolve_name(w.name) != "random":
            w.phase = "seed"  # no usable model (e.g. a class with a single example): keep seeding

    def fit(
        self,
        X_labeled: np.ndarray,
        labeled_ids: Sequence[str],
        labels: Sequence[Any],
        *,
        committee: bool = False,
        label_set: Sequence[str] | None = None,
    ) -> tuple[Any, bool]:
        """(head or None, reused): a head fitted on the labeled rows, or the state's latest model when it was
        fitted on exactly these labels with this configuration (a steady-state round does not refit)."""
        key = self._head_key(labeled_ids, labels, committee, label_set)
        if self.store.get_meta("head_key") == key:
            head = self.current_head()
            if head is not None:
                return head, True
        head = self.task.make_head(self.config, label_set, committee=committee, random_state=self.random_state)
        head.fit(X_labeled, self.task.encode(labels))
        if not head.is_fitted:
            return None, False
        self._fit_key = key  # recorded with the model by this round
        return head, False

    def _select(self, w: _Work) -> None:
        """The batch and the order of the rest: seeding, or the strategy from the registry (with ε-exploration
        and outlier exclusion). The same inputs seed the same generator, so a repeated round gives the same batch."""
        cfg, X, items = self.config, w.X, w.items
        assert X is not None and items is not None and w.centroids is not None
        with self._timed(w, "select_s"):
            labels_l = [w.pool.labels[i] for i in w.labeled_idx]
            # seed batches do not depend on the strategy asked for: every strategy starts from the same seeds
            labeled_key = fingerprint(
                self.random_state,
                SEED_STRATEGY if w.phase == "seed" else w.name,
                w.k,
                [w.pool.ids[i] for i in w.labeled_idx],
                labels_l,
                len(w.pool),
            )
            rng = np.random.default_rng(int(labeled_key[:15], 16))
            probs = w.outputs.probs
            if w.phase == "seed":
                X_u = X[w.unlabeled_idx]  # seeding reads the raw unlabeled rows
                n_clusters = w.centroids.shape[0]
                per_cluster = (
                    np.bincount(items.cluster[w.labeled_idx], minlength=n_clusters)
                    if w.labeled_idx.size
                    else np.zeros(n_clusters, np.int64)
                )
                batch = seeding.seed_batch(
                    X_u, items.cluster[w.unlabeled_idx], w.k, rng, already_labeled_per_cluster=per_cluster
                )
                # after the seeds, the rest in a seeded random order: the seed batch carries the cluster coverage,
                # and the next round re-ranks everything once the seeds are labeled
                primary = rng.random(w.unlabeled_idx.size)
                w.components = {} if probs is None else {"margin": self.task.uncertainty(w.outputs)}
                w.strategy_used = SEED_STRATEGY
            else:
                name = "random" if w.phase == "random" else w.name
                F = w.F
                assert F is not None
                strategy = strategies.get_strategy(name)
                if (
                    strategy.needs_embeddings
                    or strategy.needs_density
                    or strategy.scorer == "egl"
                    or callable(strategy.scorer)
                    or cfg.strategy.outlier_quantile > 0
                ):
                    X_u = F[w.unlabeled_idx]  # strategies see the head's features (1.5 GB at 1M x 384)
                else:
                    # score-only strategies (top-k of margin, entropy, ...) never read the rows: a zero-copy
                    # stand-in of the right shape instead of a 1.5 GB copy at 1M rows
                    X_u = np.broadcast_to(np.zeros((1, F.shape[1]), np.float32), (w.unlabeled_idx.size, F.shape[1]))
                ctx = strategies.SelectionContext(
                    X=X_u,
                    probs=probs,
                    committee=w.outputs.committee,
                    X_labeled=F[w.labeled_idx] if w.labeled_idx.size else None,
                    density=items.density[w.unlabeled_idx] if w.need_density else None,
                )
                batch, w.components = strategies.select_batch(
                    name,
                    ctx,
                    w.k,
                    rng=rng,
                    epsilon=cfg.strategy.epsilon,
                    outlier_quantile=cfg.strategy.outlier_quantile or None,
                    alpha=cfg.strategy.alpha,
                    beta=cfg.strategy.beta,
                    m_factor=cfg.strategy.m_factor,
                )
                primary = strategies.primary_score(name, w.components, w.unlabeled_idx.size, rng)
                w.strategy_used = strategies.resolve_name(name)
                del ctx
            w.batch = np.asarray(batch, dtype=np.int64)
            w.order = strategies.full_order(w.batch, primary)
            # the unlabeled copy (1.5 GB at 1M x 384) is done with: free it before the ranking and the record
            del X_u

    def _rank(self, w: _Work) -> Ranking:
        items, order = w.items, w.order
        assert items is not None and order is not None and w.batch is not None
        with self._timed(w, "rank_s"):
            n_u = w.unlabeled_idx.size
            ranked_rows = w.unlabeled_idx[order]
            ids = _gather(w.pool.ids, ranked_rows)
            components = {key: np.asarray(val, dtype=np.float64)[order] for key, val in w.components.items()}
            if w.need_density:
                components.setdefault("density", items.density[ranked_rows])
            if w.head is not None and w.outputs.probs is not None:
                predicted, confidence = self.task.predictions(w.head, w.outputs)
                predicted = _gather(predicted, order)
                confidence = np.asarray(confidence)[order]
                probabilities = w.outputs.probs[order]
                classes = list(w.head.classes_)
                head_version = w.head.version
            else:
                predicted = [None] * n_u
                confidence = np.full(n_u, np.nan)
                probabilities = None
                classes = list(w.known_classes)
                head_version = "none"
            # the ranked ids enter as the pool's ids digest and the ranked rows (raw bytes): no pass over 1M
            # strings in ranking order (the same pool in the same order gives the same version)
            model_version = "al-" + fingerprint(head_version, w.strategy_used, items.ids_digest, ranked_rows, w.k)[:12]
            return Ranking(
                ids=ids,
                priority=Ranking.priorities(n_u),
                batch_size=len(w.batch),
                components=components,
                predicted=predicted,
                confidence=confidence,
                cluster=items.cluster[ranked_rows],
                round_id=self.store.next_round_id(),
                model_version=model_version,
                strategy=w.strategy_used,
                probabilities=probabilities,
                classes=classes,
            )

    def _stopping(self, w: _Work, ranking: Ranking) -> None:
        """Evidence for the stopping criteria (al_backend/stopping.py) and the configured criterion's decision."""
        from . import stopping

        with self._timed(w, "stopping_s"):
            try:
                criterion = stopping.parse_criterion(self.config.stopping.criterion)
            except InputError as e:
                raise ConfigError(f"[stopping] criterion: {e}") from None
            budget = self.config.stopping.budget or None
            head = w.head
            if head is None:
                evidence = stopping.RoundEvidence(labels=int(w.labeled_idx.size), classes=tuple(w.known_classes))
            else:
                X = w.F
                assert X is not None
                stop_rows = self._stop_set_rows(w)
                stop_proba = self.task.outputs(head, X[stop_rows], committee=False).probs
                prev_pred = prev_classes = None
                if not w.head_reused:
                    previous = self.current_head()  # the model recorded by the last round, if any
                    if previous is not None:
                        prev = self.task.outputs(previous, X[w.unlabeled_idx], committee=False).probs
                        if prev is not None:
                            prev_pred, prev_classes = prev.argmax(axis=1), list(previous.classes_)
                evidence = stopping.round_evidence(
                    int(w.labeled_idx.size),
                    list(head.classes_),
                    w.outputs.probs,
                    stop_proba=stop_proba,
                    prev_pred_unlabeled=prev_pred,
                    prev_classes=prev_classes,
                    cv_accuracy=getattr(head, "cv_accuracy_", None),
                )
                if w.head_reused:
                    # the same model as last round: nothing changed, by construction
                    evidence = dataclasses.replace(evidence, changed_unlabeled=0)
            history = [
                stopping.RoundEvidence.from_dict(r.metrics["stopping"]["evidence"])
                for r in self.store.rounds()
                if (r.metrics.get("stopping") or {}).get("evidence")
            ]
            decision = criterion.decide([*history, evidence], budget=budget)
            decided = decision.to_dict()
            decided["evidence"] = {"labels": int(w.labeled_idx.size), **decided["evidence"]}
            w.stopping = {
                "criterion": self.config.stopping.criterion,
                "budget": budget,
                "decision": decided,
                "evidence": evidence.to_dict(),
            }

    def _stop_set_rows(self, w: _Work) -> np.ndarray:
        """Pool rows of the fixed stop set: drawn once (by a hash of ids and the random state) and kept in the
        state, so successive models are compared on the same items; drawn again if its items left the pool."""
        from . import stopping

        pool = w.pool
        stored = self.store.get_meta("stop_set")
        if stored:
            ids = json.loads(stored)
            index = dict(zip(pool.ids, range(len(pool))))
            if all(tid in index for tid in ids):
                return np.asarray([index[tid] for tid in ids], dtype=np.int64)
        rows = stopping.stop_set(pool.ids, min(self.config.stopping.stop_set_size, len(pool)), self.random_state)
        w.stop_set_ids = [pool.ids[i] for i in rows]
        return np.asarray(rows, dtype=np.int64)

    def _record(self, w: _Work, ranking: Ranking) -> None:
        items = w.items
        assert items is not None and w.X is not None
        pool = w.pool
        metrics = self._metrics(w, ranking)
        if not w.need_density:
            items.density[items.fresh] = np.nan  # a stored density of changed text is stale; recomputed when needed
        before = items.before
        now_seeded = before["seeded"].copy()
        if w.phase == "seed":
            assert w.order is not None
            now_seeded[w.unlabeled_idx[w.order[: ranking.batch_size]]] = 1
        # only rows that changed since the stored items: new task or text, new cluster, label, density or seed flag
        nan_now, nan_before = np.isnan(items.density), np.isnan(before["density"])
        density_changed = (nan_now != nan_before) | (~nan_now & ~nan_before & (items.density != before["density"]))
        changed = (
            ~before["known"]
            | items.fresh
            | ~before["label_same"]
            | (items.cluster != before["cluster"])
            | (now_seeded != before["seeded"])
            | density_changed
        )
        changed_rows = np.flatnonzero(changed)
        rows = changed_rows.tolist()  # a loop over changed rows only: none in a steady round
        hash_blob = items.hashes[changed_rows].tobytes()
        density_rows = items.density[changed_rows]
        density_col = [None if math.isnan(x) else x for x in density_rows.tolist()]
        cluster_col, seeded_col = items.cluster[changed_rows].tolist(), now_seeded[changed_rows].tolist()
        item_rows = [
            (
                pool.ids[i],
                hash_blob[16 * j : 16 * j + 16],
                cluster_col[j],
                density_col[j],
                pool.labels[i],
                seeded_col[j],
                ranking.round_id,
            )
            for j, i in enumerate(rows)
        ]
        disagreements = []
        for i in itertools.compress(range(len(pool)), pool.meta):  # rows with metadata only
            dis = pool.meta[i].get("annotation_labels")
            if dis and len(set(dis)) > 1:
                disagreements.append((pool.ids[i], list(dis), pool.labels[i]))
        # the item columns: only those that changed are written (none in a steady round)
        columns = {
            "hash": items.hashes,
            "cluster": items.cluster,
            "density": items.density,
            "seeded": now_seeded,
            "label": items.label,
            "text_blocks": items.text_blocks,
        }
        if items.aligned:
            differs = {
                "hash": bool(items.fresh.any()),
                "cluster": not np.array_equal(items.cluster, before["cluster"]),
                "density": bool(density_changed.any()),
                "seeded": not np.array_equal(now_seeded, before["seeded"]),
                "label": not bool(before["label_same"].all()),
                "text_blocks": items.stored_text_blocks is None
                or items.text_blocks is None
                or not np.array_equal(items.text_blocks, items.stored_text_blocks),
            }
            changed_cols = {name for name, differ in differs.items() if differ}
        else:
            changed_cols = set(columns)
        item_columns = ItemColumnsWrite(
            n=len(pool),
            ids_digest=items.ids_digest,
            columns=columns,
            changed=changed_cols,
            label_vocab=items.label_vocab,
            ids=None if items.aligned else list(pool.ids),
        )
        model = None
        meta = {"vector_dim": str(w.X.shape[1])}
        arrays: dict[str, np.ndarray] = {}
        if w.graph_changed and self._graph is not None:
            arrays.update(self._graph_arrays())
            meta["graph_version"] = str(self._graph_version)
        if w.stop_set_ids is not None:
            meta["stop_set"] = json.dumps(w.stop_set_ids)
        if w.head is not None and not w.head_reused:
            model = (w.head.version, w.head.state_dict())
            meta["head_key"] = self._fit_key
        self.store.record_round(
            RoundWrite(
                ranking=ranking,
                phase=w.phase,
                started_at=w.started,
                pool_size=len(pool),
                labeled=int(w.labeled_idx.size),
                metrics=metrics,
                item_rows=item_rows,
                gone=items.gone,
                disagreements=disagreements,
                model=model,
                centroids=w.centroids if w.new_clusters else None,
                meta=meta,
                arrays=arrays,
                item_columns=item_columns,
                identity=(pool, self._space(pool)),
            )
        )

    def _metrics(self, w: _Work, ranking: Ranking) -> dict[str, Any]:
        assert w.items is not None and w.centroids is not None
        metrics: dict[str, Any] = {
            "phase": w.phase,
            "head_version": "none" if w.head is None else w.head.version,
            "head_reused": w.head_reused,
            "pool_size": len(w.pool),
            "labeled": int(w.labeled_idx.size),
            "unlabeled": int(w.unlabeled_idx.size),
            "classes": dict(w.counts),
            "known_classes": w.known_classes,
            "n_clusters": int(w.centroids.shape[0]),
            "clusters_covered": int(w.covered),
            "cluster_coverage": round(w.coverage, 4),
            "new_items": int(w.items.fresh.sum()),
            "embedded_now": 0 if self._embedder is None else self._embedder.texts_encoded,
            "random_state": self.random_state,
            "timings": {key: round(v, 4) for key, v in w.timings.items()},
            "stopping": w.stopping,
        }
        if w.head is not None:
            metrics["head"] = w.head.summary()
        return metrics

    # ------------------------------------------------------------------ predictions
    def current_head(self) -> Any:
        """The state's latest model (None before any), rebuilt once per version."""
        latest = self.store.latest_model()
        if latest is None:
            return None
        version, state = latest
        if self._head_cache is None or self._head_cache[0] != version:
            self._head_cache = (version, self.task.head_from_state(state))
        return self._head_cache[1]

    def predict(self, texts: Sequence[str]) -> Prediction:
        """Predicted label and confidence per text from the latest recorded model (None before any model)."""
        head = self.current_head()
        if head is None:
            return Prediction([None] * len(texts), np.full(len(texts), np.nan), None, [], "none")
        outputs = self.task.outputs(head, self.features(self.embedder.embed(list(texts))), committee=False)
        labels, confidence = self.task.predictions(head, outputs)
        return Prediction(
            labels=labels,
            confidence=np.asarray(confidence),
            probabilities=outputs.probs,
            classes=list(head.classes_),
            model_version="al-model-" + head.version,
        )


# ---------------------------------------------------------------------------------------------- with a tool


def run_project_round(
    cfg: Config,
    connector: Any,
    *,
    round_: Round | None = None,
    dry_run: bool = False,
    wait: float = 0.0,
    progress: bool = True,
    guard: Callable[[], ContextManager[Any]] = contextlib.nullcontext,
    on_ranking: Callable[[Ranking], None] | None = None,
    reset_state: bool = False,
) -> dict[str, Any]:
    """One round against a labeling tool: take the project lock, complete an interrupted push, pull, run the
    round, push in recorded chunks. Every entry point that talks to a tool calls this.

    round_: an existing Round over an open store (the server keeps one per project); else the state file is
    opened (and closed) here; reset_state moves an existing state file aside first. guard: a context manager held around the work on the state but not around the
    pull (the server's engine lock, so that /predict can answer while Label Studio lists tasks).
    Returns a summary dict with the Ranking under "ranking".
    """
    t0 = time.perf_counter()
    with project_lock(cfg.state.path, wait=wait), contextlib.ExitStack() as stack:
        if round_ is None:
            store = stack.enter_context(Store.open(cfg.state.path, reset=reset_state))
            round_ = Round(cfg, store, progress=progress)
        store = round_.store
        connector.bind(store, round_.embedder)
        target = connector.describe()
        log.info("round starting: %s, state %s", target, cfg.state.path)
        resumed = None
        if not dry_run:
            with guard():
                resumed = resume_unfinished_push(store, connector, target)
        pool = connector.pull()
        t_pull = time.perf_counter() - t0
        with guard():
            ranking = round_.run(pool, dry_run=dry_run, label_set=connector.label_set())
            pushed, details = 0, {}
            if not dry_run:
                if (
                    resumed is not None
                    and resumed.model_version == ranking.model_version
                    and resumed.ids == ranking.ids
                ):
                    # the interrupted push just completed is this very ranking: pushing it again would duplicate it
                    store.set_push_progress(ranking.round_id, target, 1, 1)
                    pushed = len(ranking)
                else:
                    report = push_with_progress(store, connector, ranking, target)
                    pushed, target, details = report.pushed, report.target, dict(report.details)
            if on_ranking is not None:
                on_ranking(ranking)
            record = None if dry_run else store.last_round()
    log.info(
        "round %d done: %d ranked, batch %d, strategy %s, pushed %d to %s",
        ranking.round_id,
        len(ranking),
        ranking.batch_size,
        ranking.strategy,
        pushed,
        target,
    )
    text_of = dict(zip(pool.ids, pool.texts))
    return {
        "resumed_round": None if resumed is None else resumed.round_id,
        "round": ranking.round_id,
        "strategy": ranking.strategy,
        "phase": "seed" if ranking.strategy == SEED_STRATEGY else "model",
        "model_version": ranking.model_version,
        "pool_size": len(pool),
        "labeled": int(pool.labeled_mask.sum()),
        "ranked": len(ranking),
        "batch_size": ranking.batch_size,
        "batch": ranking.ids[: ranking.batch_size],
        "pushed": pushed,
        "push": {k: v for k, v in details.items() if k != "pruned_versions"},
        "target": target,
        "dry_run": dry_run,
        "embedded": 0 if round_._embedder is None else round_._embedder.texts_encoded,
        "skipped": len(getattr(connector, "skipped", []) or []),
        "stopping": None if record is None else record.metrics.get("stopping"),
        "pull_s": round(t_pull, 3),
        "seconds": time.perf_counter() - t0,
        "state": cfg.state.path,
        "ranking": ranking,
        "texts": [text_of[i] for i in ranking.ids[:50]],
    }


def push_with_progress(store: Store, connector: Any, ranking: Ranking, target: str, start_chunk: int = 0):
    """Push in the connector's chunks, recording progress after each, so a killed push resumes where it stopped."""

    def on_chunk(done: int, total: int) -> None:
        store.set_push_progress(ranking.round_id, target, done, total)

    if start_chunk == 0:
        store.set_push_progress(ranking.round_id, target, 0, 1)  # "started": a crash before chunk 1 is resumed too
    return connector.push(ranking, start_chunk=start_chunk, on_chunk=on_chunk)


def resume_unfinished_push(store: Store, connector: Any, target: str) -> Ranking | None:
    """Complete the newest round's push to this target if a previous run died mid-push. Returns that Ranking."""
    unfinished = store.unfinished_push(target)
    if unfinished is None:
        return None
    round_id, done, total = unfinished
    last = store.last_round()
    if last is None or last.round_id != round_id:
        return None  # a newer round superseded it; its own push decides what the tool shows
    ranking = store.load_ranking(round_id)
    log.warning("round %d's push to %s stopped at chunk %d of %d; completing it", round_id, target, done, total)
    push_with_progress(store, connector, ranking, target, start_chunk=done)
    return ranking


def make_connector(cfg: Config, source: str, *, skip_invalid: bool = False) -> Any:
    """The connector for a --source name, from the connector registry."""
    from connectors import make_connector as registry_make

    if source == "file":
        return registry_make(source, cfg, skip_invalid=skip_invalid)
    return registry_make(source, cfg)
