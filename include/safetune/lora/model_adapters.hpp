// Adapters across a whole model: attach stacks to targeted Linears, switch adapters by name, and
// read/write the Hugging Face PEFT adapter format (adapter_config.json + adapter_model.safetensors).
#pragma once
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "safetune/lora/adapter_stack.hpp"
#include "safetune/lora/config.hpp"

namespace safetune::model {
class CausalLM;
}

namespace safetune::lora {

// What safetune stores beside PEFT's fields (in the safetensors __metadata__, which PEFT ignores).
struct AdapterFileInfo {
  std::string name;
  AdapterRole role = AdapterRole::other;
  bool required_at_inference = false;
  std::string content_sha256;  // over the tensors in key order; checked on load when present
  std::string base_model;
  std::vector<std::string> modules;
};

class ModelAdapters {
 public:
  explicit ModelAdapters(model::CausalLM& model);

  // Adds adapter `name` on every Linear `cfg` targets (fresh PEFT-style init).
  void add(const std::string& name, const LoraConfig& cfg, AdapterRole role, bool trainable);
  bool has(const std::string& name) const;
  std::vector<std::string> names() const;
  void set_enabled(const std::string& name, bool enabled, const std::string& override_reason = {});
  void set_trainable(const std::string& name, bool trainable);
  void set_required_at_inference(const std::string& name, bool required);
  void remove(const std::string& name, const std::string& override_reason = {});
  // The trainable A/B leaves as "<module>.lora_A.<adapter>" / "...lora_B..." for the optimizer.
  std::vector<std::pair<std::string, at::Tensor>> trainable_parameters() const;
  // Stacks that carry `name` (all stacks when name is empty).
  std::vector<AdapterStack*> stacks(const std::string& name = {});
  void train(bool on);
  void merge(const std::vector<std::string>& names, MergeCopy copy = MergeCopy::none, bool safe = true);
  void unmerge(const std::vector<std::string>& names);
  // SHA-256 of adapter `name`'s factors under their PEFT key names (what save_peft records).
  std::string content_sha256(const std::string& name) const;
  // Names of required adapters that are disabled (only possible through an override).
  std::vector<std::string> inference_violations() const;

  // PEFT format. `dir` gets adapter_config.json and adapter_model.safetensors, written atomically.
  void save_peft(const std::string& name, const std::filesystem::path& dir,
                 const std::string& base_model_name_or_path = {}) const;
  // Loads a PEFT adapter directory as adapter `name` (default: the name stored by safetune, else
  // the directory name). Role/required flags come from safetune's metadata when present.
  // AdapterError naming the file and tensor on any mismatch with the model.
  AdapterFileInfo load_peft(const std::filesystem::path& dir, const std::string& name = {},
                            bool trainable = false);
  static AdapterFileInfo read_info(const std::filesystem::path& dir);

 private:
  AdapterStack& stack_for(const std::string& module);
  model::CausalLM& model_;
  std::map<std::string, std::shared_ptr<AdapterStack>> stacks_;  // by module name
  std::vector<std::string> order_;                               // module order of the model
};

// SHA-256 over (name, bytes) of each tensor, sorted by name; hex.
std::string tensors_sha256(const std::vector<std::pair<std::string, at::Tensor>>& tensors);

}  // namespace safetune::lora
