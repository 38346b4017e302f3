// Adapters across a whole model: attach stacks to targeted Linears, switch adapters by name, and
// read/write the Hugging Face PEFT adapter format (adapter_config.json +
// adapter_model.safetensors).
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

// An adapter another adapter was trained on top of (a task adapter's safety adapter): it must be
// active, with exactly these weights, wherever the dependent adapter is applied.
struct AdapterDependency {
  std::string name;            // the name it had when the dependent adapter was saved
  std::string weights_sha256;  // its ModelAdapters::weights_sha256 (tensors and scales)
  bool operator==(const AdapterDependency& o) const {
    return name == o.name && weights_sha256 == o.weights_sha256;
  }
};

// What safetune stores beside PEFT's fields (in the safetensors __metadata__, which PEFT ignores).
// Metadata version 2 (safetune.metadata_version = "2"): content_sha256 covers the tensors, each
// module's scale (alpha, rsLoRA), the role, required_at_inference and the dependencies, so editing
// any of them is detected on load. Files without a version (older safetune, or PEFT itself) are
// loaded as before, with one warning: their hash, if any, covers the tensors only.
struct AdapterFileInfo {
  std::string name;
  AdapterRole role = AdapterRole::other;
  bool required_at_inference = false;
  std::string content_sha256;  // checked on load when present
  std::string weights_sha256;  // version 2: tensors and scales only (what dependencies name)
  std::vector<AdapterDependency> dependencies;  // version 2 only
  int metadata_version = 0;  // 0: none (legacy or foreign), 1: hash over tensors only, 2: current
  std::string base_model;
  std::vector<std::string> modules;
};

// A dependency that is not satisfied among the adapters in effect.
struct DependencyProblem {
  std::string adapter;  // the dependent (task) adapter
  AdapterDependency dependency;
  std::string
      found_sha256;     // weights hash of the adapter under dependency.name, when one is present
  std::string message;  // one line naming both adapters and the hash
};

// One adapter's factors on one Linear, detached from any model: what the PEFT and GGUF writers
// take.
struct ModuleFactors {
  std::string module;  // Hugging Face module name, "model.layers.0.self_attn.q_proj"
  AdapterSpec spec;
  at::Tensor A, B;  // [r, in], [out, r]
};

// A standalone adapter: factors per module plus safetune's metadata.
struct AdapterFactors {
  std::string name;
  AdapterRole role = AdapterRole::other;
  bool required_at_inference = false;
  std::vector<AdapterDependency> dependencies;
  std::vector<ModuleFactors> modules;  // in model order
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
  void merge(const std::vector<std::string>& names, MergeCopy copy = MergeCopy::none,
             bool safe = true);
  void unmerge(const std::vector<std::string>& names);
  // Adapter `name` detached: its factors per module (A/B share storage with the live adapter) and
  // metadata.
  AdapterFactors factors(const std::string& name) const;
  // SHA-256 of adapter `name` as save_peft records it: factors under their PEFT key names, scales,
  // role, required_at_inference and dependencies (metadata version 2).
  std::string content_sha256(const std::string& name) const;
  // SHA-256 of what adapter `name` adds to the output: factors and per-module scales. A dependency
  // names its adapter by this hash, so flags can change without breaking the link, weights cannot.
  std::string weights_sha256(const std::string& name) const;

  // Dependencies: adapter `name` was trained with these adapters active (save_peft writes them,
  // load_peft reads them). The two-stage recipe records the safety adapter on the task adapter.
  void set_dependencies(const std::string& name, std::vector<AdapterDependency> deps);
  std::vector<AdapterDependency> dependencies_of(const std::string& name) const;
  // The dependencies of the adapters in `active` that no adapter in `active` (matched by weights
  // hash) and no adapter merged into the model's weights (ModelConfig::merged_adapters) satisfies.
  // Default `active`: every enabled or merged adapter.
  std::vector<DependencyProblem> dependency_problems(
      const std::vector<std::string>* active = nullptr) const;
  // The explicit override of the dependency check (and of nothing else): a non-empty reason lets
  // enforce_dependencies pass, logging the override once and recording it for reports.
  void set_policy_override(const std::string& reason) { override_reason_ = reason; }
  const std::string& policy_override() const { return override_reason_; }
  // Every override of the inference policy granted on this model's adapters, for its reports.
  const PolicyLog& policy_log() const { return *policy_log_; }
  // Throws PolicyError naming the dependent adapter and the missing or different one (with its
  // hash) unless there is no problem or a policy override is set. Called wherever adapters are
  // applied: Session::chat and scoring, merge, the exports.
  void enforce_dependencies(const std::vector<std::string>* active = nullptr) const;
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
  std::map<std::string, std::vector<AdapterDependency>> deps_;  // by adapter name
  std::string override_reason_;
  std::shared_ptr<PolicyLog> policy_log_ = std::make_shared<PolicyLog>();  // shared with the stacks
  // weights_sha256 by adapter, with the factors' identity and version counters it was computed
  // for: the policy check runs before every generation batch, and hashing is not free on 7B.
  mutable std::map<std::string, std::pair<std::string, std::string>> weights_sha_cache_;
  const std::string& cached_weights_sha256(const std::string& name) const;
  std::map<std::string, std::shared_ptr<AdapterStack>> stacks_;  // by module name
  std::vector<std::string> order_;                               // module order of the model
};

// SHA-256 over (name, bytes) of each tensor, sorted by name; hex. With a non-empty trailer (the
// adapter metadata block), the trailer is hashed after the tensors.
std::string tensors_sha256(const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                           const std::string& trailer = {});

// Writes `adapter` as a PEFT directory (what ModelAdapters::save_peft writes for an attached one).
void write_peft(const AdapterFactors& adapter, const std::filesystem::path& dir,
                const std::string& base_model_name_or_path = {});

// The packed adapter: the named adapters as ONE LoRA adapter, exact up to fp32 rounding. Per
// module, A = [A_1; A_2; ...] and B = [s_1 B_1, s_2 B_2, ...] (each adapter's scale, rsLoRA
// included, folded into its B in double precision), with lora_alpha = r per module so that PEFT's
// own scale is 1. A module that only some of the adapters target gets only theirs. The result is
// role safety and required_at_inference when any part is, and keeps the dependencies that no part
// satisfies (only possible under the policy override). First enforces the dependencies of `names`
// among `names` (PolicyError): a task adapter is not packed without its safety adapter.
AdapterFactors pack_adapters(ModelAdapters& adapters, const std::vector<std::string>& names,
                             const std::string& packed_name = "packed");
}  // namespace safetune::lora
