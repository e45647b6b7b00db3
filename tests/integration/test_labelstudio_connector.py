"""The Label Studio connector against a real Label Studio 1.23.2 (started once per session by the fixture)."""

from __future__ import annotations

import numpy as np
import pytest

from al_backend.errors import ConfigError, ConnectorError
from al_backend.pool import Ranking
from connectors.labelstudio import LabelStudioConnector, UnsupportedLabelConfig
from tests.services.labelstudio import BBC_CLASSES, choices_config, free_port

pytestmark = pytest.mark.labelstudio


def ranking_for(ids: list[str], version: str, predicted: list[str | None] | None = None, batch: int = 5) -> Ranking:
    n = len(ids)
    return Ranking(
        ids=list(ids),
        priority=Ranking.priorities(n),
        batch_size=min(batch, n),
        components={},
        predicted=predicted or [None] * n,
        confidence=np.full(n, np.nan),
        cluster=np.full(n, -1),
        round_id=1,
        model_version=version,
        strategy="margin",
    )


@pytest.fixture(scope="module")
def project(label_studio, bbc_texts):
    """A Choices project with 250 real BBC texts; 6 annotated (one disagreement, one cancelled)."""
    pid = label_studio.create_project(BBC_CLASSES, title="connector test")
    texts = [t for t, _ in bbc_texts]
    ids = label_studio.import_tasks(pid, texts)
    truth = {tid: cls for tid, (_, cls) in zip(ids, bbc_texts)}
    label_studio.annotate(ids[0], truth[ids[0]])
    label_studio.annotate(ids[1], truth[ids[1]])
    label_studio.annotate(ids[2], "tech")  # disagreement: tech, sports, sports -> sports
    label_studio.annotate(ids[2], "sports")
    label_studio.annotate(ids[2], "sports")
    label_studio.annotate(ids[3], "politics", cancelled=True)  # skipped: stays unlabeled
    return {"id": pid, "task_ids": ids, "truth": truth, "texts": texts}


def connector(ls, pid, token=None, **kw) -> LabelStudioConnector:
    return LabelStudioConnector(ls.url, token or ls.legacy_token, pid, **kw)


def test_pull_reads_texts_labels_and_disagreements(label_studio, project):
    c = connector(label_studio, project["id"])
    pool = c.pull()
    ids = [str(t) for t in project["task_ids"]]
    assert sorted(pool.ids, key=int) == ids
    by_id = dict(zip(pool.ids, range(len(pool))))
    assert pool.texts[by_id[ids[10]]] == project["texts"][10]
    assert pool.labels[by_id[ids[0]]] == project["truth"][project["task_ids"][0]]
    assert pool.labels[by_id[ids[2]]] == "sports"
    assert pool.meta[by_id[ids[2]]] == {"annotation_labels": ["tech", "sports", "sports"], "disagreement": True}
    assert pool.labels[by_id[ids[3]]] is None  # only a cancelled annotation
    assert int(pool.labeled_mask.sum()) == 3
    assert c.label_set() == BBC_CLASSES


def test_push_makes_label_studio_serve_the_ranking(label_studio, project):
    c = connector(label_studio, project["id"])
    pool = c.pull()
    unlabeled = [i for i, lab in zip(pool.ids, pool.labels) if lab is None]
    rng = np.random.default_rng(7)
    order = [unlabeled[i] for i in rng.permutation(len(unlabeled))]
    predicted = [BBC_CLASSES[i % 5] for i in range(len(order))]
    report = c.push(ranking_for(order, "al-conn-v1", predicted))
    assert report.pushed == len(order)

    proj = label_studio.project(project["id"])
    assert proj["sampling"] == "Uncertainty sampling" and proj["model_version"] == "al-conn-v1"
    preds = label_studio.api("GET", "/api/predictions/", params={"project": project["id"]})
    mine = {str(p["task"]): p for p in preds if p["model_version"] == "al-conn-v1"}
    assert set(mine) == set(unlabeled)
    # score = 1 - priority: strictly increasing along the ranking, and the predicted choice as result
    scores = [mine[t]["score"] for t in order]
    assert all(a < b for a, b in zip(scores, scores[1:])) and scores[0] == 0.0
    assert mine[order[7]]["result"][0]["value"]["choices"] == [predicted[7]]

    nxt = label_studio.api("GET", f"/api/projects/{project['id']}/next/")
    assert str(nxt["id"]) == order[0]
    assert c.view_order(report.details["view_id"])[: len(order)] == order
    # like an annotator: label the served task (LS keeps serving a task its user holds locked until then)
    label_studio.annotate(nxt["id"], project["truth"][nxt["id"]])


def test_new_version_replaces_old_and_repeat_push_is_unchanged(label_studio, project):
    c = connector(label_studio, project["id"])
    pool = c.pull()
    unlabeled = sorted((i for i, lab in zip(pool.ids, pool.labels) if lab is None), key=int, reverse=True)
    c.push(ranking_for(unlabeled, "al-conn-v1"))  # (the previous test's version, or a fresh push)
    report = c.push(ranking_for(unlabeled, "al-conn-v2"))
    assert report.pushed == len(unlabeled)
    versions = c.model_versions()
    assert versions == {"al-conn-v2": len(unlabeled)}  # older al- versions pruned
    nxt = label_studio.api("GET", f"/api/projects/{project['id']}/next/")
    assert str(nxt["id"]) == unlabeled[0]
    again = c.push(ranking_for(unlabeled, "al-conn-v2"))
    assert again.details.get("unchanged") is True and again.pushed == 0
    assert c.model_versions() == {"al-conn-v2": len(unlabeled)}
    views = label_studio.api("GET", "/api/dm/views/", params={"project": project["id"]})
    assert [v["data"]["title"] for v in views].count("Active learning") == 1


def test_no_model_yet_pushes_no_pre_annotation(label_studio, project):
    c = connector(label_studio, project["id"])
    payload = c.predictions_payload(ranking_for(["5", "6"], "al-x"))
    assert [p["result"] for p in payload] == [[], []]
    assert [p["score"] for p in payload] == [0.0, 0.5]


def test_personal_access_token_and_legacy_token_both_work(label_studio, project):
    pat = label_studio.personal_access_token()
    assert pat.count(".") == 2 and pat != label_studio.legacy_token
    by_pat = connector(label_studio, project["id"], token=pat)
    by_legacy = connector(label_studio, project["id"])
    assert by_pat.auth.kind == "personal access token" and by_legacy.auth.kind == "legacy token"
    assert by_pat.pull().ids == by_legacy.pull().ids
    # the PAT is exchanged for a short-lived access token; an expired one is refreshed transparently
    by_pat.auth._access = by_pat.auth._access[:-4] + "AAAA"  # a bad signature makes the server answer 401
    assert len(by_pat.pull()) == len(project["task_ids"])


def test_wrong_tokens_give_clear_errors(label_studio, project):
    with pytest.raises(ConnectorError, match="rejected the API key.*401"):
        connector(label_studio, project["id"], token="not-a-real-token-123").pull()
    pat = label_studio.personal_access_token()
    forged = pat[: pat.rindex(".") + 1] + "x" * 43
    with pytest.raises(ConnectorError, match="rejected the personal access token"):
        connector(label_studio, project["id"], token=forged).pull()


def test_unreachable_server_and_unknown_project(label_studio):
    port = free_port()
    c = LabelStudioConnector(f"http://127.0.0.1:{port}", "abc123", 1, retries=1)
    with pytest.raises(ConnectorError) as e:
        c.pull()
    msg = str(e.value)
    assert "cannot connect" in msg and f"127.0.0.1:{port}" in msg and "GET /api/projects/1/" in msg
    assert "abc123" not in msg
    with pytest.raises(ConnectorError, match="no project 99999"):
        connector(label_studio, 99999).pull()
    with pytest.raises(ConfigError, match="API key is not set"):
        LabelStudioConnector(label_studio.url, "", 1)


def test_unsupported_label_config_is_a_clear_error(label_studio):
    xml = (
        '<View><Image name="img" value="$image"/>'
        '<Choices name="c" toName="img"><Choice value="a"/><Choice value="b"/></Choices></View>'
    )
    pid = label_studio.create_project([], title="image project", label_config=xml)
    with pytest.raises(UnsupportedLabelConfig, match=r"Choices name='c'.*over <Image") as e:
        connector(label_studio, pid).pull()
    assert f"project {pid}" in str(e.value)


def test_multiple_choice_and_hypertext(label_studio, bbc_texts):
    xml = choices_config(BBC_CLASSES, multiple=True).replace("<Text ", "<HyperText ")
    pid = label_studio.create_project([], title="multi hypertext", label_config=xml)
    html_texts = [f"<p>{t}</p><script>var x = 1;</script>" for t, _ in bbc_texts[:4]]
    ids = label_studio.import_tasks(pid, html_texts)
    label_studio.annotate(ids[0], ["tech", "business"])
    label_studio.annotate(ids[0], ["tech"])
    c = connector(label_studio, pid)
    pool = c.pull()
    row = pool.ids.index(str(ids[0]))
    assert pool.labels[row] == "tech"  # the most voted choice
    assert pool.meta[row]["annotation_labels"] == ["tech|business", "tech"]
    assert (
        pool.texts[1] == " ".join(bbc_texts[1][0].split()) and "<" not in pool.texts[1] and "var x" not in pool.texts[1]
    )


KEEP = {
    "stop": False,
    "criterion": "stabilizing_predictions",
    "reason": "mean kappa 0.962 < 0.99 over the last 3 rounds (0.950, 0.960, 0.975)",
    "evidence": {"threshold": 0.99, "window": 3, "kappas": [0.95, 0.96, 0.975], "mean_kappa": 0.962},
}
STOP = {
    "stop": True,
    "criterion": "budget",
    "reason": "3 labels reached the budget of 3",
    "evidence": {"labels": 3, "budget": 3},
}


def test_stopping_note_in_the_project_description(label_studio, bbc_texts):
    """The decision is one "[al-backend]" line of the description: first, replaced round after round, the
    user's text around it kept byte for byte, and nothing written when it does not change."""
    import dataclasses

    from connectors.labelstudio import NOTE_MARK
    from tests.services.faultproxy import FaultProxy

    pid = label_studio.create_project(BBC_CLASSES, title="stopping note")
    ids = label_studio.import_tasks(pid, [t for t, _ in bbc_texts[:20]])
    for tid, (_, cls) in zip(ids[:3], bbc_texts[:3]):
        label_studio.annotate(tid, cls)
    user = "BBC topics, pilot batch.\r\nAsk Ana when two topics fit:  pick the first.\n\n  Indented line."
    label_studio.api("PATCH", f"/api/projects/{pid}/", json={"description": user})
    assert label_studio.project(pid)["description"] == user

    with FaultProxy(label_studio.url) as proxy:
        c = LabelStudioConnector(proxy.url, label_studio.legacy_token, pid)
        pool = c.pull()
        unlabeled = [i for i, lab in zip(pool.ids, pool.labels) if lab is None]
        first = dataclasses.replace(ranking_for(unlabeled, "al-note-v1"), round_id=12, stopping=KEEP)
        report = c.push(first)
        line = (
            f"{NOTE_MARK} Keep labeling (round 12, 3 labels): stabilizing_predictions: mean kappa 0.962 < 0.99 "
            "over the last 3 rounds (0.950, 0.960, 0.975)"
        )
        proj = label_studio.project(pid)
        assert proj["description"] == f"{line}\n\n{user}"
        assert report.details["stopping_note"] == line[len(NOTE_MARK) + 1 :]
        # one PATCH switched the project and wrote the note
        assert len(proxy.events("PATCH", r"^/api/projects/")) == 1
        assert proj["sampling"] == "Uncertainty sampling" and proj["model_version"] == "al-note-v1"

        proxy.reset_log()
        assert c.push(first).details.get("unchanged") is True
        assert proxy.events("PATCH") == [] and label_studio.project(pid)["description"] == f"{line}\n\n{user}"
        c.push(dataclasses.replace(first, stopping=None))  # no decision: the note stays
        assert proxy.events("PATCH") == [] and label_studio.project(pid)["description"] == f"{line}\n\n{user}"

        # the user edits the description around the note; the next decision replaces only the note's line
        edited = f"Owner: news team\n{line}\n\n{user}\nAdded after."
        label_studio.api("PATCH", f"/api/projects/{pid}/", json={"description": edited})
        c.push(dataclasses.replace(first, round_id=13, stopping=STOP))
        stop_line = f"{NOTE_MARK} You can stop labeling (round 13, 3 labels): budget: 3 labels reached the budget of 3"
        proj = label_studio.project(pid)
        assert proj["description"] == f"Owner: news team\n{stop_line}\n\n{user}\nAdded after."
        assert proj["description"].count(NOTE_MARK) == 1
        # the description alone was patched: the active version and sampling are untouched
        patches = proxy.events("PATCH", r"^/api/projects/")
        assert len(patches) == 1
        assert proj["sampling"] == "Uncertainty sampling" and proj["model_version"] == "al-note-v1"
        nxt = label_studio.api("GET", f"/api/projects/{pid}/next/")
        assert str(nxt["id"]) == unlabeled[0]  # still served in the ranking's order
