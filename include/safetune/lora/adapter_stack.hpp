// AdapterStack: the ordered named LoRA adapters on one Linear, with merging and the inference
// policy.
#pragma once
#include "safetune/error.hpp"
#include "safetune/kernels/lora.hpp"
#include "safetune/model/linear_hook.hpp"

#include <ATen/Tensor.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace safetune {
// A refusal by the adapter inference policy (a task adapter without its safety adapter, ...): the
// CLI exits 2, as for a usage error, since the fix is a different command line.
class PolicyError : public AdapterError {
  using AdapterError::AdapterError;
};
}  // namespace safetune

namespace safetune::lora {

enum class AdapterRole { safety, task, other };
const char* role_name(AdapterRole role);
AdapterRole parse_role(
    const std::string& name);  // "safety" | "task" | "other"; ConfigError otherwise

// "peft_default": A ~ kaiming_uniform(a = sqrt(5)) (bound 1/sqrt(in)), B = 0, as PEFT's default.
// "gaussian": A ~ N(0, std = 1/r), B = 0, as PEFT's init_lora_weights="gaussian".
enum class InitMethod { peft_default, gaussian };
InitMethod parse_init(const std::string& name);  // "peft_default"|"default"|"true"|"gaussian"

struct AdapterSpec {
  std::string name;
  std::int64_t rank = 8;
  double alpha = 16.0;
  double dropout = 0.0;
  bool use_rslora = false;  // scale alpha/sqrt(r) instead of alpha/r
  AdapterRole role = AdapterRole::other;
  bool trainable = true;
  bool required_at_inference = false;
  InitMethod init = InitMethod::peft_default;

  double scale() const;  // alpha/r or alpha/sqrt(r)
};

// One adapter on one Linear. A [r, in] and B [out, r] are leaf tensors (requires_grad ==
// trainable).
struct Adapter {
  AdapterSpec spec;
  at::Tensor A, B;
  bool enabled = true;
  bool merged = false;  // its product sits inside the base weight; forward no longer adds it
  double scale() const { return spec.scale(); }
};

// An explicit override of the inference policy, kept for the safety report. One record per
// adapter, action and reason: the same override on every Linear of a model is one decision.
struct PolicyOverride {
  std::string module;  // the first Linear it was granted on; empty for a whole-adapter override
  std::string adapter;
  std::string action;       // "disable" | "remove" | "run without dependency" | ...
  std::string reason;       // what the caller passed as the override
  std::size_t modules = 1;  // Linears it was granted on
};
// The overrides granted on one model's adapters (ModelAdapters shares its log with every stack it
// makes; a standalone AdapterStack has its own). Thread-safe.
class PolicyLog {
 public:
  // Records an override; logs one warning the first time an (adapter, action, reason) is seen.
  void record(const PolicyOverride& o);
  // Every override recorded, in order (a copy).
  std::vector<PolicyOverride> entries() const;
  void clear();

 private:
  mutable std::mutex mutex_;
  std::vector<PolicyOverride> entries_;
};
// One line for reports: "disable of required adapter 'safety' on 30 modules (reason)".
std::string describe(const PolicyOverride& o);

// How to restore a merge exactly: a caller that wants bit-exact unmerge asks for a saved copy.
enum class MergeCopy { none, keep };

class AdapterStack : public model::LinearHook {
 public:
  // base_weight is the Linear's [out, in] weight; the stack keeps a handle to the same storage so
  // merge/unmerge edit the model's weight in place.
  AdapterStack(std::string module_name, at::Tensor base_weight);

  // For a Linear whose weight tensor was replaced rather than written into (e.g. after loading):
  // points the stack at the new [out, in] tensor. AdapterError while adapters are merged.
  void rebind_weight(at::Tensor base_weight);

  const std::string& module_name() const { return module_; }
  const at::Tensor& base_weight() const { return weight_; }
  std::int64_t in_features() const { return weight_.size(1); }
  std::int64_t out_features() const { return weight_.size(0); }

  // Adds an initialised adapter (on the weight's device; dtype defaults to fp32, PEFT's default
  // for adapter weights). AdapterError when the name exists or the spec is invalid.
  Adapter& add(const AdapterSpec& spec, std::optional<at::ScalarType> dtype = std::nullopt);
  // Adds an adapter with given factors (loading a saved adapter): A [r, in], B [out, r], r =
  // spec.rank.
  Adapter& add(const AdapterSpec& spec, const at::Tensor& A, const at::Tensor& B);
  // Removes an adapter. A required_at_inference adapter needs a non-empty override reason.
  void remove(const std::string& name, const std::string& override_reason = {});
  // Enables/disables. Disabling a required_at_inference adapter needs a non-empty override reason;
  // a merged adapter must be unmerged first.
  void set_enabled(const std::string& name, bool enabled, const std::string& override_reason = {});
  void set_trainable(const std::string& name, bool trainable);
  void set_required_at_inference(const std::string& name, bool required);

  bool contains(const std::string& name) const;
  Adapter& get(const std::string& name);
  const Adapter& get(const std::string& name) const;
  std::vector<std::string> names() const;  // in stack order
  const std::vector<Adapter>& adapters() const { return adapters_; }
  // The A/B leaves of trainable adapters, for the optimizer.
  std::vector<at::Tensor> trainable_parameters() const;
  // Names of required_at_inference adapters that are currently disabled (only possible through an
  // override), for generation-time checks.
  std::vector<std::string> inference_violations() const;

  // Where this stack records policy overrides (shared with the other stacks of one model).
  PolicyLog& policy_log() const { return *policy_log_; }
  void set_policy_log(std::shared_ptr<PolicyLog> log) { policy_log_ = std::move(log); }

  void train(bool on = true) { training_ = on; }
  bool is_training() const { return training_; }

  // LinearHook
  bool active() const override;
  at::Tensor apply(const at::Tensor& x, const at::Tensor& base_out) override;
  at::Tensor forward(const at::Tensor& x, const at::Tensor& weight,
                     const at::Tensor& bias) override;

  // W += sum s_i B_i A_i for the named (enabled, unmerged) adapters, fp32 accumulation, one
  // rounding.
  void merge(const std::vector<std::string>& names, MergeCopy copy = MergeCopy::none);
  // As merge, but computes into a copy first; refuses (AdapterError naming the adapter) when the
  // result would contain NaN/Inf, leaving W untouched.
  void safe_merge(const std::vector<std::string>& names, MergeCopy copy = MergeCopy::none);
  // Restores W. Merges made with MergeCopy::keep are undone bit-exactly when unmerged in reverse
  // order (the whole group at once); everything else is subtracted with the same kernel, leaving W
  // within a few roundings of the original: elementwise |W' - W| <= 2^-19 (|W| + sum |s_i|
  // |B_i||A_i|) in fp32 (tested); for bf16/fp16 weights, one ulp of the merged value per
  // merge/unmerge pair.
  void unmerge(const std::vector<std::string>& names);
  std::vector<std::string> merged_names() const;

 private:
  std::vector<kernels::LoraFactors> active_factors() const;
  struct MergeRecord {
    std::vector<std::string> names;
    at::Tensor saved;  // W before this merge, when requested
  };
  std::vector<std::size_t> indices_for_merge(const std::vector<std::string>& names,
                                             bool merging) const;
  void merge_impl(const std::vector<std::string>& names, MergeCopy copy, bool safe);
  void record_override(const Adapter& a, const std::string& action, const std::string& reason);
  std::shared_ptr<PolicyLog> policy_log_ = std::make_shared<PolicyLog>();
  std::size_t index_of(const std::string& name) const;

  std::string module_;
  at::Tensor weight_;
  std::vector<Adapter> adapters_;
  std::vector<MergeRecord> merges_;
  bool training_ = false;
};

}  // namespace safetune::lora
