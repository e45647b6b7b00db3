"""Benchmark: the Label Studio connector's pull and push against the fastest raw HTTP calls, same server, same run.

A scratch project gets n tasks. Then, interleaved (raw, connector, raw, connector, ...) so server drift hits
both alike, each side's best time is kept:
  pull: raw = paged GET /api/tasks with include= (page size 5,000 and 10,000; the faster counts);
        connector = LabelStudioConnector.pull() -> Pool (tasks + annotations + parsing).
  push: raw = one POST /api/projects/{id}/import/predictions of n predictions + the sampling PATCH;
        connector = LabelStudioConnector.push(ranking) (payload, chunks, created-count check, PATCH, view),
        without deleting older versions (housekeeping, timed separately once).
The target is connector <= 1.20 x raw.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np

from al_backend.pool import Ranking

LABELS = ["alpha", "beta", "gamma", "delta"]
CONFIG = (
    '<View><Text name="text" value="$text"/><Choices name="label" toName="text">'
    + "".join(f'<Choice value="{lab}"/>' for lab in LABELS)
    + "</Choices></View>"
)
WORDS = (
    "market shares growth film award election minister match league phone software network "
    "court policy budget music album season coach chip online bank rates vote"
).split()


def synthetic_texts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(WORDS), size=(n, 40))
    return [f"task {i}: " + " ".join(WORDS[j] for j in row) for i, row in enumerate(idx)]


def bench_labelstudio(
    url: str,
    token: str,
    n: int = 10000,
    *,
    repeats: int = 2,
    keep_project: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the benchmark; returns {"pull": {...}, "push": {...}, ...} with seconds and connector/raw ratios."""
    from connectors.labelstudio import LabelStudioConnector

    probe = LabelStudioConnector(url, token, 1)  # only for its auth (legacy token or PAT exchange)
    http = probe.http

    def raw_headers() -> dict[str, str]:
        return dict(probe.auth.headers(http))

    raw = httpx.Client(base_url=url.rstrip("/"), timeout=600)
    title = f"al-backend bench {int(time.time())}"
    pid = http.request(
        "POST", "/api/projects/", json_body={"title": title, "label_config": CONFIG}, what="create the bench project"
    ).json()["id"]
    out: dict[str, Any] = {"url": url, "n": n, "project": pid}
    try:
        t = time.perf_counter()
        texts = synthetic_texts(n)
        for s in range(0, n, 10000):
            http.request(
                "POST",
                f"/api/projects/{pid}/import",
                json_body=[{"data": {"text": x}} for x in texts[s : s + 10000]],
                what="import bench tasks",
                timeout=600,
                idempotent=False,
            )
        out["import_s"] = time.perf_counter() - t
        log(f"project {pid}: imported {n} tasks in {out['import_s']:.1f} s")
        conn = LabelStudioConnector(url, token, pid, timeout=600, prune_old_versions=False)

        def raw_pull(page_size: int) -> int:
            got, page = 0, 1
            while got < n:
                r = raw.get(
                    "/api/tasks",
                    headers=raw_headers(),
                    params={
                        "project": pid,
                        "page_size": page_size,
                        "page": page,
                        "include": "id,data,total_annotations,cancelled_annotations",
                    },
                )
                r.raise_for_status()
                got += len(r.json()["tasks"])
                page += 1
            return got

        pulls: dict[str, list[float]] = {"raw_5000": [], "raw_10000": [], "connector": []}
        sides = [
            ("raw_5000", lambda: raw_pull(5000)),
            ("raw_10000", lambda: raw_pull(10000)),
            ("connector", lambda: len(conn.pull())),
            ("connector", lambda: len(conn.pull())),
        ]
        for rep in range(repeats + 1):  # the first round warms caches on both sides and is not counted
            # the connector gets as many samples as the raw variants together, and the order alternates
            for name, fn in sides if rep % 2 else sides[::-1]:
                t = time.perf_counter()
                count = fn()
                dt = time.perf_counter() - t
                assert count == n, f"{name} pulled {count} of {n} tasks"
                if rep:
                    pulls[name].append(dt)
        raw_best = min(min(pulls["raw_5000"]), min(pulls["raw_10000"]))
        out["pull"] = {
            "raw_s": raw_best,
            "connector_s": min(pulls["connector"]),
            "ratio": min(pulls["connector"]) / raw_best,
            "samples": pulls,
        }
        log(f"pull {n}: raw {raw_best:.2f} s, connector {min(pulls['connector']):.2f} s -> {out['pull']['ratio']:.2f}x")

        pool = conn.pull()
        ids = pool.ids
        rng = np.random.default_rng(1)
        order = [ids[i] for i in rng.permutation(len(ids))]
        predicted = [LABELS[i % len(LABELS)] for i in range(len(order))]
        cfg = conn.label_config()
        pushes: dict[str, list[float]] = {"raw": [], "connector": []}
        for rep in range(repeats):
            v_raw, v_conn = f"bench-raw-{rep}", f"al-bench-{rep}"
            payload = [
                {"task": int(t), "result": cfg.result(p), "score": k / n, "model_version": v_raw}
                for k, (t, p) in enumerate(zip(order, predicted))
            ]

            def push_raw(payload: list[dict] = payload, v_raw: str = v_raw) -> float:
                t = time.perf_counter()
                r = raw.post(f"/api/projects/{pid}/import/predictions", headers=raw_headers(), json=payload)
                r.raise_for_status()
                assert r.json()["created"] == n, r.text
                raw.patch(
                    f"/api/projects/{pid}/",
                    headers=raw_headers(),
                    json={"sampling": "Uncertainty sampling", "model_version": v_raw},
                ).raise_for_status()
                return time.perf_counter() - t

            ranking = Ranking(
                ids=order,
                priority=Ranking.priorities(n),
                batch_size=20,
                components={},
                predicted=list(predicted),
                confidence=np.full(n, 0.5),
                cluster=np.full(n, -1),
                round_id=rep + 1,
                model_version=v_conn,
                strategy="bench",
            )

            def push_connector(ranking: Ranking = ranking) -> float:
                t = time.perf_counter()
                report = conn.push(ranking)
                assert report.pushed == n, report
                return time.perf_counter() - t

            # alternate who goes first: each push makes the predictions table (and the next push) bigger
            if rep % 2 == 0:
                pushes["raw"].append(push_raw())
                pushes["connector"].append(push_connector())
            else:
                pushes["connector"].append(push_connector())
                pushes["raw"].append(push_raw())
        out["push"] = {
            "raw_s": min(pushes["raw"]),
            "connector_s": min(pushes["connector"]),
            "ratio": min(pushes["connector"]) / min(pushes["raw"]),
            "samples": pushes,
        }
        log(
            f"push {n}: raw {out['push']['raw_s']:.2f} s, connector {out['push']['connector_s']:.2f} s "
            f"-> {out['push']['ratio']:.2f}x"
        )
        t = time.perf_counter()
        conn._delete_version("al-bench-0")
        out["prune_one_version_s"] = time.perf_counter() - t
        log(
            f"housekeeping: deleting one old version of {n} predictions took {out['prune_one_version_s']:.1f} s "
            "(Label Studio deletes row by row)"
        )
        conn.close()
    finally:
        if not keep_project:
            try:
                http.request("DELETE", f"/api/projects/{pid}/", what="delete the bench project", timeout=900)
            except Exception as e:  # the numbers matter more than the cleanup
                log(f"could not delete bench project {pid}: {e}")
        raw.close()
        probe.close()
    out["target_ratio"] = 1.20
    out["ok"] = out.get("pull", {}).get("ratio", 9) <= 1.20 and out.get("push", {}).get("ratio", 9) <= 1.20
    return out
