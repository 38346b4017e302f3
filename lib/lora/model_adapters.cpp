// ModelAdapters: adapter stacks over a CausalLM and the PEFT file format.
#include "safetune/lora/model_adapters.hpp"

#include <torch/torch.h>

#include <nlohmann/json.hpp>
#include <regex>
#include <set>

#include "safetune/error.hpp"
#include "safetune/io/atomic_file.hpp"
#include "safetune/io/hash.hpp"
#include "safetune/io/checkpoint.hpp"
#include "safetune/io/safetensors.hpp"
#include "safetune/log.hpp"
#include "safetune/model/causal_lm.hpp"

namespace safetune::lora {
namespace fs = std::filesystem;

namespace {
constexpr const char* kPrefix = "base_model.model.";
}  // namespace

std::string tensors_sha256(const std::vector<std::pair<std::string, at::Tensor>>& tensors) {
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
}
void ModelAdapters::train(bool on) {
  for (auto& [m, s] : stacks_) s->train(on);
}
void ModelAdapters::merge(const std::vector<std::string>& names, MergeCopy copy, bool safe) {
  for (auto* st : stacks()) {
    std::vector<std::string> here;
    for (const auto& n : names)
      if (st->contains(n)) here.push_back(n);
    if (here.empty()) continue;
    if (safe) st->safe_merge(here, copy);
    else st->merge(here, copy);
  }
}
void ModelAdapters::unmerge(const std::vector<std::string>& names) {
  for (auto* st : stacks()) {
    std::vector<std::string> here;
    for (const auto& n : names)
      if (st->contains(n)) here.push_back(n);
    if (!here.empty()) st->unmerge(here);
  }
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

std::string ModelAdapters::content_sha256(const std::string& name) const {
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& m : order_) {
    auto it = stacks_.find(m);
    if (it == stacks_.end() || !it->second->contains(name)) continue;
    const Adapter& a = it->second->get(name);
    tensors.emplace_back(kPrefix + m + ".lora_A.weight", a.A);
    tensors.emplace_back(kPrefix + m + ".lora_B.weight", a.B);
  }
  if (tensors.empty()) throw AdapterError("no such adapter", name);
  return tensors_sha256(tensors);
}

void ModelAdapters::save_peft(const std::string& name, const fs::path& dir, const std::string& base) const {
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  const Adapter* first = nullptr;
  std::set<std::string> suffixes;
  nlohmann::json rank_pattern = nlohmann::json::object(), alpha_pattern = nlohmann::json::object();
  std::vector<std::string> modules;
  for (const auto& m : order_) {
    auto it = stacks_.find(m);
    if (it == stacks_.end() || !it->second->contains(name)) continue;
    const Adapter& a = it->second->get(name);
    if (a.merged) throw AdapterError("cannot save a merged adapter; unmerge it first", name);
    if (!first) first = &a;
    tensors.emplace_back(kPrefix + m + ".lora_A.weight", a.A.detach().to(torch::kCPU).contiguous());
    tensors.emplace_back(kPrefix + m + ".lora_B.weight", a.B.detach().to(torch::kCPU).contiguous());
    suffixes.insert(m.substr(m.rfind('.') + 1));
    modules.push_back(m);
  }
  if (!first) throw AdapterError("no such adapter", name);
  // Per-module ranks/alphas that differ from the first become PEFT patterns on the full name.
  for (const auto& m : modules) {
    const Adapter& a = stacks_.at(m)->get(name);
    if (a.spec.rank != first->spec.rank) rank_pattern[m] = a.spec.rank;
    if (a.spec.alpha != first->spec.alpha) alpha_pattern[m] = a.spec.alpha;
  }
  nlohmann::json cfg = {
      {"peft_type", "LORA"},
      {"task_type", "CAUSAL_LM"},
      {"base_model_name_or_path", base},
      {"r", first->spec.rank},
      {"lora_alpha", first->spec.alpha},
      {"lora_dropout", first->spec.dropout},
      {"use_rslora", first->spec.use_rslora},
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
  std::map<std::string, std::string> meta{
      {"format", "pt"},
      {"safetune.adapter_name", name},
      {"safetune.role", role_name(first->spec.role)},
      {"safetune.required_at_inference", first->spec.required_at_inference ? "true" : "false"},
      {"safetune.content_sha256", tensors_sha256(tensors)},
      {"safetune.base_model", base}};
  fs::create_directories(dir);
  io::safetensors_save(dir / "adapter_model.safetensors", tensors, meta);
  io::atomic_write(dir / "adapter_config.json", cfg.dump(2) + "\n");
}

AdapterFileInfo ModelAdapters::read_info(const fs::path& dir) {
  AdapterFileInfo info;
  fs::path file = dir / "adapter_model.safetensors";
  std::error_code ec;
  if (!fs::exists(file, ec)) throw IoError("no adapter_model.safetensors in adapter directory", dir.string());
  auto header = io::safetensors_read_header(file);
  auto get = [&](const char* k) {
    auto it = header.metadata.find(k);
    return it == header.metadata.end() ? std::string() : it->second;
  };
  info.name = get("safetune.adapter_name");
  if (auto r = get("safetune.role"); !r.empty()) info.role = parse_role(r);
  info.required_at_inference = get("safetune.required_at_inference") == "true";
  info.content_sha256 = get("safetune.content_sha256");
  info.base_model = get("safetune.base_model");
  for (const auto& t : header.tensors) {
    const std::string suffix = ".lora_A.weight";
    if (t.name.size() > suffix.size() && t.name.compare(t.name.size() - suffix.size(), suffix.size(), suffix) == 0) {
      std::string m = t.name.substr(0, t.name.size() - suffix.size());
      if (m.rfind(kPrefix, 0) == 0) m = m.substr(std::string(kPrefix).size());
      info.modules.push_back(m);
    }
  }
  return info;
}

AdapterFileInfo ModelAdapters::load_peft(const fs::path& dir, const std::string& name_in, bool trainable) {
  const fs::path cfg_path = dir / "adapter_config.json";
  nlohmann::json cfg;
  try {
    cfg = nlohmann::json::parse(io::read_file(cfg_path));
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(std::string("malformed JSON: ") + e.what(), cfg_path.string());
  }
  auto num = [&](const char* key, double fallback) -> double {
    if (!cfg.contains(key) || cfg[key].is_null()) return fallback;
    if (!cfg[key].is_number()) throw FormatError(std::string("'") + key + "' must be a number", cfg_path.string());
    return cfg[key].get<double>();
  };
  if (cfg.value("peft_type", std::string("LORA")) != "LORA")
    throw AdapterError("only LoRA adapters are supported, got peft_type " + cfg.value("peft_type", std::string()),
                       cfg_path.string());
  if (cfg.value("use_dora", false)) throw AdapterError("DoRA adapters are not supported", cfg_path.string());
  if (cfg.value("fan_in_fan_out", false))
    throw AdapterError("fan_in_fan_out adapters (GPT-2 Conv1D) are not supported", cfg_path.string());

  AdapterFileInfo info = read_info(dir);
  const fs::path file = dir / "adapter_model.safetensors";
  auto tensors = io::safetensors_load(file);
  io::require_finite(tensors, file.string());
  if (!info.content_sha256.empty()) {
    if (tensors_sha256(tensors) != info.content_sha256)
      throw AdapterError("adapter tensors do not match their recorded SHA-256 (damaged or edited file)", file.string());
  }
  const std::string name = !name_in.empty() ? name_in : (!info.name.empty() ? info.name : dir.filename().string());
  if (has(name)) throw AdapterError("an adapter with this name is already attached", name);

  LoraConfig lc;
  lc.rank = static_cast<std::int64_t>(num("r", 8));
  lc.alpha = num("lora_alpha", 8);
  lc.dropout = num("lora_dropout", 0);
  lc.use_rslora = cfg.value("use_rslora", false);
  lc.target_suffixes = {"__unused__"};
  if (cfg.contains("rank_pattern") && cfg["rank_pattern"].is_object())
    for (auto& [k, v] : cfg["rank_pattern"].items()) lc.rank_pattern.emplace_back(k, v.get<std::int64_t>());
  if (cfg.contains("alpha_pattern") && cfg["alpha_pattern"].is_object())
    for (auto& [k, v] : cfg["alpha_pattern"].items()) lc.alpha_pattern.emplace_back(k, v.get<double>());

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
  // Validate everything before attaching anything, so a bad file leaves the model unchanged.
  struct Pending { std::string module; AdapterSpec spec; at::Tensor A, B; };
  std::vector<Pending> pending;
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
    spec.rank = A.size(0);  // the tensors are the truth; patterns only name the alpha
    spec.required_at_inference = info.required_at_inference;
    pending.push_back({m, spec, A, B});
  }
  const auto device = model_.device();
  for (auto& p : pending)
    stack_for(p.module).add(p.spec, p.A.to(device, torch::kFloat), p.B.to(device, torch::kFloat));
  info.name = name;
  info.modules = modules;
  log_info("loaded adapter '" + name + "' (" + std::to_string(modules.size()) + " modules, role " +
           role_name(info.role) + ") from " + dir.string());
  return info;
}

}  // namespace safetune::lora
