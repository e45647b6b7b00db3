"""`al-backend bench round` runs real engine rounds on a synthetic pool and reports each step."""

import json

from typer.testing import CliRunner

from al_backend.bench.round import synthetic_pool
from al_backend.cli.main import app


def test_synthetic_pool_is_unit_norm_and_partly_labeled():
    pool = synthetic_pool(250, 8, labeled=20, classes=4, seed=1)
    assert pool.vectors.shape == (250, 8)
    assert abs(float((pool.vectors**2).sum(axis=1).mean()) - 1.0) < 1e-5
    assert pool.labeled_mask.sum() == 20 and set(filter(None, pool.labels)) == {"c0", "c1", "c2", "c3"}


def test_bench_round_json():
    res = CliRunner().invoke(
        app,
        [
            "bench",
            "round",
            "--pool-size",
            "3000",
            "--dim",
            "16",
            "--batch-size",
            "50",
            "--labeled",
            "40",
            "--rounds",
            "2",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert [r["round"] for r in out["rounds"]] == [1, 2]
    assert out["strategy"] == "margin" and out["labeled"] == 40
    assert all(r["seconds"] >= r["head_s"] >= 0 for r in out["rounds"])
    assert out["reference_scoring_pass_s"] > 0 and out["peak_rss_mb"] > 0
