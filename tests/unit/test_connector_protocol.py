"""Every built-in connector speaks the Connector protocol (bind, chunked push); the Argilla connector takes its
embeddings from the bound embedder; Label Studio's chunked push resumes where it stopped; the server's
MLBackendAdapter for Label Studio. No servers: Label Studio is a small in-memory fake behind httpx's
MockTransport (the real-server behaviour is tests/integration/test_faults_labelstudio.py)."""

from __future__ import annotations

import inspect
import json
import re

import httpx
import numpy as np
import pytest

from al_backend.config import load_config
from al_backend.errors import ConnectorError
from al_backend.pool import Ranking
from connectors import Connector, MLBackendAdapter, UnsupportedSchema, make_ml_backend
from connectors.argilla import ArgillaConnector
from connectors.files import FileConnector
from connectors.labelstudio import LabelStudioConnector, UnsupportedLabelConfig

CONFIG_XML = (
    '<View><Text name="text" value="$text"/><Choices name="label" toName="text">'
    '<Choice value="A"/><Choice value="B"/></Choices></View>'
)


def ranking(ids, version="al-v1", predicted=None):
    n = len(ids)
    return Ranking(
        ids=[str(i) for i in ids],
        priority=Ranking.priorities(n),
        batch_size=min(5, n),
        components={},
        predicted=predicted or [None] * n,
        confidence=np.full(n, np.nan),
        cluster=np.full(n, -1),
        round_id=1,
        model_version=version,
        strategy="seed",
    )


def builtins():
    return [
        FileConnector("tasks.jsonl", "ranked.jsonl"),
        LabelStudioConnector("http://ls.test", "legacy-token", 3),
        ArgillaConnector("http://argilla.test", "key", "news"),
    ]


@pytest.mark.parametrize("connector", builtins(), ids=lambda c: c.name)
def test_every_built_in_connector_speaks_the_protocol(connector):
    assert isinstance(connector, Connector)
    params = inspect.signature(connector.push).parameters
    assert list(params) == ["ranking", "start_chunk", "on_chunk"]
    assert params["start_chunk"].default == 0 and params["on_chunk"].default is None
    assert connector.store is None and connector.embedder is None
    connector.bind("store", "embedder")
    assert (connector.store, connector.embedder) == ("store", "embedder")


def test_file_push_is_one_chunk(tmp_path):
    c = FileConnector(tmp_path / "in.jsonl", tmp_path / "out.jsonl")
    seen = []
    report = c.push(ranking(["b", "a"]), on_chunk=lambda d, t: seen.append((d, t)))
    assert seen == [(1, 1)] and report.pushed == 2
    assert [json.loads(line)["id"] for line in (tmp_path / "out.jsonl").read_text().splitlines()] == ["b", "a"]


# ---------------------------------------------------------------------------------------------- Argilla vectors
class FakeEmbedder:
    def __init__(self):
        self.calls = []

    def embed(self, texts):
        self.calls.append(list(texts))
        return np.array([[len(t), 1.0] for t in texts], dtype=np.float32)


def test_argilla_vectors_come_from_the_bound_embedder(monkeypatch):
    c = ArgillaConnector("http://argilla.test", "key", "news", vector_field="emb")
    c._texts = {"r1": "one", "r2": "three", "r3": "seven"}  # what pull() keeps
    dims = []
    monkeypatch.setattr(c, "ensure_vector_field", lambda d: dims.append(d))
    embedder = FakeEmbedder()
    c.bind(object(), embedder)
    vec = c._vectors_for(ranking(["r3", "r1"]))
    assert embedder.calls == [["seven", "one"]]  # aligned with the ranking, not the pull
    np.testing.assert_array_equal(vec, [[5, 1], [3, 1]])
    assert dims == [2]


def test_argilla_vectors_without_a_bound_embedder_say_so(monkeypatch):
    c = ArgillaConnector("http://argilla.test", "key", "news", vector_field="emb")
    c._texts = {"r1": "one"}
    with pytest.raises(ConnectorError, match=r"vector field 'emb' is configured but no embedder was bound"):
        c._vectors_for(ranking(["r1"]))
    assert ArgillaConnector("http://argilla.test", "key", "news")._vectors_for(ranking(["r1"])) is None


# ---------------------------------------------------------------------------------------------- Label Studio push
class FakeLabelStudio:
    """Just the calls LabelStudioConnector.push makes; `fail_import_after` drops the connection on that import."""

    def __init__(self, tasks: int):
        self.project = {"id": 3, "label_config": CONFIG_XML, "sampling": "Sequential sampling", "model_version": ""}
        self.predictions: list[dict] = []
        self.views: list[dict] = []
        self.calls: list[str] = []
        self.imports = 0
        self.fail_import_after: int | None = None
        self.tasks = tasks

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path, method = request.url.path, request.method
        self.calls.append(f"{method} {path}")
        body = json.loads(request.content) if request.content else None
        if path == "/api/projects/3/" and method == "GET":
            return httpx.Response(200, json=self.project)
        if path == "/api/projects/3/" and method == "PATCH":
            self.project.update(body)
            return httpx.Response(200, json=self.project)
        if path == "/api/projects/3/model-versions/" and method == "GET":
            counts: dict[str, int] = {}
            for p in self.predictions:
                counts[p["model_version"]] = counts.get(p["model_version"], 0) + 1
            return httpx.Response(200, json=counts)
        if path == "/api/projects/3/model-versions/" and method == "DELETE":
            self.predictions = [p for p in self.predictions if p["model_version"] != body["model_version"]]
            return httpx.Response(200, json={})
        if path == "/api/projects/3/import/predictions":
            if self.fail_import_after is not None and self.imports >= self.fail_import_after:
                raise httpx.ConnectError("connection lost", request=request)
            self.imports += 1
            self.predictions.extend(body)
            return httpx.Response(201, json={"created": len(body)})
        if path == "/api/dm/views/" and method == "GET":
            return httpx.Response(200, json=self.views)
        if path == "/api/dm/views/" and method == "POST":
            self.views.append({"id": 1, "data": body["data"]})
            return httpx.Response(201, json={"id": 1})
        return httpx.Response(404, json={"detail": f"no {method} {path}"})

    def served(self, version: str) -> list[int]:
        return [p["task"] for p in self.predictions if p["model_version"] == version]


def ls_connector(fake: FakeLabelStudio, push_chunk: int = 4) -> LabelStudioConnector:
    c = LabelStudioConnector(
        "http://ls.test", "legacy-token", 3, push_chunk=push_chunk, retries=0, transport=httpx.MockTransport(fake)
    )
    return c


def test_label_studio_push_reports_each_chunk_then_the_switch():
    fake = FakeLabelStudio(10)
    seen = []
    report = ls_connector(fake).push(ranking(range(1, 11)), on_chunk=lambda d, t: seen.append((d, t)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]  # 3 imports of <= 4, then sampling + view
    assert report.pushed == 10 and fake.served("al-v1") == list(range(1, 11))
    assert fake.project["model_version"] == "al-v1"


def test_label_studio_resumed_push_keeps_the_chunks_already_imported():
    fake = FakeLabelStudio(10)
    fake.fail_import_after = 1  # chunk 1 lands, then the connection is gone
    seen = []
    with pytest.raises(ConnectorError):
        ls_connector(fake).push(ranking(range(1, 11)), on_chunk=lambda d, t: seen.append((d, t)))
    assert seen == [(1, 4)] and fake.project["model_version"] == ""  # not served yet
    fake.fail_import_after = None
    report = ls_connector(fake).push(ranking(range(1, 11)), start_chunk=1, on_chunk=lambda d, t: seen.append((d, t)))
    assert seen[1:] == [(2, 4), (3, 4), (4, 4)] and report.details["resumed_at_chunk"] == 1
    assert fake.imports == 3 and report.pushed == 6
    assert sorted(fake.served("al-v1")) == list(range(1, 11))  # each task once
    assert fake.project["model_version"] == "al-v1"


def test_label_studio_resume_that_does_not_match_what_is_there_starts_over():
    fake = FakeLabelStudio(10)
    fake.fail_import_after = 2  # two chunks landed, but the runner only recorded one
    with pytest.raises(ConnectorError):
        ls_connector(fake).push(ranking(range(1, 11)))
    fake.fail_import_after = None
    report = ls_connector(fake).push(ranking(range(1, 11)), start_chunk=1)
    assert "resumed_at_chunk" not in report.details and report.pushed == 10
    assert "DELETE /api/projects/3/model-versions/" in fake.calls
    assert sorted(fake.served("al-v1")) == list(range(1, 11))


def test_label_studio_push_of_what_is_there_already_only_switches():
    fake = FakeLabelStudio(4)
    ls_connector(fake).push(ranking(range(1, 5)))
    seen = []
    report = ls_connector(fake).push(ranking(range(1, 5)), start_chunk=1, on_chunk=lambda d, t: seen.append((d, t)))
    assert report.details["unchanged"] is True and report.pushed == 0 and seen == [(2, 2)]


# ---------------------------------------------------------------------------------------------- ML backend adapter
def test_the_label_studio_ml_backend_adapter():
    adapter = make_ml_backend("labelstudio")
    assert isinstance(adapter, MLBackendAdapter) and adapter.name == "labelstudio"
    schema = adapter.setup_schema({"schema": CONFIG_XML})
    assert adapter.predict_schema({"label_config": CONFIG_XML}) == schema
    assert schema.describe() == "<Choices name='label'> over <Text> (2 labels)"
    assert adapter.task_texts(schema, [{"data": {"text": "hi"}}, {"data": {}}, {}]) == ["hi", "", ""]
    assert adapter.prediction(schema, "B", 0.75, "al-v2") == {
        "result": [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": ["B"]}}],
        "score": 0.75,
        "model_version": "al-v2",
    }
    assert adapter.prediction(schema, None, 0.0, "none") == {"result": [], "score": 0.0, "model_version": "none"}
    with pytest.raises(UnsupportedSchema) as e:
        adapter.setup_schema({"label_config": "<View/>"})
    assert type(e.value) is UnsupportedLabelConfig
    with pytest.raises(UnsupportedSchema):
        adapter.predict_schema({"schema": CONFIG_XML})  # /predict carries label_config only


def test_the_adapter_builds_the_project_connector_from_config_or_setup():
    adapter = make_ml_backend("labelstudio")
    cfg = load_config(None, env={}, overrides={"labelstudio.project": 7})
    c = adapter.connector(cfg, {"hostname": "http://ls.internal:8080", "access_token": "tok"})
    assert (c.url, c.project_id) == ("http://ls.internal:8080", 7)
    configured = load_config(
        None,
        env={},
        overrides={"labelstudio.project": 7, "labelstudio.url": "http://ls:1", "labelstudio.api_key": "mine"},
    )
    c2 = adapter.connector(configured, {"hostname": "http://elsewhere", "access_token": "tok"})
    assert c2.url == "http://ls:1" and re.search("Token mine", str(c2.auth.headers(None)))
