#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs al-backend, Label Studio 1.23.2 and the Argilla 2.8.0 stack
# (each in its own virtual environment), lints and type-checks (ruff, mypy), then runs pytest. The servers themselves are started and stopped
# by the test fixtures (tests/services/), on loopback, with data on tmpfs.
#
#   bash scripts/test.sh                 # everything
#   bash scripts/test.sh tests/unit -q   # extra arguments go to pytest
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
start=$(date +%s)
bash scripts/install.sh
bash scripts/install-labelstudio.sh
bash scripts/install-argilla.sh
echo "installs done in $(( $(date +%s) - start )) s"
# Lint and types first (ruff and mypy come with the dev extras; mypy's files and options: pyproject.toml).
VENV="${VENV:-$ROOT/.venv}"
"$VENV/bin/ruff" check al_backend connectors tests
"$VENV/bin/ruff" format --check al_backend connectors tests
"$VENV/bin/mypy"
# pytest exits 5 when it collects no tests: with set -e that fails the run, as it should.
"$VENV/bin/python" -m pytest -p no:cacheprovider "$@"
