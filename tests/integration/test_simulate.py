"""`al-backend simulate` end to end on real tweets with the real MiniLM model: JSON shape, round growth,
report files. Embeddings are cached in the session's temp folder (CI starts clean: ~300 short texts)."""

import json

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from al_backend.cli.simulate import register
from al_backend.datasets import load_tweets

pytestmark = pytest.mark.slow

N_ROWS = 300


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    # one embedding cache for the whole test session (test_end_to_end_selection.py uses the same folder)
    path = tmp_path_factory.getbasetemp() / "al-embedding-cache"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="module")
def labeled_jsonl(tmp_path_factory):
    texts, labels = load_tweets(n=N_ROWS, seed=3)
    path = tmp_path_factory.mktemp("sim") / "tweets.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for i, (t, lab) in enumerate(zip(texts, labels)):
            f.write(json.dumps({"id": i, "text": t, "label": lab}) + "\n")
    return path, sorted(set(labels))


def test_simulate_cli_json_curves_and_report_files(labeled_jsonl, cache_dir, tmp_path):
    data, classes = labeled_jsonl
    app = typer.Typer()
    register(app)

    @app.callback()
    def _root() -> None:  # a group, so `simulate` is addressed by name as in the real CLI
        pass

    out_dir = tmp_path / "report"
    strategies = ["random", "default", "margin+eps=0.2+start=random", "entropy+uncalibrated"]
    args = [
        "simulate",
        "--data",
        str(data),
        "--strategies",
        ",".join(strategies),
        "--batch-size",
        "20",
        "--budget",
        "66",
        "--repeats",
        "2",
        "--test-fraction",
        "0.3",
        "--label-noise",
        "0.1",
        "--cache-dir",
        str(cache_dir),
        "--out",
        str(out_dir),
        "--json",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)

    n_classes = len(classes)
    assert payload["dataset"]["classes"] == classes
    assert payload["dataset"]["test"] == 90 and payload["dataset"]["pool"] == 210
    assert payload["config"]["seed_size"] == 2 * n_classes and payload["config"]["budget"] == 66
    assert list(payload["strategies"]) == strategies
    # seed 6 labels, then +20 per round, the last round trimmed to the budget
    expected_labels = [6, 26, 46, 66]
    for label, s in payload["strategies"].items():
        assert [p["labels"] for p in s["curve"]] == expected_labels, label
        for p in s["curve"]:
            assert set(p) == {"labels", "accuracy", "accuracy_std", "macro_f1", "macro_f1_std"}
            assert 0.0 <= p["accuracy"] <= 1.0 and p["accuracy_std"] >= 0.0 and 0.0 <= p["macro_f1"] <= 1.0
        assert 0.0 < s["aulc"] < 1.0 and len(s["aulc_per_repeat"]) == 2
        assert s["aulc"] == pytest.approx(np.mean(s["aulc_per_repeat"]))
        assert s["final_accuracy"] == pytest.approx(s["curve"][-1]["accuracy"])
        assert {"labels_to_reach_random_final", "reduction_ratio", "aulc_std", "seconds_per_round"} <= set(s)
    assert payload["strategies"]["random"]["reduction_ratio"] == pytest.approx(1.0)
    cold = payload["cold_start"]
    assert cold["labels"] == 2 * n_classes and 0 < cold["seeded_accuracy"] <= 1 and 0 < cold["random_accuracy"] <= 1

    # report files: the same JSON, a PNG that opens, a Markdown table naming every strategy
    assert json.loads((out_dir / "result.json").read_text())["strategies"].keys() == payload["strategies"].keys()
    from PIL import Image

    with Image.open(out_dir / "learning_curves.png") as img:
        img.verify()
    with Image.open(out_dir / "learning_curves.png") as img:
        assert img.size[0] > 400 and img.size[1] > 300
    report = (out_dir / "report.md").read_text()
    for label in strategies:
        assert f"| {label} |" in report
    assert "learning_curves.png" in report


def test_simulate_cli_rejects_bad_options_cleanly(labeled_jsonl, cache_dir):
    data, _ = labeled_jsonl
    app = typer.Typer()
    register(app)

    @app.callback()
    def _root() -> None:
        pass

    runner = CliRunner()
    bad_strategy = runner.invoke(
        app, ["simulate", "--data", str(data), "--strategies", "margin+eps=2", "--cache-dir", str(cache_dir)]
    )
    assert bad_strategy.exit_code == 3 and "eps" in bad_strategy.output
    bad_budget = runner.invoke(
        app, ["simulate", "--data", str(data), "--budget", "5000", "--cache-dir", str(cache_dir)]
    )
    assert bad_budget.exit_code == 3 and "--budget" in bad_budget.output
    missing = runner.invoke(app, ["simulate", "--data", "no-such-file.jsonl"])
    assert missing.exit_code == 3 and "no-such-file.jsonl" in missing.output
