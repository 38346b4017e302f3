// AdapterStack: adapter bookkeeping, PEFT-style init, the inference policy, merge/unmerge.
#include "safetune/lora/adapter_stack.hpp"

#include "safetune/error.hpp"
#include "safetune/kernels/lora.hpp"
#include "safetune/log.hpp"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <mutex>
#include <set>

namespace safetune::lora {
namespace {

kernels::LoraFactors factors_of(const Adapter& a) {
  kernels::LoraFactors f;
  f.A = a.A;
  f.B = a.B;
  f.scale = a.scale();
  f.dropout = a.spec.dropout;
  return f;
}

}  // namespace

const char* role_name(AdapterRole role) {
  switch (role) {
    case AdapterRole::safety: return "safety";
    case AdapterRole::task: return "task";
    case AdapterRole::other: return "other";
  }
  return "other";
}

AdapterRole parse_role(const std::string& name) {
  if (name == "safety") return AdapterRole::safety;
  if (name == "task") return AdapterRole::task;
  if (name == "other") return AdapterRole::other;
  throw ConfigError("unknown adapter role '" + name + "'", "role", "use safety, task or other");
}

InitMethod parse_init(const std::string& name) {
  if (name == "peft_default" || name == "default" || name == "true")
    return InitMethod::peft_default;
  if (name == "gaussian") return InitMethod::gaussian;
  throw ConfigError("unknown LoRA init '" + name + "'", "init", "use peft_default or gaussian");
}

double AdapterSpec::scale() const {
  const double r = static_cast<double>(rank);
  return use_rslora ? alpha / std::sqrt(r) : alpha / r;
}

void PolicyLog::record(const PolicyOverride& o) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& e : entries_)
      if (e.adapter == o.adapter && e.action == o.action && e.reason == o.reason) {
        e.modules += o.modules;
        return;  // already logged: one line per decision, not one per Linear
      }
    entries_.push_back(o);
  }
  log_warn("inference policy override: " + o.action + " of adapter '" + o.adapter + "' (" +
           o.reason + ")");
}

std::string describe(const PolicyOverride& o) {
  std::string s = o.action + " of adapter '" + o.adapter + "'";
  if (!o.module.empty())
    s += o.modules == 1 ? " on " + o.module : " on " + std::to_string(o.modules) + " modules";
  return s + " (" + o.reason + ")";
}

std::vector<PolicyOverride> PolicyLog::entries() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return entries_;
}

void PolicyLog::clear() {
  std::lock_guard<std::mutex> lock(mutex_);
  entries_.clear();
}

AdapterStack::AdapterStack(std::string module_name, at::Tensor base_weight)
    : module_(std::move(module_name)), weight_(std::move(base_weight)) {
  if (!weight_.defined() || weight_.dim() != 2)
    throw AdapterError("an adapter stack needs the Linear's 2-D weight", module_);
}

void AdapterStack::rebind_weight(at::Tensor base_weight) {
  if (!base_weight.defined() || base_weight.dim() != 2 ||
      (weight_.defined() && base_weight.sizes() != weight_.sizes()))
    throw AdapterError("the new weight must have the old shape [" + std::to_string(out_features()) +
                           ", " + std::to_string(in_features()) + "]",
                       module_);
  if (!merged_names().empty())
    throw AdapterError("cannot rebind the weight while adapters are merged into it", module_,
                       "unmerge first");
  for (auto& a : adapters_) {
    // The factors follow the weight's device; requires_grad survives the move.
    if (a.A.device() != base_weight.device()) {
      a.A = a.A.detach().to(base_weight.device()).set_requires_grad(a.spec.trainable);
      a.B = a.B.detach().to(base_weight.device()).set_requires_grad(a.spec.trainable);
    }
  }
  weight_ = std::move(base_weight);
}

std::size_t AdapterStack::index_of(const std::string& name) const {
  for (std::size_t i = 0; i < adapters_.size(); ++i)
    if (adapters_[i].spec.name == name) return i;
  throw AdapterError("no adapter named '" + name + "'", module_);
}

bool AdapterStack::contains(const std::string& name) const {
  return std::any_of(adapters_.begin(), adapters_.end(),
                     [&](const Adapter& a) { return a.spec.name == name; });
}
Adapter& AdapterStack::get(const std::string& name) { return adapters_[index_of(name)]; }
const Adapter& AdapterStack::get(const std::string& name) const {
  return adapters_[index_of(name)];
}

std::vector<std::string> AdapterStack::names() const {
  std::vector<std::string> out;
  for (const auto& a : adapters_) out.push_back(a.spec.name);
  return out;
}

static void check_spec(const AdapterSpec& spec, const std::string& module) {
  const std::string where = module + ":" + spec.name;
  if (spec.name.empty()) throw AdapterError("adapter name is empty", module);
  if (spec.rank <= 0) throw AdapterError("adapter rank must be positive", where);
  if (!std::isfinite(spec.alpha)) throw AdapterError("adapter alpha must be finite", where);
  if (!(spec.dropout >= 0.0 && spec.dropout < 1.0))
    throw AdapterError("adapter dropout must lie in [0, 1)", where);
}

Adapter& AdapterStack::add(const AdapterSpec& spec, std::optional<at::ScalarType> dtype) {
  check_spec(spec, module_);
  if (contains(spec.name))
    throw AdapterError("adapter '" + spec.name + "' already exists", module_);
  at::NoGradGuard no_grad;
  const auto opts = weight_.options().dtype(dtype.value_or(at::kFloat)).requires_grad(false);
  at::Tensor A = at::empty({spec.rank, in_features()}, opts);
  if (spec.init == InitMethod::peft_default) {
    // kaiming_uniform(a = sqrt(5)) on [r, in]: gain sqrt(2 / (1 + 5)), bound = gain * sqrt(3 / in).
    const double bound = 1.0 / std::sqrt(static_cast<double>(in_features()));
    A.uniform_(-bound, bound);
  } else {
    A.normal_(0.0, 1.0 / static_cast<double>(spec.rank));
  }
  at::Tensor B = at::zeros({out_features(), spec.rank}, opts);
  return add(spec, A, B);
}

Adapter& AdapterStack::add(const AdapterSpec& spec, const at::Tensor& A, const at::Tensor& B) {
  check_spec(spec, module_);
  const std::string where = module_ + ":" + spec.name;
  if (contains(spec.name))
    throw AdapterError("adapter '" + spec.name + "' already exists", module_);
  if (!A.defined() || !B.defined() || A.dim() != 2 || B.dim() != 2 || A.size(0) != spec.rank ||
      A.size(1) != in_features() || B.size(0) != out_features() || B.size(1) != spec.rank)
    throw AdapterError("adapter factors do not match rank " + std::to_string(spec.rank) +
                           " and weight [" + std::to_string(out_features()) + ", " +
                           std::to_string(in_features()) + "]",
                       where, "A must be [r, in] and B [out, r]");
  if (A.scalar_type() != B.scalar_type() || !at::isFloatingType(A.scalar_type()))
    throw AdapterError("A and B must share one floating-point dtype", where);
  Adapter a;
  a.spec = spec;
  a.A = A.detach().to(weight_.device()).clone().set_requires_grad(spec.trainable);
  a.B = B.detach().to(weight_.device()).clone().set_requires_grad(spec.trainable);
  for (const auto& other : adapters_)
    if (other.A.scalar_type() != a.A.scalar_type())
      throw AdapterError("adapters on one Linear must share one dtype", where);
  adapters_.push_back(std::move(a));
  return adapters_.back();
}

void AdapterStack::record_override(const Adapter& a, const std::string& action,
                                   const std::string& reason) {
  policy_log_->record({module_, a.spec.name, action, reason, 1});
}

void AdapterStack::remove(const std::string& name, const std::string& override_reason) {
  const auto i = index_of(name);
  const Adapter& a = adapters_[i];
  if (a.merged)
    throw AdapterError("adapter '" + name + "' is merged into the weight", module_,
                       "unmerge it first");
  if (a.spec.required_at_inference) {
    if (override_reason.empty())
      throw AdapterError("adapter '" + name + "' is required at inference and cannot be removed",
                         module_, "pass an explicit override reason if this is intended");
    record_override(a, "remove", override_reason);
  }
  adapters_.erase(adapters_.begin() + static_cast<std::ptrdiff_t>(i));
}

void AdapterStack::set_enabled(const std::string& name, bool enabled,
                               const std::string& override_reason) {
  Adapter& a = get(name);
  if (a.enabled == enabled) return;
  if (a.merged)
    throw AdapterError("adapter '" + name + "' is merged into the weight", module_,
                       "unmerge it first");
  if (!enabled && a.spec.required_at_inference) {
    if (override_reason.empty())
      throw AdapterError("adapter '" + name + "' is required at inference and cannot be disabled",
                         module_, "pass an explicit override reason if this is intended");
    record_override(a, "disable", override_reason);
  }
  a.enabled = enabled;
}

void AdapterStack::set_trainable(const std::string& name, bool trainable) {
  Adapter& a = get(name);
  a.spec.trainable = trainable;
  a.A.set_requires_grad(trainable);
  a.B.set_requires_grad(trainable);
}

void AdapterStack::set_required_at_inference(const std::string& name, bool required) {
  get(name).spec.required_at_inference = required;
}

std::vector<at::Tensor> AdapterStack::trainable_parameters() const {
  std::vector<at::Tensor> out;
  for (const auto& a : adapters_)
    if (a.spec.trainable && !a.merged) {
      out.push_back(a.A);
      out.push_back(a.B);
    }
  return out;
}

std::vector<std::string> AdapterStack::inference_violations() const {
  std::vector<std::string> out;
  for (const auto& a : adapters_)
    if (a.spec.required_at_inference && !a.enabled) out.push_back(a.spec.name);
  return out;
}

bool AdapterStack::active() const {
  return std::any_of(adapters_.begin(), adapters_.end(),
                     [](const Adapter& a) { return a.enabled && !a.merged; });
}

std::vector<kernels::LoraFactors> AdapterStack::active_factors() const {
  std::vector<kernels::LoraFactors> factors;
  for (const auto& a : adapters_)
    if (a.enabled && !a.merged) factors.push_back(factors_of(a));
  return factors;
}

at::Tensor AdapterStack::apply(const at::Tensor& x, const at::Tensor& base_out) {
  const auto factors = active_factors();
  if (factors.empty()) return base_out;
  try {
    return kernels::lora_linear_add(x, base_out, factors, training_);
  } catch (const KernelError& e) {
    throw AdapterError(e.what_only(), module_, e.hint());
  }
}

at::Tensor AdapterStack::forward(const at::Tensor& x, const at::Tensor& weight,
                                 const at::Tensor& bias) {
  const auto factors = active_factors();
  if (factors.empty()) return at::linear(x, weight, bias);
  try {
    return kernels::lora_linear(x, weight, bias, factors, training_);
  } catch (const KernelError& e) {
    throw AdapterError(e.what_only(), module_, e.hint());
  }
}

std::vector<std::size_t> AdapterStack::indices_for_merge(const std::vector<std::string>& names,
                                                         bool merging) const {
  std::vector<std::size_t> idx;
  std::set<std::string> seen;
  for (const auto& n : names) {
    if (!seen.insert(n).second) throw AdapterError("adapter '" + n + "' named twice", module_);
    const auto i = index_of(n);
    const Adapter& a = adapters_[i];
    if (merging && a.merged) throw AdapterError("adapter '" + n + "' is already merged", module_);
    if (merging && !a.enabled)
      throw AdapterError("adapter '" + n + "' is disabled", module_, "enable it before merging");
    if (!merging && !a.merged) throw AdapterError("adapter '" + n + "' is not merged", module_);
    idx.push_back(i);
  }
  return idx;
}

void AdapterStack::merge_impl(const std::vector<std::string>& names, MergeCopy copy, bool safe) {
  const auto idx = indices_for_merge(names, true);
  if (idx.empty()) return;
  at::NoGradGuard no_grad;
  auto group_factors = [&](const std::vector<std::size_t>& which) {
    std::vector<kernels::LoraFactors> f;
    for (auto i : which) f.push_back(factors_of(adapters_[i]));
    return f;
  };
  MergeRecord record{names, {}};
  if (copy == MergeCopy::keep) record.saved = weight_.clone();
  try {
    if (safe) {
      at::Tensor trial = weight_.clone();
      kernels::lora_merge_(trial, group_factors(idx), 1.0);
      if (!trial.isfinite().all().item<bool>()) {
        // Find the culprit(s): each adapter alone; when none fails alone, the sum overflowed.
        std::vector<std::string> bad;
        for (auto i : idx) {
          at::Tensor one = weight_.clone();
          kernels::lora_merge_(one, group_factors({i}), 1.0);
          if (!one.isfinite().all().item<bool>()) bad.push_back(adapters_[i].spec.name);
        }
        std::string list;
        for (const auto& n : bad.empty() ? names : bad)
          list += (list.empty() ? "'" : ", '") + n + "'";
        throw AdapterError(
            "merging adapter " + list + " gives non-finite weights; weight left unchanged", module_,
            "check the adapter for NaN/Inf or overflow in the weight's dtype");
      }
      weight_.copy_(trial);
    } else {
      kernels::lora_merge_(weight_, group_factors(idx), 1.0);
    }
  } catch (const KernelError& e) {
    throw AdapterError(e.what_only(), module_, e.hint());
  }
  for (auto i : idx) adapters_[i].merged = true;
  merges_.push_back(std::move(record));
}

void AdapterStack::merge(const std::vector<std::string>& names, MergeCopy copy) {
  merge_impl(names, copy, false);
}
void AdapterStack::safe_merge(const std::vector<std::string>& names, MergeCopy copy) {
  merge_impl(names, copy, true);
}

void AdapterStack::unmerge(const std::vector<std::string>& names) {
  indices_for_merge(names, false);  // validates
  std::set<std::string> todo(names.begin(), names.end());
  at::NoGradGuard no_grad;
  // Exact restores, newest first, while a whole saved group is asked for.
  while (!todo.empty() && !merges_.empty() && merges_.back().saved.defined() &&
         std::all_of(merges_.back().names.begin(), merges_.back().names.end(),
                     [&](const std::string& n) { return todo.count(n) > 0; })) {
    weight_.copy_(merges_.back().saved);
    for (const auto& n : merges_.back().names) {
      get(n).merged = false;
      todo.erase(n);
    }
    merges_.pop_back();
  }
  if (todo.empty()) return;
  std::vector<kernels::LoraFactors> f;
  for (const auto& a : adapters_)
    if (todo.count(a.spec.name)) f.push_back(factors_of(a));
  try {
    kernels::lora_merge_(weight_, f, -1.0);
  } catch (const KernelError& e) {
    throw AdapterError(e.what_only(), module_, e.hint());
  }
  for (const auto& n : todo) get(n).merged = false;
  // W no longer equals any saved state: drop the copies and forget the unmerged names.
  for (auto& r : merges_) {
    r.saved = at::Tensor();
    r.names.erase(std::remove_if(r.names.begin(), r.names.end(),
                                 [&](const std::string& n) { return todo.count(n) > 0; }),
                  r.names.end());
  }
  merges_.erase(std::remove_if(merges_.begin(), merges_.end(),
                               [](const MergeRecord& r) { return r.names.empty(); }),
                merges_.end());
  log_debug("unmerged by subtraction on " + module_ + "; saved copies dropped");
}

std::vector<std::string> AdapterStack::merged_names() const {
  std::vector<std::string> out;
  for (const auto& a : adapters_)
    if (a.merged) out.push_back(a.spec.name);
  return out;
}

}  // namespace safetune::lora
