"""Argilla 2.8 connector: pull pending records and submitted responses, push priorities and suggestions.

Built on the argilla SDK; raw endpoints only where the SDK has no call:
- `PUT /api/v1/datasets/{id}/records/bulk` without `fields` (every SDK update must resend the fields),
- `POST /api/v1/datasets/{id}/records/search` with `sort` (the SDK cannot sort).

What a push writes on each pending record, so annotators can sort their queue by `al_priority` descending:
- metadata `al_priority` (Float, higher = ask first), `al_rank` (1 = first), `al_round`, `al_cluster`,
  merged into the record's own metadata (Argilla replaces metadata whole, so the complete dict is sent);
- a suggestion for the label question (predicted label, score = its probability, agent = model version)
  once a model exists;
- optionally the embedding in a vector field (`vector_field`), for Argilla's "find similar".

The round's stopping decision is kept in the dataset's guidelines, in a block between the HTML comments
`<!-- al-backend:stopping -->` and `<!-- /al-backend:stopping -->` (appended once, then rewritten only when
it changes); the rest of the guidelines is the user's and is never changed.

Labels: a record is labeled when it is `completed` (its TaskDistribution reached) and has submitted
responses to the label question. With several annotators the label is the majority; every submitted label is
kept in `meta["annotation_labels"]` and a disagreement flagged in `meta["disagreement"]`, so the engine
records it in the state. A tie goes to the label listed first in the question, flagged `meta["tie"]`.
Records still `pending` are the unlabeled pool.
"""

from __future__ import annotations

import logging
import math
import re
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from al_backend.errors import ConfigError, ConnectorError
from al_backend.pool import Pool, Ranking

from .base import ConnectorBase, OnChunk, PushReport
from .stopping_note import stopping_summary

log = logging.getLogger(__name__)

BULK_MAX = 500  # the server rejects larger bulks
SEARCH_LIMIT = 1000  # the search endpoint's largest page
# metadata property -> Argilla type, written on every pending record
AL_METADATA = {"al_priority": "float", "al_rank": "integer", "al_round": "integer", "al_cluster": "integer"}
_AGENT_BAD = re.compile(r"[^a-zA-Z0-9\-_:./ ]")
GUIDELINES_MAX = 10000  # the server's limit on a dataset's guidelines
NOTE_BEGIN = "<!-- al-backend:stopping -->"  # the guidelines' block al-backend owns (the stopping note)
NOTE_END = "<!-- /al-backend:stopping -->"
# the first complete block: a begin marker, then anything but another begin marker, then an end marker
_NOTE_BLOCK = re.compile(
    re.escape(NOTE_BEGIN) + r"(?:(?!" + re.escape(NOTE_BEGIN) + r").)*?" + re.escape(NOTE_END), re.S
)


def _sdk():
    """Import the SDK without letting it pick up ARGILLA_* from the environment behind our back."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import argilla as rg
    return rg


class _ApiKeyAuth:
    def __init__(self, api_key: str):
        self._key = api_key

    def headers(self, client) -> dict[str, str]:
        return {"X-Argilla-Api-Key": self._key}

    def refresh(self, client) -> bool:
        return False

    def __repr__(self) -> str:  # never show the key
        return "_ApiKeyAuth(***)"


class _DropSdkLogin(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Logged in as" not in str(record.msg)


class ArgillaConnector(ConnectorBase):
    """One Argilla dataset. `text_field` / `question` are inferred when the dataset has exactly one
    text field / one single-label question; `vector_field` (optional) receives the embeddings, from the
    embedder handed over by `bind()` (the round's: every text is a cache hit)."""

    name = "argilla"

    def __init__(
        self,
        api_url: str,
        api_key: str,
        dataset: str,
        workspace: str | None = None,
        *,
        text_field: str | None = None,
        question: str | None = None,
        vector_field: str | None = None,
        timeout: float = 120.0,
        retries: int = 3,
    ):
        if not api_url:
            raise ConfigError("Argilla URL missing: set ARGILLA_API_URL or [argilla] api_url")
        if not api_key:
            raise ConfigError(
                "Argilla API key missing: set ARGILLA_API_KEY or [argilla] api_key (an owner or admin key)"
            )
        if not dataset:
            raise ConfigError("Argilla dataset missing: pass --dataset NAME or set [argilla] dataset")
        self.api_url = api_url.rstrip("/")
        self._api_key = api_key
        self.dataset_name = dataset
        self.workspace_name = workspace or None
        self.resolved_workspace = self.workspace_name
        self.text_field_name: str | None = text_field or None
        self.question_name: str | None = question or None
        self.vector_field_name = vector_field or None
        self.timeout = timeout
        self.retries = retries
        self._http: Any = None  # HttpClient once connected
        self._client: Any = None
        self._dataset: Any = None
        self._question: Any = None
        self._text_field: Any = None
        # filled by pull(): pool id -> (server record id, the record's own metadata, current suggestion)
        self._records: dict[str, tuple[str, dict[str, Any], tuple | None]] = {}
        self._texts: dict[str, str] = {}
        self.skipped: list[str] = []
        self.last_pull: dict[str, int] = {}

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, config, **overrides: Any) -> ArgillaConnector:
        """From the typed Config's [argilla] section (ARGILLA_API_URL / ARGILLA_API_KEY already applied)."""
        section = config.argilla
        kwargs: dict[str, Any] = dict(
            api_url=section.api_url,
            api_key=section.api_key,
            dataset=section.dataset,
            workspace=section.workspace or None,
            text_field=section.text_field or None,
            question=section.question or None,
            vector_field=getattr(section, "vector_field", "") or None,
            timeout=getattr(section, "timeout", 120.0),
            retries=getattr(section, "retries", 3),
        )
        kwargs.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**kwargs)

    def describe(self) -> str:
        ws = f" in workspace {self.workspace_name!r}" if self.workspace_name else ""
        return f"argilla dataset {self.dataset_name!r}{ws} at {self.api_url}"

    def __repr__(self) -> str:
        return f"ArgillaConnector({self.describe()})"

    # ------------------------------------------------------------------ connection
    @property
    def http(self):
        if self._http is None:
            from .http import HttpClient

            self._http = HttpClient(
                self.api_url,
                service="Argilla",
                auth=_ApiKeyAuth(self._api_key),
                timeout=self.timeout,
                retries=self.retries,
            )
        return self._http

    def _request(self, method: str, path: str, *, what: str, **kw: Any):
        from .http import HttpError

        try:
            return self.http.request(method, path, what=what, **kw)
        except HttpError as e:
            if e.status == 401:
                raise ConnectorError(
                    f"Argilla at {self.api_url} rejected the API key (HTTP 401 on {what}): check ARGILLA_API_KEY "
                    "or [argilla] api_key (the key of an owner or admin: Settings > My settings in the Argilla UI)"
                ) from None
            if e.status == 403:
                raise ConnectorError(
                    f"Argilla at {self.api_url} refused {what} (HTTP 403): al-backend needs an owner or admin "
                    "API key; annotator keys cannot search or update records"
                ) from None
            raise

    def connect(self):
        """Check URL and key, then open the SDK client. Idempotent."""
        if self._client is not None:
            return self._client
        from .http import HttpError

        not_argilla = (
            f"{self.api_url} does not look like an Argilla 2.x server (GET /api/v1/me answered {{}}); "
            "check ARGILLA_API_URL (the server's base URL, e.g. http://localhost:6900, without /api)"
        )
        try:
            reply = self._request("GET", "/api/v1/me", what="check the API key")
        except HttpError as e:
            if e.status in (404, 405):
                raise ConnectorError(not_argilla.format(f"HTTP {e.status}")) from None
            raise
        try:
            me = reply.json()
        except ValueError:
            me = None
        if not isinstance(me, dict) or "username" not in me:
            kind = reply.headers.get("content-type", "?").split(";")[0]
            raise ConnectorError(not_argilla.format(f"{reply.status_code} with {kind}, not a user"))
        if me.get("role") == "annotator":
            raise ConnectorError(
                f"the API key for {self.api_url} belongs to annotator {me.get('username')!r}: al-backend needs an "
                "owner or admin key to search and update records"
            )
        rg = _sdk()
        # the SDK logs "Logged in as ..." on the root logger at INFO; we said who we are above already
        quiet = _DropSdkLogin()
        logging.getLogger().addFilter(quiet)
        try:
            self._client = rg.Argilla(
                api_url=self.api_url, api_key=self._api_key, timeout=max(1, int(self.timeout)), retries=self.retries
            )
        except Exception as e:  # the SDK raises its own errors and httpx's
            raise ConnectorError(f"Argilla SDK could not connect to {self.api_url}: {type(e).__name__}: {e}") from None
        finally:
            logging.getLogger().removeFilter(quiet)
        log.debug("%s: connected as %s (%s)", self.describe(), me.get("username"), me.get("role"))
        return self._client

    def _sdk_call(self, what: str, fn: Callable[[], Any], *, idempotent: bool = True) -> Any:
        """Run an SDK call, turning its exceptions into a ConnectorError that names the call.

        The SDK itself retries nothing but refused connections: connection errors, timeouts, 429 and 5xx are
        retried here with the HTTP helper's backoff (a call that creates something only when it never
        reached the server), like every raw call."""
        attempt = 0
        while True:
            attempt += 1
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    return fn()
            except ConnectorError:
                raise
            except Exception as e:
                transient, never_sent = _transient(e)
                if transient and (idempotent or never_sent) and attempt <= self.retries:
                    wait = self.http.delay(attempt)
                    log.info(
                        "Argilla: %s failed (%s); retry %d/%d in %.1f s", what, _reason(e), attempt, self.retries, wait
                    )
                    time.sleep(wait)
                    continue
                tries = f" after {attempt} attempts" if attempt > 1 else ""
                if never_sent:
                    raise ConnectorError(
                        f"Argilla: {what} failed{tries}: cannot connect to {self.api_url} ({_reason(e)}); "
                        "is the server running and the URL right?"
                    ) from None
                raise ConnectorError(f"Argilla at {self.api_url}: {what} failed{tries}: {_reason(e)}") from None

    @property
    def dataset(self):
        """The SDK Dataset, found by name (and workspace); ConnectorError naming what exists when missing."""
        if self._dataset is not None:
            return self._dataset
        client = self.connect()
        workspaces = self._sdk_call("list workspaces", lambda: list(client.workspaces))
        names = sorted(w.name for w in workspaces)
        if self.workspace_name:
            ws = next((w for w in workspaces if w.name == self.workspace_name), None)
            if ws is None:
                raise ConnectorError(
                    f"Argilla workspace {self.workspace_name!r} not found at {self.api_url} "
                    f"(workspaces visible to this key: {', '.join(names) or 'none'})"
                )
            candidates = [ws]
        else:
            candidates = workspaces
        found = []
        for ws in candidates:
            for ds in self._sdk_call(f"list datasets of workspace {ws.name!r}", _datasets_of(ws)):
                if ds.name == self.dataset_name:
                    found.append((ws, ds))
        if not found:
            where = (
                f"workspace {self.workspace_name!r}" if self.workspace_name else f"any workspace ({', '.join(names)})"
            )
            existing = sorted(d.name for ws in candidates for d in self._sdk_call("list datasets", _datasets_of(ws)))
            raise ConnectorError(
                f"Argilla dataset {self.dataset_name!r} not found in {where} at {self.api_url} "
                f"(datasets there: {', '.join(existing[:20]) or 'none'})"
            )
        if len(found) > 1:
            raise ConnectorError(
                f"Argilla dataset {self.dataset_name!r} exists in several workspaces "
                f"({', '.join(ws.name for ws, _ in found)}): pass --workspace"
            )
        ws, _ = found[0]
        self.resolved_workspace = ws.name  # describe() keeps the configured name: the runner keys progress by it
        # datasets listed from a workspace come without settings: load the dataset itself
        self._dataset = self._sdk_call(
            f"load dataset {self.dataset_name!r}", lambda: client.datasets(name=self.dataset_name, workspace=ws.name)
        )
        ds = self._dataset
        self._resolve_settings()
        return ds

    def _resolve_settings(self) -> None:
        ds = self._dataset
        settings = ds.settings
        text_fields = [f.name for f in settings.fields if _kind(f) == "text"]
        if self.text_field_name:
            all_fields = [f.name for f in settings.fields]
            if self.text_field_name not in all_fields:
                raise ConnectorError(
                    f"{self.describe()}: no field {self.text_field_name!r} (fields: {', '.join(all_fields)}); "
                    "set [argilla] text_field"
                )
            self._text_field = self.text_field_name
        elif len(text_fields) == 1:
            self._text_field = text_fields[0]
        else:
            raise ConnectorError(
                f"{self.describe()}: {'several' if text_fields else 'no'} text fields "
                f"({', '.join(text_fields) or 'none'}); name the one to embed with [argilla] text_field"
            )
        questions = list(settings.questions)
        label_questions = [q for q in questions if _kind(q) == "label_selection"]
        if self.question_name:
            q = next((q for q in questions if q.name == self.question_name), None)
            if q is None:
                raise ConnectorError(
                    f"{self.describe()}: no question {self.question_name!r} "
                    f"(questions: {', '.join(x.name for x in questions) or 'none'}); set [argilla] question "
                    "to a single-label question"
                )
            if _kind(q) != "label_selection":
                raise ConnectorError(
                    f"{self.describe()}: question {q.name!r} is a {_kind(q)} question; al-backend needs a "
                    "single-label question (rg.LabelQuestion)"
                )
        elif len(label_questions) == 1:
            q = label_questions[0]
        else:
            raise ConnectorError(
                f"{self.describe()}: {'several' if label_questions else 'no'} single-label questions "
                f"({', '.join(x.name for x in label_questions) or 'none'}); "
                + ("name one with [argilla] question" if label_questions else "add an rg.LabelQuestion to the dataset")
            )
        self._question = q
        self.question_name = q.name
        self.text_field_name = self._text_field

    # ------------------------------------------------------------------ protocol
    def label_set(self) -> list[str] | None:
        return list(self.dataset.settings.questions[self.question_name].labels)

    def pull(self) -> Pool:
        """Every record: completed ones with their majority label, pending ones unlabeled."""
        _ = self.dataset  # look the dataset up first: a missing one is a clear error before any paging
        labels_order = {lab: i for i, lab in enumerate(self.label_set() or [])}
        ids: list[str] = []
        texts: list[str] = []
        labels: list[str | None] = []
        meta: list[dict[str, Any]] = []
        self._records = {}
        self._texts = {}
        self.skipped = []
        counts: Counter[str] = Counter()
        for rec in self._iter_records():
            rid = str(rec.id if rec.id is not None else rec._server_id)
            text = rec.fields.get(self._text_field) if hasattr(rec.fields, "get") else None
            if not isinstance(text, str) or not text.strip():
                self.skipped.append(rid)
                log.warning("%s: record %s has no text in field %r; skipped", self.describe(), rid, self._text_field)
                continue
            own = dict(rec.metadata or {})
            current = None
            for s in rec.suggestions:
                if s.question_name == self.question_name:
                    current = (s.value, s.score, s.agent)
            self._records[rid] = (str(rec._server_id), own, current)
            self._texts[rid] = text
            submitted = [
                r.value
                for r in rec.responses
                if r.question_name == self.question_name and _status(r.status) == "submitted" and r.value is not None
            ]
            status = str(getattr(rec.status, "value", rec.status))
            row_meta: dict[str, Any] = {"argilla_id": str(rec._server_id), "status": status, "metadata": own}
            if submitted:
                row_meta["annotation_labels"] = list(submitted)
                row_meta["disagreement"] = len(set(submitted)) > 1
            if status == "pending":
                label = None
                counts["pending"] += 1
            elif submitted:
                label, tie = majority(submitted, labels_order)
                if tie:
                    row_meta["tie"] = True
                counts["labeled"] += 1
                counts["disagreements"] += int(row_meta["disagreement"])
            else:  # completed without an answer to our question (other questions answered): neither
                counts["completed_without_label"] += 1
                continue
            ids.append(rid)
            texts.append(text)
            labels.append(label)
            meta.append(row_meta)
        self.last_pull = dict(counts)
        log.info(
            "%s: %d pending, %d labeled (%d with disagreement), %d skipped",
            self.describe(),
            counts["pending"],
            counts["labeled"],
            counts["disagreements"],
            len(self.skipped),
        )
        return Pool(ids=ids, texts=texts, labels=labels, meta=meta, source=self.describe())

    def _iter_records(self) -> list[Any]:
        """Every record with its responses and suggestions (read whole, so a retry starts from the first page)."""
        ds = self.dataset
        return self._sdk_call(
            f"read the records of dataset {self.dataset_name!r}",
            lambda: list(ds.records(batch_size=500, with_responses=True, with_suggestions=True, with_vectors=False)),
        )

    def push(self, ranking: Ranking, start_chunk: int = 0, on_chunk: OnChunk | None = None) -> PushReport:
        """Write al_priority / al_rank / al_round / al_cluster (+ suggestion, + vector) on every ranked record.

        With a vector field configured, the records' embeddings (from the bound embedder) go to it. Records whose
        metadata and suggestion already hold these values are not rewritten, so pushing a ranking again only
        writes what an interrupted push missed: `start_chunk` (the runner's resume point) is accepted but not
        needed, the bulks are formed from what is still missing. `on_chunk(done, total)` after each bulk.
        """
        ds = self.dataset
        if not self._records:
            self.pull()  # the record ids and their own metadata are needed to merge
        self.ensure_metadata_properties()
        question_id = str(self.dataset.settings.questions[self.question_name].id)
        vec = self._vectors_for(ranking)
        agent = clean_agent(ranking.model_version)
        items, written, unchanged, missing = [], [], 0, []
        for i, rid in enumerate(ranking.ids):
            known = self._records.get(rid)
            if known is None:
                missing.append(rid)
                continue
            server_id, own, current = known
            metadata = dict(own)
            metadata.update(
                al_priority=float(ranking.priority[i]),
                al_rank=i + 1,
                al_round=int(ranking.round_id),
                al_cluster=int(ranking.cluster[i]),
            )
            item: dict[str, Any] = {"id": server_id, "metadata": metadata}
            suggestion = None
            predicted = ranking.predicted[i]
            conf = float(ranking.confidence[i])
            if predicted is not None and math.isfinite(conf):
                suggestion = (predicted, round(conf, 6), agent)
                item["suggestions"] = [
                    {"question_id": question_id, "value": predicted, "score": suggestion[1], "agent": agent}
                ]
            if vec is not None:
                item["vectors"] = {self.vector_field_name: [float(x) for x in vec[i]]}
            if vec is None and metadata == own and (suggestion is None or _same_suggestion(suggestion, current)):
                unchanged += 1
                continue
            items.append(item)
            written.append((rid, item))
        if missing:
            # deleted since the round ranked them (or a resumed push of an older round): nothing to prioritise
            log.warning(
                "%s: %d ranked records are no longer in the dataset (first: %r); skipped",
                self.describe(),
                len(missing),
                missing[0],
            )
        chunks = [items[s : s + BULK_MAX] for s in range(0, len(items), BULK_MAX)]
        from .http import HttpError

        for n, chunk in enumerate(chunks, 1):
            try:
                self._request(
                    "PUT",
                    f"/api/v1/datasets/{ds.id}/records/bulk",
                    json_body={"items": chunk},
                    what=f"update records (bulk {n}/{len(chunks)}, {len(chunk)} records)",
                    timeout=max(self.timeout, 300),
                )
            except HttpError as e:
                if e.status == 422:
                    raise ConnectorError(
                        f"{e}. A record may have been deleted or a metadata property changed since the pull: "
                        f"run the round again ({n - 1} of {len(chunks)} bulks were written)"
                    ) from None
                raise
            if on_chunk is not None:
                on_chunk(n, len(chunks))
        if on_chunk is not None and not chunks:
            on_chunk(1, 1)
        # what we wrote is now the records' state: a second push of the same ranking writes nothing
        for rid, item in written:
            sid, _, current = self._records[rid]
            sug = item.get("suggestions")
            self._records[rid] = (
                sid,
                item["metadata"],
                (sug[0]["value"], sug[0]["score"], sug[0]["agent"]) if sug else current,
            )
        log.info("%s: %d records updated, %d already up to date", self.describe(), len(items), unchanged)
        details: dict[str, Any] = {
            "unchanged": unchanged,
            "chunks": len(chunks),
            "round": int(ranking.round_id),
            "missing": len(missing),
            "suggestions": sum(1 for it in items if "suggestions" in it),
            "vectors": bool(vec is not None),
        }
        note = stopping_summary(ranking.stopping, round_id=ranking.round_id, labels=self.last_pull.get("labeled"))
        if note is not None:
            try:
                if self.update_stopping_note(note):
                    details["stopping_note"] = note
            except (ConnectorError, HttpError) as e:
                # the priorities are written: a note that could not be updated waits for the next round
                log.warning("%s: could not update the stopping note in the guidelines: %s", self.describe(), e)
                details["stopping_note_error"] = str(e)
        return PushReport(pushed=len(items), target=self.describe(), details=details)

    def update_stopping_note(self, note: str) -> bool:
        """Put `note` in the al-backend block of the dataset's guidelines (appended when there is none); the
        rest of the guidelines is left byte for byte. Reads the guidelines fresh (someone may have edited
        them in the UI) and writes only when the text changes; True when it wrote."""
        ds = self.dataset
        current = (
            self._request("GET", f"/api/v1/datasets/{ds.id}", what="read the dataset").json().get("guidelines") or ""
        )
        new = with_note_block(current, note)
        if new == current:
            return False
        if len(new) > GUIDELINES_MAX:
            log.warning(
                "%s: guidelines would exceed Argilla's %d characters with the stopping note; not written",
                self.describe(),
                GUIDELINES_MAX,
            )
            return False
        self._request(
            "PATCH",
            f"/api/v1/datasets/{ds.id}",
            json_body={"guidelines": new},
            what="update the guidelines (stopping note)",
        )
        return True

    # ------------------------------------------------------------------ schema
    def ensure_metadata_properties(self) -> list[str]:
        """Add the al_* metadata properties missing from the dataset; returns the names added."""
        rg = _sdk()
        ds = self.dataset
        existing = {p.name: p for p in ds.settings.metadata}
        added = []
        for name, kind in AL_METADATA.items():
            prop = existing.get(name)
            if prop is not None:
                have = _metadata_kind(prop)
                if have != kind:
                    raise ConnectorError(
                        f"{self.describe()}: metadata property {name!r} exists with type {have!r}, al-backend needs "
                        f"{kind!r}; delete or rename it in the dataset settings"
                    )
                continue
            cls = rg.FloatMetadataProperty if kind == "float" else rg.IntegerMetadataProperty
            new = cls(name=name, title=name, visible_for_annotators=True)
            new.dataset = ds

            def create(new=new):
                new.create()
                ds.settings.metadata.add(new)

            self._sdk_call(f"add metadata property {name!r}", create, idempotent=False)
            added.append(name)
        if added:
            log.info("%s: added metadata properties %s", self.describe(), ", ".join(added))
        return added

    def ensure_vector_field(self, dimensions: int) -> bool:
        """Add the configured vector field when missing; True if added."""
        rg = _sdk()
        ds = self.dataset
        name = self.vector_field_name
        existing = {v.name: v for v in ds.settings.vectors}
        if name in existing:
            dims = existing[name].dimensions
            if dims != dimensions:
                raise ConnectorError(
                    f"{self.describe()}: vector field {name!r} has {dims} dimensions, the embeddings {dimensions}; "
                    "use another [argilla] vector_field"
                )
            return False
        new = rg.VectorField(name=name, dimensions=int(dimensions))
        new.dataset = ds

        def create():
            new.create()
            ds.settings.vectors.add(new)

        self._sdk_call(f"add vector field {name!r}", create, idempotent=False)
        return True

    def _vectors_for(self, ranking: Ranking) -> np.ndarray | None:
        if not self.vector_field_name:
            return None
        vectors = np.asarray(self._embed_from_cache(ranking.ids), dtype=np.float32)
        if vectors.shape[0] != len(ranking):
            raise ConnectorError(f"{self.describe()}: {vectors.shape[0]} vectors for {len(ranking)} ranked records")
        self.ensure_vector_field(int(vectors.shape[1]))
        return vectors

    def _embed_from_cache(self, ids: Sequence[str]) -> np.ndarray:
        """The bound embedder's vectors for these records: the round just embedded their texts, so every
        one is a cache hit and the model is not loaded."""
        if self.embedder is None:
            raise ConnectorError(
                f"{self.describe()}: vector field {self.vector_field_name!r} is configured but no embedder was "
                "bound: call connector.bind(store, embedder) before push() (the runner does)"
            )
        return self.embedder.embed([self._texts[i] for i in ids])

    # ------------------------------------------------------------------ reading back
    def counters(self) -> dict[str, int]:
        """{"submitted": responses submitted over all annotators, "records": records in the dataset,
        "completed": completed records}: one progress call, what watch mode polls."""
        ds = self.dataset
        progress = self._sdk_call("read dataset progress", lambda: ds.progress(with_users_distribution=True))
        submitted = 0
        for user in (progress.get("users") or {}).values():
            for part in ("completed", "pending"):
                submitted += int((user.get(part) or {}).get("submitted", 0))
        return {
            "submitted": submitted,
            "records": int(progress.get("total", 0)),
            "completed": int(progress.get("completed", 0)),
        }

    def search_sorted(
        self, *, status: str | None = "pending", by: str = "al_priority", order: str = "desc"
    ) -> list[str]:
        """Record ids in the order Argilla's search endpoint sorts them by a metadata property
        (what the UI's sort gives annotators)."""
        ds = self.dataset
        body: dict[str, Any] = {"sort": [{"scope": {"entity": "metadata", "metadata_property": by}, "order": order}]}
        if status:
            body["filters"] = {
                "and": [{"type": "terms", "scope": {"entity": "record", "property": "status"}, "values": [status]}]
            }
        out: list[str] = []
        offset = 0
        while True:
            page = self._request(
                "POST",
                f"/api/v1/datasets/{ds.id}/records/search",
                json_body=body,
                params={"offset": offset, "limit": SEARCH_LIMIT},
                what=f"search records sorted by {by}",
                idempotent=True,
            ).json()
            items = page.get("items", [])
            for it in items:
                rec = it["record"]
                out.append(str(rec.get("external_id") or rec["id"]))
            offset += len(items)
            if not items or offset >= int(page.get("total", 0)):
                return out

    def reset(self) -> None:
        """Forget the cached dataset and records (the next call looks everything up again)."""
        self._dataset = None
        self._records = {}
        self._texts = {}

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None


def with_note_block(guidelines: str, note: str) -> str:
    """`guidelines` with the al-backend block (between NOTE_BEGIN and NOTE_END, HTML comments the rendered
    markdown does not show) holding `note`; other complete blocks dropped; the block appended after a blank
    line when there is none. Everything outside the block stays byte for byte."""
    block = f"{NOTE_BEGIN}\n\n**Active learning (al-backend):** {note}\n\n{NOTE_END}"
    found = _NOTE_BLOCK.search(guidelines)
    if found is None:
        if not guidelines.strip():
            return block
        sep = "" if guidelines.endswith("\n\n") else "\n" if guidelines.endswith("\n") else "\n\n"
        return f"{guidelines}{sep}{block}"
    head, tail = guidelines[: found.start()], guidelines[found.end() :]
    return head + block + _NOTE_BLOCK.sub("", tail)


def _datasets_of(ws: Any) -> Callable[[], Any]:
    """The SDK call listing a workspace's datasets, bound to that workspace."""
    return lambda: ws.datasets


def majority(labels: Sequence[str], order: dict[str, int] | None = None) -> tuple[str, bool]:
    """The most frequent label and whether it was a tie; ties go to the label listed first in `order`
    (then alphabetically), so the choice never depends on the order responses arrive in."""
    counts = Counter(labels)
    best = max(counts.values())
    top = [lab for lab, c in counts.items() if c == best]
    order = order or {}
    top.sort(key=lambda lab: (order.get(lab, len(order)), lab))
    return top[0], len(top) > 1


def clean_agent(version: str) -> str:
    """Argilla's suggestion agent accepts letters, digits and -_:./ and space, at most 200 characters."""
    agent = _AGENT_BAD.sub("-", str(version or "al-backend")).strip() or "al-backend"
    return agent[:200]


def _same_suggestion(new: tuple, current: tuple | None) -> bool:
    if current is None:
        return False
    value, score, agent = current
    try:
        return value == new[0] and agent == new[2] and score is not None and abs(float(score) - new[1]) < 1e-9
    except (TypeError, ValueError):
        return False


def _kind(obj: Any) -> str:
    """'text', 'label_selection', ... for SDK fields and questions."""
    typ = getattr(obj, "type", None)
    if typ is None and hasattr(obj, "_model"):
        typ = getattr(getattr(obj._model, "settings", None), "type", None)
    return str(getattr(typ, "value", typ))


def _transient(e: BaseException) -> tuple[bool, bool]:
    """(worth retrying, never reached the server) for an exception out of the SDK."""
    import httpx

    if isinstance(e, (httpx.ConnectError, httpx.ConnectTimeout)):
        return True, True
    if isinstance(e, httpx.TransportError):
        return True, False
    status = getattr(e, "status_code", None)
    return (isinstance(status, int) and (status == 429 or status >= 500)), False


def _reason(e: BaseException) -> str:
    msg = getattr(e, "message", None) or str(e) or "no detail"
    return f"{type(e).__name__}: {msg}"


def _metadata_kind(prop: Any) -> str:
    """'float', 'integer' or 'terms' for an SDK metadata property."""
    typ = getattr(getattr(getattr(prop, "_model", None), "settings", None), "type", None)
    return str(getattr(typ, "value", typ))


def _status(status: Any) -> str:
    return str(getattr(status, "value", status))
