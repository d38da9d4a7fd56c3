#!/usr/bin/env bash
# README command 2: set up (or reuse) the environment, then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
# The official OmniGen package in its own environment (CPU torch, about 1.2 GB; nothing to do when it is up to
# date): tests/clients runs its merge_lora on omnideft's exports (docs/clients.md).
bash scripts/omnigen_client_env.sh
export HF_HUB_OFFLINE=1 DS_ACCELERATOR=cpu
python -m pytest -q -p no:cacheprovider "$@"
