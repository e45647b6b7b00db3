#!/usr/bin/env bash
# Install a real Argilla 2.8.0 stack for the integration tests: argilla-server in its own virtual
# environment (it pins pydantic/httpx/typer versions that clash with the project's) plus noida-db, one
# binary that serves an Elasticsearch 8 API and Redis offline. Idempotent: a second run is a no-op.
#
#   scripts/install-argilla.sh            # creates .services/argilla-venv
#   ARGILLA_VENV=/path scripts/install-argilla.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ARGILLA_VENV:-$ROOT/.services/argilla-venv}"
# The project's own interpreter when installed (scripts/install.sh), so the venv matches its Python version.
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
[[ -x "$(dirname "$PYTHON")/uv" ]] && export PATH="$(dirname "$PYTHON"):$PATH"
# click<8.2: argilla-server's typer 0.9 breaks on click 8.2 ("Secondary flag is not valid for non-boolean flag").
PACKAGES=("argilla-server==2.8.0" "click<8.2" "huggingface-hub<1" "datasets<4" "noida-db==0.2.3")
STAMP="$VENV/.al-backend-installed"
WANT="$(printf '%s\n' "${PACKAGES[@]}")"

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" && -x "$VENV/bin/python" ]] \
   && "$VENV/bin/python" -c 'from importlib.metadata import version as v; assert v("argilla-server") == "2.8.0" and v("noida-db") == "0.2.3"' 2>/dev/null; then
    echo "argilla stack already installed in $VENV"
    exit 0
fi

mkdir -p "$(dirname "$VENV")"
if ! command -v uv >/dev/null 2>&1; then
    # uv installs the ~150 server dependencies in seconds instead of ~40 s with pip.
    "$PYTHON" -m pip install --quiet uv || true
fi

if command -v uv >/dev/null 2>&1; then
    [[ -x "$VENV/bin/python" ]] || uv venv --quiet --python "$PYTHON" "$VENV"
    uv pip install --quiet --python "$VENV/bin/python" "${PACKAGES[@]}"
elif "$PYTHON" -m uv --version >/dev/null 2>&1; then
    [[ -x "$VENV/bin/python" ]] || "$PYTHON" -m uv venv --quiet --python "$PYTHON" "$VENV"
    "$PYTHON" -m uv pip install --quiet --python "$VENV/bin/python" "${PACKAGES[@]}"
else
    [[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet "${PACKAGES[@]}"
fi

"$VENV/bin/python" - <<'PY'
import os
from importlib.metadata import version
import noida_db
binary = os.path.join(os.path.dirname(noida_db.__file__), "noida-db")
if not os.access(binary, os.X_OK):
    raise SystemExit(f"noida-db binary missing or not executable: {binary}")
print(f"argilla-server {version('argilla-server')}, noida-db {version('noida-db')} at {binary}")
PY
printf '%s' "$WANT" > "$STAMP"
echo "argilla stack installed in $VENV"
