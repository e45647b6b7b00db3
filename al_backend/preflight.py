"""Up-front checks of every path a run reads or writes, before the expensive round.

A round embeds, clusters and fits before it writes anything; a path that cannot be written must fail before
that, not after (when the round would already be recorded and the user's time spent). `check_round` is the
one entry point, called before the lock is taken:

  * inputs (--input, --labels, --vectors) exist, are files (not directories) and are readable;
  * the output is not any input (same path, symlink or hard link): writing it would destroy the user's tasks;
  * the output, the state file and its lock can be created: their directory exists or can be made (no file in
    the way), is writable, and the path itself is not a directory;
  * the output's format is known.

Nothing is created here except a probe file, removed at once, in a directory that already exists.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from .errors import ConfigError, InputError, WriteError


def _existing_ancestor(path: Path) -> Path:
    """The nearest ancestor of `path` that exists (the path's directory when it exists)."""
    p = path.parent
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _probe_dir(directory: Path, what: str, target: Path) -> None:
    """Raise WriteError unless a file can be created (and removed) in `directory`."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".al-backend-probe-", dir=directory)
    except OSError as e:
        raise WriteError(
            f"cannot write {what} {target}: directory {directory} is not writable ({e.strerror or e}); "
            f"choose another path or fix the directory's permissions"
        ) from None
    os.close(fd)
    try:
        os.unlink(tmp)
    except OSError:
        pass


def check_writable(path: str | Path, what: str) -> None:
    """`what` ("output", "state file", "lock file") at `path` can be created or replaced."""
    p = Path(path)
    if p.is_dir():
        raise WriteError(
            f"{what} {p} is a directory; pass a file path such as {p / ('ranked.jsonl' if what == 'output' else 'project.sqlite')}"
        )
    anc = _existing_ancestor(p)
    if not anc.is_dir():
        raise WriteError(
            f"cannot write {what} {p}: {anc} is a file, not a directory; choose a path whose folders are folders"
        )
    if p.exists():
        if not os.access(p, os.W_OK):
            raise WriteError(
                f"cannot write {what} {p}: the file is read-only; fix its permissions or choose another path"
            )
        if what == "output":
            _probe_dir(p.parent, what, p)  # replaced by rename: the directory must take a new file
        elif not os.access(p.parent, os.W_OK | os.X_OK):
            raise WriteError(
                f"cannot write {what} {p}: directory {p.parent} is not writable (SQLite keeps "
                f"its -wal and -shm files next to it)"
            )
        return
    _probe_dir(anc, what, p)


def check_readable_file(path: str | Path, what: str) -> None:
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{what} {p} is a directory, not a file; pass a .jsonl, .csv or .parquet file inside it")
    if not p.exists():
        raise InputError(f"{what} {p} does not exist")
    if not os.access(p, os.R_OK):
        raise InputError(f"{what} {p} is not readable (permission denied)")


def same_file(a: Path, b: Path) -> bool:
    """True when writing b would overwrite a: same resolved path, or the same inode (hard link)."""
    try:
        if a.resolve() == b.resolve():
            return True
    except (OSError, RuntimeError):
        pass
    try:
        return b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output_distinct(output: Path, inputs: Iterable[tuple[str, Path]]) -> None:
    for flag, inp in inputs:
        if same_file(inp, output):
            raise ConfigError(
                f"--output {output} is the same file as {flag} {inp}: writing the ranking would replace your "
                f"tasks. Write the ranking to another file, e.g. --output {output.with_name(output.stem + '.ranked' + output.suffix)}"
            )


def check_state(state_path: str | Path) -> None:
    check_writable(state_path, "state file")
    check_writable(str(state_path) + ".lock", "lock file")


def check_round(cfg, source: str, *, dry_run: bool = False) -> None:
    """Every check a round of `source` can make before it starts; raises the documented error."""
    if source == "file":
        f = cfg.file
        inputs: list[tuple[str, Path]] = []
        for flag, value, what in (
            ("--input", f.input, "input file"),
            ("--labels", f.labels, "labels file"),
            ("--vectors", f.vectors, "vectors file"),
        ):
            if value:
                check_readable_file(value, what)
                inputs.append((flag, Path(value)))
        if f.input and not f.output and not dry_run:
            raise InputError("the file source needs --output PATH to write the ranking (or --dry-run to only print it)")
        if f.output:
            out = Path(f.output)
            check_output_distinct(out, inputs)
            if not dry_run:
                check_writable(out, "output")
            from connectors.files import detect_format

            detect_format(out)  # an unknown suffix fails now, not after the round
    check_state(cfg.state.path)


def oserror_message(e: OSError, what: str) -> str:
    """One line for an OSError met while writing `what`."""
    why = e.strerror or errno.errorcode.get(e.errno or 0, "") or str(e)
    return f"cannot write {what} {e.filename or ''}: {why}".replace("  ", " ")
