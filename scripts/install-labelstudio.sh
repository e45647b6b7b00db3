#!/usr/bin/env bash
# Install Label Studio 1.23.2 into its own virtual environment (.services/ls-venv) for the integration
# tests and the benchmark. Idempotent: does nothing when that version is already installed.
#
# Label Studio pins Django, DRF, pytz, redis and more, so it never shares the project's environment.
# Usage: scripts/install-labelstudio.sh   (env: LS_VENV to choose another location, PYTHON for the interpreter)
set -euo pipefail

LS_VERSION="1.23.2"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LS_VENV="${LS_VENV:-$ROOT/.services/ls-venv}"
PYTHON="${PYTHON:-python3}"

installed_version() {
    # `label-studio --version` starts a server; read the installed metadata instead.
    [ -x "$LS_VENV/bin/python" ] || return 1
    "$LS_VENV/bin/python" - <<'PY' 2>/dev/null
from importlib.metadata import version
print(version("label-studio"))
PY
}

if [ "$(installed_version || true)" = "$LS_VERSION" ] && [ -x "$LS_VENV/bin/label-studio" ]; then
    echo "label-studio $LS_VERSION already installed in $LS_VENV"
    exit 0
fi

# uv installs the ~1 GB of dependencies in 12-20 s where pip takes over a minute; fall back to pip.
UV=""
if command -v uv >/dev/null 2>&1; then
    UV="$(command -v uv)"
elif [ -x "$ROOT/.venv/bin/uv" ]; then
    UV="$ROOT/.venv/bin/uv"
else
    # A throwaway bootstrap venv for uv keeps the project's environment untouched.
    BOOT="$ROOT/.services/uv-boot"
    if [ ! -x "$BOOT/bin/uv" ]; then
        "$PYTHON" -m venv "$BOOT" && "$BOOT/bin/python" -m pip install --quiet uv || true
    fi
    [ -x "$BOOT/bin/uv" ] && UV="$BOOT/bin/uv"
fi

mkdir -p "$(dirname "$LS_VENV")"
start=$(date +%s)
if [ -n "$UV" ]; then
    echo "installing label-studio $LS_VERSION into $LS_VENV with uv"
    [ -x "$LS_VENV/bin/python" ] || "$UV" venv --quiet --python "$PYTHON" "$LS_VENV"
    VIRTUAL_ENV="$LS_VENV" "$UV" pip install --quiet --python "$LS_VENV/bin/python" "label-studio==$LS_VERSION"
else
    echo "installing label-studio $LS_VERSION into $LS_VENV with pip (slow; install uv to speed this up)"
    [ -x "$LS_VENV/bin/python" ] || "$PYTHON" -m venv "$LS_VENV"
    "$LS_VENV/bin/python" -m pip install --quiet --upgrade pip
    "$LS_VENV/bin/python" -m pip install --quiet "label-studio==$LS_VERSION"
fi

got="$(installed_version || true)"
if [ "$got" != "$LS_VERSION" ]; then
    echo "error: label-studio $LS_VERSION not importable from $LS_VENV after install (found: ${got:-nothing})" >&2
    exit 1
fi
echo "label-studio $LS_VERSION installed in $LS_VENV in $(( $(date +%s) - start )) s"
