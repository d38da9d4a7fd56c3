#!/usr/bin/env bash
# README command 1: set up (or reuse) the environment, then run the offline demo into demo_out/.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
export HF_HUB_OFFLINE=1
omnideft demo --out "${1:-demo_out}"
