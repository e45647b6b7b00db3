"""The file connector: every malformed input names the file, line or id, and nothing is half-written."""

import json

import numpy as np
import pytest

from al_backend.errors import InputError
from al_backend.pool import Ranking
from connectors.files import FileConnector, write_ranking


def jsonl(tmp_path, rows, name="tasks.jsonl"):
    p = tmp_path / name
    p.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return p


def test_reads_jsonl_csv_parquet_alike(tmp_path):
    rows = [{"id": 1, "text": "a b", "label": "x", "src": "s1"}, {"id": "2", "text": "c d", "src": "s2"}]
    p = jsonl(tmp_path, rows)
    pool = FileConnector(p).pull()
    assert pool.ids == ["1", "2"] and pool.labels == ["x", None] and pool.meta[1] == {"src": "s2"}

    c = tmp_path / "tasks.csv"
    c.write_text('id,text,label,src\n1,a b,x,s1\n2,"c d",,s2\n')
    pool_csv = FileConnector(c).pull()
    assert pool_csv.ids == pool.ids and pool_csv.texts == pool.texts and pool_csv.labels == pool.labels

    import pyarrow as pa
    import pyarrow.parquet as pq

    q = tmp_path / "tasks.parquet"
    pq.write_table(
        pa.Table.from_pylist([{"id": "1", "text": "a b", "label": "x"}, {"id": "2", "text": "c d", "label": None}]), q
    )
    pool_pq = FileConnector(q).pull()
    assert pool_pq.ids == pool.ids and pool_pq.labels == pool.labels


@pytest.mark.parametrize(
    "rows, needle",
    [
        ([{"id": 1, "text": "ok"}, '{"id": 2, "text": "broken'], "tasks.jsonl:2: broken JSON line"),
        ([{"id": 1, "text": "ok"}, {"id": 2, "text": "   "}], "tasks.jsonl:2: task '2': text is empty"),
        ([{"id": 1, "text": "ok"}, {"id": 2}], "tasks.jsonl:2: task '2' has no text"),
        ([{"id": 1, "text": 42}], "tasks.jsonl:1: task '1': text must be a string, got int"),
        ([{"id": 1, "text": "a"}, {"id": 1, "text": "b"}], "tasks.jsonl:2: duplicate id '1' (first at"),
        ([{"text": "a"}], "tasks.jsonl:1: missing id"),
        (["[1, 2]"], "tasks.jsonl:1: expected a JSON object"),
    ],
)
def test_bad_rows_name_file_line_and_problem(tmp_path, rows, needle):
    p = jsonl(tmp_path, rows)
    with pytest.raises(InputError) as e:
        FileConnector(p).pull()
    assert needle in str(e.value)


def test_skip_invalid_skips_with_a_count(tmp_path):
    p = jsonl(tmp_path, [{"id": 1, "text": "ok"}, '{"id": 2, "te', {"id": 3, "text": ""}, {"id": 4, "text": "fine"}])
    conn = FileConnector(p, skip_invalid=True)
    pool = conn.pull()
    assert pool.ids == ["1", "4"]
    assert len(conn.skipped) == 2 and "tasks.jsonl:2" in conn.skipped[0] and "tasks.jsonl:3" in conn.skipped[1]


def test_bad_csv_row(tmp_path):
    c = tmp_path / "t.csv"
    c.write_text("id,text\n1,hello\n2,too,many\n")
    with pytest.raises(InputError, match=r"t.csv:3: CSV row has 3 fields, the header has 2"):
        FileConnector(c).pull()


def test_unknown_label_with_fixed_label_set(tmp_path):
    p = jsonl(tmp_path, [{"id": 1, "text": "a", "label": "pos"}, {"id": 2, "text": "b", "label": "spam"}])
    with pytest.raises(
        InputError, match=r"tasks.jsonl:2: task '2' has unknown label 'spam' \(allowed: \['neg', 'pos'\]\)"
    ):
        FileConnector(p, labels_fixed=["pos", "neg"]).pull()


def test_labels_file_overrides(tmp_path):
    p = jsonl(tmp_path, [{"id": 1, "text": "a"}, {"id": 2, "text": "b", "label": "x"}])
    lab = tmp_path / "labels.csv"
    lab.write_text("id,label\n1,y\n")
    assert FileConnector(p, labels=lab).pull().labels == ["y", "x"]
    lab.write_text("id,label\n9,y\n")
    with pytest.raises(InputError, match="label for unknown id '9'"):
        FileConnector(p, labels=lab).pull()


def test_vectors_column_and_npy(tmp_path):
    p = jsonl(tmp_path, [{"id": 1, "text": "a", "vec": [1, 0]}, {"id": 2, "text": "b", "vec": [0, 1]}])
    pool = FileConnector(p, vectors_field="vec").pull()
    assert pool.vectors.shape == (2, 2) and pool.vectors.dtype == np.float32
    bad = jsonl(
        tmp_path, [{"id": 1, "text": "a", "vec": [1, 0]}, {"id": 2, "text": "b", "vec": [0, 1, 2]}], "bad.jsonl"
    )
    with pytest.raises(InputError, match="different sizes"):
        FileConnector(bad, vectors_field="vec").pull()
    nan = jsonl(tmp_path, ['{"id": 1, "text": "a", "vec": [NaN, 0]}'], "nan.jsonl")
    with pytest.raises(InputError, match="nan.jsonl:1: task '1' vector contains NaN"):
        FileConnector(nan, vectors_field="vec").pull()

    np.save(tmp_path / "v.npy", np.eye(3, dtype=np.float32))
    with pytest.raises(InputError, match=r"expected shape \(2, d\)"):
        FileConnector(p, vectors=tmp_path / "v.npy").pull()
    np.save(tmp_path / "v2.npy", np.array([[1.0, np.nan], [0, 1]]))
    with pytest.raises(InputError, match="row 0 contains NaN"):
        FileConnector(p, vectors=tmp_path / "v2.npy").pull()


def test_ranking_written_atomically(tmp_path, monkeypatch):
    r = Ranking(
        ids=["b", "a"],
        priority=Ranking.priorities(2),
        batch_size=1,
        components={"margin": np.array([0.9, 0.1])},
        predicted=["x", "y"],
        confidence=np.array([0.5, 0.9]),
        cluster=np.array([0, 1]),
        round_id=1,
        model_version="al-test",
        strategy="margin",
    )
    out = tmp_path / "ranked.jsonl"
    out.write_text("previous ranking\n")
    import connectors.files as files

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(files.json, "dumps", boom)
    with pytest.raises(RuntimeError):
        write_ranking(r, out)
    assert out.read_text() == "previous ranking\n"
    assert [f.name for f in tmp_path.iterdir()] == ["ranked.jsonl"]  # no temp file left behind
    monkeypatch.undo()
    write_ranking(r, out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(x["id"], x["rank"], x["priority"], x["margin"], x["in_batch"]) for x in rows] == [
        ("b", 1, 1.0, 0.9, True),
        ("a", 2, 0.5, 0.1, False),
    ]
