"""/metrics text: parseable Prometheus exposition with the state's numbers."""

import re

from al_backend.observability import prometheus_text_many
from al_backend.store import Store


def parse(text):
    values = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        m = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)", line)
        assert m, f"not exposition format: {line!r}"
        values[m.group(1)] = float(m.group(3))
    return values


def test_metrics_from_state_and_counters(tmp_path):
    with Store.open(tmp_path / "s.sqlite") as store:
        with store.transaction() as c:
            c.executemany(
                "INSERT INTO items VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    ("a", b"h1", 0, None, "x", 1, 1),
                    ("b", b"h2", 1, None, None, 0, 1),
                    ("c", b"h3", 1, None, None, 0, 1),
                ],
            )
            c.execute("INSERT INTO rounds VALUES (1, 100.0, 102.5, 'margin', 'model', 'al-v', 3, 1, 2, '{}', x'')")
        stats = {"completed": 2, "failed": 1, "running": 0}
        v = parse(prometheus_text_many([({"project": 'p"3'}, store, stats)]))
    assert v["al_backend_rounds_total"] == 1
    assert v["al_backend_last_round_timestamp_seconds"] == 102.5
    assert v["al_backend_last_round_duration_seconds"] == 2.5
    assert v["al_backend_pool_size"] == 3 and v["al_backend_labeled"] == 1
    assert v["al_backend_clusters_covered"] == 1
    assert v["al_backend_trainings_total"] == 2 and v["al_backend_errors_total"] == 1
    assert v["al_backend_training_running"] == 0 and v["al_backend_stop_recommended"] == 0
