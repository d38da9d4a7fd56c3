#!/usr/bin/env bash
# README command 2: set up (or reuse) the environment, then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
export HF_HUB_OFFLINE=1 DS_ACCELERATOR=cpu
python -m pytest -q -p no:cacheprovider "$@"
