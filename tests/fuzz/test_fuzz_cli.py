"""Generated input files and configurations against `al-backend prioritize` (in-process, plus a few real
processes): every run ends with a documented exit code, one clean error line and no traceback; the inputs are
byte-identical afterwards; a failed run writes no output and records no round."""

from __future__ import annotations

import codecs
import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from tests.fuzz import fuzz_settings
from tests.hardening_util import cli, cli_process, rounds_in, snapshot

DOCUMENTED = {0, 2, 3, 4, 6, 73, 75}  # 1 (unexpected) is a bug
CANARY = "fuzz-canary-secret-5e1d"

# ------------------------------------------------------------------ generated values
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["", " ", "\u200b", "sports", "Sports ", "NaN", "null", "é", "\x00"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)
vectors = st.one_of(
    st.lists(st.floats(-5, 5, allow_nan=False, width=32), min_size=4, max_size=4),  # the usual case
    st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=6),
    json_values,
)


@st.composite
def rows(draw):
    row = {}
    if draw(st.booleans()) or draw(st.booleans()):
        row["id"] = draw(st.one_of(st.integers(0, 30), st.text(max_size=6), json_values))
    if draw(st.integers(0, 9)) > 0:
        row["text"] = draw(st.one_of(st.text(min_size=1, max_size=40), json_values))
    if draw(st.booleans()):
        row["label"] = draw(st.one_of(st.sampled_from(["a", "b", " a", "A", ""]), json_values))
    if draw(st.integers(0, 9)) > 0:
        row["v"] = draw(vectors)
    for k in draw(st.lists(st.text(max_size=5), max_size=2)):
        row[k] = draw(json_values)
    return row


def good_row(i: int) -> dict:
    return {
        "id": f"g{i}",
        "text": f"good text {i}",
        "v": [float(i % 3), float(i % 5), 1.0, -float(i % 2)],
        **({"label": "ab"[i % 2]} if i < 4 else {}),
    }


def _json_line(row: dict) -> bytes:
    try:
        return json.dumps(row, allow_nan=True).encode()
    except (TypeError, ValueError):
        return b'{"broken": '


@st.composite
def jsonl_files(draw) -> bytes:
    n_good = draw(st.integers(0, 12))
    lines = [_json_line(good_row(i)) for i in range(n_good)]
    for r in draw(st.lists(rows(), max_size=8)):
        lines.insert(draw(st.integers(0, len(lines))), _json_line(r))
    for junk in draw(st.lists(st.binary(max_size=20), max_size=3)):
        lines.insert(draw(st.integers(0, len(lines))), junk)
    sep = draw(st.sampled_from([b"\n", b"\r\n"]))
    body = sep.join(lines) + draw(st.sampled_from([b"", sep]))
    return draw(st.sampled_from([b"", codecs.BOM_UTF8])) + body


def _cell(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, allow_nan=True, default=str)


@st.composite
def csv_files(draw) -> bytes:
    delim = draw(st.sampled_from([",", ";", "\t", "|"]))
    header = draw(
        st.sampled_from(
            [
                ["id", "text", "label", "v"],
                ["id", "text", "v"],
                ["ident", "body"],
                ["id", "id", "text", "v"],
                [" id ", "text ", "v"],
            ]
        )
    )
    out = [delim.join(header)]
    for i in range(draw(st.integers(0, 10))):
        cells = {
            "id": f"c{i}",
            "ident": f"c{i}",
            "text": f"row {i}",
            "body": "b",
            "label": "ab"[i % 2] if i < 4 else "",
            "v": json.dumps([float(i % 3), 1.0, float(i % 4), 0.5]),
        }
        row = [cells.get(h.strip(), "") for h in header]
        if draw(st.integers(0, 4)) == 0:  # a damaged row
            row = [_cell(draw(json_values)) for _ in range(draw(st.integers(0, len(header) + 1)))]
        out.append(delim.join(f'"{c}"' if (delim in c or '"' in c or "\n" in c) and '"' not in c else c for c in row))
    body = "\n".join(out).encode()
    if draw(st.booleans()):
        pos = draw(st.integers(0, len(body)))
        body = body[:pos] + draw(st.binary(min_size=1, max_size=4)) + body[pos:]
    return draw(st.sampled_from([b"", codecs.BOM_UTF8])) + body


def run_and_check(tmp: Path, name: str, content: bytes, *extra: str) -> None:
    inp = tmp / name
    inp.write_bytes(content)
    cfg = tmp / "al.toml"
    cfg.write_text('[file]\nvectors_field = "v"\n[strategy]\nbatch_size = 3\n')
    out, state = tmp / "ranked.jsonl", tmp / "state" / "s.sqlite"
    before = snapshot(inp, cfg)
    r = cli(["prioritize", "--input", inp, "--output", out, "--state", state, "--config", cfg, *extra])
    event(f"exit {r.exit_code}")
    assert r.exit_code in DOCUMENTED, (r.exit_code, r.output, content)
    assert "Traceback" not in r.output, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), (r.exception, content)
    assert snapshot(inp, cfg) == before
    if r.exit_code != 0:
        assert r.stderr.count("error: ") == 1, r.stderr
        assert not out.exists() and rounds_in(state) == 0, r.output
    else:
        assert out.exists() and rounds_in(state) == 1


@fuzz_settings(20)
@given(content=jsonl_files(), skip=st.booleans())
def test_fuzz_jsonl_files(content, skip):
    tmp = Path(tempfile.mkdtemp(prefix="al-fuzz-"))
    try:
        run_and_check(tmp, "tasks.jsonl", content, *(["--skip-invalid"] if skip else []))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@fuzz_settings(20)
@given(content=csv_files(), skip=st.booleans())
def test_fuzz_csv_files(content, skip):
    tmp = Path(tempfile.mkdtemp(prefix="al-fuzz-"))
    try:
        run_and_check(tmp, "tasks.csv", content, *(["--skip-invalid"] if skip else []))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------ configurations
CONFIG_KEYS = {
    "embedding": ["model", "batch_size", "device", "normalize"],
    "head": ["class_weight", "calibrate", "committee_size"],
    "strategy": ["name", "batch_size", "epsilon", "outlier_quantile", "m_factor", "alpha", "beta", "seed"],
    "seeding": ["n_clusters", "min_labels_per_class", "min_cluster_coverage", "max_labels"],
    "labelstudio": ["api_key", "url", "project"],
    "argilla": ["api_key", "api_url"],
    "server": ["basic_auth_pass", "api_token", "max_body_bytes", "port"],
    "nonsense": ["x"],
}
SECRET_KEYS = {"api_key", "url", "api_url", "basic_auth_pass", "api_token"}
toml_values = st.one_of(
    st.integers(-3, 40),
    st.floats(-2, 2, allow_nan=False),
    st.booleans(),
    st.sampled_from(
        [
            '"margin"',
            '"random"',
            '"kcenter"',
            '"none"',
            '"balanced"',
            '"cpu"',
            '""',
            '"nope"',
            "[1, 2]",
            "nan",
            "inf",
            '"1e400"',
            "2026-01-01",
            "{ a = 1 }",
        ]
    ),
)
secret_values = st.sampled_from(
    [
        f'"{CANARY}"',
        f'"http://u:{CANARY}@127.0.0.1:9"',
        f'["{CANARY}"]',
        f'{{ k = "{CANARY}" }}',
        f'"http://u:{CANARY}@h"',
        "3",
        "[1]",
    ]
)


@st.composite
def toml_configs(draw) -> str:
    lines = []
    for section in draw(st.lists(st.sampled_from(sorted(CONFIG_KEYS)), unique=True, max_size=4)):
        lines.append(f"[{section}]")
        for key in draw(st.lists(st.sampled_from(CONFIG_KEYS[section] + ["unknown_key"]), unique=True, max_size=4)):
            v = draw(secret_values if key in SECRET_KEYS else toml_values)
            lines.append(f"{key} = {str(v).lower() if isinstance(v, bool) else v}")
    if draw(st.integers(0, 9)) == 0:
        lines.insert(
            draw(st.integers(0, len(lines))), draw(st.sampled_from(["[[broken", "key without value", "= 3", "\x00"]))
        )
    return "\n".join(lines) + "\n"


@fuzz_settings(25)
@given(config=toml_configs())
def test_fuzz_configs(config):
    from al_backend.redact import forget_secrets

    forget_secrets()  # each example proves its own secrets are registered and masked
    tmp = Path(tempfile.mkdtemp(prefix="al-fuzz-"))
    try:
        inp = tmp / "tasks.jsonl"
        inp.write_bytes(b"\n".join(_json_line(good_row(i)) for i in range(12)) + b"\n")
        cfg = tmp / "al.toml"
        cfg.write_text('[file]\nvectors_field = "v"\n' + config.replace("[file]", "[file2]"), encoding="utf-8")
        out, state = tmp / "ranked.jsonl", tmp / "s.sqlite"
        before = snapshot(inp, cfg)
        r = cli(["prioritize", "--input", inp, "--output", out, "--state", state, "--config", cfg])
        event(f"exit {r.exit_code}")
        assert r.exit_code in DOCUMENTED, (r.exit_code, r.output, config)
        assert "Traceback" not in r.output and CANARY not in r.output, (r.output, config)
        assert snapshot(inp, cfg) == before
        if r.exit_code != 0:
            assert not out.exists() and rounds_in(state) == 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------ a few real processes
NASTY = {  # name: (content, --skip-invalid?)
    "binary.jsonl": (bytes(range(256)) * 4, True),
    "latin1.csv": ("id;text;label\n1;Café crème;boisson\n".encode("latin-1"), False),
    "nul-header.csv": (b"id,text\x00\n1,a\n", True),
    "deep.jsonl": (b'{"id": 1, "text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n", False),
}


@pytest.mark.parametrize("name", sorted(NASTY))
def test_nasty_files_in_a_real_process(tmp_path, name):
    content, skip = NASTY[name]
    inp = tmp_path / name
    inp.write_bytes(content)
    out = tmp_path / "ranked.jsonl"
    p = cli_process(
        [
            "prioritize",
            "--input",
            inp,
            "--output",
            out,
            "--state",
            tmp_path / "s.sqlite",
            *(["--skip-invalid"] if skip else []),
        ],
        cwd=tmp_path,
        timeout=120,
    )
    assert p.returncode == 3, (p.returncode, p.stderr)
    last = p.stderr.strip().splitlines()[-1]
    assert "Traceback" not in p.stderr and last.startswith("error: ") and str(inp) in last, p.stderr
    assert inp.read_bytes() == content and not out.exists()
