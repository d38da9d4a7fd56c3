#!/usr/bin/env bash
# Build (or reuse) a virtual environment with the official OmniGen (v1) package, `omnigen==1.0.3`, and the exact
# versions it pins, so tests/clients/omnigen_package_check.py can run the package's own `OmniGenPipeline.merge_lora`
# on an `omnideft export --format omnigen` folder (docs/clients.md).
#
#   bash scripts/omnigen_client_env.sh [DIR]     DIR default: $OMNIDEFT_OMNIGEN_ENV, else <repo>/.client-envs/omnigen
#
# Idempotent: a stamp file records what was installed; a second run with the same pins does nothing.
#
# Two deliberate departures from the package's own requirements, both about size, neither about what is checked:
# - torch: the package pins torch==2.3.1, a 5.5 GB CUDA environment. The merge is plain tensor arithmetic on the CPU,
#   so a CPU torch (OMNIDEFT_OMNIGEN_TORCH, default the CPU wheel omnideft's own environment uses) keeps the venv
#   near 1.2 GB. pip is held to it by a constraint file, so no requirement can pull the pinned torch back in.
# - torchvision: the package imports only its Python transforms (processor.py) and timm imports it; every
#   torchvision release declares one exact torch, so it goes in with --no-deps. Its compiled ops do not load against
#   this torch (a warning at import) and nothing here uses them.
# omnigen and timm go in with --no-deps too (their torch / torchvision requirements); every other requirement of
# theirs is listed below at the version omnigen 1.0.3 pins. `datasets` (training only: train_helper) is left out.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ENV_DIR="${1:-${OMNIDEFT_OMNIGEN_ENV:-$REPO/.client-envs/omnigen}}"
PY="${OMNIDEFT_PYTHON:-$(command -v python3.11 || command -v python3)}"
TORCH_REQ="${OMNIDEFT_OMNIGEN_TORCH:-torch==2.13.0}"
# what omnigen==1.0.3 requires (its METADATA), torch excepted; timm's own requirements besides torch/torchvision
PINNED=(transformers==4.45.2 diffusers==0.30.3 peft==0.9.0 accelerate==0.26.1 safetensors)
TIMM_DEPS=(pyyaml huggingface_hub safetensors)
NO_DEPS=(omnigen==1.0.3 timm torchvision==0.16.2)
STAMP="$ENV_DIR/.omnigen-client-installed"
want="$TORCH_REQ ${PINNED[*]} ${NO_DEPS[*]}"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$ENV_DIR/bin/python" ]; then
  echo "[omnigen-env] $ENV_DIR is up to date ($want)"
  exit 0
fi
if [ ! -x "$ENV_DIR/bin/python" ]; then
  echo "[omnigen-env] creating $ENV_DIR with $PY"
  mkdir -p "$(dirname "$ENV_DIR")"
  "$PY" -m venv "$ENV_DIR"
fi
PIP=("$ENV_DIR/bin/python" -m pip --disable-pip-version-check -q)
CONSTRAINT="$ENV_DIR/torch-constraint.txt"
echo "$TORCH_REQ" > "$CONSTRAINT"
echo "[omnigen-env] installing $TORCH_REQ"
"${PIP[@]}" install "$TORCH_REQ"
echo "[omnigen-env] installing ${PINNED[*]} ${TIMM_DEPS[*]} (torch held at $TORCH_REQ)"
"${PIP[@]}" install -c "$CONSTRAINT" "${PINNED[@]}" "${TIMM_DEPS[@]}"
echo "[omnigen-env] installing ${NO_DEPS[*]} without their dependencies"
"${PIP[@]}" install -c "$CONSTRAINT" --no-deps "${NO_DEPS[@]}"

# What the package asks for against what is installed: every pin must hold except torch and torchvision.
"$ENV_DIR/bin/python" - <<'EOF'
import sys
from importlib.metadata import requires, version

from packaging.requirements import Requirement

allowed = {"torch", "torchvision", "datasets"}  # the departures explained above
bad = []
for dist in ("omnigen", "timm"):
    for line in requires(dist) or []:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate():
            continue
        try:
            have = version(req.name)
        except Exception:
            have = None
        ok = have is not None and req.specifier.contains(have, prereleases=True)
        note = "" if ok else ("  (departure: see the script's comments)" if req.name in allowed else "  MISMATCH")
        print(f"[omnigen-env] {dist} requires {str(req):28s} installed {have}{note}")
        if not ok and req.name not in allowed:
            bad.append(str(req))
if bad:
    sys.exit(f"[omnigen-env] requirements not met: {', '.join(bad)}")
EOF
"$ENV_DIR/bin/python" -W ignore -c "from OmniGen import OmniGenPipeline; import peft, torch; \
print(f'[omnigen-env] OmniGen imports: peft {peft.__version__}, torch {torch.__version__}')"
echo "$want" > "$STAMP"
echo "[omnigen-env] ready: $ENV_DIR ($(du -sh "$ENV_DIR" | cut -f1))"
