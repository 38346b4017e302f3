#!/usr/bin/env bash
# The main job on the embedded default (`make demo`). Until the two-stage pipeline lands this runs
# the most complete real job the project has; README.md says which one that is.
set -euo pipefail
build=${1:-build}
root=$(cd "$(dirname "$0")/.." && pwd)
cli=$build/bin/safetune
SAFETUNE_HOME=${SAFETUNE_HOME:-$HOME/.cache/safetune}
model=$SAFETUNE_HOME/models/SmolLM2-135M-Instruct.Q4_1.gguf
"$cli" config show "$root/configs/smollm2.yaml" "model.path=$model"
