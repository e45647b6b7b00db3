"""Label Studio connector: pull a project's tasks and labels as a Pool, push a Ranking as predictions.

How Label Studio 1.23 (open source) is made to serve al-backend's order:
  * every unlabeled task gets one prediction of model_version = ranking.model_version whose
    `score` = 1 - priority (= rank / n): Label Studio's "Uncertainty sampling" serves the LOWEST score first;
  * the project is patched to {"sampling": "Uncertainty sampling", "model_version": v} in ONE call
    (patching either key alone can clear the other);
  * a Data Manager view "Active learning" is ordered by tasks:predictions_score (ascending).
Predictions of older al-backend versions ("al-" prefix) are deleted once the new version is live, so the
database does not grow by one prediction per task per round; predictions of other models are left alone.
The round's stopping decision is kept as one line of the project's description, starting with
"[al-backend]" (first, so the project card shows it), rewritten only when it changes; the rest of the
description is the user's and is never changed.

Supported labeling configs: one <Choices> (choice="single" or "multiple") over a <Text> or <HyperText>
whose value is a task data key ("$text"). Anything else raises UnsupportedLabelConfig.

`LabelStudioMLBackend` is the server's MLBackendAdapter (connectors.make_ml_backend("labelstudio")): the
/setup and /predict payloads, task texts and prediction results in Label Studio's format.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import re
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from al_backend.errors import ConfigError, ConnectorError, InputError
from al_backend.pool import Pool, Ranking

from .base import ConnectorBase, OnChunk, PushReport, UnsupportedSchema
from .http import HttpClient, HttpError
from .stopping_note import stopping_summary

log = logging.getLogger(__name__)

SAMPLING = "Uncertainty sampling"
VIEW_TITLE = "Active learning"
VIEW_ORDERING = ["tasks:predictions_score"]
OUR_VERSION_PREFIX = "al-"
TEXT_TAGS = {"Text", "HyperText"}
NOTE_MARK = "[al-backend]"  # the project description's line that al-backend owns (the stopping note)


class UnsupportedLabelConfig(UnsupportedSchema):
    """The project's labeling config is not one al-backend can learn from."""


# ---------------------------------------------------------------------------------------------- label config
@dataclass(frozen=True)
class LabelConfig:
    """The part of a Label Studio labeling config al-backend uses.

    from_name:   the <Choices name=...>
    to_name:     the object tag it labels (<Text name=...>)
    object_type: "Text" or "HyperText"
    data_key:    the task data key holding the text ("text" for value="$text")
    labels:      the choices, in config order
    multiple:    choice="multiple" (the head is single-label: see choice_of)
    """

    from_name: str
    to_name: str
    object_type: str
    data_key: str
    labels: tuple[str, ...]
    multiple: bool = False

    def describe(self) -> str:
        return f"<Choices name={self.from_name!r}> over <{self.object_type}> ({len(self.labels)} labels)"

    def result(self, label: str | None) -> list[dict[str, Any]]:
        """A prediction/annotation result selecting `label`; [] (no pre-annotation) when label is None/unknown."""
        if label is None or label not in self.labels:
            return []
        return [
            {"from_name": self.from_name, "to_name": self.to_name, "type": "choices", "value": {"choices": [label]}}
        ]

    def choices_in(self, result: Iterable[dict[str, Any]] | None) -> list[str]:
        """The choices an annotation's result picks for our <Choices> (empty when it picks none)."""
        out: list[str] = []
        for item in result or []:
            if item.get("from_name") == self.from_name and item.get("type", "choices") == "choices":
                out.extend(str(c) for c in (item.get("value") or {}).get("choices") or [])
        return out

    def text_of(self, data: dict[str, Any]) -> str | None:
        value = data.get(self.data_key)
        if value is None:
            return None
        if not isinstance(value, str):
            value = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
        if self.object_type == "HyperText":
            value = html_to_text(value)
        return value


def with_note_line(description: str, line: str) -> str:
    """`description` with its al-backend line (the first line starting with NOTE_MARK) replaced by `line`,
    other such lines dropped; `line` put first, before a blank line, when there is none. Everything else,
    line endings included, stays byte for byte. First rather than last: the project card shows only the
    first three lines of the description."""
    lines = description.splitlines(keepends=True)
    out: list[str] = []
    placed = False
    for ln in lines:
        if ln.startswith(NOTE_MARK):
            if not placed:
                body = ln.splitlines()[0]
                out.append(line + ln[len(body) :])  # the line's own ending, whichever it is
                placed = True
            continue  # a second al-backend line (pasted twice): ours, not the user's
        out.append(ln)
    if not placed:
        return f"{line}\n\n{description}" if description.strip() else line
    return "".join(out)


_TAG_RE = re.compile(r"<(script|style)\b.*?</\1>|<[^>]+>", re.S | re.I)


def html_to_text(markup: str) -> str:
    """Visible text of an HTML fragment: tags (and script/style bodies) dropped, entities decoded."""
    return re.sub(r"\s+", " ", html.unescape(_TAG_RE.sub(" ", markup))).strip()


def parse_label_config(xml: str, from_name: str | None = None) -> LabelConfig:
    """Parse a labeling config; raise UnsupportedLabelConfig saying what is supported and what was found."""
    supported = (
        "al-backend supports one <Choices> (single or multiple) over a <Text> or <HyperText> "
        'whose value is a task field, e.g. <Text name="text" value="$text"/>'
        '<Choices name="label" toName="text"><Choice value="A"/><Choice value="B"/></Choices>'
    )
    if not xml or not xml.strip():
        raise UnsupportedLabelConfig(f"the project has no labeling config; {supported}")
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as e:
        raise UnsupportedLabelConfig(f"the labeling config is not valid XML ({e}); {supported}") from None
    objects = {
        el.get("name"): el
        for el in root.iter()
        if el.get("name") and el.get("value") is not None and el.tag not in {"Choice", "Label"}
    }
    found: list[str] = []
    candidates = []
    for el in root.iter("Choices"):
        name, to = el.get("name"), el.get("toName")
        target = objects.get(to)
        found.append(f"<Choices name={name!r}> over <{target.tag if target is not None else '?'} name={to!r}>")
        if from_name and name != from_name:
            continue
        if (
            target is None
            or name is None
            or to is None
            or target.tag not in TEXT_TAGS
            or el.get("perRegion", "").lower() == "true"
        ):
            continue
        value = target.get("value", "")
        if not value.startswith("$") or len(value) < 2:
            continue
        raw = (c.get("value") if c.get("value") is not None else (c.get("alias") or "") for c in el.iter("Choice"))
        labels = tuple(str(lab) for lab in raw if lab)
        if len(labels) < 2:
            found[-1] += f" with {len(labels)} choice(s)"
            continue
        if len(set(labels)) != len(labels):
            dup = [lab for lab, n in Counter(labels).items() if n > 1]
            raise UnsupportedLabelConfig(f"<Choices name={name!r}> lists {dup} more than once")
        candidates.append(
            LabelConfig(
                from_name=name,
                to_name=to,
                object_type=target.tag,
                data_key=value[1:],
                labels=labels,
                multiple=el.get("choice", "single").lower() == "multiple",
            )
        )
    if not candidates:
        what = "; found " + ", ".join(found) if found else "; found no <Choices> tag"
        if from_name:
            what += f" (looked for <Choices name={from_name!r}>)"
        tags = sorted({el.tag for el in root.iter()} - {"View", "Header", "Style"})
        raise UnsupportedLabelConfig(f"unsupported labeling config (tags: {', '.join(tags)}){what}. {supported}")
    return candidates[0]


def choice_of(
    annotation_choices: list[list[str]], labels: tuple[str, ...], ground_truth: list[bool] | None = None
) -> str | None:
    """The task's label from its (non-cancelled) annotations' choices.

    A ground-truth annotation wins. Otherwise the most voted choice (each annotation votes once for each
    choice it picks, so a multiple-choice project gives its most frequent choice); ties go to the choice
    listed first in the config.
    """
    if ground_truth:
        for picks, gt in zip(annotation_choices, ground_truth):
            if gt and picks:
                return picks[0] if len(picks) == 1 else min(picks, key=lambda c: _order(c, labels))
    votes = Counter(c for picks in annotation_choices for c in dict.fromkeys(picks))
    if not votes:
        return None
    top = max(votes.values())
    return min((c for c, n in votes.items() if n == top), key=lambda c: _order(c, labels))


def _order(choice: str, labels: tuple[str, ...]) -> tuple[int, str]:
    return (labels.index(choice) if choice in labels else len(labels), choice)


# ---------------------------------------------------------------------------------------------- tokens
def looks_like_jwt(token: str) -> bool:
    """A personal access token is a JWT (three base64url parts whose header names an algorithm)."""
    parts = token.split(".")
    if len(parts) != 3:
        return False
    try:
        header = json.loads(_b64(parts[0]))
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(header, dict) and "alg" in header


def jwt_claims(token: str) -> dict[str, Any]:
    """The (unverified) claims of a JWT: only used to know when an access token expires."""
    try:
        claims = json.loads(_b64(token.split(".")[1]))
        return claims if isinstance(claims, dict) else {}
    except (ValueError, IndexError, UnicodeDecodeError):
        return {}


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


class LegacyTokenAuth:
    """`Authorization: Token <key>` (Label Studio's legacy API tokens)."""

    kind = "legacy token"

    def __init__(self, token: str):
        self._headers = {"Authorization": f"Token {token}"}

    def headers(self, client: HttpClient) -> dict[str, str]:
        return self._headers

    def refresh(self, client: HttpClient) -> bool:
        return False

    def __repr__(self) -> str:  # never show the token
        return "LegacyTokenAuth(***)"


class PersonalAccessTokenAuth:
    """A personal access token is a JWT *refresh* token: exchange it for a short-lived access token
    (POST /api/token/refresh/), send that as Bearer, and refresh again before it expires or after a 401."""

    kind = "personal access token"
    margin_s = 30.0

    def __init__(self, refresh_token: str):
        self._refresh = refresh_token
        self._access: str | None = None
        self._expires = 0.0

    def headers(self, client: HttpClient) -> dict[str, str]:
        if self._access is None or time.time() > self._expires - self.margin_s:
            self._fetch(client)
        return {"Authorization": f"Bearer {self._access}"}

    def refresh(self, client: HttpClient) -> bool:
        self._fetch(client)
        return True

    def _fetch(self, client: HttpClient) -> None:
        try:
            resp = client.request(
                "POST",
                "/api/token/refresh/",
                json_body={"refresh": self._refresh},
                authenticated=False,
                idempotent=True,
                what="exchange the personal access token",
            )
        except HttpError as e:
            if e.status in (400, 401, 403):
                raise ConnectorError(
                    f"Label Studio at {client.base_url} rejected the personal access token "
                    f"(HTTP {e.status}): it is wrong, revoked or from another server; create one under "
                    "Account & Settings > Personal Access Token and set LABEL_STUDIO_API_KEY"
                ) from None
            raise
        access = resp.json().get("access")
        if not access:
            raise ConnectorError(f"Label Studio at {client.base_url}: token refresh answered without an access token")
        self._access = access
        self._expires = float(jwt_claims(access).get("exp") or time.time() + 60)

    def __repr__(self) -> str:
        return "PersonalAccessTokenAuth(***)"


def make_auth(token: str) -> LegacyTokenAuth | PersonalAccessTokenAuth:
    token = (token or "").strip()
    if token.lower().startswith(("token ", "bearer ")):
        token = token.split(None, 1)[1]  # people paste the whole header value
    return PersonalAccessTokenAuth(token) if looks_like_jwt(token) else LegacyTokenAuth(token)


# ---------------------------------------------------------------------------------------------- connector
class LabelStudioConnector(ConnectorBase):
    """One Label Studio project. Network calls go through connectors.http (retries, clear errors)."""

    name = "labelstudio"

    def __init__(
        self,
        url: str,
        api_key: str,
        project_id: int | str,
        *,
        text_key: str | None = None,
        from_name: str | None = None,
        page_size: int = 5000,
        push_chunk: int = 25000,
        timeout: float = 120.0,
        retries: int = 3,
        prune_old_versions: bool = True,
        view_title: str = VIEW_TITLE,
        transport: Any = None,
    ):
        if not url:
            raise ConfigError("Label Studio URL is not set: use LABEL_STUDIO_URL or [labelstudio] url")
        if not api_key:
            raise ConfigError(
                "Label Studio API key is not set: use LABEL_STUDIO_API_KEY or [labelstudio] api_key "
                "(a personal access token or a legacy token, from Account & Settings)"
            )
        try:
            self.project_id = int(project_id)
        except (TypeError, ValueError):
            raise ConfigError(f"Label Studio project must be a number, got {project_id!r}") from None
        if self.project_id <= 0:
            raise ConfigError("Label Studio project is not set: use --project ID or [labelstudio] project")
        if not re.match(r"^https?://", url):
            raise ConfigError(f"Label Studio URL must start with http:// or https://, got {url!r}")
        self.url = url.rstrip("/")
        self.auth = make_auth(api_key)
        self.text_key = text_key
        self.from_name = from_name
        self.page_size = page_size
        self.push_chunk = push_chunk
        self.prune_old_versions = prune_old_versions
        self.view_title = view_title
        self.http = HttpClient(
            self.url, service="Label Studio", auth=self.auth, timeout=timeout, retries=retries, transport=transport
        )
        self._project: dict[str, Any] | None = None
        self._config: LabelConfig | None = None
        self.skipped: list[str] = []
        self.labeled: int | None = None  # labeled tasks at the last pull (for the stopping note)

    @classmethod
    def from_config(cls, config: Any, **overrides: Any) -> LabelStudioConnector:
        """Build from the typed Config's [labelstudio] section (env LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY
        are already folded in by load_config); keyword overrides win (project=..., url=..., api_key=...)."""
        section = getattr(config, "labelstudio", None)
        url: str = overrides.pop("url", None) or getattr(section, "url", "")
        api_key: str = overrides.pop("api_key", None) or getattr(section, "api_key", "")
        project = overrides.pop("project", None) or overrides.pop("project_id", None) or getattr(section, "project", 0)
        for key in ("text_key", "from_name"):
            configured = getattr(section, key, None)
            if overrides.get(key) is None and configured:
                overrides[key] = configured
        if section is not None:
            for key in ("prune_old_versions", "timeout", "retries"):
                if overrides.get(key) is None and hasattr(section, key):
                    overrides[key] = getattr(section, key)
        overrides = {k: v for k, v in overrides.items() if v is not None}
        return cls(url, api_key, project, **overrides)

    def describe(self) -> str:
        return f"Label Studio project {self.project_id} at {self.url}"

    def close(self) -> None:
        self.http.close()

    # ------------------------------------------------------------------ project and config
    def project(self, refresh: bool = False) -> dict[str, Any]:
        """The project record; turns 401/403/404 into errors that say what to fix."""
        if self._project is None or refresh:
            try:
                self._project = self.http.get_json(f"/api/projects/{self.project_id}/", what="read the project")
            except HttpError as e:
                raise self._explain(e) from None
        return self._project

    def _explain(self, e: HttpError) -> ConnectorError:
        if e.status == 401:
            return ConnectorError(
                f"Label Studio at {self.url} rejected the API key ({self.auth.kind}): HTTP 401. Check "
                "LABEL_STUDIO_API_KEY (Account & Settings > Personal Access Token); legacy tokens only work "
                "when the organisation enables them"
            )
        if e.status == 403:
            return ConnectorError(
                f"Label Studio at {self.url}: the API key's user may not access project {self.project_id} (HTTP 403)"
            )
        if e.status == 404:
            return ConnectorError(
                f"Label Studio at {self.url} has no project {self.project_id} visible to this API key (HTTP 404)"
            )
        return e

    def label_config(self) -> LabelConfig:
        if self._config is None:
            xml = self.project().get("label_config") or ""
            try:
                cfg = parse_label_config(xml, self.from_name)
            except UnsupportedLabelConfig as e:
                raise UnsupportedLabelConfig(f"{self.describe()}: {e}") from None
            if self.text_key:
                cfg = LabelConfig(cfg.from_name, cfg.to_name, cfg.object_type, self.text_key, cfg.labels, cfg.multiple)
            self._config = cfg
        return self._config

    def label_set(self) -> list[str] | None:
        return list(self.label_config().labels)

    # ------------------------------------------------------------------ pull
    def iter_task_pages(self, include: str = "id,data,total_annotations,cancelled_annotations") -> Iterable[list[dict]]:
        """All tasks, page by page. `include=` skips the computed columns (3-6x faster on 10k tasks)."""
        page, seen = 1, 0
        while True:
            try:
                body = self.http.get_json(
                    "/api/tasks",
                    params={"project": self.project_id, "page_size": self.page_size, "page": page, "include": include},
                    what="list tasks",
                    ok=(200,),
                )
            except HttpError as e:
                if e.status == 404 and page > 1:  # "Invalid page": the task count shrank while paging
                    return
                raise self._explain(e) from None
            tasks = body.get("tasks", []) if isinstance(body, dict) else body
            if not tasks:
                return
            yield tasks
            seen += len(tasks)
            total = body.get("total") if isinstance(body, dict) else None
            if total is not None and seen >= total or len(tasks) < self.page_size:
                return
            page += 1

    def annotated_tasks(self) -> list[dict[str, Any]]:
        """Tasks with at least one annotation (cancelled included), with their annotations: one export call."""
        try:
            body = self.http.get_json(
                f"/api/projects/{self.project_id}/export",
                params={"exportType": "JSON", "download_all_tasks": "false"},
                what="export annotations",
                ok=(200,),
            )
        except HttpError as e:
            raise self._explain(e) from None
        return body if isinstance(body, list) else []

    def pull(self) -> Pool:
        """All tasks: id = str(task id), text = data[<data key>], label = the annotations' choice (or None).

        meta per labeled task: annotation_labels (each non-cancelled annotation's choice), and
        disagreement=True when annotators differ. Tasks without text are skipped (listed in self.skipped).
        """
        cfg = self.label_config()
        ids: list[str] = []
        texts: list[str] = []
        annotated_ids: set[int] = set()
        skipped: list[str] = []
        for tasks in self.iter_task_pages():
            for t in tasks:
                text = cfg.text_of(t.get("data") or {})
                if text is None or not text.strip():
                    skipped.append(str(t["id"]))
                    continue
                ids.append(str(t["id"]))
                texts.append(text)
                if t.get("total_annotations") or t.get("cancelled_annotations"):
                    annotated_ids.add(int(t["id"]))
        labels: list[str | None] = [None] * len(ids)
        meta: list[dict[str, Any]] = [{} for _ in ids]
        if annotated_ids:
            row = {tid: i for i, tid in enumerate(ids)}
            for task in self.annotated_tasks():
                i = row.get(str(task.get("id")))
                if i is None:
                    continue
                picks, gts = [], []
                for ann in task.get("annotations") or []:
                    if ann.get("was_cancelled"):
                        continue
                    chosen = cfg.choices_in(ann.get("result"))
                    if chosen:
                        picks.append(chosen)
                        gts.append(bool(ann.get("ground_truth")))
                label = choice_of(picks, cfg.labels, gts)
                if label is not None:
                    labels[i] = label
                    per_ann = [p[0] if len(p) == 1 else "|".join(p) for p in picks]
                    meta[i] = {"annotation_labels": per_ann}
                    if len(set(per_ann)) > 1:
                        meta[i]["disagreement"] = True
        if skipped:
            log.warning(
                "%s: skipped %d task(s) with no text in data[%r] (first: %s)",
                self.describe(),
                len(skipped),
                cfg.data_key,
                ", ".join(skipped[:5]),
            )
        self.skipped = skipped
        self.labeled = sum(1 for lab in labels if lab is not None)
        return Pool(ids=ids, texts=texts, labels=labels, meta=meta, source=self.describe())

    # ------------------------------------------------------------------ push
    def model_versions(self) -> dict[str, int]:
        """{model_version: number of predictions} in the project."""
        body = self.http.get_json(f"/api/projects/{self.project_id}/model-versions/", what="list model versions")
        return {str(k): int(v) for k, v in body.items()} if isinstance(body, dict) else {}

    def predictions_payload(self, ranking: Ranking) -> list[dict[str, Any]]:
        """One prediction per ranked task: score = 1 - priority (LS serves the lowest score first), the
        predicted choice as result ([] before any model exists: no pre-annotation rather than a made-up one)."""
        cfg = self.label_config()
        n = len(ranking)
        score = 1.0 - np.asarray(ranking.priority, dtype=np.float64)
        if n and (not np.all(np.isfinite(score)) or np.any(np.diff(score) < 0)):
            raise InputError(f"{self.describe()}: ranking priorities must be finite and non-increasing")
        results: dict[str | None, list] = {}
        out = []
        version = ranking.model_version
        for i, tid in enumerate(ranking.ids):
            try:
                task = int(tid)
            except ValueError:
                raise InputError(f"{self.describe()}: ranking id {tid!r} is not a Label Studio task id") from None
            label = ranking.predicted[i] if ranking.predicted else None
            if label not in results:
                results[label] = cfg.result(label)
            out.append({"task": task, "result": results[label], "score": float(score[i]), "model_version": version})
        return out

    def push(self, ranking: Ranking, start_chunk: int = 0, on_chunk: OnChunk | None = None) -> PushReport:
        """Write the ranking as predictions of ranking.model_version and make Label Studio serve it.

        Chunks: the imports of `push_chunk` predictions each, then one last step that switches the project to
        the new version (sampling + view); `on_chunk(done, total)` after each. A resumed push (`start_chunk`
        > 0) keeps the chunks already imported when the version holds exactly those predictions; otherwise
        (a chunk landed unreported, or another chunk size) it deletes the version's predictions and starts over.
        """
        if not ranking.model_version:
            raise InputError(f"{self.describe()}: the ranking has no model_version")
        version = ranking.model_version
        t0 = time.perf_counter()
        project = self.project(refresh=True)
        versions = self.model_versions()
        details: dict[str, Any] = {"model_version": version, "tasks": len(ranking)}
        n_chunks = -(-len(ranking) // self.push_chunk)
        total = n_chunks + 1  # + switching the project to the version
        have = versions.get(version)
        unchanged = have == len(ranking) and len(ranking) > 0
        created = 0
        if unchanged:
            details["unchanged"] = True  # the same round content was pushed before: nothing to write
        else:
            skip = 0
            if 0 < start_chunk < n_chunks and have == start_chunk * self.push_chunk:
                skip = start_chunk  # an interrupted push of this ranking: its first chunks are in place
                details["resumed_at_chunk"] = skip
            elif version in versions:  # an interrupted push we cannot trust chunk by chunk: start it over
                self._delete_version(version)
            payload = self.predictions_payload(ranking)
            for n, start in enumerate(range(0, len(payload), self.push_chunk), 1):
                if n <= skip:
                    continue
                chunk = payload[start : start + self.push_chunk]
                try:
                    resp = self.http.request(
                        "POST",
                        f"/api/projects/{self.project_id}/import/predictions",
                        json_body=chunk,
                        idempotent=False,
                        what="import predictions",
                        ok=(200, 201),
                    )
                except HttpError as e:
                    raise self._explain(e) from None
                got = int((resp.json() or {}).get("created", -1))
                if got != len(chunk):
                    raise ConnectorError(
                        f"{self.describe()}: Label Studio created {got} of {len(chunk)} predictions "
                        f"(tasks {chunk[0]['task']}..{chunk[-1]['task']}); it silently drops predictions whose "
                        f"result does not match the labeling config (from_name {self.label_config().from_name!r})"
                    )
                created += got
                if on_chunk is not None:
                    on_chunk(n, total)
        details["push_s"] = round(time.perf_counter() - t0, 3)
        note = stopping_summary(ranking.stopping, round_id=ranking.round_id, labels=self.labeled)
        description = None
        if note is not None:
            if created:  # the imports took a while: the description may have been edited meanwhile
                project = self.project(refresh=True)
            current = project.get("description") or ""
            description = with_note_line(current, f"{NOTE_MARK} {note}")
            if description == current:
                description = None
            else:
                details["stopping_note"] = note
        switch = project.get("sampling") != SAMPLING or project.get("model_version") != version
        if switch or description is not None:
            self.activate(version if switch else None, description=description)
        details["view_id"] = self.ensure_view()
        if on_chunk is not None:
            on_chunk(total, total)
        if self.prune_old_versions:
            t = time.perf_counter()
            old = [v for v in versions if v != version and v.startswith(OUR_VERSION_PREFIX)]
            pruned = []
            for v in old:
                try:
                    self._delete_version(v)
                    pruned.append(v)
                except HttpError as e:
                    # The new order is live already; a busy Label Studio (SQLite "database is locked") only
                    # delays the cleanup to the next round.
                    log.warning("%s: could not delete old predictions %s yet: %s", self.describe(), v, e)
            details["pruned_versions"] = pruned
            if len(pruned) < len(old):
                details["prune_deferred"] = [v for v in old if v not in pruned]
            details["prune_s"] = round(time.perf_counter() - t, 3)
        return PushReport(pushed=created, target=self.describe(), details=details)

    def activate(self, version: str | None, description: str | None = None) -> None:
        """Uncertainty sampling over `version`: both keys in one PATCH (one alone can reset the other); with
        `description`, the project's new description (the stopping note) in the same PATCH. version=None
        patches the description alone (a PATCH without show_collab_predictions leaves model_version as is)."""
        payload: dict[str, Any] = {}
        if version is not None:
            payload.update(sampling=SAMPLING, model_version=version)
        if description is not None:
            payload["description"] = description
        if not payload:
            return
        what = "set uncertainty sampling" if version is not None else "update the description (stopping note)"
        try:
            body = self.http.request("PATCH", f"/api/projects/{self.project_id}/", json_body=payload, what=what).json()
        except HttpError as e:
            if e.status == 400 and version is not None and description is not None:
                # the note must never stop the new order from going live: switch without it
                log.warning(
                    "%s: Label Studio refused the description with the stopping note (%s); switching to %s without it",
                    self.describe(),
                    e,
                    version,
                )
                return self.activate(version)
            raise self._explain(e) from None
        if version is not None and (body.get("model_version") != version or body.get("sampling") != SAMPLING):
            raise ConnectorError(
                f"{self.describe()}: asked for sampling={SAMPLING!r} model_version={version!r}, the project "
                f"kept sampling={body.get('sampling')!r} model_version={body.get('model_version')!r}"
            )
        if description is not None and (body.get("description") or "") != description:
            log.warning(
                "%s: Label Studio stored the description differently from what was sent (%d vs %d "
                "characters); the stopping note is rewritten next round",
                self.describe(),
                len(body.get("description") or ""),
                len(description),
            )
        self._project = body

    def ensure_view(self) -> int:
        """Create or update the "Active learning" Data Manager tab ordered by prediction score (lowest first)."""
        views = self.http.get_json("/api/dm/views/", params={"project": self.project_id}, what="list views")
        for view in views if isinstance(views, list) else []:
            data = view.get("data") or {}
            if data.get("title") == self.view_title:
                if data.get("ordering") != VIEW_ORDERING:
                    data = {**data, "ordering": VIEW_ORDERING}
                    self.http.request(
                        "PATCH",
                        f"/api/dm/views/{view['id']}/",
                        json_body={"project": self.project_id, "data": data},
                        what="update the view",
                    )
                return int(view["id"])
        body = self.http.request(
            "POST",
            "/api/dm/views/",
            json_body={"project": self.project_id, "data": {"title": self.view_title, "ordering": VIEW_ORDERING}},
            what="create the view",
            idempotent=False,
        ).json()
        return int(body["id"])

    def _delete_version(self, version: str) -> None:
        # Label Studio deletes predictions row by row (~3 ms each): allow time for big projects.
        self.http.request(
            "DELETE",
            f"/api/projects/{self.project_id}/model-versions/",
            json_body={"model_version": version},
            what=f"delete predictions of {version}",
            timeout=600.0,
        )

    # ------------------------------------------------------------------ reading back (tests, status)
    def view_order(self, view_id: int, limit: int | None = None) -> list[str]:
        """Task ids in the order the view lists them."""
        out: list[str] = []
        page = 1
        while True:
            body = self.http.get_json(
                "/api/tasks",
                params={
                    "view": view_id,
                    "project": self.project_id,
                    "page_size": self.page_size,
                    "page": page,
                    "include": "id",
                },
                what="list the view",
                ok=(200, 404),
            )
            tasks = body.get("tasks", []) if isinstance(body, dict) else []
            out.extend(str(t["id"]) for t in tasks)
            if not tasks or len(tasks) < self.page_size or (limit and len(out) >= limit):
                return out[:limit] if limit else out
            page += 1


# ---------------------------------------------------------------------------------------------- ML backend
class LabelStudioMLBackend:
    """The Label Studio side of the ML backend server (connectors.base.MLBackendAdapter).

    /setup sends the labeling config as `schema` (older versions: `label_config`), /predict as
    `label_config`; a prediction is {"result": [<choices>], "score", "model_version"}."""

    name = "labelstudio"

    def setup_schema(self, payload: Mapping[str, Any]) -> LabelConfig:
        return parse_label_config(payload.get("schema") or payload.get("label_config") or "")

    def predict_schema(self, payload: Mapping[str, Any]) -> LabelConfig:
        return parse_label_config(payload.get("label_config") or "")

    def task_texts(self, schema: LabelConfig, tasks: Sequence[Mapping[str, Any]]) -> list[str]:
        return [schema.text_of(t.get("data") or {}) or "" for t in tasks]

    def prediction(self, schema: LabelConfig, label: str | None, score: float, model_version: str) -> dict[str, Any]:
        return {"result": schema.result(label), "score": score, "model_version": model_version}

    def connector(self, config: Any, setup: Mapping[str, Any] | None = None) -> LabelStudioConnector:
        """Config/env credentials first; else what /setup brought (the access token, and the hostname unless
        the URL is configured)."""
        section = config.labelstudio
        url, key = section.url, section.api_key
        if not key and setup and setup.get("access_token"):
            key = setup["access_token"]
            if not _configured_url(config):
                url = setup.get("hostname") or url
        return LabelStudioConnector(url, key, section.project)


def _configured_url(config: Any) -> bool:
    from al_backend.config import Config

    return config.labelstudio.url != Config().labelstudio.url
