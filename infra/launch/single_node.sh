#!/usr/bin/env bash
# One node, all its GPUs: ./infra/launch/single_node.sh run.toml [extra i2i train flags]
# NPROC overrides the number of processes (default: the visible GPUs).
set -euo pipefail
config=${1:?usage: single_node.sh CONFIG.toml [i2i train flags...]}
shift
nproc=${NPROC:-$(python -c 'import torch; print(max(1, torch.cuda.device_count()))')}
exec torchrun --standalone --nproc_per_node "$nproc" -m i2i.cli train --config "$config" "$@"
