#!/usr/bin/env bash
# Run the same line on every node:
#   HEAD=head-host NNODES=2 ./infra/launch/multi_node.sh run.toml [extra i2i train flags]
# HEAD: host of the rendezvous (any node, reachable by all); PORT default 29500;
# NPROC: processes per node (default: the visible GPUs); RUN_ID: a name shared by the nodes.
set -euo pipefail
config=${1:?usage: HEAD=host NNODES=n multi_node.sh CONFIG.toml [i2i train flags...]}
shift
: "${HEAD:?set HEAD to the rendezvous host}" "${NNODES:?set NNODES to the number of nodes}"
nproc=${NPROC:-$(python -c 'import torch; print(max(1, torch.cuda.device_count()))')}
exec torchrun --nnodes "$NNODES" --nproc_per_node "$nproc" \
    --rdzv_backend c10d --rdzv_endpoint "$HEAD:${PORT:-29500}" --rdzv_id "${RUN_ID:-i2i-train}" \
    -m i2i.cli train --config "$config" "$@"
