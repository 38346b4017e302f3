// Export of a CausalLM as a Hugging Face model directory with sharded safetensors.
#include "safetune/model/export.hpp"

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <cstdio>
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

std::string shard_name(size_t i, size_t n) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", i, n);
  return buf;
}
}  // namespace

void export_hf(const CausalLM& model, const std::filesystem::path& dir, const ExportOptions& options) {
  if (options.max_shard_bytes == 0) throw ModelError("max_shard_bytes must be positive");
  const c10::ScalarType dtype = options.dtype.value_or(model.dtype());
  ModelConfig config = model.config();
  config.torch_dtype = dtype_config_name(dtype);

  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw IoError("cannot create directory: " + ec.message(), dir.string());
  // Until the new config.json lands, the directory must not look like a complete model.
  std::filesystem::remove(dir / "config.json", ec);

  // Greedy packing in state-dict order, like save_pretrained.
  std::vector<std::vector<std::pair<std::string, at::Tensor>>> shards(1);
  std::uint64_t current = 0, total = 0;
  for (auto [name, t] : model.state_dict_hf()) {
    t = t.detach().to(at::kCPU, dtype).contiguous();
    std::uint64_t bytes = static_cast<std::uint64_t>(t.numel()) * t.element_size();
    if (current > 0 && current + bytes > options.max_shard_bytes) {
      shards.emplace_back();
      current = 0;
    }
    shards.back().emplace_back(name, t);
    current += bytes;
    total += bytes;
  }

  const std::map<std::string, std::string> metadata = {{"format", "pt"}};
  std::set<std::string> written;
  if (shards.size() == 1) {
    io::safetensors_save(dir / "model.safetensors", shards[0], metadata);
    written.insert("model.safetensors");
  } else {
    nlohmann::json weight_map = nlohmann::json::object();
    for (size_t i = 0; i < shards.size(); ++i) {
      std::string file = shard_name(i + 1, shards.size());
      io::safetensors_save(dir / file, shards[i], metadata);
      written.insert(file);
      for (const auto& [name, t] : shards[i]) weight_map[name] = file;
    }
    nlohmann::json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
    io::atomic_write(dir / "model.safetensors.index.json", index.dump(2) + "\n");
    written.insert("model.safetensors.index.json");
  }
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
