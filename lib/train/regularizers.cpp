// The bundled regularizers and their registry; see docs/regularizers.md for each formula's source.
#include <torch/torch.h>

#include <mutex>

#include "safetune/data/dataset.hpp"
#include "safetune/error.hpp"
#include "safetune/lora/model_adapters.hpp"
#include "safetune/model/causal_lm.hpp"
#include "safetune/train/penalties.hpp"
#include "safetune/train/regularizer.hpp"

namespace safetune::train {

void RegularizerSection::describe(ConfigVisitor& v) {
  auto names = regularizer_names();
  v.field("name", name, Field("Regularizer name.").required().one_of(names));
  v.field("lambda", lambda, Field("Weight of the term in the stage-2 loss.").range(0, 1e6));
  v.field("beta_first", beta_first,
          Field("token_constrained: beta of the first response token.").range(1e-6, 1e3));
  v.field("beta_early", beta_early,
          Field("token_constrained: beta of response tokens 2..early_until.").range(1e-6, 1e3));
  v.field("beta_late", beta_late,
          Field("token_constrained: beta after early_until.").range(1e-6, 1e3));
  v.field("early_until", early_until,
          Field("token_constrained: last position that uses beta_early.").range(1, 1e6));
  v.field("rho", rho,
          Field("replay: fraction of task rows drawn from the safety data.").range(0, 1));
  v.field("on_task_batches", on_task_batches, Field("kl_anchor: also anchor on the task batches."));
  v.field("threshold", threshold,
          Field("safe_lora_projection: project layers whose cosine is below this.").range(0, 1));
  v.field("decay", decay,
          Field("ema: weight of the running average at each optimizer step.").range(0, 0.999999));
}

at::Tensor shifted_labels(const at::Tensor& labels) {
  const auto B = labels.size(0), T = labels.size(1);
  return at::cat({labels.narrow(1, 1, T - 1), at::full({B, 1}, -100, labels.options())}, 1);
}

at::Tensor lm_loss(const at::Tensor& logits, const at::Tensor& labels) {
  // The labels are shifted, not the logits: slicing [B,T,V] would copy it, and its backward would
  // allocate and fill a full-size gradient (transformers' loss pads the labels the same way).
  auto l = logits.to(torch::kFloat);
  auto y = shifted_labels(labels).to(l.device());
  // Mean over supervised tokens; a batch whose examples were all truncated before their answer has
  // none and contributes 0 (not NaN), like the masked penalties.
  auto total = torch::nn::functional::cross_entropy(
      l.reshape({-1, l.size(-1)}), y.reshape({-1}),
      torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-100).reduction(torch::kSum));
  return total / y.ne(-100).sum().clamp_min(1).to(total.scalar_type());
}

namespace {
// The final hidden states [N, H] of the positions that predict a supervised token, and the targets.
struct ResponseRows {
  at::Tensor hidden, targets;
};
ResponseRows rows_hidden(model::CausalLM& model, const data::Batch& b) {
  auto dev = model.device();
  auto h = model.hidden_states(b.input_ids.to(dev), b.attention_mask.to(dev));
  auto y = shifted_labels(b.labels).to(dev).reshape({-1});
  auto rows = y.ne(-100).nonzero().squeeze(-1);
  auto flat = h.reshape({-1, h.size(-1)});
  // All rows supervised (no prompt mask): no gather, and no scatter in backward.
  auto picked = rows.numel() == flat.size(0) ? flat : flat.index_select(0, rows);
  return {picked, y.index_select(0, rows)};
}
ResponseLogits rows_of(model::CausalLM& model, const data::Batch& b) {
  auto r = rows_hidden(model, b);
  return {model.project(r.hidden), r.targets};
}
}  // namespace

ResponseLogits response_logits(model::CausalLM& model, const data::Batch& batch) {
  return rows_of(model, batch);
}

at::Tensor lm_loss(const ResponseLogits& r) {
  if (r.targets.numel() == 0) return r.logits.to(torch::kFloat).sum() * 0;
  return cross_entropy_sum(r.logits, r.targets) / static_cast<double>(r.targets.numel());
}

at::Tensor response_lm_loss(model::CausalLM& model, const data::Batch& batch) {
  const auto W = model.plain_projection_weight();
  if (!W.defined()) return lm_loss(rows_of(model, batch));
  auto r = rows_hidden(model, batch);
  if (r.targets.numel() == 0) return r.hidden.to(torch::kFloat).sum() * 0;
  return linear_cross_entropy_sum(r.hidden, W, r.targets) / static_cast<double>(r.targets.numel());
}

namespace {
// Runs `fn` on the network RegContext names: the task adapter disabled for the duration when
// task_enabled is false (the reference network), and without gradients unless with_grad.
template <class Fn>
auto on_network(const RegContext& c, bool task_enabled, bool with_grad, Fn&& fn) {
  const bool toggle = !task_enabled && c.adapters->has(c.task_adapter);
  if (toggle) c.adapters->set_enabled(c.task_adapter, false);
  struct Restore {
    const RegContext* c;
    bool on;
    ~Restore() {
      if (on) c->adapters->set_enabled(c->task_adapter, true);
    }
  } restore{&c, toggle};
  if (with_grad) return fn();
  torch::NoGradGuard ng;
  return fn();
}
}  // namespace

at::Tensor RegContext::logits(const data::Batch& b, bool task_enabled, bool with_grad) const {
  return on_network(*this, task_enabled, with_grad, [&] {
    auto dev = model->device();
    return model->forward(b.input_ids.to(dev), b.attention_mask.to(dev));
  });
}

ResponseLogits RegContext::response_logits(const data::Batch& b, bool task_enabled,
                                           bool with_grad) const {
  return on_network(*this, task_enabled, with_grad, [&] { return rows_of(*model, b); });
}

namespace {

// Both adapters on the same Linear: the pairs every weight-space penalty sums over.
struct Pair {
  const lora::Adapter* task;
  const lora::Adapter* safety;
  at::Tensor Q;  // basis of col(B_safety), for subspace
};
std::vector<Pair> pairs(lora::ModelAdapters& a, const std::string& task,
                        const std::string& safety) {
  std::vector<Pair> out;
  for (auto* st : a.stacks(task))
    if (st->contains(safety)) out.push_back({&st->get(task), &st->get(safety), {}});
  return out;
}

at::Tensor shifted_mask(const data::Batch& b) { return shifted_labels(b.labels).ne(-100); }

class NoneReg : public Regularizer {
 public:
  std::string name() const override { return "none"; }
  bool needs_task_logits() const override { return false; }
};

class KlAnchor : public Regularizer {
 public:
  explicit KlAnchor(bool on_task) : on_task_(on_task) {}
  std::string name() const override { return "kl_anchor"; }
  at::Tensor loss(RegContext& c) override {
    // Only the response rows enter the KL, so only they go through lm_head and the softmaxes.
    const auto& b = c.anchor();
    at::Tensor r;
    if (const auto W = c.model->plain_projection_weight(); W.defined()) {
      // Fused and chunked: no [rows, V] logits of either network are kept.
      auto t = on_network(c, true, true, [&] { return rows_hidden(*c.model, b); });
      auto ref = on_network(c, false, false, [&] { return rows_hidden(*c.model, b); });
      const auto n = t.targets.numel();
      r = n == 0 ? t.hidden.to(torch::kFloat).sum() * 0
                 : linear_kl_sum(t.hidden, ref.hidden, W,
                                 at::ones({n}, t.hidden.options().dtype(torch::kFloat))) /
                       static_cast<double>(n);
    } else {
      auto lt = c.response_logits(b, true, true).logits,
           lr = c.response_logits(b, false, false).logits;
      r = kl_anchor(lt, lr, at::ones({lt.size(0)}, lt.options().dtype(torch::kBool)));
    }
    if (on_task_) {
      auto rt = c.logits(*c.task_batch, false, false);
      r = r + kl_anchor(c.task_logits, rt, shifted_mask(*c.task_batch).to(rt.device()));
    }
    last_ = r.item<double>();
    return r;
  }
  bool needs_task_logits() const override { return on_task_; }
  std::map<std::string, double> metrics() const override { return {{"kl_anchor", last_}}; }

 private:
  bool on_task_;
  double last_ = 0;
};

class TokenConstrained : public Regularizer {
 public:
  explicit TokenConstrained(TokenBetas b) : betas_(b) {}
  std::string name() const override { return "token_constrained"; }
  bool replaces_task_loss() const override { return true; }
  at::Tensor loss(RegContext& c) override {
    const auto& b = *c.task_batch;
    auto lr = c.logits(b, false, false);
    auto labels = shifted_labels(b.labels).to(lr.device());
    double value = 0;
    auto l = token_constrained(c.task_logits, lr, labels, betas_, &value);
    last_ = value;
    return l;
  }
  std::map<std::string, double> metrics() const override { return {{"token_constrained", last_}}; }

 private:
  TokenBetas betas_;
  double last_ = 0;
};

class Replay : public Regularizer {
 public:
  explicit Replay(double rho) : rho_(rho) {}
  std::string name() const override { return "replay"; }
  bool needs_task_logits() const override { return false; }
  double replay_ratio() const override { return rho_; }

 private:
  double rho_;
};

class WeightPenalty : public Regularizer {
 public:
  bool needs_task_logits() const override { return false; }
  enum class Kind { orthogonal, subspace, l2_delta };
  explicit WeightPenalty(Kind k) : kind_(k) {}
  std::string name() const override {
    return kind_ == Kind::orthogonal ? "orthogonal"
           : kind_ == Kind::subspace ? "subspace"
                                     : "l2_delta";
  }
  void setup(lora::ModelAdapters& a, const std::string& task, const std::string& safety) override {
    if (kind_ == Kind::l2_delta) {
      for (auto* st : a.stacks(task)) pairs_.push_back({&st->get(task), nullptr, {}});
    } else {
      pairs_ = pairs(a, task, safety);
      if (pairs_.empty())
        throw ConfigError(name() + " needs the safety adapter on the task adapter's Linears",
                          "regularizers");
      if (kind_ == Kind::subspace)
        for (auto& p : pairs_) p.Q = column_basis(p.safety->B.to(torch::kFloat));
    }
  }
  at::Tensor loss(RegContext&) override {
    at::Tensor total;
    for (const auto& p : pairs_) {
      at::Tensor t;
      if (kind_ == Kind::orthogonal) t = orthogonal_penalty(p.task->A, p.safety->A);
      else if (kind_ == Kind::subspace)
        t = subspace_penalty(p.task->A, p.task->B, p.task->scale(), p.Q);
      else t = l2_delta_penalty(p.task->A, p.task->B, p.task->scale());
      total = total.defined() ? total + t : t;
    }
    if (total.defined()) last_ = total.item<double>();
    return total;
  }
  std::map<std::string, double> metrics() const override { return {{name(), last_}}; }

 private:
  Kind kind_;
  std::vector<Pair> pairs_;
  double last_ = 0;
};

class GradientProjection : public Regularizer {
 public:
  std::string name() const override { return "gradient_projection"; }
  bool needs_task_logits() const override { return false; }
  void on_gradients(RegContext& c, std::vector<at::Tensor>& params) override {
    const auto& b = c.anchor();
    auto safe_loss = on_network(c, true, true, [&] { return response_lm_loss(*c.model, b); });
    auto gs = torch::autograd::grad({safe_loss}, params, {}, false, false, /*allow_unused=*/true);
    std::vector<at::Tensor> g;
    for (auto& p : params) g.push_back(p.grad());
    std::vector<at::Tensor> s(gs.begin(), gs.end());
    last_dot_ = project_conflicting(g, s);
    conflicts_ += last_dot_ < 0 ? 1 : 0;
  }
  std::map<std::string, double> metrics() const override {
    return {{"grad_dot", last_dot_}, {"grad_conflicts", static_cast<double>(conflicts_)}};
  }

 private:
  double last_dot_ = 0;
  long conflicts_ = 0;
};

// Safety anchoring in representation space ("Safety Anchor" / safety-basin regularization, ICML
// 2026): the final hidden states on the anchor batches' prompts (stage 1's safety data: harmful
// requests and their harmless look-alikes) stay close to the aligned network's.
class HiddenAnchor : public Regularizer {
 public:
  std::string name() const override { return "hidden_anchor"; }
  bool needs_task_logits() const override { return false; }
  at::Tensor loss(RegContext& c) override {
    const auto& b = c.anchor();
    auto hidden = [&](bool task) {
      return on_network(c, task, task, [&] {
        auto dev = c.model->device();
        return c.model->hidden_states(b.input_ids.to(dev), b.attention_mask.to(dev));
      });
    };
    auto h = hidden(true), ref = hidden(false);
    // The prompt positions: attended, no loss (the request and the template up to the answer).
    auto prompt = b.attention_mask.ne(0).logical_and(b.labels.eq(-100));
    auto r = hidden_anchor_penalty(h, ref, prompt);
    last_ = r.item<double>();
    return r;
  }
  std::map<std::string, double> metrics() const override { return {{"hidden_anchor", last_}}; }

 private:
  double last_ = 0;
};

// Weight averaging of the task adapter (an exponential moving average of its iterates, as in
// Polyak averaging / model EMA): avg_t = decay avg_{t-1} + (1 - decay) theta_t over the optimizer
// steps, avg_0 = the initial adapter; the saved task adapter is the average. No loss term.
class Ema : public Regularizer {
 public:
  explicit Ema(double decay) : decay_(decay) {}
  std::string name() const override { return "ema"; }
  bool needs_task_logits() const override { return false; }
  // Before each optimizer step the parameters hold the previous step's iterate.
  void on_gradients(RegContext&, std::vector<at::Tensor>& params) override { fold(params); }
  void on_train_end(std::vector<at::Tensor>& params) override {
    fold(params);  // the last iterate
    torch::NoGradGuard ng;
    for (std::size_t i = 0; i < params.size(); ++i)
      params[i].copy_(average_[i].to(params[i].dtype()));
  }
  std::map<std::string, double> metrics() const override { return {{"ema_steps", double(steps_)}}; }

 private:
  void fold(const std::vector<at::Tensor>& params) {
    if (average_.empty()) {
      for (const auto& p : params) average_.push_back(p.detach().to(torch::kFloat).clone());
    } else {
      ema_update(average_, params, decay_);
    }
    ++steps_;
  }
  double decay_;
  std::vector<at::Tensor> average_;
  long steps_ = 0;
};

std::mutex& registry_mutex() {
  static std::mutex m;
  return m;
}
std::map<std::string, RegularizerFactory>& registry() {
  static std::map<std::string, RegularizerFactory> r = [] {
    std::map<std::string, RegularizerFactory> m;
    m["none"] = [](const RegularizerSection&) { return std::make_unique<NoneReg>(); };
    m["kl_anchor"] = [](const RegularizerSection& s) {
      return std::make_unique<KlAnchor>(s.on_task_batches);
    };
    m["token_constrained"] = [](const RegularizerSection& s) {
      return std::make_unique<TokenConstrained>(
          TokenBetas{s.beta_first, s.beta_early, s.beta_late, static_cast<long>(s.early_until)});
    };
    m["replay"] = [](const RegularizerSection& s) { return std::make_unique<Replay>(s.rho); };
    m["orthogonal"] = [](const RegularizerSection&) {
      return std::make_unique<WeightPenalty>(WeightPenalty::Kind::orthogonal);
    };
    m["subspace"] = [](const RegularizerSection&) {
      return std::make_unique<WeightPenalty>(WeightPenalty::Kind::subspace);
    };
    m["l2_delta"] = [](const RegularizerSection&) {
      return std::make_unique<WeightPenalty>(WeightPenalty::Kind::l2_delta);
    };
    m["gradient_projection"] = [](const RegularizerSection&) {
      return std::make_unique<GradientProjection>();
    };
    m["hidden_anchor"] = [](const RegularizerSection&) { return std::make_unique<HiddenAnchor>(); };
    m["ema"] = [](const RegularizerSection& s) { return std::make_unique<Ema>(s.decay); };
    return m;
  }();
  return r;
}
}  // namespace

void register_regularizer(const std::string& name, RegularizerFactory factory) {
  std::lock_guard<std::mutex> lock(registry_mutex());
  registry()[name] = std::move(factory);
}

std::vector<std::string> regularizer_names() {
  std::lock_guard<std::mutex> lock(registry_mutex());
  std::vector<std::string> out;
  for (const auto& [k, v] : registry()) out.push_back(k);
  return out;
}

std::unique_ptr<Regularizer> make_regularizer(const RegularizerSection& cfg) {
  RegularizerFactory f;
  {
    std::lock_guard<std::mutex> lock(registry_mutex());
    auto it = registry().find(cfg.name);
    if (it == registry().end())
      throw ConfigError("unknown regularizer '" + cfg.name + "'", "regularizers");
    f = it->second;
  }
  auto r = f(cfg);
  r->lambda = cfg.lambda;
  return r;
}

namespace {
// The safety adapter's column basis Q on one Linear holding both adapters, and cos(dW_task, Q Q^T
// dW_task).
std::pair<at::Tensor, double> safe_lora_cosine(lora::AdapterStack& st, const std::string& task,
                                               const std::string& safety) {
  const auto& t = st.get(task);
  auto Q = column_basis(st.get(safety).B.to(torch::kDouble));
  const double cosine = projection_cosine(t.A, t.B, Q);
  return {Q, cosine};
}
}  // namespace

SafeLoraPlan safe_lora_plan(lora::ModelAdapters& a, const std::string& task,
                            const std::string& safety) {
  SafeLoraPlan plan;
  torch::NoGradGuard ng;
  for (auto* st : a.stacks(task)) {
    if (!st->contains(safety)) {
      ++plan.unpaired;
      continue;
    }
    plan.layers.push_back({st->module_name(), safe_lora_cosine(*st, task, safety).second});
  }
  return plan;
}

std::vector<std::string> safe_lora_project(lora::ModelAdapters& a, const std::string& task,
                                           const std::string& safety, double threshold) {
  std::vector<std::string> projected;
  torch::NoGradGuard ng;
  for (auto* st : a.stacks(task)) {
    if (!st->contains(safety)) continue;
    auto [Q, cosine] = safe_lora_cosine(*st, task, safety);
    if (cosine >= threshold) continue;
    auto& t = st->get(task);
    auto B = t.B.to(torch::kDouble);
    t.B.copy_(Q.matmul(Q.t().matmul(B)).to(t.B.scalar_type()));
    projected.push_back(st->module_name());
  }
  return projected;
}

}  // namespace safetune::train
