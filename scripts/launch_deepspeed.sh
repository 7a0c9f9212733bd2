#!/usr/bin/env bash
# Launch `onevision train` with the DeepSpeed launcher, ZeRO-3 by default (pass
# distributed.zero_stage=2 for ZeRO-2). Everything after the script name goes to `onevision train`.
#
# One node, 8 GPUs:
#   NPROC_PER_NODE=8 scripts/launch_deepspeed.sh stage2_ov output_root=/runs
# Several nodes, started on each node (no ssh; NODE_RANK 0..NNODES-1, same MASTER_ADDR/PORT):
#   NNODES=4 NODE_RANK=1 MASTER_ADDR=node0 MASTER_PORT=29500 NPROC_PER_NODE=8 \
#     scripts/launch_deepspeed.sh stage2_ov output_root=/runs
# Several nodes from one node through a hostfile (DeepSpeed's pdsh launcher):
#   HOSTFILE=hosts.txt scripts/launch_deepspeed.sh stage2_ov output_root=/runs
#
# Environment: NNODES (1), NODE_RANK (0), MASTER_ADDR (127.0.0.1), MASTER_PORT (29500),
# NPROC_PER_NODE (number of visible GPUs, else 1), HOSTFILE (unset), PYTHON (python).
set -euo pipefail

NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-29500}
PYTHON=${PYTHON:-python}
if [[ -z "${NPROC_PER_NODE:-}" ]]; then
  NPROC_PER_NODE=$("$PYTHON" -c "import torch; print(max(torch.cuda.device_count(), 1))")
fi

LAUNCH=("$PYTHON" -m deepspeed.launcher.runner --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" --no_local_rank)
if [[ -n "${HOSTFILE:-}" ]]; then
  LAUNCH+=(--hostfile "$HOSTFILE")
elif [[ "$NNODES" -gt 1 ]]; then
  LAUNCH+=(--no_ssh --num_nodes "$NNODES" --node_rank "$NODE_RANK" --num_gpus "$NPROC_PER_NODE")
else
  LAUNCH+=(--num_gpus "$NPROC_PER_NODE")
fi

if [[ $# -lt 1 ]]; then
  echo "usage: $0 CONFIG [key=value ...]   (CONFIG: a stage name such as stage2_ov, or a recipe YAML)" >&2
  exit 2
fi
CONFIG=$1
shift
exec "${LAUNCH[@]}" --module onevision train "$CONFIG" distributed.strategy=deepspeed "$@"
