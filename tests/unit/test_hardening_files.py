"""Text files as users save them: UTF-8 with or without BOM, other encodings reported by file and line (skipped
with --skip-invalid), CSV with ';' or tabs, headers without the expected columns, labels with stray spaces
or differing only by case."""

from __future__ import annotations

import codecs
import json
import logging

import pytest

from al_backend.errors import InputError
from connectors.files import FileConnector, sniff_delimiter
from tests.hardening_util import cli, snapshot


def pull(path, **kw):
    return FileConnector(path, **kw).pull()


# ------------------------------------------------------------------ encodings
@pytest.mark.parametrize("skip", [False, True])
def test_jsonl_line_not_utf8_is_reported_by_line_or_skipped(tmp_path, skip):
    p = tmp_path / "tasks.jsonl"
    p.write_bytes(
        b'{"id": 1, "text": "caf\xc3\xa9 ok"}\n{"id": 2, "text": "caf\xe9 latin-1"}\n{"id": 3, "text": "fine"}\n'
    )
    if not skip:
        with pytest.raises(InputError) as e:
            pull(p)
        assert str(e.value) == f"{p}:2: not UTF-8 text (byte 0xe9 at byte 23 of the line); save the file as UTF-8"
        return
    c = FileConnector(p, skip_invalid=True)
    pool = c.pull()
    assert pool.ids == ["1", "3"] and pool.texts[0] == "café ok"
    assert len(c.skipped) == 1 and c.skipped[0].startswith(f"{p}:2: not UTF-8 text")


@pytest.mark.parametrize("skip", [False, True])
def test_csv_line_not_utf8_is_reported_by_line_or_skipped(tmp_path, skip):
    p = tmp_path / "tasks.csv"
    p.write_bytes(b'id,text\n1,"multi\nline ok"\n2,na\xefve\n3,fine\n')
    if not skip:
        with pytest.raises(InputError, match=rf"^{p}:4: not UTF-8 text \(byte 0xef"):
            pull(p)
        return
    c = FileConnector(p, skip_invalid=True)
    pool = c.pull()
    assert pool.ids == ["1", "3"] and pool.texts[0] == "multi\nline ok"
    assert c.skipped[0].startswith(f"{p}:4: not UTF-8 text")


def test_csv_header_not_utf8_is_an_error_even_when_skipping(tmp_path):
    p = tmp_path / "tasks.csv"
    p.write_bytes(b"id,t\xe9xt\n1,a\n")
    with pytest.raises(InputError, match=rf"^{p}:1: the header is not UTF-8 text"):
        pull(p, skip_invalid=True)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_utf8_with_bom_reads_like_without(tmp_path, suffix):
    body = (
        '{"id": "a", "text": "first", "label": "x"}\n{"id": "b", "text": "second"}\n'
        if suffix == ".jsonl"
        else "id,text,label\na,first,x\nb,second,\n"
    )
    plain, bom = tmp_path / f"plain{suffix}", tmp_path / f"bom{suffix}"
    plain.write_text(body, encoding="utf-8")
    bom.write_bytes(codecs.BOM_UTF8 + body.encode())
    a, b = pull(plain), pull(bom)
    assert a.ids == b.ids == ["a", "b"] and a.texts == b.texts and a.labels == b.labels == ["x", None]


def test_utf16_file_is_named_as_such(tmp_path):
    p = tmp_path / "tasks.csv"
    p.write_bytes("id,text\n1,a\n".encode("utf-16"))
    with pytest.raises(InputError, match="UTF-16 or UTF-32 text; save it as UTF-8"):
        pull(p)


def test_cli_non_utf8_exit_3_then_skip_invalid_runs(tmp_path):
    import numpy as np

    p = tmp_path / "tasks.jsonl"
    lines = [
        b'{"id": "t%d", "text": "text number %d", "label": "%s"}' % (i, i, b"ab"[i % 2 : i % 2 + 1])
        if i < 6
        else b'{"id": "t%d", "text": "text number %d"}' % (i, i)
        for i in range(20)
    ]
    lines[9] = b'{"id": "t9", "text": "\xff\xfe broken"}'
    p.write_bytes(b"\n".join(lines) + b"\n")
    cfg = tmp_path / "al.toml"
    cfg.write_text('[file]\nvectors_field = "v"\n')
    # vectors in a column keep the rows aligned whatever is skipped
    rows = []
    for i, line in enumerate(lines):
        if i != 9:
            d = json.loads(line)
            d["v"] = [float(x) for x in np.random.default_rng(i).normal(size=8)]
            rows.append(json.dumps(d).encode())
        else:
            rows.append(line)
    p.write_bytes(b"\n".join(rows) + b"\n")
    before = snapshot(p)
    args = [
        "prioritize",
        "--input",
        p,
        "--output",
        tmp_path / "o.jsonl",
        "--state",
        tmp_path / "s.sqlite",
        "--config",
        cfg,
    ]
    r = cli(args)
    assert r.exit_code == 3 and f"{p}:10: not UTF-8 text (byte 0xff" in r.stderr and "Traceback" not in r.output
    r = cli(args + ["--skip-invalid", "--json"])
    assert r.exit_code == 0, r.output
    assert '"skipped": 1' in r.stdout
    assert snapshot(p) == before


# ------------------------------------------------------------------ CSV dialects and columns
@pytest.mark.parametrize("delim", [";", "\t", "|", ","])
def test_csv_delimiter_is_detected_from_the_header(tmp_path, delim):
    p = tmp_path / "tasks.csv"
    p.write_text(
        f'id{delim}text{delim}label\n1{delim}"hello, world; again"{delim}pos\n2{delim}bye{delim}\n', encoding="utf-8"
    )
    pool = pull(p)
    assert pool.ids == ["1", "2"] and pool.texts[0] == "hello, world; again" and pool.labels == ["pos", None]


def test_excel_style_csv_bom_semicolon_crlf(tmp_path):
    p = tmp_path / "export.csv"
    p.write_bytes(
        codecs.BOM_UTF8 + 'id;text;label\r\n1;Grüße aus Köln;news\r\n2;"quoted; with semicolon";\r\n'.encode()
    )
    pool = pull(p)
    assert pool.ids == ["1", "2"] and pool.texts == ["Grüße aus Köln", "quoted; with semicolon"]


def test_header_without_the_id_column_names_the_columns_found(tmp_path):
    p = tmp_path / "tasks.csv"
    p.write_text("ident,body\n1,hello\n", encoding="utf-8")
    with pytest.raises(InputError) as e:
        pull(p, skip_invalid=True)  # every row would fail: no skipping a whole file
    assert str(e.value).startswith(
        f"{p}: no column 'id' in the header (read with delimiter ','); columns found: 'ident', 'body'."
    )


def test_sniff_delimiter_prefers_comma_on_a_tie():
    assert sniff_delimiter("id,text\n") == ","
    assert sniff_delimiter("id;text;label\n") == ";"
    assert sniff_delimiter("single\n") == ","


# ------------------------------------------------------------------ labels
def test_labels_are_stripped_and_case_variants_warned_once(tmp_path, caplog):
    p = tmp_path / "tasks.csv"
    p.write_text("id,text,label\n1,a, sports \n2,b,Sports\n3,c,sports\n4,d,politics\n5,e,\n", encoding="utf-8")
    lab = tmp_path / "labels.csv"
    lab.write_text("id,label\n5,  politics\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="connectors.files"):
        pool = pull(p, labels=lab)
    assert pool.labels == ["sports", "Sports", "sports", "politics", "politics"]
    warnings = [r.getMessage() for r in caplog.records if "differ only by case" in r.getMessage()]
    assert warnings == [
        f"{p}: labels that differ only by case are kept as separate classes: 'Sports' (1) / "
        "'sports' (2); if they mean the same class, make them identical in the data"
    ]


def test_labels_fixed_entries_are_stripped(tmp_path):
    p = tmp_path / "tasks.jsonl"
    p.write_text('{"id": 1, "text": "a", "label": "pos "}\n', encoding="utf-8")
    assert pull(p, labels_fixed=[" pos", "neg"]).labels == ["pos"]
