"""One active-learning round: Pool -> embeddings -> head -> scores -> batch -> Ranking, recorded in the state.

The engine knows nothing of Label Studio or Argilla: connectors hand it a Pool and take back a Ranking.
A round is recorded in one transaction at the end, so a killed round leaves the previous state intact;
the same inputs (pool, labels, config) give the same ranking, so a repeated round pushes the same thing.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from . import seeding, strategies
from .config import Config
from .embedding import Embedder, text_hash
from .errors import ConfigError, EmptyPoolError, InputError
from .head import Head
from .pool import Pool, Ranking
from .store import Store, embedding_space

log = logging.getLogger(__name__)

COMMITTEE_STRATEGIES = {"vote_entropy", "kl_consensus", "bald"}
SEED_STRATEGY = "seed"


@dataclass
class Prediction:
    """Head output for arbitrary texts (the ML backend's /predict)."""

    labels: list[str | None]
    confidence: np.ndarray
    probabilities: np.ndarray | None
    classes: list[str]
    model_version: str


MAX_CLUSTERS_UNKNOWN_CLASSES = 50


def default_cluster_count(n_pool: int, label_set: Sequence[str] | None, labels: Sequence[str | None]) -> int:
    """2 x classes when the label set is known (from the tool, or the labels seen so far); otherwise the
    pool-size rule capped at 50, so cold start does not wait for hundreds of clusters to be covered."""
    if label_set:
        return seeding.default_n_clusters(n_pool, len(label_set))
    seen = {lab for lab in labels if lab is not None}
    if len(seen) >= 2:
        return seeding.default_n_clusters(n_pool, len(seen))
    return min(seeding.default_n_clusters(n_pool, None), MAX_CLUSTERS_UNKNOWN_CLASSES)


def _fingerprint(*parts: Any) -> str:
    h = hashlib.sha1()
    for p in parts:
        if isinstance(p, np.ndarray):
            h.update(np.ascontiguousarray(p).tobytes())
        else:
            h.update(repr(p).encode())
        h.update(b"\x00")
    return h.hexdigest()


class Engine:
    def __init__(self, config: Config, store: Store, embedder: Embedder | None = None, *, progress: bool = True):
        self.config = config
        self.store = store
        self.embedder = embedder or Embedder.from_config(config, store, progress=progress)
        self.progress = progress
        self._head_cache: tuple[str, Head] | None = None

    # ------------------------------------------------------------------ embeddings
    def embed_pool(self, pool: Pool) -> np.ndarray:
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

    # ------------------------------------------------------------------ the round
    def run_round(
        self,
        pool: Pool,
        *,
        batch_size: int | None = None,
        strategy: str | None = None,
        dry_run: bool = False,
        label_set: Sequence[str] | None = None,
    ) -> Ranking:
        """Run one round over the pool and (unless dry_run) record it. Returns the ranking of unlabeled tasks."""
        cfg = self.config
        started = time.time()
        timings: dict[str, float] = {}
        t = time.perf_counter()
        pool.validate()
        if label_set:
            allowed = set(label_set)
            for tid, lab in zip(pool.ids, pool.labels):
                if lab is not None and lab not in allowed:
                    raise InputError(f"{pool.source}: task {tid!r} has unknown label {lab!r} (allowed: {sorted(allowed)})")
        self.store.check_identity(pool, embedding_space(pool, lambda: self.embedder.model_id))  # another pool / space: exit 4
        X = self.embed_pool(pool)
        timings["embed_s"] = time.perf_counter() - t

        labeled = pool.labeled_mask
        unlabeled_idx = np.flatnonzero(~labeled)
        labeled_idx = np.flatnonzero(labeled)
        if unlabeled_idx.size == 0:
            raise EmptyPoolError(f"{pool.source}: every task is labeled; nothing left to prioritise")
        k = min(batch_size or cfg.strategy.batch_size, unlabeled_idx.size)
        name = strategy or cfg.strategy.name
        resolved = name
        if name != SEED_STRATEGY:
            try:
                resolved = strategies.resolve_name(name)
            except ValueError as e:
                raise ConfigError(f"--strategy / [strategy] name: {e}") from None

        # --- bookkeeping against the stored items: clusters and density only for new or changed text
        t = time.perf_counter()
        hashes = [text_hash(tx) for tx in pool.texts]
        items = self.store.load_items()
        known = [items.get(tid) for tid in pool.ids]
        fresh = np.fromiter(
            (rec is None or rec[0] != h for rec, h in zip(known, hashes)), dtype=bool, count=len(pool)
        )
        cluster = np.fromiter((-1 if rec is None else rec[1] for rec in known), dtype=np.int64, count=len(pool))
        density = np.fromiter(
            (np.nan if rec is None or rec[2] is None else rec[2] for rec in known), dtype=np.float64, count=len(pool)
        )
        seeded_before = np.fromiter((0 if rec is None else rec[4] for rec in known), dtype=np.int64, count=len(pool))
        before = {
            "known": np.fromiter((rec is not None for rec in known), dtype=bool, count=len(pool)),
            "label_same": np.fromiter(
                (rec is not None and rec[3] == lab for rec, lab in zip(known, pool.labels)), dtype=bool, count=len(pool)
            ),
            "cluster": cluster.copy(),
            "density": density.copy(),
            "seeded": seeded_before,
        }
        ids_now = set(pool.ids)
        gone = [tid for tid in items if tid not in ids_now]
        del items, known, ids_now  # ~0.5 GB of Python objects at 1M rows; what the record needs is in `before`

        centroids = self.store.get_array("centroids")
        if centroids is not None and centroids.shape[1] != X.shape[1]:
            raise InputError(
                f"{pool.source}: embeddings have {X.shape[1]} dimensions, the state's clusters {centroids.shape[1]}; "
                "the model changed: use a new --state"
            )
        new_clusters = centroids is None
        if new_clusters:
            n_clusters = cfg.seeding.n_clusters or default_cluster_count(len(pool), label_set, pool.labels)
            n_clusters = max(1, min(n_clusters, len(pool)))
            # k-means trains on a sample (256 a centroid), so its cost grows with clusters, not the pool;
            # one restart instead of three keeps a 1M pool's first round in seconds
            centroids = seeding.fit_clusters(X, n_clusters, seed=cfg.strategy.seed, n_redo=3 if len(pool) <= 50_000 else 1)
            cluster = seeding.assign_clusters(X, centroids)
        else:
            need = fresh | (cluster < 0)
            if need.any():
                cluster[need] = seeding.assign_clusters(X[need], centroids)
        timings["clusters_s"] = time.perf_counter() - t

        t = time.perf_counter()
        need_density = cfg.strategy.outlier_quantile > 0 or strategies.needs_density(name)
        if need_density:
            missing = fresh | np.isnan(density)
            if missing.all():
                from .density import knn_density

                density = knn_density(X).astype(np.float64)
            elif missing.any():
                from .density import knn_density

                density[missing] = knn_density(X, queries=X[missing])
        timings["density_s"] = time.perf_counter() - t

        # --- phase: seeding until classes have enough labels and clusters are covered
        labels_l = [pool.labels[i] for i in labeled_idx]
        counts = Counter(labels_l)
        known_classes = list(label_set) if label_set else sorted(counts)
        n_clusters = centroids.shape[0]
        covered = np.unique(cluster[labeled_idx]).size if labeled_idx.size else 0
        coverage = covered / n_clusters
        classes_ready = len(counts) >= 2 and all(counts.get(c, 0) >= cfg.seeding.min_labels_per_class for c in known_classes)
        # a class nobody has found yet must not keep a project seeding forever: past max_labels, the model leads
        max_seed_labels = cfg.seeding.max_labels or 5 * n_clusters
        ready = (classes_ready and coverage >= cfg.seeding.min_cluster_coverage) or (
            len(counts) >= 2 and labeled_idx.size >= max_seed_labels
        )
        if name == SEED_STRATEGY:
            phase = "seed"
        elif name == "random":
            phase = "model" if len(counts) >= 2 else "random"
        else:
            phase = "model" if ready else "seed"

        # --- the head (fitted whenever two classes exist, so predictions are available even while seeding)
        t = time.perf_counter()
        head: Head | None = None
        probs_u = None
        committee_u = None
        if len(counts) >= 2:
            head = Head(
                classes=list(label_set) if label_set else None,
                class_weight=None if cfg.head.class_weight == "none" else cfg.head.class_weight,
                calibrate=cfg.head.calibrate,
                # the bootstrap committee costs ~20 % of a fit: only the committee strategies need it
                committee_size=cfg.head.committee_size if resolved in COMMITTEE_STRATEGIES else 0,
                random_state=cfg.strategy.seed,
            ).fit(X[labeled_idx], labels_l)
            if not head.is_fitted:
                head = None
        X_u = X[unlabeled_idx]  # the one copy of the unlabeled rows (1.5 GB at 1M x 384)
        if head is not None:
            probs_u = head.predict_proba(X_u)
            if phase == "model" and resolved in COMMITTEE_STRATEGIES and cfg.head.committee_size > 1:
                committee_u = head.committee_proba(X_u)
        if head is None and phase == "model" and name != "random":
            phase = "seed"  # no usable model (e.g. a class with a single example): keep seeding
        timings["head_s"] = time.perf_counter() - t

        # --- selection: the same inputs seed the same generator, so a repeated round gives the same batch
        t = time.perf_counter()
        labeled_key = _fingerprint(
            cfg.strategy.seed, name, k, [pool.ids[i] for i in labeled_idx], labels_l, len(pool)
        )
        rng = np.random.default_rng(int(labeled_key[:15], 16))
        dens_u = density[unlabeled_idx] if need_density else None
        components: dict[str, np.ndarray]
        if phase == "seed":
            per_cluster = np.bincount(cluster[labeled_idx], minlength=n_clusters) if labeled_idx.size else np.zeros(n_clusters, np.int64)
            batch = seeding.seed_batch(X_u, cluster[unlabeled_idx], k, rng, already_labeled_per_cluster=per_cluster)
            # after the seeds, the rest in a seeded random order: the seed batch carries the cluster coverage,
            # and the next round re-ranks everything once the seeds are labeled
            primary = rng.random(unlabeled_idx.size)
            components = {}
            if probs_u is not None:
                from .scoring import margin

                components["margin"] = margin(probs_u)
            strategy_used = SEED_STRATEGY
        else:
            if phase == "random":
                name = "random"
            ctx = strategies.SelectionContext(
                X=X_u,
                probs=probs_u,
                committee=committee_u,
                X_labeled=X[labeled_idx] if labeled_idx.size else None,
                density=dens_u,
            )
            params = dict(alpha=cfg.strategy.alpha, beta=cfg.strategy.beta, m_factor=cfg.strategy.m_factor)
            batch, components = strategies.select_batch(
                name,
                ctx,
                k,
                rng=rng,
                epsilon=cfg.strategy.epsilon,
                outlier_quantile=cfg.strategy.outlier_quantile or None,
                **params,
            )
            primary = strategies.primary_score(name, components, unlabeled_idx.size, rng)
            strategy_used = strategies.resolve_name(name)
        order = strategies.full_order(np.asarray(batch, dtype=np.int64), primary)
        # the unlabeled copy (1.5 GB at 1M x 384) is done with: free it before the ranking and the record
        del X_u
        ctx = None
        timings["select_s"] = time.perf_counter() - t

        n_u = unlabeled_idx.size
        ranked_rows = unlabeled_idx[order]
        ids = [pool.ids[i] for i in ranked_rows]
        priority = Ranking.priorities(n_u)
        comp_ranked = {key: np.asarray(val, dtype=np.float64)[order] for key, val in components.items()}
        if need_density:
            comp_ranked.setdefault("density", density[ranked_rows])
        if head is not None:
            p = probs_u[order]
            top = p.argmax(axis=1)
            predicted: list[str | None] = [head.classes_[j] for j in top]
            confidence = p[np.arange(n_u), top]
            probabilities = p
            classes = list(head.classes_)
            head_version = head.version
        else:
            predicted = [None] * n_u
            confidence = np.full(n_u, np.nan)
            probabilities = None
            classes = list(known_classes)
            head_version = "none"
        model_version = "al-" + _fingerprint(head_version, strategy_used, ids, k)[:12]
        round_id = self.store.next_round_id()
        ranking = Ranking(
            ids=ids,
            priority=priority,
            batch_size=len(batch),
            components=comp_ranked,
            predicted=predicted,
            confidence=confidence,
            cluster=cluster[ranked_rows],
            round_id=round_id,
            model_version=model_version,
            strategy=strategy_used,
            probabilities=probabilities,
            classes=classes,
        )
        metrics = {
            "phase": phase,
            "head_version": head_version,
            "pool_size": len(pool),
            "labeled": int(labeled_idx.size),
            "unlabeled": int(n_u),
            "classes": dict(counts),
            "known_classes": known_classes,
            "n_clusters": int(n_clusters),
            "clusters_covered": int(covered),
            "cluster_coverage": round(coverage, 4),
            "new_items": int(fresh.sum()),
            "embedded_now": self.embedder.texts_encoded,
            "timings": {key: round(v, 4) for key, v in timings.items()},
        }
        if head is not None:
            metrics["head"] = head.summary() if hasattr(head, "summary") else {}
        if dry_run:
            return ranking
        if not need_density:
            density[fresh] = np.nan  # a stored density of changed text is stale; recomputed when a strategy needs it
        self._record(
            before, gone, pool, hashes, fresh, cluster, density, centroids, new_clusters, ranking,
            phase, head, metrics, started, X.shape[1],
        )
        return ranking

    def _record(
        self, before: dict[str, np.ndarray], gone: list[str], pool: Pool, hashes, fresh, cluster, density, centroids,
        new_clusters, ranking: Ranking, phase, head, metrics, started, dim,
    ) -> None:
        store = self.store
        now_seeded = before["seeded"].copy()
        if phase == "seed":
            pos = {tid: i for i, tid in enumerate(pool.ids)}
            for tid in ranking.ids[: ranking.batch_size]:
                now_seeded[pos[tid]] = 1
        # only rows that changed since the stored items: new task or text, new cluster, label, density or seed flag
        nan_now, nan_before = np.isnan(density), np.isnan(before["density"])
        density_changed = (nan_now != nan_before) | (~nan_now & ~nan_before & (density != before["density"]))
        changed = (
            ~before["known"] | fresh | ~before["label_same"] | (cluster != before["cluster"])
            | (now_seeded != before["seeded"]) | density_changed
        )
        rows = [
            (pool.ids[i], hashes[i], int(cluster[i]), None if nan_now[i] else float(density[i]), pool.labels[i],
             int(now_seeded[i]), ranking.round_id)
            for i in np.flatnonzero(changed)
        ]
        with store.transaction() as c:
            if new_clusters:
                store.put_array("centroids", centroids)
            store.set_meta("vector_dim", str(dim))
            store.set_identity(pool, embedding_space(pool, lambda: self.embedder.model_id))
            c.executemany(
                "INSERT INTO items (item_id, text_hash, cluster, density, label, seeded, first_round)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(item_id) DO UPDATE SET text_hash=excluded.text_hash,"
                " cluster=excluded.cluster, density=excluded.density, label=excluded.label, seeded=excluded.seeded",
                rows,
            )
            if gone:
                c.executemany("DELETE FROM items WHERE item_id=?", ((g,) for g in gone))
            for i, tid in enumerate(pool.ids):
                dis = pool.meta[i].get("annotation_labels") if pool.meta[i] else None
                if dis and len(set(dis)) > 1:
                    c.execute(
                        "INSERT OR REPLACE INTO disagreements VALUES (?, ?, ?, ?)",
                        (tid, _json(dis), pool.labels[i], ranking.round_id),
                    )
            if head is not None:
                store.put_model(head.version, ranking.round_id, head.state_dict())
            c.execute(
                "INSERT INTO rounds VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    ranking.round_id, started, time.time(), ranking.strategy, phase, ranking.model_version,
                    len(pool), metrics["labeled"], ranking.batch_size, _json(metrics),
                    Store.encode_ranking(ranking),
                ),
            )
            c.executemany(
                "INSERT INTO selections VALUES (?, ?, ?, ?, ?)",
                (
                    (ranking.round_id, i, ranking.ids[i], float(ranking.priority[i]),
                     _json({"cluster": int(ranking.cluster[i]), **{k: _clean(v[i]) for k, v in ranking.components.items()}}))
                    for i in range(ranking.batch_size)
                ),
            )

    # ------------------------------------------------------------------ predictions
    def current_head(self) -> Head | None:
        latest = self.store.latest_model()
        if latest is None:
            return None
        version, state = latest
        if self._head_cache is None or self._head_cache[0] != version:
            self._head_cache = (version, Head.from_state_dict(state))
        return self._head_cache[1]

    def predict(self, texts: Sequence[str]) -> Prediction:
        """Predicted label and confidence per text from the latest recorded model (None before any model)."""
        head = self.current_head()
        if head is None:
            return Prediction([None] * len(texts), np.full(len(texts), np.nan), None, [], "none")
        X = self.embedder.embed(list(texts))
        p = head.predict_proba(X)
        top = p.argmax(axis=1)
        return Prediction(
            labels=[head.classes_[j] for j in top],
            confidence=p[np.arange(len(texts)), top],
            probabilities=p,
            classes=list(head.classes_),
            model_version="al-model-" + head.version,
        )


def _clean(x: Any) -> Any:
    x = float(x)
    return None if np.isnan(x) else x


def _json(obj: Any) -> str:
    import json

    return json.dumps(obj, default=lambda o: o.item() if isinstance(o, np.generic) else str(o), sort_keys=True)
