"""The README's Python API example runs as written, on real BBC paragraphs and the real embedding model."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_python_api_example_learns_and_stops_at_the_budget():
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "python_api.py"), "--rows", "400", "--budget", "100"],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    ).stdout
    rows = re.findall(r"^\s*(\d+) labels  test accuracy ([\d.]+|nan)  stop: (True|False)", out, re.M)
    assert [int(r[0]) for r in rows] == [20, 40, 60, 80, 100]
    assert float(rows[-1][1]) > 0.6  # five topics: chance is 0.2
    assert rows[-1][2] == "True" and "reached the budget of 100" in out
    assert "classes: ['business', 'entertainment', 'politics', 'sports', 'tech']" in out
