// ModelAdapters: adapter stacks over a CausalLM and the PEFT file format.
#include "safetune/lora/model_adapters.hpp"
#include "safetune/lora/peft.hpp"

#include <torch/torch.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>

#include "safetune/error.hpp"
#include "safetune/io/atomic_file.hpp"
#include "safetune/io/hash.hpp"
#include "safetune/io/finite.hpp"
#include "safetune/io/safetensors.hpp"
#include "safetune/log.hpp"
#include "safetune/model/causal_lm.hpp"

namespace safetune::lora {
namespace fs = std::filesystem;

namespace {
constexpr const char* kPrefix = "base_model.model.";
constexpr const char* kMetadataVersion = "2";

std::string short_sha(const std::string& sha) { return sha.substr(0, 16); }

nlohmann::json dependencies_json(const std::vector<AdapterDependency>& deps) {
  nlohmann::json j = nlohmann::json::array();
  for (const auto& d : deps) j.push_back({{"name", d.name}, {"weights_sha256", d.weights_sha256}});
  return j;
}

// The tensors under their PEFT keys (what the file holds) and the block of metadata the hash covers.
// Weights block: each module's scale (alpha and rsLoRA decide it; the ranks are in the tensors).
// Content block: that plus role, required_at_inference and the dependencies. nlohmann::json sorts
// object keys and prints doubles round-trip, so the text is canonical.
std::vector<std::pair<std::string, at::Tensor>> peft_tensors(const AdapterFactors& a) {
  std::vector<std::pair<std::string, at::Tensor>> t;
  for (const auto& m : a.modules) {
    t.emplace_back(kPrefix + m.module + ".lora_A.weight", m.A.detach().to(torch::kCPU).contiguous());
    t.emplace_back(kPrefix + m.module + ".lora_B.weight", m.B.detach().to(torch::kCPU).contiguous());
  }
  return t;
}

std::string metadata_block(const AdapterFactors& a, bool with_flags) {
  nlohmann::json scales = nlohmann::json::object();
  for (const auto& m : a.modules) scales[m.module] = m.spec.scale();
  nlohmann::json j = {{"scales", scales}};
  if (with_flags) {
    j["version"] = kMetadataVersion;
    j["role"] = role_name(a.role);
    j["required_at_inference"] = a.required_at_inference;
    j["dependencies"] = dependencies_json(a.dependencies);
  }
  return j.dump();
}

std::string adapter_sha256(const AdapterFactors& a, bool with_flags,
                           const std::vector<std::pair<std::string, at::Tensor>>* tensors = nullptr) {
  return tensors_sha256(tensors ? *tensors : peft_tensors(a), metadata_block(a, with_flags));
}

// Typed reads of adapter_config.json that name the file and key (nlohmann's own messages name neither).
struct PeftConfig {
  const nlohmann::json& j;
  std::string file;
  [[noreturn]] void fail(const std::string& key, const std::string& want) const {
    throw FormatError("'" + key + "' must be " + want, file);
  }
  const nlohmann::json* find(const char* key) const {
    auto it = j.find(key);
    return it == j.end() || it->is_null() ? nullptr : &*it;
  }
  double number(const char* key, double fallback) const {
    auto* v = find(key);
    if (!v) return fallback;
    if (!v->is_number()) fail(key, "a number");
    return v->get<double>();
  }
  bool boolean(const char* key, bool fallback) const {
    auto* v = find(key);
    if (!v) return fallback;
    if (!v->is_boolean()) fail(key, "true or false");
    return v->get<bool>();
  }
  std::string string(const char* key, const std::string& fallback) const {
    auto* v = find(key);
    if (!v) return fallback;
    if (!v->is_string()) fail(key, "a string");
    return v->get<std::string>();
  }
  template <typename T>
  std::vector<std::pair<std::string, T>> pattern(const char* key) const {
    std::vector<std::pair<std::string, T>> out;
    auto* v = find(key);
    if (!v) return out;
    if (!v->is_object()) fail(key, "an object");
    for (auto& [k, x] : v->items()) {
      if (!x.is_number() || (std::is_integral_v<T> && !x.is_number_integer()))
        fail(std::string(key) + "." + k, std::is_integral_v<T> ? "an integer" : "a number");
      out.emplace_back(k, x.template get<T>());
    }
    return out;
  }
};
}  // namespace

std::string tensors_sha256(const std::vector<std::pair<std::string, at::Tensor>>& tensors, const std::string& trailer) {
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

void ModelAdapters::add(const std::string& name, const LoraConfig& cfg, AdapterRole role, bool trainable) {
  cfg.validate();
  if (has(name)) throw AdapterError("an adapter with this name is already attached", name);
  auto targets = cfg.select(order_);
  if (targets.empty()) throw AdapterError("the target selection matches no Linear of the model", name);
  for (const auto& module : targets) stack_for(module).add(cfg.spec_for(name, module, role, trainable));
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
    if (it != stacks_.end() && (name.empty() || it->second->contains(name))) out.push_back(it->second.get());
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
  enforce_dependencies();  // merging changes nothing about what is in effect, but it is where weights get written
  std::vector<model::MergedAdapter> records;
  for (const auto& n : names)
    if (has(n)) records.push_back({n, role_name(stacks(n).front()->get(n).spec.role), weights_sha256(n)});
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

std::string ModelAdapters::content_sha256(const std::string& name) const { return adapter_sha256(factors(name), true); }
std::string ModelAdapters::weights_sha256(const std::string& name) const { return adapter_sha256(factors(name), false); }

const std::string& ModelAdapters::cached_weights_sha256(const std::string& name) const {
  // In-place updates bump a tensor's version counter; a replaced tensor has another impl.
  // (remove() drops the entry, so a freed impl's address reused by a new adapter cannot alias.)
  std::string key;
  char buf[160];
  for (const auto& m : factors(name).modules) {
    std::snprintf(buf, sizeof buf, "%p.%u,%p.%u,%a;", static_cast<const void*>(m.A.unsafeGetTensorImpl()),
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

std::vector<DependencyProblem> ModelAdapters::dependency_problems(const std::vector<std::string>* active_in) const {
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
  auto sha_of = [&](const std::string& n) -> const std::string& { return cached_weights_sha256(n); };
  std::vector<DependencyProblem> out;
  for (const auto& a : active) {
    for (const auto& dep : dependencies_of(a)) {
      bool ok = false;
      for (const auto& b : active) ok = ok || (b != a && has(b) && sha_of(b) == dep.weights_sha256);
      for (const auto& m : model_.config().merged_adapters) ok = ok || m.weights_sha256 == dep.weights_sha256;
      if (ok) continue;
      DependencyProblem p{a, dep, {}, {}};
      const std::string role = role_name(has(a) ? factors(a).role : AdapterRole::other);
      const std::string head = role + " adapter '" + a + "' was trained with adapter '" + dep.name +
                               "' (weights sha256 " + short_sha(dep.weights_sha256) + ") active";
      const bool in_active = std::find(active.begin(), active.end(), dep.name) != active.end();
      if (has(dep.name)) p.found_sha256 = sha_of(dep.name);
      if (p.found_sha256.empty())
        p.message = head + ", and it is not loaded";
      else if (p.found_sha256 != dep.weights_sha256)
        p.message = head + ", but the '" + dep.name + "' given has weights sha256 " + short_sha(p.found_sha256) +
                    " (a different or edited adapter)";
      else if (!in_active)
        p.message = head + ", and it is not in effect (disabled, or not among the adapters used)";
      else
        p.message = head + ", and it is not satisfied";
      out.push_back(std::move(p));
    }
  }
  return out;
}

void ModelAdapters::enforce_dependencies(const std::vector<std::string>* active) const {
  auto problems = dependency_problems(active);
  if (problems.empty()) return;
  if (override_reason_.empty())
    throw PolicyError(problems.front().message, "",
                      "apply it too (--adapters SAFETY,TASK), or pass the explicit --override-inference-policy "
                      "(logged and recorded in reports)");
  for (const auto& p : problems)
    policy_log_->record({"", p.adapter,
                            "use without dependency '" + p.dependency.name + "' (weights sha256 " +
                                short_sha(p.dependency.weights_sha256) + ")",
                            override_reason_, 1});
}

void write_peft(const AdapterFactors& a, const fs::path& dir, const std::string& base) {
  if (a.modules.empty()) throw AdapterError("no modules to write", a.name);
  const ModuleFactors& first = a.modules.front();
  std::set<std::string> suffixes;
  nlohmann::json rank_pattern = nlohmann::json::object(), alpha_pattern = nlohmann::json::object();
  // Per-module ranks/alphas that differ from the first become PEFT patterns on the full name.
  for (const auto& m : a.modules) {
    suffixes.insert(m.module.substr(m.module.rfind('.') + 1));
    if (m.spec.rank != first.spec.rank) rank_pattern[m.module] = m.spec.rank;
    if (m.spec.alpha != first.spec.alpha) alpha_pattern[m.module] = m.spec.alpha;
    if (m.spec.use_rslora != first.spec.use_rslora)
      throw AdapterError("PEFT has one use_rslora per adapter; the modules disagree", a.name + ": " + m.module);
  }
  nlohmann::json cfg = {
      {"peft_type", "LORA"},
      {"task_type", "CAUSAL_LM"},
      {"base_model_name_or_path", base},
      {"r", first.spec.rank},
      {"lora_alpha", first.spec.alpha},
      {"lora_dropout", first.spec.dropout},
      {"use_rslora", first.spec.use_rslora},
      {"target_modules", std::vector<std::string>(suffixes.begin(), suffixes.end())},
      {"rank_pattern", rank_pattern},
      {"alpha_pattern", alpha_pattern},
      {"bias", "none"},
      {"fan_in_fan_out", false},
      {"init_lora_weights", true},
      {"inference_mode", true},
      {"modules_to_save", nullptr},
      {"layers_to_transform", nullptr},
      {"use_dora", false},
  };
  auto tensors = peft_tensors(a);
  std::map<std::string, std::string> meta{
      {"format", "pt"},
      {"safetune.metadata_version", kMetadataVersion},
      {"safetune.adapter_name", a.name},
      {"safetune.role", role_name(a.role)},
      {"safetune.required_at_inference", a.required_at_inference ? "true" : "false"},
      {"safetune.dependencies", dependencies_json(a.dependencies).dump()},
      {"safetune.content_sha256", adapter_sha256(a, true, &tensors)},
      {"safetune.weights_sha256", adapter_sha256(a, false, &tensors)},
      {"safetune.base_model", base}};
  fs::create_directories(dir);
  io::safetensors_save(dir / "adapter_model.safetensors", tensors, meta);
  io::atomic_write(dir / "adapter_config.json", cfg.dump(2) + "\n");
}

void ModelAdapters::save_peft(const std::string& name, const fs::path& dir, const std::string& base) const {
  auto a = factors(name);
  for (const auto& m : a.modules)
    if (stacks_.at(m.module)->get(name).merged) throw AdapterError("cannot save a merged adapter; unmerge it first", name);
  write_peft(a, dir, base);
}

AdapterFactors pack_adapters(ModelAdapters& adapters, const std::vector<std::string>& names, const std::string& packed) {
  if (names.empty()) throw UsageError("no adapters to pack", packed);
  for (const auto& n : names)
    if (!adapters.has(n)) throw AdapterError("no adapter named '" + n + "' to pack", packed);
  adapters.enforce_dependencies(&names);
  AdapterFactors out;
  out.name = packed;
  out.role = adapters.factors(names.front()).role;
  for (const auto& p : adapters.dependency_problems(&names)) out.dependencies.push_back(p.dependency);
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

namespace {
nlohmann::json adapter_config_json(const fs::path& cfg_path) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(io::read_file(cfg_path));
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(std::string("malformed JSON: ") + e.what(), cfg_path.string());
  }
  if (!j.is_object()) throw FormatError("adapter_config.json must hold a JSON object", cfg_path.string());
  return j;
}
}  // namespace

std::string peft_base_model(const fs::path& dir) {
  const auto j = adapter_config_json(dir / "adapter_config.json");
  const auto it = j.find("base_model_name_or_path");
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

AdapterFileInfo ModelAdapters::read_info(const fs::path& dir) {
  AdapterFileInfo info;
  fs::path file = dir / "adapter_model.safetensors";
  std::error_code ec;
  if (!fs::exists(file, ec)) throw IoError("no adapter_model.safetensors in adapter directory", dir.string());
  const io::SafetensorsListing header = io::safetensors_list(file);
  auto get = [&](const char* k) {
    auto it = header.metadata.find(k);
    return it == header.metadata.end() ? std::string() : it->second;
  };
  info.name = get("safetune.adapter_name");
  if (auto r = get("safetune.role"); !r.empty()) info.role = parse_role(r);
  info.required_at_inference = get("safetune.required_at_inference") == "true";
  info.content_sha256 = get("safetune.content_sha256");
  info.weights_sha256 = get("safetune.weights_sha256");
  info.base_model = get("safetune.base_model");
  const std::string version = get("safetune.metadata_version");
  if (version.empty()) {
    info.metadata_version = info.content_sha256.empty() ? 0 : 1;
  } else if (version == kMetadataVersion) {
    info.metadata_version = 2;
    const std::string where = file.string() + ": __metadata__ safetune.dependencies";
    try {
      auto j = nlohmann::json::parse(get("safetune.dependencies"));
      if (!j.is_array()) throw FormatError("must be a JSON array", where);
      for (const auto& d : j) {
        if (!d.is_object() || !d.contains("name") || !d["name"].is_string() || !d.contains("weights_sha256") ||
            !d["weights_sha256"].is_string() || d["weights_sha256"].get<std::string>().size() != 64)
          throw FormatError("each entry needs a string name and a 64-digit weights_sha256", where);
        info.dependencies.push_back({d["name"].get<std::string>(), d["weights_sha256"].get<std::string>()});
      }
    } catch (const nlohmann::json::exception& e) {
      throw FormatError(std::string("malformed JSON: ") + e.what(), where);
    }
  } else {
    throw AdapterError("unknown safetune.metadata_version '" + version + "' (this safetune writes " +
                           kMetadataVersion + ")", file.string(), "upgrade safetune");
  }
  for (const std::string& name : header.names) {
    const std::string suffix = ".lora_A.weight";
    if (name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) {
      std::string m = name.substr(0, name.size() - suffix.size());
      if (m.rfind(kPrefix, 0) == 0) m = m.substr(std::string(kPrefix).size());
      info.modules.push_back(m);
    }
  }
  return info;
}

AdapterFileInfo ModelAdapters::load_peft(const fs::path& dir, const std::string& name_in, bool trainable) {
  const fs::path cfg_path = dir / "adapter_config.json";
  const nlohmann::json cfg_json = adapter_config_json(cfg_path);
  const PeftConfig cfg{cfg_json, cfg_path.string()};
  const std::string peft_type = cfg.string("peft_type", "LORA");
  if (peft_type != "LORA")
    throw AdapterError("only LoRA adapters are supported, got peft_type " + peft_type, cfg_path.string());
  if (cfg.boolean("use_dora", false)) throw AdapterError("DoRA adapters are not supported", cfg_path.string());
  if (cfg.boolean("fan_in_fan_out", false))
    throw AdapterError("fan_in_fan_out adapters (GPT-2 Conv1D) are not supported", cfg_path.string());

  AdapterFileInfo info = read_info(dir);
  const fs::path file = dir / "adapter_model.safetensors";
  auto tensors = io::safetensors_load(file);
  io::require_finite(tensors, file.string());
  const std::string name = !name_in.empty() ? name_in : (!info.name.empty() ? info.name : dir.filename().string());
  if (has(name)) throw AdapterError("an adapter with this name is already attached", name);

  LoraConfig lc;
  lc.rank = static_cast<std::int64_t>(cfg.number("r", 8));
  lc.alpha = cfg.number("lora_alpha", 8);
  lc.dropout = cfg.number("lora_dropout", 0);
  lc.use_rslora = cfg.boolean("use_rslora", false);
  lc.rank_pattern = cfg.pattern<std::int64_t>("rank_pattern");
  lc.alpha_pattern = cfg.pattern<double>("alpha_pattern");
  // PEFT's target_modules: a list of name suffixes, a regex the whole name must match, or "all-linear".
  LoraConfig targets;
  bool check_targets = false;
  if (const auto* t = cfg.find("target_modules")) {
    check_targets = true;
    if (t->is_string()) {
      const auto v = t->get<std::string>();
      if (v == "all-linear") targets.all_linear = true;
      else targets.target_regex = v;
    } else if (t->is_array()) {
      for (const auto& x : *t) {
        if (!x.is_string()) cfg.fail("target_modules", "a string or a list of strings");
        targets.target_suffixes.push_back(x.get<std::string>());
      }
    } else {
      cfg.fail("target_modules", "a string or a list of strings");
    }
  }

  std::map<std::string, at::Tensor> by_name(tensors.begin(), tensors.end());
  std::vector<std::string> modules;
  for (const auto& [key, t] : tensors) {
    std::string m = key;
    if (m.rfind(kPrefix, 0) == 0) m = m.substr(std::string(kPrefix).size());
    const std::string a_suffix = ".lora_A.weight", b_suffix = ".lora_B.weight";
    auto ends = [&](const std::string& s) { return m.size() > s.size() && m.compare(m.size() - s.size(), s.size(), s) == 0; };
    if (ends(a_suffix)) modules.push_back(m.substr(0, m.size() - a_suffix.size()));
    else if (!ends(b_suffix))
      throw AdapterError("unexpected tensor in a LoRA adapter (only lora_A/lora_B weights are supported)", file.string() + ": " + key);
  }
  if (modules.empty()) throw AdapterError("adapter holds no lora_A tensors", file.string());
  if (check_targets) {
    // PEFT refuses a config whose target_modules match no module, and never loads weights for a
    // module its target_modules do not select: either way the file is not what it says.
    if (targets.select(order_).empty())
      throw AdapterError("target_modules matches no Linear of the model (PEFT refuses this adapter)",
                         cfg_path.string() + ": target_modules");
    for (const auto& m : modules)
      if (!targets.targets(m))
        throw AdapterError("the tensors adapt '" + m + "', which target_modules does not select (PEFT would not "
                           "apply them)", cfg_path.string() + ": target_modules");
  }
  // Validate everything before attaching anything, so a bad file leaves the model unchanged.
  AdapterFactors pending;
  pending.name = name;
  pending.role = info.role;
  pending.required_at_inference = info.required_at_inference;
  pending.dependencies = info.dependencies;
  auto linears = model_.linears();
  for (const auto& m : modules) {
    auto lin = std::find_if(linears.begin(), linears.end(), [&](auto& p) { return p.first == m; });
    if (lin == linears.end()) throw AdapterError("adapter targets a module the model does not have", file.string() + ": " + m);
    auto a_it = by_name.find(kPrefix + m + ".lora_A.weight");
    if (a_it == by_name.end()) a_it = by_name.find(m + ".lora_A.weight");
    auto b_it = by_name.find(kPrefix + m + ".lora_B.weight");
    if (b_it == by_name.end()) b_it = by_name.find(m + ".lora_B.weight");
    if (b_it == by_name.end()) throw AdapterError("lora_A without lora_B", file.string() + ": " + m);
    const at::Tensor &A = a_it->second, &B = b_it->second;
    const auto in = lin->second->in_features(), out = lin->second->out_features();
    if (A.dim() != 2 || B.dim() != 2 || A.size(1) != in || B.size(0) != out || A.size(0) != B.size(1))
      throw AdapterError("lora_A/lora_B shapes [" + std::to_string(A.size(0)) + ", " + std::to_string(A.dim() > 1 ? A.size(1) : 0) +
                             "] / [" + std::to_string(B.size(0)) + ", " + std::to_string(B.dim() > 1 ? B.size(1) : 0) +
                             "] do not fit the Linear [" + std::to_string(out) + ", " + std::to_string(in) + "]",
                         file.string() + ": " + m);
    AdapterSpec spec = lc.spec_for(name, m, info.role, trainable);
    if (spec.rank != A.size(0))
      throw AdapterError("adapter_config.json gives rank " + std::to_string(spec.rank) + " (r / rank_pattern) but the "
                         "tensors have rank " + std::to_string(A.size(0)) + " (PEFT refuses this adapter)",
                         file.string() + ": " + m);
    spec.required_at_inference = info.required_at_inference;
    pending.modules.push_back({m, spec, A, B});
  }
  // The recorded hash: version 2 covers tensors, scales, role, flags and dependencies; version 1
  // (older safetune) the tensors only.
  if (info.metadata_version == 2) {
    if (adapter_sha256(pending, true, &tensors) != info.content_sha256)
      throw AdapterError("adapter content does not match its recorded SHA-256 (tensors, scales, role, "
                         "required_at_inference or dependencies were edited, or the file is damaged)", file.string());
    if (!info.weights_sha256.empty() && adapter_sha256(pending, false, &tensors) != info.weights_sha256)
      throw AdapterError("adapter weights do not match their recorded weights SHA-256", file.string());
  } else {
    if (info.metadata_version == 1 && tensors_sha256(tensors) != info.content_sha256)
      throw AdapterError("adapter tensors do not match their recorded SHA-256 (damaged or edited file)", file.string());
    log_warn("adapter '" + name + "' (" + dir.string() + ") carries no dependency metadata (" +
             (info.metadata_version == 1 ? "written by an older safetune" : "not written by safetune") +
             "): the adapters it needs are not checked and its role and required_at_inference flag are not covered "
             "by a hash");
  }
  const auto device = model_.device();
  for (auto& p : pending.modules)
    stack_for(p.module).add(p.spec, p.A.to(device, torch::kFloat), p.B.to(device, torch::kFloat));
  if (!info.dependencies.empty()) deps_[name] = info.dependencies;
  info.name = name;
  info.modules = modules;
  log_info("loaded adapter '" + name + "' (" + std::to_string(modules.size()) + " modules, role " +
           role_name(info.role) + ") from " + dir.string());
  // A model written by `safetune merge` names what it already holds; adding it again doubles it.
  const auto w = weights_sha256(name);
  for (const auto& m : model_.config().merged_adapters)
    if (m.weights_sha256 == w)
      log_warn("adapter '" + name + "' is already merged into this model's weights (as '" + m.name +
               "', config.json safetune_merged_adapters): applying it again doubles its effect");
  return info;
}

}  // namespace safetune::lora
