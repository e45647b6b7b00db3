"""Local files, the embedded default: JSONL, CSV or Parquet in; a ranked file out.

Input rows: id, text, optional label, optional metadata (any other columns), optional vector.
Labels arrive by re-reading the file, or from a separate labels file (id, label) that overrides it.
Output: one row per unlabeled task, best first, with rank, priority and every score component; written to
a temporary file and renamed, so a reader never sees half a ranking.
"""

from __future__ import annotations

import codecs
import csv
import itertools
import json
import logging
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from al_backend.errors import InputError, WriteError
from al_backend.pool import Pool, Ranking, check_text

from .base import ConnectorBase, OnChunk, PushReport

log = logging.getLogger(__name__)

FORMATS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}


def detect_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InputError(f"{path}: unknown file type {path.suffix!r}; use .jsonl, .csv or .parquet")
    return fmt


def _decoded_lines(path: Path, bad: dict[int, str]) -> Iterator[str]:
    """The file's lines decoded as UTF-8, a byte-order mark at the start dropped. A line that is not UTF-8
    is recorded in `bad` (line number -> why) and yielded with replacement characters, so a CSV parser keeps
    its place and the caller can report (or skip) that line."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if lineno == 1:
                if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
                    raise InputError(
                        f"{path}: the file is UTF-16 or UTF-32 text; save it as UTF-8 (with or without BOM)"
                    )
                if raw.startswith(codecs.BOM_UTF8):
                    raw = raw[len(codecs.BOM_UTF8) :]
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as e:
                bad[lineno] = (
                    f"not UTF-8 text (byte 0x{raw[e.start]:02x} at byte {e.start + 1} of the line); "
                    "save the file as UTF-8"
                )
                yield raw.decode("utf-8", errors="replace")


CSV_DELIMITERS = (",", ";", "\t", "|")


def sniff_delimiter(header_line: str) -> str:
    """The delimiter that splits the header into the most columns (',' on a tie): spreadsheets in many locales
    save CSV with ';'. Only the header is looked at, so commas or semicolons inside texts do not mislead it."""
    best, best_n = ",", 1
    for d in CSV_DELIMITERS:
        try:
            n = len(next(csv.reader([header_line], delimiter=d)))
        except (csv.Error, StopIteration):
            continue
        if n > best_n:
            best, best_n = d, n
    return best


def _missing_columns(path: Path, header: list[str], required: tuple[str, ...], delimiter: str | None = None) -> None:
    missing = [c for c in required if c not in header]
    if missing:
        found = ", ".join(repr(h) for h in header) or "none"
        how = f" (read with delimiter {delimiter!r})" if delimiter else ""
        raise InputError(
            f"{path}: no column {missing[0]!r} in the header{how}; columns found: {found}. "
            "Rename the column, or set [file] id_field / text_field to the column's name"
        )


def read_rows(path: Path, required: tuple[str, ...] = ()) -> Iterator[tuple[str, dict[str, Any]]]:
    """(location, row) for every row; location is 'file:line' for messages. A bad row is yielded as an
    InputError in place of the dict (the caller stops or skips it). `required`: columns a CSV or Parquet
    header must have (checked once, with a message naming the columns found)."""
    if path.is_dir():
        raise InputError(f"input {path} is a directory, not a file; pass a .jsonl, .csv or .parquet file")
    if not path.is_file():
        raise InputError(f"input file {path} does not exist")
    fmt = detect_format(path)
    bad: dict[int, str] = {}
    if fmt == "jsonl":
        for lineno, line in enumerate(_decoded_lines(path, bad), 1):
            if lineno in bad:
                yield f"{path}:{lineno}", InputError(f"{path}:{lineno}: {bad[lineno]}")  # type: ignore[misc]
                continue
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                yield f"{path}:{lineno}", InputError(f"{path}:{lineno}: broken JSON line ({e.msg} at column {e.colno})")  # type: ignore[misc]
                continue
            except RecursionError:
                yield f"{path}:{lineno}", InputError(f"{path}:{lineno}: JSON nested too deeply")  # type: ignore[misc]
                continue
            if not isinstance(row, dict):
                yield (
                    f"{path}:{lineno}",
                    InputError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}"),
                )  # type: ignore[misc]
                continue
            yield f"{path}:{lineno}", row
    elif fmt == "csv":
        lines = _decoded_lines(path, bad)
        first = next(lines, None)
        if first is None:
            return
        if 1 in bad:
            raise InputError(f"{path}:1: the header is {bad[1]}")
        delimiter = sniff_delimiter(first)
        reader = csv.reader(itertools.chain([first], lines), delimiter=delimiter)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            return
        except csv.Error as e:
            raise InputError(f"{path}:1: unreadable CSV header ({e})") from None
        if required:
            _missing_columns(path, header, required, delimiter)
        while True:
            before = reader.line_num
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                yield f"{path}:{reader.line_num}", InputError(f"{path}:{reader.line_num}: unreadable CSV row ({e})")  # type: ignore[misc]
                continue
            lineno = reader.line_num
            broken = [n for n in range(before + 1, lineno + 1) if n in bad]
            if broken:
                yield f"{path}:{broken[0]}", InputError(f"{path}:{broken[0]}: {bad[broken[0]]}")  # type: ignore[misc]
                continue
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                yield (
                    f"{path}:{lineno}",
                    InputError(  # type: ignore[misc]
                        f"{path}:{lineno}: CSV row has {len(row)} fields, the header has {len(header)}"
                    ),
                )
                continue
            yield f"{path}:{lineno}", dict(zip(header, row))
    else:
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as e:
            raise InputError(f"{path}: cannot read Parquet ({e})") from None
        if required:
            _missing_columns(path, list(table.column_names), required)
        for i, row in enumerate(table.to_pylist(), 1):
            yield f"{path}:row {i}", row


def warn_case_variants(labels: list[str | None], source: str) -> dict[str, list[str]]:
    """One warning line when labels differ only by case ('Sports' and 'sports'): they stay separate classes
    (al-backend does not guess which spelling is right), so the user should know. Returns the groups."""
    counts: dict[str, dict[str, int]] = {}
    for lab in labels:
        if lab is not None:
            variants = counts.setdefault(lab.casefold(), {})
            variants[lab] = variants.get(lab, 0) + 1
    groups = {k: sorted(v) for k, v in counts.items() if len(v) > 1}
    if groups:
        shown = "; ".join(" / ".join(f"{lab!r} ({counts[k][lab]})" for lab in v) for k, v in sorted(groups.items()))
        log.warning(
            "%s: labels that differ only by case are kept as separate classes: %s; "
            "if they mean the same class, make them identical in the data",
            source,
            shown,
        )
    return groups


class FileConnector(ConnectorBase):
    name = "file"

    def __init__(
        self,
        input: str | Path,
        output: str | Path | None = None,
        *,
        labels: str | Path | None = None,
        id_field: str = "id",
        text_field: str = "text",
        label_field: str = "label",
        vectors: str | Path | None = None,
        vectors_field: str | None = None,
        labels_fixed: list[str] | None = None,
        skip_invalid: bool = False,
    ):
        if not input:
            raise InputError("the file source needs --input PATH (a .jsonl, .csv or .parquet file)")
        self.input = Path(input)
        self.output = Path(output) if output else None
        self.labels_path = Path(labels) if labels else None
        self.id_field, self.text_field, self.label_field = id_field, text_field, label_field
        self.vectors_path = Path(vectors) if vectors else None
        self.vectors_field = vectors_field or None
        self.labels_fixed = [str(x).strip() for x in labels_fixed] if labels_fixed else None
        self.skip_invalid = skip_invalid
        self.skipped: list[str] = []

    @classmethod
    def from_config(cls, config, **overrides: Any) -> FileConnector:
        f = config.file
        kwargs: dict[str, Any] = dict(
            input=f.input,
            output=f.output or None,
            labels=f.labels or None,
            id_field=f.id_field,
            text_field=f.text_field,
            label_field=f.label_field,
            vectors=f.vectors or None,
            vectors_field=f.vectors_field or None,
            labels_fixed=f.labels_fixed or None,
        )
        kwargs.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**kwargs)

    def describe(self) -> str:
        return f"file {self.input}" + (f" -> {self.output}" if self.output else "")

    def label_set(self) -> list[str] | None:
        return self.labels_fixed

    # ---------------------------------------------------------------- pull
    def _bad(self, err: InputError) -> None:
        if not self.skip_invalid:
            raise err
        self.skipped.append(str(err))
        log.warning("skipping: %s", err)

    def pull(self) -> Pool:
        self.skipped = []
        ids: list[str] = []
        texts: list[str] = []
        labels: list[str | None] = []
        metas: list[dict[str, Any]] = []
        vecs: list[np.ndarray] = []
        rows_kept: list[int] = []
        seen: dict[str, str] = {}
        fixed = set(self.labels_fixed) if self.labels_fixed else None
        for row_index, (where, row) in enumerate(read_rows(self.input, required=(self.id_field, self.text_field))):
            if isinstance(row, InputError):
                self._bad(row)
                continue
            try:
                tid, text, label, meta, vec = self._parse(row, where, fixed)
                if tid in seen:
                    raise InputError(f"{where}: duplicate id {tid!r} (first at {seen[tid]})")
            except InputError as e:
                self._bad(e)
                continue
            seen[tid] = where
            ids.append(tid)
            texts.append(text)
            labels.append(label)
            metas.append(meta)
            rows_kept.append(row_index)
            if vec is not None:
                vecs.append(vec)
        if not ids:
            raise InputError(
                f"{self.input}: no valid tasks" + (f" ({len(self.skipped)} skipped)" if self.skipped else "")
            )
        vectors = None
        if self.vectors_field:
            dims = {v.shape[0] for v in vecs}
            if len(dims) > 1:
                raise InputError(f"{self.input}: vectors in {self.vectors_field!r} have different sizes {sorted(dims)}")
            vectors = np.stack(vecs).astype(np.float32)
        elif self.vectors_path:
            from al_backend.embedding import load_vectors

            n_rows = sum(1 for _ in read_rows(self.input))
            all_vectors = load_vectors(self.vectors_path, n_rows, f"the {n_rows} rows of {self.input}")
            vectors = all_vectors[np.asarray(rows_kept, dtype=np.int64)]
        if self.labels_path:
            self._apply_labels_file(ids, labels, fixed)
        if self.skipped:
            log.warning("%s: skipped %d invalid rows", self.input, len(self.skipped))
        warn_case_variants(labels, str(self.input))
        return Pool(ids=ids, texts=texts, labels=labels, meta=metas, vectors=vectors, source=str(self.input))

    def _parse(self, row: dict[str, Any], where: str, fixed: set[str] | None):
        if self.id_field not in row or row[self.id_field] in (None, ""):
            raise InputError(f"{where}: missing id (field {self.id_field!r})")
        raw_id = row[self.id_field]
        if isinstance(raw_id, float) and raw_id.is_integer():
            raw_id = int(raw_id)
        if not isinstance(raw_id, (str, int)) or isinstance(raw_id, bool):
            raise InputError(f"{where}: id must be a string or integer, got {type(raw_id).__name__}")
        tid = str(raw_id)
        if self.text_field not in row:
            raise InputError(f"{where}: task {tid!r} has no text (field {self.text_field!r})")
        text = row[self.text_field]
        check_text(text, f"{where}: task {tid!r}")
        label = row.get(self.label_field)
        if label is not None and not (isinstance(label, float) and math.isnan(label)):
            if not isinstance(label, (str, int)) or isinstance(label, bool):
                raise InputError(f"{where}: task {tid!r} label must be a string, got {type(label).__name__}")
            label = str(label).strip() or None
        else:
            label = None
        if label is not None and fixed is not None and label not in fixed:
            raise InputError(f"{where}: task {tid!r} has unknown label {label!r} (allowed: {sorted(fixed)})")
        vec = None
        if self.vectors_field:
            raw = row.get(self.vectors_field)
            if isinstance(raw, str):
                try:
                    raw = json.loads(raw)
                except json.JSONDecodeError:
                    raise InputError(f"{where}: task {tid!r} vector is not a JSON list") from None
            if not isinstance(raw, (list, tuple)) or not raw:
                raise InputError(f"{where}: task {tid!r} has no vector in field {self.vectors_field!r}")
            try:
                vec = np.asarray(raw, dtype=np.float32)
            except (TypeError, ValueError):
                raise InputError(f"{where}: task {tid!r} vector holds non-numbers") from None
            if vec.ndim != 1 or not np.isfinite(vec).all():
                raise InputError(f"{where}: task {tid!r} vector contains NaN, infinity or nesting")
        skip = {self.id_field, self.text_field, self.label_field, self.vectors_field}
        meta = {k: v for k, v in row.items() if k not in skip}
        return tid, text, label, meta, vec

    def _apply_labels_file(self, ids: list[str], labels: list[str | None], fixed: set[str] | None) -> None:
        index = {tid: i for i, tid in enumerate(ids)}
        for where, row in read_rows(self.labels_path):  # type: ignore[arg-type]
            if isinstance(row, InputError):
                raise row
            tid = str(row.get(self.id_field, row.get("id", "")))
            label = row.get(self.label_field, row.get("label"))
            if tid not in index:
                raise InputError(f"{where}: label for unknown id {tid!r}")
            if label is None or not str(label).strip():
                continue
            label = str(label).strip()  # "sports " from a spreadsheet is "sports"
            if fixed is not None and label not in fixed:
                raise InputError(f"{where}: task {tid!r} has unknown label {label!r} (allowed: {sorted(fixed)})")
            labels[index[tid]] = label

    # ---------------------------------------------------------------- push
    def push(self, ranking: Ranking, start_chunk: int = 0, on_chunk: OnChunk | None = None) -> PushReport:
        """One chunk: the whole file, replaced atomically (a resumed push writes it again)."""
        if self.output is None:
            raise InputError("the file source needs --output PATH to write the ranking")
        try:
            write_ranking(ranking, self.output)
        except OSError as e:
            raise WriteError(
                f"cannot write the output {self.output}: {e.strerror or e}; the round is recorded and "
                "the next run writes it (its push is marked unfinished)"
            ) from None
        if on_chunk is not None:
            on_chunk(1, 1)
        return PushReport(pushed=len(ranking), target=str(self.output))


def write_ranking(ranking: Ranking, path: Path) -> None:
    """Write atomically: temp file in the same directory, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = detect_format(path)
    rows = ranking.rows()
    for r in rows:
        r["round"] = ranking.round_id
        r["strategy"] = ranking.strategy
        r["model_version"] = ranking.model_version
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        if fmt == "jsonl":
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                for r in rows:
                    f.write(json.dumps(r) + "\n")
                f.flush()
                os.fsync(f.fileno())
        elif fmt == "csv":
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
                fields = list(rows[0]) if rows else ["id", "rank", "priority"]
                writer = csv.DictWriter(f, fieldnames=fields)
                writer.writeheader()
                writer.writerows(rows)
                f.flush()
                os.fsync(f.fileno())
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            os.close(fd)
            pq.write_table(pa.Table.from_pylist(rows), tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
