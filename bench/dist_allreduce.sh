#!/usr/bin/env bash
# All-reduce time per step against step time for data-parallel training on 2 CPU ranks (Gloo on
# loopback), for the tiny model and SmolLM2-135M: stage 1 only, no assessments. Reads rank 0's
# metrics.jsonl and prints the communication fraction. SAFETUNE_DIST_PROFILE=1 puts a barrier before
# each gradient all-reduce, so comm_s is the all-reduce itself and comm_wait_s the time the rank
# waited for the slower one (load imbalance, not communication). Only adapter gradients travel, so
# the fraction should be small.
# Usage: bench/dist_allreduce.sh [BUILD_DIR] [STEPS]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
steps=${2:-6}
cli=$build/bin/safetune
home=${SAFETUNE_HOME:-$HOME/.cache/safetune}
python=${SAFETUNE_PYTHON:-$home/venv/bin/python}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$root"

port() { "$python" -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

run_pair() {  # name config extra-overrides...
  local name=$1 cfg=$2; shift 2
  local p; p=$(port)
  local args=(train "$cfg" "run.output_dir=$tmp/$name" safety.assess=false stage2.enabled=false
              "stage1.train.max_steps=$steps" stage1.train.checkpoint_every=0 "$@")
  for r in 0 1; do
    SAFETUNE_DIST_PROFILE=1 OMP_NUM_THREADS=1 RANK=$r LOCAL_RANK=$r WORLD_SIZE=2 LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$p \
      "$cli" --quiet "${args[@]}" > "$tmp/$name.$r.log" 2>&1 &
  done
  wait
  "$python" - "$tmp/$name/stage1/metrics.jsonl" "$name" "$tmp/$name/adapters/safety/adapter_model.safetensors" <<'PY'
import json, os, sys
rows = [json.loads(l) for l in open(sys.argv[1])][1:]  # the first step warms up
comm = sum(r["comm_s"] for r in rows) / len(rows)
wait = sum(r.get("comm_wait_s", 0) for r in rows) / len(rows)
step = sum(r["step_s"] for r in rows) / len(rows)
mb = os.path.getsize(sys.argv[3]) / 2**20
print(f"{sys.argv[2]:8s} adapter {mb:6.2f} MiB  step {1000*step:8.1f} ms  all-reduce {1000*comm:7.2f} ms  "
      f"communication fraction {100*comm/step:5.2f}%  (waiting for the slower rank: {1000*wait:7.1f} ms; "
      f"{len(rows)} steps)")
PY
}

echo "2 CPU ranks, Gloo on loopback, $(nproc) cores, OMP_NUM_THREADS=1; rank 0's means over steps 2..N"
run_pair tiny configs/tiny_two_stage.yaml "model.path=$home/models/tiny-llama"
run_pair smollm2 configs/smollm2_demo.yaml stage1.data.max_length=128
