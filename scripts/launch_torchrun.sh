#!/usr/bin/env bash
# Launch `onevision train` on one node or several with torchrun (DDP, or DeepSpeed with
# distributed.strategy=deepspeed). Everything after the script name goes to `onevision train`.
#
# One node, 8 GPUs:
#   NPROC_PER_NODE=8 scripts/launch_torchrun.sh stage2_ov output_root=/runs
# Four nodes (run on every node, NODE_RANK 0..3, same MASTER_ADDR / MASTER_PORT):
#   NNODES=4 NODE_RANK=0 MASTER_ADDR=node0 MASTER_PORT=29500 NPROC_PER_NODE=8 \
#     scripts/launch_torchrun.sh stage2_ov distributed.strategy=deepspeed output_root=/runs
# Two CPU processes (debugging; gloo backend, DeepSpeed's CPU accelerator):
#   DS_ACCELERATOR=cpu NPROC_PER_NODE=2 scripts/launch_torchrun.sh stage1 model.size=debug loop.device=cpu ...
#
# Environment: NNODES (1), NODE_RANK (0), MASTER_ADDR (127.0.0.1), MASTER_PORT (29500),
# NPROC_PER_NODE (number of visible GPUs, else 1), PYTHON (python).
set -euo pipefail

NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-29500}
PYTHON=${PYTHON:-python}
if [[ -z "${NPROC_PER_NODE:-}" ]]; then
  NPROC_PER_NODE=$("$PYTHON" -c "import torch; print(max(torch.cuda.device_count(), 1))")
fi

exec "$PYTHON" -m torch.distributed.run \
  --nnodes "$NNODES" \
  --node_rank "$NODE_RANK" \
  --master_addr "$MASTER_ADDR" \
  --master_port "$MASTER_PORT" \
  --nproc_per_node "$NPROC_PER_NODE" \
  -m onevision train "$@"
