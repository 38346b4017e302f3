#!/usr/bin/env bash
# The main job (`make demo`): the two-stage demonstration on the real SmolLM2-135M-Instruct.
set -euo pipefail
build=${1:-build}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
exec "$build/bin/safetune" demo configs/smollm2_demo.yaml
