"""Every al-backend command line in deploy/ (crontabs, systemd units, the Kubernetes CronJob, the Dockerfile,
the compose files) parses against the real CLI: the subcommands exist, every flag exists on that subcommand,
and the values have the right types. Renaming a flag without updating deploy/ fails here.

Also the promises the deploy files make about operations: the CronJob never runs two rounds at once and keeps
its state on a persistent volume with tokens from a Secret; systemd treats the lock's exit code as success."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
import yaml

from al_backend.cli.main import app
from al_backend.errors import LockedError

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
CLI = typer.main.get_command(app)
# shell / compose variables in command lines get a value of the right shape for their flag
PLACEHOLDER = re.compile(r"\$\$?\{([A-Za-z_][A-Za-z0-9_]*)[^}]*\}|\$\$?([A-Za-z_][A-Za-z0-9_]*)")
SAMPLE = {"AL_PROJECT": "3", "AL_INTERVAL": "600"}


@dataclass
class Invocation:
    source: str  # file and where in it
    args: list[str]  # what follows `al-backend`


def substitute(token: str) -> str:
    return PLACEHOLDER.sub(lambda m: SAMPLE.get(m.group(1) or m.group(2), "placeholder"), token)


def after_al_backend(tokens: list[str]) -> list[str] | None:
    """The arguments after the al-backend executable, up to the end of that shell command."""
    for i, tok in enumerate(tokens):
        if tok == "al-backend" or tok.endswith("bin/al-backend"):  # the executable, not `cd /srv/al-backend`
            args = []
            for t in tokens[i + 1 :]:
                if t in (";", "&&", "||", "|", ">", ">>", "2>&1", "&") or t.startswith((">", "2>")):
                    break
                args.append(t)
            return args
    return None


def shell_invocations(text: str, source: str) -> list[Invocation]:
    """al-backend calls in shell text (crontab lines, sh -c scripts); backslash continuations joined."""
    text = text.replace("\\\n", " ")
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("#") or "al-backend" not in line:
            continue
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|>")
        lexer.whitespace_split = True
        try:
            tokens = list(lexer)
        except ValueError:
            continue
        args = after_al_backend(tokens)
        if args is not None:
            out.append(Invocation(f"{source}:{n}", [substitute(a) for a in args]))
    return out


def crontab(path: Path) -> list[Invocation]:
    return shell_invocations(path.read_text(), str(path.relative_to(DEPLOY)))


def systemd(path: Path) -> list[Invocation]:
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith("ExecStart="):
            args = after_al_backend(shlex.split(line.split("=", 1)[1].lstrip("-@+!")))
            assert args is not None, f"{path.name}:{n}: ExecStart does not run al-backend"
            out.append(Invocation(f"{path.relative_to(DEPLOY)}:{n}", args))
    return out


def dockerfile(path: Path) -> list[Invocation]:
    text = path.read_text()
    entry = re.search(r"^ENTRYPOINT\s+(\[.*\])\s*$", text, re.M)
    cmd = re.search(r"^CMD\s+(\[.*\])\s*$", text, re.M)
    assert entry and cmd, "the Dockerfile needs ENTRYPOINT and CMD in exec form"
    assert json.loads(entry.group(1)) == ["al-backend"], "the image's entrypoint is the al-backend CLI"
    return [Invocation(f"{path.name}:CMD", json.loads(cmd.group(1)))]


def _container_args(entrypoint, command, source: str) -> list[Invocation]:
    entrypoint = shlex.split(entrypoint) if isinstance(entrypoint, str) else list(entrypoint or [])
    command = shlex.split(command) if isinstance(command, str) else [str(c) for c in (command or [])]
    if entrypoint[:1] in (["/bin/sh"], ["sh"], ["/bin/bash"], ["bash"]):
        return shell_invocations("\n".join(entrypoint[2:] + command), source)
    if entrypoint and entrypoint != ["al-backend"]:
        args = after_al_backend(entrypoint + command)
        return [] if args is None else [Invocation(source, [substitute(a) for a in args])]
    return [Invocation(source, [substitute(a) for a in command])]  # the image's ENTRYPOINT is al-backend


def compose(path: Path) -> list[Invocation]:
    doc = yaml.safe_load(path.read_text())
    out = []
    for name, svc in (doc.get("services") or {}).items():
        image = str(svc.get("image", "")) + str(svc.get("build", ""))
        if "al-backend" not in image and "Dockerfile" not in image:
            continue
        out += _container_args(svc.get("entrypoint"), svc.get("command"), f"{path.relative_to(DEPLOY)}:{name}")
    return out


def kubernetes(path: Path) -> list[Invocation]:
    out = []
    for doc in yaml.safe_load_all(path.read_text()):
        if not doc or doc.get("kind") not in ("CronJob", "Deployment", "Job", "StatefulSet"):
            continue
        spec = doc["spec"]
        pod = spec["jobTemplate"]["spec"]["template"]["spec"] if doc["kind"] == "CronJob" else spec["template"]["spec"]
        for c in pod["containers"]:
            if "al-backend" in c.get("image", ""):
                out += _container_args(c.get("command"), c.get("args"), f"{path.relative_to(DEPLOY)}:{c['name']}")
    return out


PARSERS = {
    "cron/crontab": crontab,
    "argilla/crontab": crontab,
    "systemd/al-backend-prioritize.service": systemd,
    "systemd/al-backend-serve.service": systemd,
    "argilla/al-backend-argilla-watch.service": systemd,
    "kubernetes/cronjob.yaml": kubernetes,
    "Dockerfile": dockerfile,
    "docker-compose.yml": compose,
    "argilla/compose.yaml": compose,
}
EXPECTED = {  # at least this many al-backend command lines per file: a parser that finds none fails loudly
    "cron/crontab": 2,
    "argilla/crontab": 1,
    "systemd/al-backend-prioritize.service": 1,
    "systemd/al-backend-serve.service": 1,
    "argilla/al-backend-argilla-watch.service": 1,
    "kubernetes/cronjob.yaml": 1,
    "Dockerfile": 1,
    "docker-compose.yml": 2,
    "argilla/compose.yaml": 1,
}


def all_invocations() -> list[Invocation]:
    out = []
    for rel, parse in PARSERS.items():
        out += parse(DEPLOY / rel)
    return out


def check_against_cli(inv: Invocation):
    """Resolve the subcommand path and parse the flags with the CLI's own parser (unknown flags and bad values
    fail). Duck-typed: recent typer releases vendor their own click."""
    cmd = CLI
    args = list(inv.args)
    path = []
    while hasattr(cmd, "list_commands"):
        assert args, f"{inv.source}: `al-backend {' '.join(path)}` needs a subcommand"
        name = args.pop(0)
        ctx = cmd.context_class(cmd)
        sub = cmd.get_command(ctx, name)
        assert sub is not None, (
            f"{inv.source}: `al-backend {' '.join(path + [name])}`: no such command "
            f"(have {sorted(cmd.list_commands(ctx))})"
        )
        path.append(name)
        cmd = sub
    known = {opt for p in cmd.params for opt in (*p.opts, *p.secondary_opts)}
    for a in args:
        if a.startswith("-") and a != "-":
            flag = a.split("=", 1)[0]
            assert flag in known, (
                f"{inv.source}: `al-backend {' '.join(path)}` has no option {flag} (has {sorted(known)})"
            )
    try:
        cmd.make_context(" ".join(["al-backend", *path]), list(args), resilient_parsing=False)
    except Exception as e:
        if not hasattr(e, "format_message"):  # not a usage error: a bug in the CLI itself
            raise
        pytest.fail(f"{inv.source}: `al-backend {' '.join(path + args)}` does not parse: {e.format_message()}")
    return cmd


def test_every_deploy_file_is_covered():
    files = {str(p.relative_to(DEPLOY)) for p in DEPLOY.rglob("*") if p.is_file()}
    runs_cli = {
        f
        for f in files
        if "al-backend " in (DEPLOY / f).read_text(errors="replace")
        and not f.endswith((".md", ".toml", ".py", ".timer"))
    }
    assert runs_cli <= set(PARSERS), (
        f"deploy files with al-backend command lines this test does not parse: {runs_cli - set(PARSERS)}"
    )


@pytest.mark.parametrize("rel", sorted(PARSERS))
def test_commands_and_flags_exist_in_the_cli(rel):
    found = PARSERS[rel](DEPLOY / rel)
    assert len(found) >= EXPECTED[rel], f"{rel}: expected {EXPECTED[rel]} al-backend command line(s), parsed {found}"
    for inv in found:
        check_against_cli(inv)


def test_the_checker_rejects_what_the_cli_rejects():
    with pytest.raises(AssertionError, match="no option --no-such-flag"):
        check_against_cli(Invocation("t", ["prioritize", "--no-such-flag"]))
    with pytest.raises(AssertionError, match="no such command"):
        check_against_cli(Invocation("t", ["prioritise"]))
    with pytest.raises(pytest.fail.Exception, match="does not parse"):
        check_against_cli(Invocation("t", ["prioritize", "--wait", "soon"]))
    assert shell_invocations("*/5 * * * * cd /x && .venv/bin/al-backend status --json >> log 2>&1", "t")[0].args == [
        "status",
        "--json",
    ]


def test_scheduled_rounds_are_cron_safe():
    """Scheduled `prioritize` runs log JSON; a held lock is not a failure; the CronJob forbids overlap."""
    scheduled = [i for i in all_invocations() if i.args[:1] == ["prioritize"]]
    assert len(scheduled) >= 4
    for inv in scheduled:
        assert "--log-format" in inv.args and inv.args[inv.args.index("--log-format") + 1] == "json", inv.source
        assert "--source" in inv.args and inv.args[inv.args.index("--source") + 1] in ("labelstudio", "argilla")
    unit = (DEPLOY / "systemd/al-backend-prioritize.service").read_text()
    assert re.search(rf"^SuccessExitStatus=.*\b{LockedError.exit_code}\b", unit, re.M)
    timer = (DEPLOY / "systemd/al-backend-prioritize.timer").read_text()
    assert re.search(r"^On(UnitInactiveSec|Calendar|UnitActiveSec)=", timer, re.M)


def test_the_kubernetes_cronjob_forbids_overlap_and_keeps_state_and_secrets_apart():
    docs = [d for d in yaml.safe_load_all((DEPLOY / "kubernetes/cronjob.yaml").read_text()) if d]
    kinds = {d["kind"]: d for d in docs}
    job = kinds["CronJob"]
    assert job["spec"]["concurrencyPolicy"] == "Forbid"
    pod = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v
    }
    assert claims and set(claims.values()) <= {
        d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"
    }
    container = pod["containers"][0]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    # the state file lives on the persistent volume: from --state, or from the mounted config's [state] path
    args = container.get("args", [])
    if "--state" in args:
        state = args[args.index("--state") + 1]
    else:
        cfg = next(d for d in docs if d["kind"] == "ConfigMap")
        state = re.search(r'path\s*=\s*"([^"]+)"', "\n".join(cfg["data"].values())).group(1)
    assert any(state.startswith(mounts[name].rstrip("/") + "/") for name in claims), (state, mounts)
    secrets = [e["secretRef"]["name"] for e in container.get("envFrom", []) if "secretRef" in e]
    secrets += [e["valueFrom"]["secretKeyRef"]["name"] for e in container.get("env", []) if "valueFrom" in e]
    assert secrets, "tokens must come from a Secret"
    text = (DEPLOY / "kubernetes/cronjob.yaml").read_text()
    assert "API_KEY=" not in re.sub(r"^\s*#.*$", "", text, flags=re.M)  # no token in the manifest itself


def _flag(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def test_serve_and_scheduled_rounds_share_one_state_file_per_project():
    """A webhook retrain and a scheduled round of the same project must take the same lock."""
    for serve_src, round_src in (
        ("systemd/al-backend-serve.service", "systemd/al-backend-prioritize.service"),
        ("docker-compose.yml", "docker-compose.yml"),
    ):
        invs = PARSERS[serve_src](DEPLOY / serve_src) + PARSERS[round_src](DEPLOY / round_src)
        serve = next(i.args for i in invs if i.args[0] == "serve")
        rnd = next(i.args for i in invs if i.args[0] == "prioritize")
        template = _flag(serve, "--state")
        assert template and "{project}" in template, f"{serve_src}: serve needs --state with {{project}}"
        assert template.format(project=_flag(rnd, "--project")) == _flag(rnd, "--state"), (serve_src, template, rnd)


def test_systemd_units_write_state_only_where_they_may():
    for unit in (
        "systemd/al-backend-prioritize.service",
        "systemd/al-backend-serve.service",
        "argilla/al-backend-argilla-watch.service",
    ):
        text = (DEPLOY / unit).read_text()
        if "ProtectSystem=strict" not in text:
            continue
        writable = re.findall(r"^ReadWritePaths=(.+)$", text, re.M)
        writable = [p for line in writable for p in line.split()]
        for inv in systemd(DEPLOY / unit):
            state = _flag(inv.args, "--state")
            assert state and state.startswith("/"), (
                f"{unit}: pass an absolute --state (the working directory is read-only)"
            )
            assert any(state.startswith(w.rstrip("/") + "/") for w in writable), f"{unit}: {state} not in {writable}"


DOCS = [DEPLOY.parent / "README.md", *sorted((DEPLOY.parent / "docs").glob("*.md")), *sorted(DEPLOY.rglob("*.md"))]


def doc_invocations(path: Path) -> list[Invocation]:
    """al-backend command lines inside the fenced bash/sh/cron blocks of a Markdown page."""
    out, block, lang, start = [], None, "", 0
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith("```"):
            if block is None:
                block, lang, start = [], line[3:].strip(), n
            else:
                if lang in {"bash", "sh", "shell", "cron"}:
                    out += shell_invocations("\n".join(block), f"{path.name}:block at line {start}")
                block = None
        elif block is not None and not line.lstrip().startswith("docker "):  # `docker compose logs al-backend`
            block.append(line)
    return out


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(DEPLOY.parent)))
def test_documented_commands_exist_in_the_cli(doc):
    for inv in doc_invocations(doc):
        check_against_cli(inv)


def test_the_readme_documents_the_main_commands():
    seen = {inv.args[0] for inv in doc_invocations(DEPLOY.parent / "README.md") if inv.args}
    assert {"prioritize", "status", "serve", "simulate", "bench", "argilla"} <= seen
