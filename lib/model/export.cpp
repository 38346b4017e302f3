// Export of a CausalLM as a Hugging Face model directory with sharded safetensors.
#include "safetune/model/export.hpp"

#include <torch/torch.h>

#include <set>

#include "safetune/error.hpp"
#include "safetune/io/atomic_file.hpp"
#include "safetune/io/safetensors.hpp"

namespace safetune::model {

namespace {
std::string dtype_config_name(c10::ScalarType t) {
  switch (t) {
    case at::kFloat: return "float32";
    case at::kBFloat16: return "bfloat16";
    case at::kHalf: return "float16";
    case at::kDouble: return "float64";
    default: throw ModelError(std::string("cannot export weights as ") + c10::toString(t));
  }
}
}  // namespace

void export_hf(const CausalLM& model, const std::filesystem::path& dir,
               const ExportOptions& options) {
  if (options.max_shard_bytes == 0) throw ModelError("max_shard_bytes must be positive");
  const c10::ScalarType dtype = options.dtype.value_or(model.dtype());
  ModelConfig config = model.config();
  config.torch_dtype = dtype_config_name(dtype);

  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw IoError("cannot create directory: " + ec.message(), dir.string());
  // Until the new config.json lands, the directory must not look like a complete model.
  std::filesystem::remove(dir / "config.json", ec);

  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (auto [name, t] : model.state_dict_hf())
    tensors.emplace_back(name, t.detach().to(at::kCPU, dtype).contiguous());
  std::set<std::string> written;
  for (const auto& f : io::safetensors_save_sharded(dir, tensors, options.max_shard_bytes))
    written.insert(f.filename().string());
  // Leftovers of an earlier export with a different shard count would confuse loaders.
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    std::string name = entry.path().filename().string();
    bool ours = name.rfind("model", 0) == 0 &&
                (name.ends_with(".safetensors") || name == "model.safetensors.index.json");
    if (ours && !written.count(name)) std::filesystem::remove(entry.path(), ec);
  }
  io::atomic_write(dir / "config.json", to_hf_json(config));
}

}  // namespace safetune::model
