// Stage-2 regularizers: the interface, the registry (by name, from YAML) and the context each
// one sees. Formulas: docs/regularizers.md; math on tensors: penalties.hpp.
#pragma once
#include <ATen/Tensor.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "safetune/config.hpp"

namespace safetune::data {
struct Batch;
}
namespace safetune::lora {
class ModelAdapters;
}
namespace safetune::model {
class CausalLM;
}

namespace safetune::train {

struct RegularizerSection : ConfigSection {
  std::string name;
  double lambda = 1.0;
  double beta_first = 0.5, beta_early = 2.0, beta_late = 0.1;
  std::int64_t early_until = 5;
  double rho = 0.05;
  bool on_task_batches = false;
  double threshold = 0.35;
  double decay = 0.9;  // ema
  void describe(ConfigVisitor& v) override;
};

// Causal-LM cross-entropy: logits [B,T,V] predict labels shifted by one (-100 ignored), mean over
// supervised tokens.
at::Tensor lm_loss(const at::Tensor& logits, const at::Tensor& labels);

// labels [B,T] shifted left by one with -100 in the last column: position t's target, aligned with
// logits [B,T,V] so that nothing slices the (vocabulary-sized) logits.
at::Tensor shifted_labels(const at::Tensor& labels);

// The logits of only the positions that predict a supervised token, as rows [N,V] in (batch,
// position) order, with their targets [N]. lm_head runs on those N rows alone, so prompt and
// padding positions cost no vocabulary projection or softmax. Grad mode as the caller's.
struct ResponseLogits {
  at::Tensor logits;   // [N, V]
  at::Tensor targets;  // [N] int64
};
ResponseLogits response_logits(model::CausalLM& model, const data::Batch& batch);
// Mean cross-entropy of the rows (0, not NaN, when there are none); equals lm_loss on the full
// logits.
at::Tensor lm_loss(const ResponseLogits& r);
// The same loss without the rows' logits: the final hidden states of the supervised positions go
// through lm_head and the softmax in chunks (linear_cross_entropy_sum), so no [N, V] tensor is
// kept for backward; falls back to lm_loss(response_logits(...)) when lm_head carries an adapter.
at::Tensor response_lm_loss(model::CausalLM& model, const data::Batch& batch);

// What a regularizer sees on each micro-step.
struct RegContext {
  model::CausalLM* model = nullptr;
  lora::ModelAdapters* adapters = nullptr;
  std::string task_adapter = "task", safety_adapter = "safety";
  const data::Batch* task_batch = nullptr;
  at::Tensor task_logits;                      // with grad, task adapter on; set only when some
                                               // regularizer's needs_task_logits() is true
  std::function<const data::Batch&()> anchor;  // a safety batch for this micro-step (drawn lazily)
  // Logits of `batch`; task_enabled=false is the reference network (base + safety adapter).
  at::Tensor logits(const data::Batch& batch, bool task_enabled, bool with_grad) const;
  // Same network choice, but only the supervised positions' rows (see response_logits).
  ResponseLogits response_logits(const data::Batch& batch, bool task_enabled, bool with_grad) const;
};

class Regularizer {
 public:
  virtual ~Regularizer() = default;
  virtual std::string name() const = 0;
  // Once, after the adapters exist (e.g. precompute the frozen safety subspace).
  virtual void setup(lora::ModelAdapters& adapters, const std::string& task,
                     const std::string& safety) {}
  // The term R (the trainer adds lambda * R); undefined when the term has nothing to add.
  virtual at::Tensor loss(RegContext& ctx) { return {}; }
  // True when loss() reads ctx.task_logits (the full [B,T,V] task logits). The recipe computes them
  // only then; otherwise the task loss uses the supervised rows alone. Custom regularizers default
  // to true, so existing ones keep working.
  virtual bool needs_task_logits() const { return true; }
  // True when the term replaces the task cross-entropy instead of adding to it.
  virtual bool replaces_task_loss() const { return false; }
  // After backward, before the optimizer step: edit the task adapter's gradients in place.
  virtual void on_gradients(RegContext& ctx, std::vector<at::Tensor>& task_params) {}
  // Once after the last optimizer step of a completed stage 2, before the adapter is saved (e.g.
  // replace the task adapter by its weight average).
  virtual void on_train_end(std::vector<at::Tensor>& task_params) {}
  // Fraction of task rows drawn from the safety data (replay); 0 for others.
  virtual double replay_ratio() const { return 0.0; }
  virtual std::map<std::string, double> metrics() const { return {}; }
  double lambda = 1.0;
};

using RegularizerFactory = std::function<std::unique_ptr<Regularizer>(const RegularizerSection&)>;
// Registers (or replaces) a regularizer under `name`; integrators add their own this way.
void register_regularizer(const std::string& name, RegularizerFactory factory);
std::unique_ptr<Regularizer> make_regularizer(
    const RegularizerSection& cfg);  // ConfigError if unknown
std::vector<std::string> regularizer_names();

// Safe LoRA's decision inputs before any projection: cos(dW_task, P dW_task) per Linear holding
// both adapters (in the task adapter's module order), and how many task layers have no safety
// adapter.
struct SafeLoraPlan {
  struct Layer {
    std::string module;
    double cosine = 0;
  };
  std::vector<Layer> layers;
  std::size_t unpaired = 0;
};
SafeLoraPlan safe_lora_plan(lora::ModelAdapters& adapters, const std::string& task,
                            const std::string& safety);

// Post-hoc Safe LoRA: per Linear holding both adapters, if cos(dW_task, P dW_task) < threshold,
// replace B_task by P B_task (P: projector on the safety adapter's column space). Layers are
// matched by module name. Returns the module names that were projected.
std::vector<std::string> safe_lora_project(lora::ModelAdapters& adapters, const std::string& task,
                                           const std::string& safety, double threshold);

}  // namespace safetune::train
