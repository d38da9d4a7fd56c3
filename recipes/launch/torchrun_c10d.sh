#!/usr/bin/env bash
# Multi-node training with torchrun's c10d rendezvous. Run this script once on EVERY node (any order, from the
# repo root on a shared filesystem); torchrun waits until NNODES nodes have joined, then assigns node ranks.
#
#   HEAD=gpu-node-01 NNODES=2 bash recipes/launch/torchrun_c10d.sh recipes/visualcloze_deft_r32.yaml [key=value ...]
#
# Environment:
#   HEAD        required: host name or IP of the rendezvous host (any one of the nodes; port RDZV_PORT must be open)
#   NNODES      number of nodes (default 2)
#   GPUS        processes per node (default: the number of GPUs nvidia-smi lists, 1 without nvidia-smi)
#   RDZV_PORT   rendezvous port on HEAD (default 29500)
#   RDZV_ID     job id shared by the nodes of one run (default omnideft-$USER); change it for concurrent runs
#   DS_CONFIG   DeepSpeed JSON for launch.deepspeed (default recipes/launch/ds_zero2.json; "null" = DDP)
#   Also forwarded by torchrun to every process: NCCL_SOCKET_IFNAME, NCCL_IB_DISABLE, HF_HOME, HF_HUB_OFFLINE ...
# Global batch = train.batch_size x NNODES x GPUS. output.dir, the shards and HF_HOME must be readable (and
# output.dir writable) from every node at the same path: DeepSpeed writes per-rank checkpoint files on each node.
set -euo pipefail

RECIPE=${1:?usage: HEAD=host [NNODES=n GPUS=g] $0 RECIPE [key=value ...]}
shift
: "${HEAD:?set HEAD to the rendezvous host (one of the nodes)}"
NNODES=${NNODES:-2}
if [[ -z "${GPUS:-}" ]]; then
  GPUS=$( (nvidia-smi -L 2>/dev/null || true) | grep -c '^GPU' || true)
  [[ "$GPUS" -gt 0 ]] || GPUS=1
fi
RDZV_PORT=${RDZV_PORT:-29500}
RDZV_ID=${RDZV_ID:-omnideft-${USER:-job}}
DS_CONFIG=${DS_CONFIG:-recipes/launch/ds_zero2.json}

echo "torchrun: $NNODES nodes x $GPUS processes, rendezvous $HEAD:$RDZV_PORT ($RDZV_ID), launch.deepspeed=$DS_CONFIG" >&2
# launch.config=null: this process is already the launcher (no accelerate re-launch).
exec torchrun --nnodes="$NNODES" --nproc-per-node="$GPUS" --rdzv-backend=c10d --rdzv-endpoint="$HEAD:$RDZV_PORT" \
  --rdzv-id="$RDZV_ID" -m omnideft train "$RECIPE" launch.config=null launch.deepspeed="$DS_CONFIG" "$@" --no-progress
