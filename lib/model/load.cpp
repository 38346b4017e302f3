// Model loading from a Hugging Face directory, a safetensors file or a GGUF file.
#include <torch/torch.h>

#include "safetune/error.hpp"
#include "safetune/io/finite.hpp"
#include "safetune/io/safetensors.hpp"
#include "safetune/log.hpp"
#include "safetune/model/causal_lm.hpp"
#include "safetune/model/gguf.hpp"

namespace safetune::model {

namespace {
bool has_suffix(const std::filesystem::path& p, const std::string& ext) {
  auto e = p.extension().string();
  std::transform(e.begin(), e.end(), e.begin(), [](unsigned char ch) { return std::tolower(ch); });
  return e == ext;
}
}  // namespace

Checkpoint load_checkpoint(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) throw IoError("no such file or directory", path.string());
  Checkpoint ckpt;
  if (std::filesystem::is_directory(path, ec)) {
    ckpt.config = load_config(path / "config.json");
    ckpt.tensors = io::safetensors_load(path);
    return ckpt;
  }
  if (has_suffix(path, ".gguf")) {
    // Dequantized straight to fp32; the model converts to its dtype when built.
    return gguf_load_checkpoint(path, at::kFloat);
  }
  if (has_suffix(path, ".safetensors") || has_suffix(path, ".json")) {
    // A single file or the shard index: config.json lives beside it.
    ckpt.config =
        load_config(path.parent_path().empty() ? std::filesystem::path(".") / "config.json"
                                               : path.parent_path() / "config.json");
    ckpt.tensors = io::safetensors_load(path);
    return ckpt;
  }
  throw ModelError("unrecognised model path: expected a directory, .safetensors or .gguf",
                   path.string());
}

std::shared_ptr<CausalLM> load(const std::filesystem::path& path, c10::ScalarType dtype,
                               c10::Device device) {
  Checkpoint ckpt = load_checkpoint(path);
  io::require_finite(ckpt.tensors, path.string());
  try {
    return std::make_shared<CausalLM>(ckpt, dtype, device);
  } catch (const ModelError& e) {
    // Name the file as well as the tensor.
    throw ModelError(e.what_only(), path.string() + ": " + e.where(), e.hint());
  }
}

}  // namespace safetune::model
