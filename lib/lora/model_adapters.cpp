// ModelAdapters: adapter stacks over a CausalLM (the PEFT files: peft_files.cpp).
#include "safetune/lora/model_adapters.hpp"

#include <torch/torch.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>

#include "lora/peft_format.hpp"
#include "safetune/error.hpp"
#include "safetune/io/atomic_file.hpp"
#include "safetune/io/finite.hpp"
#include "safetune/io/hash.hpp"
#include "safetune/io/safetensors.hpp"
#include "safetune/log.hpp"
#include "safetune/model/causal_lm.hpp"

namespace safetune::lora {
namespace fs = std::filesystem;
using namespace peft_format;

std::string tensors_sha256(const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                           const std::string& trailer) {
  // Sorted by name, so the hash does not depend on the order a writer laid the tensors out in.
  std::vector<const std::pair<std::string, at::Tensor>*> sorted;
  for (const auto& p : tensors) sorted.push_back(&p);
  std::sort(sorted.begin(), sorted.end(), [](auto* a, auto* b) { return a->first < b->first; });
  io::Sha256 h;
  for (const auto* p : sorted) {
    h.update(p->first.data(), p->first.size() + 1);
    auto c = p->second.detach().to(torch::kCPU).contiguous();
    h.update(c.data_ptr(), static_cast<std::size_t>(c.numel()) * c.element_size());
  }
  if (!trailer.empty()) {
    static const char kTag[] = "safetune.metadata";
    h.update(kTag, sizeof kTag);
    h.update(trailer.data(), trailer.size());
  }
  return h.hex();
}

ModelAdapters::ModelAdapters(model::CausalLM& model) : model_(model) {
  for (auto& [name, lin] : model_.linears()) order_.push_back(name);
}

AdapterStack& ModelAdapters::stack_for(const std::string& module) {
  auto it = stacks_.find(module);
  if (it != stacks_.end()) return *it->second;
  for (auto& [name, lin] : model_.linears()) {
    if (name != module) continue;
    auto stack = std::make_shared<AdapterStack>(name, lin->weight);
    stack->set_policy_log(policy_log_);
    lin->hook = stack;
    return *stacks_.emplace(name, stack).first->second;
  }
  throw AdapterError("the model has no Linear named '" + module + "'", module);
}

void ModelAdapters::add(const std::string& name, const LoraConfig& cfg, AdapterRole role,
                        bool trainable) {
  cfg.validate();
  if (has(name)) throw AdapterError("an adapter with this name is already attached", name);
  auto targets = cfg.select(order_);
  if (targets.empty())
    throw AdapterError("the target selection matches no Linear of the model", name);
  for (const auto& module : targets)
    stack_for(module).add(cfg.spec_for(name, module, role, trainable));
}

bool ModelAdapters::has(const std::string& name) const {
  for (const auto& [m, s] : stacks_)
    if (s->contains(name)) return true;
  return false;
}

std::vector<std::string> ModelAdapters::names() const {
  std::vector<std::string> out;
  for (const auto& m : order_) {
    auto it = stacks_.find(m);
    if (it == stacks_.end()) continue;
    for (const auto& n : it->second->names())
      if (std::find(out.begin(), out.end(), n) == out.end()) out.push_back(n);
  }
  return out;
}

std::vector<AdapterStack*> ModelAdapters::stacks(const std::string& name) {
  std::vector<AdapterStack*> out;
  for (const auto& m : order_) {
    auto it = stacks_.find(m);
    if (it != stacks_.end() && (name.empty() || it->second->contains(name)))
      out.push_back(it->second.get());
  }
  return out;
}

void ModelAdapters::set_enabled(const std::string& name, bool enabled, const std::string& reason) {
  auto s = stacks(name);
  if (s.empty()) throw AdapterError("no such adapter", name);
  for (auto* st : s) st->set_enabled(name, enabled, reason);
}
void ModelAdapters::set_trainable(const std::string& name, bool trainable) {
  for (auto* st : stacks(name)) st->set_trainable(name, trainable);
}
void ModelAdapters::set_required_at_inference(const std::string& name, bool required) {
  for (auto* st : stacks(name)) st->set_required_at_inference(name, required);
}
void ModelAdapters::remove(const std::string& name, const std::string& reason) {
  auto s = stacks(name);
  if (s.empty()) throw AdapterError("no such adapter", name);
  for (auto* st : s) st->remove(name, reason);
  deps_.erase(name);
  weights_sha_cache_.erase(name);
}
void ModelAdapters::train(bool on) {
  for (auto& [m, s] : stacks_) s->train(on);
}
void ModelAdapters::merge(const std::vector<std::string>& names, MergeCopy copy, bool safe) {
  enforce_dependencies();  // merging changes nothing about what is in effect, but it is where
                           // weights get written
  std::vector<model::MergedAdapter> records;
  for (const auto& n : names)
    if (has(n))
      records.push_back({n, role_name(stacks(n).front()->get(n).spec.role), weights_sha256(n)});
  for (auto* st : stacks()) {
    std::vector<std::string> here;
    for (const auto& n : names)
      if (st->contains(n)) here.push_back(n);
    if (here.empty()) continue;
    if (safe) st->safe_merge(here, copy);
    else st->merge(here, copy);
  }
  auto& merged = model_.merged_adapters();
  for (auto& r : records) merged.push_back(std::move(r));
}
void ModelAdapters::unmerge(const std::vector<std::string>& names) {
  for (auto* st : stacks()) {
    std::vector<std::string> here;
    for (const auto& n : names)
      if (st->contains(n)) here.push_back(n);
    if (!here.empty()) st->unmerge(here);
  }
  auto& merged = model_.merged_adapters();
  merged.erase(std::remove_if(merged.begin(), merged.end(),
                              [&](const model::MergedAdapter& m) {
                                return std::find(names.begin(), names.end(), m.name) != names.end();
                              }),
               merged.end());
}
std::vector<std::string> ModelAdapters::inference_violations() const {
  std::vector<std::string> out;
  for (const auto& [m, s] : stacks_)
    for (const auto& n : s->inference_violations())
      if (std::find(out.begin(), out.end(), n) == out.end()) out.push_back(n);
  return out;
}

std::vector<std::pair<std::string, at::Tensor>> ModelAdapters::trainable_parameters() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& m : order_) {
    auto it = stacks_.find(m);
    if (it == stacks_.end()) continue;
    for (const auto& a : it->second->adapters()) {
      if (!a.spec.trainable) continue;
      out.emplace_back(m + ".lora_A." + a.spec.name, a.A);
      out.emplace_back(m + ".lora_B." + a.spec.name, a.B);
    }
  }
  return out;
}

AdapterFactors ModelAdapters::factors(const std::string& name) const {
  AdapterFactors out;
  out.name = name;
  for (const auto& m : order_) {
    auto it = stacks_.find(m);
    if (it == stacks_.end() || !it->second->contains(name)) continue;
    const Adapter& a = it->second->get(name);
    if (out.modules.empty()) {
      out.role = a.spec.role;
      out.required_at_inference = a.spec.required_at_inference;
    }
    out.modules.push_back({m, a.spec, a.A, a.B});
  }
  if (out.modules.empty()) throw AdapterError("no such adapter", name);
  out.dependencies = dependencies_of(name);
  return out;
}

std::string ModelAdapters::content_sha256(const std::string& name) const {
  return adapter_sha256(factors(name), true);
}
std::string ModelAdapters::weights_sha256(const std::string& name) const {
  return adapter_sha256(factors(name), false);
}

const std::string& ModelAdapters::cached_weights_sha256(const std::string& name) const {
  // In-place updates bump a tensor's version counter; a replaced tensor has another impl.
  // (remove() drops the entry, so a freed impl's address reused by a new adapter cannot alias.)
  std::string key;
  char buf[160];
  for (const auto& m : factors(name).modules) {
    std::snprintf(
        buf, sizeof buf, "%p.%u,%p.%u,%a;", static_cast<const void*>(m.A.unsafeGetTensorImpl()),
        static_cast<unsigned>(m.A._version()), static_cast<const void*>(m.B.unsafeGetTensorImpl()),
        static_cast<unsigned>(m.B._version()), m.spec.scale());
    key += m.module + ":" + buf;
  }
  auto& entry = weights_sha_cache_[name];
  if (entry.first != key) entry = {key, weights_sha256(name)};
  return entry.second;
}

void ModelAdapters::set_dependencies(const std::string& name, std::vector<AdapterDependency> deps) {
  if (!has(name)) throw AdapterError("no such adapter", name);
  deps_[name] = std::move(deps);
}

std::vector<AdapterDependency> ModelAdapters::dependencies_of(const std::string& name) const {
  auto it = deps_.find(name);
  return it == deps_.end() ? std::vector<AdapterDependency>{} : it->second;
}

std::vector<DependencyProblem> ModelAdapters::dependency_problems(
    const std::vector<std::string>* active_in) const {
  std::vector<std::string> active;
  if (active_in) {
    active = *active_in;
  } else {
    for (const auto& n : names()) {
      bool on = false;
      for (const auto& [m, st] : stacks_)
        if (st->contains(n)) on = on || st->get(n).enabled || st->get(n).merged;
      if (on) active.push_back(n);
    }
  }
  auto sha_of = [&](const std::string& n) -> const std::string& {
    return cached_weights_sha256(n);
  };
  std::vector<DependencyProblem> out;
  for (const auto& a : active) {
    for (const auto& dep : dependencies_of(a)) {
      bool ok = false;
      for (const auto& b : active) ok = ok || (b != a && has(b) && sha_of(b) == dep.weights_sha256);
      for (const auto& m : model_.config().merged_adapters)
        ok = ok || m.weights_sha256 == dep.weights_sha256;
      if (ok) continue;
      DependencyProblem p{a, dep, {}, {}};
      const std::string role = role_name(has(a) ? factors(a).role : AdapterRole::other);
      const std::string head = role + " adapter '" + a + "' was trained with adapter '" + dep.name +
                               "' (weights sha256 " + short_sha(dep.weights_sha256) + ") active";
      const bool in_active = std::find(active.begin(), active.end(), dep.name) != active.end();
      if (has(dep.name)) p.found_sha256 = sha_of(dep.name);
      if (p.found_sha256.empty()) p.message = head + ", and it is not loaded";
      else if (p.found_sha256 != dep.weights_sha256)
        p.message = head + ", but the '" + dep.name + "' given has weights sha256 " +
                    short_sha(p.found_sha256) + " (a different or edited adapter)";
      else if (!in_active)
        p.message = head + ", and it is not in effect (disabled, or not among the adapters used)";
      else p.message = head + ", and it is not satisfied";
      out.push_back(std::move(p));
    }
  }
  return out;
}

void ModelAdapters::enforce_dependencies(const std::vector<std::string>* active) const {
  auto problems = dependency_problems(active);
  if (problems.empty()) return;
  if (override_reason_.empty())
    throw PolicyError(
        problems.front().message, "",
        "apply it too (--adapters SAFETY,TASK), or pass the explicit --override-inference-policy "
        "(logged and recorded in reports)");
  for (const auto& p : problems)
    policy_log_->record({"", p.adapter,
                         "use without dependency '" + p.dependency.name + "' (weights sha256 " +
                             short_sha(p.dependency.weights_sha256) + ")",
                         override_reason_, 1});
}

AdapterFactors pack_adapters(ModelAdapters& adapters, const std::vector<std::string>& names,
                             const std::string& packed) {
  if (names.empty()) throw UsageError("no adapters to pack", packed);
  for (const auto& n : names)
    if (!adapters.has(n)) throw AdapterError("no adapter named '" + n + "' to pack", packed);
  adapters.enforce_dependencies(&names);
  AdapterFactors out;
  out.name = packed;
  out.role = adapters.factors(names.front()).role;
  for (const auto& p : adapters.dependency_problems(&names))
    out.dependencies.push_back(p.dependency);
  for (const auto& n : names) {
    auto f = adapters.factors(n);
    if (f.role == AdapterRole::safety) out.role = AdapterRole::safety;
    out.required_at_inference = out.required_at_inference || f.required_at_inference;
  }
  torch::NoGradGuard ng;
  for (AdapterStack* st : adapters.stacks()) {
    std::vector<at::Tensor> As, Bs;
    for (const auto& n : names) {
      if (!st->contains(n)) continue;
      const Adapter& a = st->get(n);
      As.push_back(a.A.detach().to(torch::kCPU, torch::kFloat));
      // The scale goes into B in double, then one rounding to fp32.
      Bs.push_back((a.B.detach().to(torch::kCPU, torch::kDouble) * a.scale()).to(torch::kFloat));
    }
    if (As.empty()) continue;
    ModuleFactors m;
    m.module = st->module_name();
    m.A = torch::cat(As, 0);
    m.B = torch::cat(Bs, 1);
    m.spec.name = packed;
    m.spec.rank = m.A.size(0);
    m.spec.alpha = static_cast<double>(m.spec.rank);  // PEFT's scale alpha / r = 1
    m.spec.dropout = 0;
    m.spec.role = out.role;
    m.spec.trainable = false;
    m.spec.required_at_inference = out.required_at_inference;
    out.modules.push_back(std::move(m));
  }
  return out;
}

}  // namespace safetune::lora
