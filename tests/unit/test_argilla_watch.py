"""The watch loop's decisions, driven by counters given by hand: when a round runs and when it does not."""

from __future__ import annotations

import threading

import pytest

from al_backend.errors import ConfigError, ConnectorError, EmptyPoolError, StateError
from al_backend.store import Store
from al_backend.watch import Watcher, baseline_from_store, save_baseline_to_store


class Tool:
    """A labeling tool's counters, changed by the test between polls; rounds are counted."""

    def __init__(self, submitted=0, records=100):
        self.counters = {"submitted": submitted, "records": records}
        self.rounds = 0
        self.fail_next = None

    def poll(self):
        if self.fail_next:
            err, self.fail_next = self.fail_next, None
            raise err
        return dict(self.counters)

    def run_round(self):
        self.rounds += 1
        return {"round": self.rounds}


def test_first_poll_runs_a_round_then_only_after_min_new_responses():
    tool = Tool(submitted=7)
    w = Watcher(tool.poll, tool.run_round, min_new=3)
    first = w.poll_once()
    assert first.ran and first.reason == "initial" and tool.rounds == 1
    assert w.baseline == {"submitted": 7, "records": 100}
    for submitted, expect_new in [(7, 0), (8, 1), (9, 2)]:
        tool.counters["submitted"] = submitted
        res = w.poll_once()
        assert not res.ran and res.new_submitted == expect_new and tool.rounds == 1
    tool.counters["submitted"] = 10
    res = w.poll_once()
    assert res.ran and res.reason == "new responses" and res.new_submitted == 3 and tool.rounds == 2
    assert not w.poll_once().ran  # counted from the new baseline
    tool.counters["submitted"] = 20  # a burst counts as one round
    assert w.poll_once().ran and tool.rounds == 3


def test_new_records_trigger_a_round_unless_ignored():
    tool = Tool(submitted=5)
    w = Watcher(tool.poll, tool.run_round, min_new=10, baseline={"submitted": 5, "records": 100})
    assert not w.poll_once().ran
    tool.counters["records"] = 150
    res = w.poll_once()
    assert res.ran and res.reason == "records changed"
    quiet = Watcher(
        tool.poll, tool.run_round, min_new=10, baseline={"submitted": 5, "records": 100}, track_records=False
    )
    assert not quiet.poll_once().ran


def test_deleted_responses_lower_the_baseline():
    tool = Tool(submitted=10)
    w = Watcher(tool.poll, tool.run_round, min_new=3, baseline={"submitted": 10, "records": 100})
    tool.counters["submitted"] = 6  # four responses deleted
    assert not w.poll_once().ran and w.baseline["submitted"] == 6
    tool.counters["submitted"] = 9
    assert w.poll_once().ran


def test_nothing_pending_is_not_an_error_and_moves_the_baseline():
    tool = Tool(submitted=50)

    def all_labeled():
        raise EmptyPoolError("every task is labeled")

    saved = []
    w = Watcher(tool.poll, all_labeled, min_new=1, save_baseline=saved.append)
    res = w.poll_once()
    assert not res.ran and res.reason == "nothing pending" and w.rounds == 0
    assert saved == [{"submitted": 50, "records": 100}]


def test_run_survives_tool_errors_and_stops_on_max_rounds():
    tool = Tool()
    w = Watcher(tool.poll, tool.run_round, min_new=2)
    seen = []
    stop = threading.Event()

    def on_poll(res):
        seen.append(res.reason)
        if len(seen) == 1:
            tool.fail_next = ConnectorError("Argilla: cannot connect")
        elif res.reason == "error":
            tool.counters["submitted"] += 2

    w.run(0.001, max_rounds=2, stop=stop, on_poll=on_poll)
    assert seen == ["initial", "error", "new responses"] and tool.rounds == 2


def test_run_stops_at_once_on_configuration_and_state_errors():
    tool = Tool()
    tool.fail_next = StateError("state file is foreign")
    with pytest.raises(StateError):
        Watcher(tool.poll, tool.run_round, min_new=1).run(0.001, max_polls=5)
    with pytest.raises(ConfigError):
        Watcher(tool.poll, tool.run_round, min_new=0)
    with pytest.raises(ConfigError):
        Watcher(tool.poll, tool.run_round, min_new=1).run(0)


def test_run_stops_when_the_stop_event_is_set():
    tool = Tool()
    stop = threading.Event()
    w = Watcher(tool.poll, tool.run_round, min_new=1)
    w.run(0.001, stop=stop, on_poll=lambda res: stop.set())
    assert w.polls == 1


def test_baseline_persists_in_the_state_file(tmp_path):
    path = tmp_path / "s.sqlite"
    with Store.open(path) as store:
        assert baseline_from_store(store, "watch.x") is None
        save_baseline_to_store(store, "watch.x", {"submitted": 12, "records": 200})
    with Store.open(path, create=False) as store:
        assert baseline_from_store(store, "watch.x") == {"submitted": 12, "records": 200}
        store.set_meta("watch.x", "not json")
        with pytest.raises(StateError, match="watch.x"):
            baseline_from_store(store, "watch.x")
