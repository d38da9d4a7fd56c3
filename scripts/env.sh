#!/usr/bin/env bash
# Create or reuse the project's virtual environment and install everything into it, in the order that works:
# torch first, then DeepSpeed (an sdist whose build imports torch) with --no-build-isolation, then the project.
# Source it: `source scripts/env.sh`. Settings (environment variables):
#   OMNIDEFT_VENV   venv location              (default: <repo>/.venv)
#   OMNIDEFT_PYTHON interpreter for a new venv (default: python3.11, else python3)
#   OMNIDEFT_TORCH  torch requirement          (default: torch==2.13.0 — a CPU wheel here; GPU users set their own)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${OMNIDEFT_VENV:-$REPO/.venv}"
PY="${OMNIDEFT_PYTHON:-$(command -v python3.11 || command -v python3)}"
TORCH_REQ="${OMNIDEFT_TORCH:-torch==2.13.0}"
STAMP="$VENV/.omnideft-installed"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[env] creating $VENV with $PY"
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
want="$(cat "$REPO/pyproject.toml" "$REPO/requirements/constraints.txt" | sha256sum | cut -c1-16)-$TORCH_REQ"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$want" ]; then
  "$VENV/bin/python" -c "import torch" 2>/dev/null || { echo "[env] installing $TORCH_REQ"; "${PIP[@]}" install "$TORCH_REQ"; }
  "$VENV/bin/python" -c "import deepspeed" 2>/dev/null || {
    echo "[env] installing deepspeed (sdist, built against the installed torch)"
    "${PIP[@]}" install setuptools wheel ninja packaging py-cpuinfo psutil pydantic msgpack hjson einops
    DS_BUILD_OPS=0 "${PIP[@]}" install --no-build-isolation "deepspeed>=0.14.1" -c "$REPO/requirements/constraints.txt"
  }
  echo "[env] installing omnideft and its dependencies"
  "${PIP[@]}" install -e "$REPO[test,studio]" -c "$REPO/requirements/constraints.txt"
  echo "$want" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
export TOKENIZERS_PARALLELISM=false
