"""The stopping note: its one line, where each connector puts it, and that only a change is written.

The real servers are exercised in tests/integration (test_labelstudio_connector.py, test_argilla_loop.py);
here a fake Label Studio (httpx.MockTransport) counts the PATCH calls of a push."""

from __future__ import annotations

import json

import httpx
import numpy as np

from al_backend.pool import Ranking
from connectors.argilla import NOTE_BEGIN, NOTE_END, with_note_block
from connectors.labelstudio import NOTE_MARK, LabelStudioConnector, with_note_line
from connectors.stopping_note import MAX_REASON, labels_in, stopping_summary

KEEP = {
    "stop": False,
    "criterion": "stabilizing_predictions",
    "reason": "mean kappa 0.962 < 0.99 over the last 3 rounds (0.950, 0.960, 0.975)",
    "evidence": {"threshold": 0.99, "window": 3, "kappas": [0.95, 0.96, 0.975], "mean_kappa": 0.962},
}
STOP = {
    "stop": True,
    "criterion": "budget",
    "reason": "240 labels reached the budget of 240",
    "evidence": {"labels": 240, "budget": 240},
}
ANY = {
    "stop": False,
    "criterion": "stabilizing_predictions|budget",
    "reason": "stabilizing_predictions: needs stop-set predictions; budget: 12 of 500 labels",
    "evidence": {"stabilizing_predictions": {"threshold": 0.99}, "budget": {"labels": 12, "budget": 500}},
}


def test_summary_is_one_line_with_verdict_round_labels_and_reason():
    assert stopping_summary(KEEP, round_id=12, labels=240) == (
        "Keep labeling (round 12, 240 labels): stabilizing_predictions: mean kappa 0.962 < 0.99 over the last 3 "
        "rounds (0.950, 0.960, 0.975)"
    )
    # the evidence's own count wins over the connector's
    assert stopping_summary(STOP, round_id=7, labels=239) == (
        "You can stop labeling (round 7, 240 labels): budget: 240 labels reached the budget of 240"
    )
    # a combination names each criterion in its reason already; its labels are inside one criterion's evidence
    assert stopping_summary(ANY, round_id=2) == (
        "Keep labeling (round 2, 12 labels): stabilizing_predictions: needs stop-set predictions; budget: 12 of 500 labels"
    )
    assert labels_in(ANY["evidence"]) == 12 and labels_in(KEEP["evidence"]) is None
    assert stopping_summary(None, round_id=3, labels=5) is None
    assert stopping_summary({"criterion": "x"}, round_id=3) is None  # not a decision
    odd = dict(KEEP, reason="line one\nline two\x00" + "x" * 1000)
    line = stopping_summary(odd, round_id=1, labels=1)
    assert "\n" not in line and "\x00" not in line and "1 label)" in line
    assert len(line) < MAX_REASON + 60 and line.endswith("…")


def test_note_line_replaces_only_its_line_and_goes_first_when_absent():
    note = f"{NOTE_MARK} Keep labeling (round 1, 10 labels): budget: 10 of 50 labels"
    assert with_note_line("", note) == note
    user = "Sentiment of support tickets.\r\nAsk Ana when unsure.\n"
    first = with_note_line(user, note)
    assert first == f"{note}\n\n{user}"
    second = with_note_line(first, f"{NOTE_MARK} You can stop labeling")
    assert second == f"{NOTE_MARK} You can stop labeling\n\n{user}"
    # moved by the user into the middle: replaced in place; a pasted duplicate of our line is dropped
    moved = f"intro\n{note}\nmore\r\n{note}\noutro"
    assert with_note_line(moved, f"{NOTE_MARK} new") == "intro\n[al-backend] new\nmore\r\noutro"
    assert with_note_line(first, note) == first  # same note: same text, nothing to write


def test_note_block_replaces_only_its_block_and_is_appended_when_absent():
    user = "# Guidelines\n\nLabel the *topic*.\n<!-- a comment of the user's -->"
    first = with_note_block(user, "Keep labeling (round 1, 10 labels): budget: 10 of 50")
    assert first.startswith(user + "\n\n" + NOTE_BEGIN) and first.endswith(NOTE_END)
    assert "**Active learning (al-backend):** Keep labeling (round 1, 10 labels)" in first
    second = with_note_block(first, "You can stop labeling (round 2, 50 labels): budget: 50 labels reached")
    assert second.startswith(user + "\n\n" + NOTE_BEGIN) and second.count(NOTE_BEGIN) == 1
    assert "round 1" not in second and "You can stop labeling" in second
    assert with_note_block(second, "You can stop labeling (round 2, 50 labels): budget: 50 labels reached") == second
    # text the user added after the block survives; a begin marker without its end is the user's text
    edited = second + "\n\nAdded later."
    assert with_note_block(edited, "x").endswith(f"{NOTE_END}\n\nAdded later.")
    orphan = f"{NOTE_BEGIN} stray\nuser text\n\n"
    assert with_note_block(orphan, "x").startswith(orphan + NOTE_BEGIN)
    assert with_note_block(with_note_block(orphan, "x"), "y").startswith(orphan + NOTE_BEGIN)
    assert with_note_block("", "x").startswith(NOTE_BEGIN)


class FakeLabelStudio:
    """Just enough of Label Studio for a push: project, model versions, prediction import, views."""

    def __init__(self, description: str = ""):
        self.project = {
            "id": 1,
            "sampling": "Sequential sampling",
            "model_version": "",
            "description": description,
            "label_config": '<View><Text name="text" value="$text"/><Choices name="label" toName="text">'
            '<Choice value="a"/><Choice value="b"/></Choices></View>',
        }
        self.versions: dict[str, int] = {}
        self.patches: list[dict] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path, method = request.url.path, request.method
        body = json.loads(request.content) if request.content else None
        if path == "/api/projects/1/" and method == "GET":
            return httpx.Response(200, json=self.project)
        if path == "/api/projects/1/" and method == "PATCH":
            self.patches.append(body)
            self.project.update({k: (v.strip() if k == "description" else v) for k, v in body.items()})
            return httpx.Response(200, json=self.project)
        if path == "/api/projects/1/model-versions/" and method == "GET":
            return httpx.Response(200, json=self.versions)
        if path == "/api/projects/1/model-versions/" and method == "DELETE":
            self.versions.pop(body["model_version"], None)
            return httpx.Response(200, json={"deleted": 1})
        if path == "/api/projects/1/import/predictions":
            for p in body:
                self.versions[p["model_version"]] = self.versions.get(p["model_version"], 0) + 1
            return httpx.Response(201, json={"created": len(body)})
        if path == "/api/dm/views/":
            if method == "GET":
                return httpx.Response(
                    200, json=[{"id": 9, "data": {"title": "Active learning", "ordering": ["tasks:predictions_score"]}}]
                )
        return httpx.Response(404, json={"detail": f"{method} {path}"})


def ranking(version: str, stopping: dict | None, round_id: int = 3) -> Ranking:
    ids = ["1", "2", "3"]
    return Ranking(
        ids=ids,
        priority=Ranking.priorities(3),
        batch_size=1,
        components={},
        predicted=["a", "b", "a"],
        confidence=np.full(3, 0.6),
        cluster=np.full(3, -1),
        round_id=round_id,
        model_version=version,
        strategy="margin",
        stopping=stopping,
    )


def test_labelstudio_push_writes_the_note_with_the_switch_and_only_when_it_changes():
    fake = FakeLabelStudio("My project.\nTopics of news.")
    c = LabelStudioConnector("http://ls.test", "legacytoken123", 1, transport=httpx.MockTransport(fake))
    c.labeled = 40
    report = c.push(ranking("al-v1", KEEP))
    assert len(fake.patches) == 1  # one PATCH: sampling, model_version and the note together
    assert set(fake.patches[0]) == {"sampling", "model_version", "description"}
    assert fake.project["description"] == (
        f"{NOTE_MARK} Keep labeling (round 3, 40 labels): stabilizing_predictions: mean kappa 0.962 < 0.99 over "
        "the last 3 rounds (0.950, 0.960, 0.975)\n\nMy project.\nTopics of news."
    )
    assert report.details["stopping_note"].startswith("Keep labeling (round 3")
    c.push(ranking("al-v1", KEEP))  # the same ranking again: nothing to write
    assert len(fake.patches) == 1
    c.push(ranking("al-v1", None))  # no decision: the note stays as it is
    assert len(fake.patches) == 1 and NOTE_MARK in fake.project["description"]
    c.push(ranking("al-v1", STOP, round_id=4))  # a new decision, same version: the description alone
    assert fake.patches[-1] == {"description": fake.project["description"]} and len(fake.patches) == 2
    assert fake.project["description"] == (
        f"{NOTE_MARK} You can stop labeling (round 4, 240 labels): budget: 240 labels reached the budget of 240"
        "\n\nMy project.\nTopics of news."
    )
