"""simulate measures reduction ratios against the reference arm the user names (e.g. random with the plain
tuned head), and reports accuracy and macro-F1 at fixed label counts."""

import pytest

from al_backend.errors import InputError
from al_backend.simulate import SimulationConfig, markdown_report, simulate
from tests.unit.test_one_round import blobs


def test_ratios_are_against_the_named_reference_and_checkpoints_are_reported():
    X, y = blobs(n=400)
    cfg = SimulationConfig(
        strategies=["random+plain", "margin"],
        seed_size=20,
        batch_size=40,
        budget=100,
        repeats=1,
        reference="random+plain",
    )
    result = simulate(X, y, cfg)
    assert result["reference"] == "random+plain"
    assert result["strategies"]["random+plain"]["reduction_ratio"] == pytest.approx(1.0)
    report = markdown_report(result)
    assert "labels to reach random+plain's final" in report and "| margin | " in report
    assert "at 100 labels" in report  # the checkpoint table (100 is on the curve: 20, 60, 100)
    with pytest.raises(InputError, match="--reference 'nope' is not one of --strategies"):
        simulate(
            X,
            y,
            SimulationConfig(
                strategies=["random"], seed_size=20, batch_size=40, budget=60, repeats=1, reference="nope"
            ),
        )
