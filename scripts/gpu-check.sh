#!/usr/bin/env bash
# The GPU check in two halves, so that no GPU time goes to building (CI here already compiles every
# .cu for sm_90 against the same torch wheel the GPU machines have):
#
#   scripts/gpu-check.sh stage [BUILD_DIR] [DEST]    here, after `make build` (default build .gpu):
#       copies the binaries, the Debian shared libraries a CUDA image lacks, configs/, data/, bench/
#       configs and scripts, the tiny model and this script into DEST (about 60 MB).
#   bash DEST/gpu-check.sh run OUT_DIR                on the GPU machine, whose python3 has torch,
#       transformers and peft: everything below, a summary in OUT_DIR/summary.txt, logs beside it.
#
# With the session's device tool: `echo /.gpu/ >> .git/info/exclude; scripts/gpu-check.sh stage`,
# then one run of `bash .gpu/gpu-check.sh run $OUT` with `.gpu` carried (about 6 minutes).
#
# What `run` does, each step under its own timeout, all in one process tree:
#   1 the gpu-labelled tests (CUDA kernels and the mixed-precision paths against fp64 references)
#   2 bench_kernels --device cuda (merge vs copy bandwidth and PEFT; two-adapter forward+backward)
#   3 bench_train step and kl on a Qwen2-0.5B-shaped bf16 model, batch 8 x 1024, side by side with
#     transformers + PEFT under bf16 autocast: tokens/s and peak CUDA memory, as ratios
#   4 safetune train at precision auto (bf16 autocast): the tiny config and the 0.5B-shaped model
#   5 the NCCL data-parallel code path with one rank, precision auto
set -uo pipefail

stage() {
  local build=${1:-build} dest=${2:-.gpu}
  [ -x "$build/bin/safetune" ] || { echo "error: $build/bin/safetune missing: run make build first" >&2; exit 1; }
  nm -D "$build/libsafetune.so.0" 2>/dev/null | grep lora_merge_cuda_launch > /dev/null ||
    { echo "error: $build/libsafetune.so.0 has no CUDA kernels (nvcc or a CUDA torch missing at configure)" >&2; exit 1; }
  build=$(cd "$build" && pwd)
  rm -rf "$dest"
  mkdir -p "$dest"/{bin,lib,src/bench,models}
  dest=$(cd "$dest" && pwd)
  local b f
  for b in bin/safetune bin/bench_kernels bin/bench_train tests/gpu/safetune_gpu_tests; do
    f=$(find "$build" -path "*/$b" -type f | head -n1)
    [ -n "$f" ] && cp "$f" "$dest/bin/" || echo "warning: $b not built" >&2
  done
  cp -L "$build/libsafetune.so.0" "$dest/lib/"
  # Debian libraries the binaries need beyond torch/CUDA/glibc (the GPU image has those).
  ldd "$dest"/bin/* "$dest/lib/libsafetune.so.0" 2>/dev/null | awk '/=>/ {print $3}' | sort -u |
    while read -r l; do
      case "$l" in
        */torch/lib/*|*/nvidia/*|*/cuda*/*|*libc.so*|*libm.so*|*libpthread*|*libdl.so*|*librt.so*|*ld-linux*|*libgcc_s*|*libstdc++*|*libutil*) ;;
        /usr/lib/*|/lib/*) cp -L "$l" "$dest/lib/" ;;
      esac
    done
  strip --strip-unneeded "$dest"/bin/* "$dest"/lib/* 2>/dev/null || true
  local root
  root=$(cd "$(dirname "$0")/.." && pwd)
  cp -r "$root/configs" "$root/data" "$dest/src/"
  cp "$root"/bench/make_q05_model.py "$root"/bench/q05_gpu.yaml "$dest/src/bench/"
  cp "$0" "$dest/gpu-check.sh"
  # Tokenizer files only (the tiny model itself is written there: the device's working tree is
  # limited to 64 MiB).
  local tiny=${SAFETUNE_HOME:-$HOME/.cache/safetune}/models/tiny-llama
  mkdir -p "$dest/models/tokenizer"
  cp "$tiny"/tokenizer.json "$tiny"/tokenizer_config.json "$dest/models/tokenizer/"
  [ -f "$tiny/chat_template.jinja" ] && cp "$tiny/chat_template.jinja" "$dest/models/tokenizer/"
  du -sh "$dest"
}

run() {
  local out=${1:?usage: gpu-check.sh run OUT_DIR}
  mkdir -p "$out" && out=$(cd "$out" && pwd)
  local g
  g=$(cd "$(dirname "$0")" && pwd)
  [ -x "$g/bin/safetune" ] || { echo "error: run this from a staged folder (gpu-check.sh stage)" >&2; exit 1; }
  command -v nvidia-smi > /dev/null || { echo "error: no nvidia-smi: run this on the GPU machine" >&2; exit 1; }
  python3 -c 'import torch, transformers, peft' 2> /dev/null ||
    { echo "error: python3 lacks torch, transformers or peft (the GPU image has them)" >&2; exit 1; }
  local sum=$out/summary.txt
  : > "$sum"
  say() { echo "$*" | tee -a "$sum"; }
  local tl
  tl=$(python3 -c 'import torch,os;print(os.path.join(os.path.dirname(torch.__file__),"lib"))')
  export LD_LIBRARY_PATH=$g/lib:$tl:$tl/../../nvidia/cu13/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
  export SAFETUNE_HOME=$out/home
  mkdir -p "$SAFETUNE_HOME/models" "$SAFETUNE_HOME/venv/bin"
  # Code that calls the bootstrap venv's python gets the image's python3 (a symlink would lose the
  # image's virtualenv).
  printf '#!/bin/sh\nexec %s "$@"\n' "$(command -v python3)" > "$SAFETUNE_HOME/venv/bin/python"
  chmod +x "$SAFETUNE_HOME/venv/bin/python"
  say "date: $(date -u)"
  say "gpu: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1)"
  say "stack: $(python3 -c 'import torch,transformers,peft;print("torch",torch.__version__,"transformers",transformers.__version__,"peft",peft.__version__)' 2>&1)"
  ldd "$g/bin/safetune" | grep -i 'not found' | tee -a "$sum"
  cd "$g/src" || exit 1

  timeout 300 "$g/bin/safetune_gpu_tests" > "$out/gpu-tests.txt" 2>&1
  say "1 gpu tests rc=$? :: $(tail -n 2 "$out/gpu-tests.txt" | tr '\n' ' ')"

  timeout 150 "$g/bin/bench_kernels" --device cuda > "$out/bench-kernels.txt" 2>&1
  say "2 bench_kernels rc=$?"
  grep -iE 'ratio|bandwidth|overhead|%' "$out/bench-kernels.txt" | tee -a "$sum"

  timeout 120 python3 bench/make_q05_model.py "$g/models/tokenizer" "$SAFETUNE_HOME/models/tiny-llama" --tiny \
    > "$out/models.txt" 2>&1 &&
    timeout 120 python3 bench/make_q05_model.py "$g/models/tokenizer" /tmp/models/q05 >> "$out/models.txt" 2>&1
  say "models rc=$? :: $(tail -n 1 "$out/models.txt")"

  local bt=(--model /tmp/models/q05 --device cuda --dtype bf16 --batch 8 --seq 1024 --prompt-share 0.6
            --python "$(command -v python3)")
  timeout 240 "$g/bin/bench_train" step "${bt[@]}" --iters 10 > "$out/bench-train-step.txt" 2>&1
  say "3 bench_train step rc=$?"
  grep -E 'step|ratio|peak' "$out/bench-train-step.txt" | tee -a "$sum"
  timeout 200 "$g/bin/bench_train" step "${bt[@]}" --iters 5 --activation-checkpointing > "$out/bench-train-step-ckpt.txt" 2>&1
  say "3 bench_train step, safetune with activation checkpointing rc=$?"
  grep -E 'step|ratio|peak' "$out/bench-train-step-ckpt.txt" | tee -a "$sum"
  timeout 240 "$g/bin/bench_train" kl "${bt[@]}" --iters 5 > "$out/bench-train-kl.txt" 2>&1
  say "3 bench_train kl rc=$?"
  grep -E 'step|kl_anchor|peak' "$out/bench-train-kl.txt" | tee -a "$sum"

  timeout 150 "$g/bin/safetune" train configs/tiny_two_stage.yaml "run.output_dir=$out/tiny-auto" \
    model.device=cuda > "$out/tiny-auto.log" 2>&1
  say "4 tiny two-stage, precision auto rc=$? :: $(grep -v '^frame' "$out/tiny-auto.log" | tail -n 1)"
  timeout 240 "$g/bin/safetune" --quiet train bench/q05_gpu.yaml "run.output_dir=$out/q05-auto" > "$out/q05-auto.log" 2>&1
  say "4 q05 two-stage, precision auto rc=$? :: $(grep -v '^frame' "$out/q05-auto.log" | tail -n 1)"
  local s
  for s in stage1 stage2; do
    [ -f "$out/q05-auto/$s/metrics.jsonl" ] || continue
    python3 - "$out/q05-auto/$s/metrics.jsonl" "$s" <<'PY' | tee -a "$sum"
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"step_s"' in l]
st = [r["step_s"] for r in rows[3:]]
if st:
    m = statistics.median(st)
    print(f"  q05 {sys.argv[2]}: {len(rows)} steps, median step {m:.4f} s = {8192 / m:.0f} tokens/s, last loss {rows[-1]['loss']:.4f}")
PY
  done

  local port
  port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
  SAFETUNE_DIST_FORCE=1 RANK=0 LOCAL_RANK=0 WORLD_SIZE=1 LOCAL_WORLD_SIZE=1 MASTER_ADDR=127.0.0.1 \
    MASTER_PORT=$port SAFETUNE_DIST_TIMEOUT_S=120 timeout 150 "$g/bin/safetune" --quiet train \
    configs/tiny_two_stage.yaml "run.output_dir=$out/dist-nccl" model.device=cuda dist.backend=nccl \
    safety.assess=false stage2.task_eval= stage1.train.max_steps=3 stage2.train.max_steps=3 > "$out/dist-nccl.log" 2>&1
  local rc=$?
  # A run that "passed" without all-reducing anything did not test the NCCL path.
  if [ "$rc" -eq 0 ] && ! grep -q '"comm_s"' "$out/dist-nccl/stage2/metrics.jsonl" 2>/dev/null; then rc=1; fi
  say "5 NCCL one rank, precision auto rc=$rc :: $(grep -v '^frame' "$out/dist-nccl.log" | tail -n 1)"
  rm -rf "$out/home" "$out"/*/checkpoints "$out"/*/stage*/checkpoints
  say "done $(date -u)"
}

case "${1:-}" in
  stage) shift; stage "$@" ;;
  run) shift; run "$@" ;;
  *) echo "usage: scripts/gpu-check.sh stage [BUILD_DIR] [DEST] | gpu-check.sh run OUT_DIR" >&2; exit 2 ;;
esac
