#!/usr/bin/env bash
# On the offline GPU machine: build safetune with CUDA, run the `gpu`-labelled tests and the
# kernel benchmarks, and write everything to OUT_DIR (build log, ctest log, benchmark output).
# Needs the Debian packages staged beforehand (../shared/gpu/README.md):
#   ../shared/gpu/stage-debs.sh .gpu-deps   (on a machine with the registry)
# Usage: scripts/gpu-check.sh OUT_DIR
set -uo pipefail
out=${1:?usage: scripts/gpu-check.sh OUT_DIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
{
  echo "date: $(date -u)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  nvcc --version | tail -n1
} > "$out/machine.txt"

if [ -d .gpu-deps ] && [ -z "${SAFETUNE_DEPS_READY:-}" ]; then
  bash .gpu-deps/unpack.sh /tmp/safetune-deps > "$out/deps.log" 2>&1 || { echo "unpack failed" >&2; exit 1; }
  # shellcheck disable=SC1091
  source /tmp/safetune-deps/env.sh
fi
python=${SAFETUNE_PYTHON:-python3}
torch_prefix=$("$python" -c 'import torch;print(torch.utils.cmake_prefix_path)')
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
build=${BUILD_DIR:-build-gpu}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSAFETUNE_CUDA=ON \
  -DSAFETUNE_PYTHON="$(command -v "$python")" \
  -DCMAKE_PREFIX_PATH="$torch_prefix;${CMAKE_PREFIX_PATH:-}" > "$out/configure.log" 2>&1 \
  || { echo "configure failed: see $out/configure.log" >&2; exit 1; }
cmake --build "$build" -j "$(nproc)" > "$out/build.log" 2>&1 \
  || { echo "build failed: see $out/build.log" >&2; exit 1; }
ctest --test-dir "$build" -L gpu --output-on-failure > "$out/gpu-tests.log" 2>&1
tests_rc=$?
bench_rc=0
for b in "$build"/bench/bench_kernels*; do
  [ -x "$b" ] || continue
  "$b" --device cuda > "$out/$(basename "$b").txt" 2>&1 || bench_rc=1
done
# dist: the NCCL data-parallel code path with one rank (one GPU here): SAFETUNE_DIST_FORCE=1 makes
# a one-rank world build the TCPStore + ProcessGroupNCCL and run every collective the trainer runs.
dist_rc=0
tiny=${SAFETUNE_HOME:-$HOME/.cache/safetune}/models/tiny-llama
if [ -d "$tiny" ]; then
  port=$("$python" -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
  SAFETUNE_DIST_FORCE=1 RANK=0 LOCAL_RANK=0 WORLD_SIZE=1 LOCAL_WORLD_SIZE=1 MASTER_ADDR=127.0.0.1 \
    MASTER_PORT=$port SAFETUNE_DIST_TIMEOUT_S=120 \
    "$build/bin/safetune" train configs/tiny_two_stage.yaml "run.output_dir=$out/dist-nccl" \
      "model.path=$tiny" model.device=cuda dist.backend=nccl safety.assess=false stage2.task_eval= \
      stage1.train.max_steps=3 stage2.train.max_steps=3 > "$out/dist-nccl.log" 2>&1 || dist_rc=1
  grep -q '"comm_s"' "$out/dist-nccl/stage2/metrics.jsonl" 2>/dev/null || dist_rc=1
else
  echo "dist NCCL check skipped: $tiny missing" > "$out/dist-nccl.log"
fi
echo "gpu tests rc=$tests_rc, benchmarks rc=$bench_rc, dist nccl rc=$dist_rc" | tee "$out/summary.txt"
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ] && [ "$dist_rc" -eq 0 ]
