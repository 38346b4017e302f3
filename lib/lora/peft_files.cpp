// The PEFT adapter files: adapter_model.safetensors + adapter_config.json, written and read
// (with safetune's metadata: role, scales, dependencies, content hash).
#include "safetune/lora/model_adapters.hpp"
#include "safetune/lora/peft.hpp"

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

namespace peft_format {
nlohmann::json dependencies_json(const std::vector<AdapterDependency>& deps) {
  nlohmann::json j = nlohmann::json::array();
  for (const auto& d : deps) j.push_back({{"name", d.name}, {"weights_sha256", d.weights_sha256}});
  return j;
}

std::vector<std::pair<std::string, at::Tensor>> peft_tensors(const AdapterFactors& a) {
  std::vector<std::pair<std::string, at::Tensor>> t;
  for (const auto& m : a.modules) {
    t.emplace_back(kPrefix + m.module + ".lora_A.weight",
                   m.A.detach().to(torch::kCPU).contiguous());
    t.emplace_back(kPrefix + m.module + ".lora_B.weight",
                   m.B.detach().to(torch::kCPU).contiguous());
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
                           const std::vector<std::pair<std::string, at::Tensor>>* tensors) {
  return tensors_sha256(tensors ? *tensors : peft_tensors(a), metadata_block(a, with_flags));
}

}  // namespace peft_format

using namespace peft_format;

namespace {
// Typed reads of adapter_config.json that name the file and key (nlohmann's own messages name
// neither).
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
      throw AdapterError("PEFT has one use_rslora per adapter; the modules disagree",
                         a.name + ": " + m.module);
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

void ModelAdapters::save_peft(const std::string& name, const fs::path& dir,
                              const std::string& base) const {
  auto a = factors(name);
  for (const auto& m : a.modules)
    if (stacks_.at(m.module)->get(name).merged)
      throw AdapterError("cannot save a merged adapter; unmerge it first", name);
  write_peft(a, dir, base);
}

namespace {
nlohmann::json adapter_config_json(const fs::path& cfg_path) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(io::read_file(cfg_path));
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(std::string("malformed JSON: ") + e.what(), cfg_path.string());
  }
  if (!j.is_object())
    throw FormatError("adapter_config.json must hold a JSON object", cfg_path.string());
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
  if (!fs::exists(file, ec))
    throw IoError("no adapter_model.safetensors in adapter directory", dir.string());
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
        if (!d.is_object() || !d.contains("name") || !d["name"].is_string() ||
            !d.contains("weights_sha256") || !d["weights_sha256"].is_string() ||
            d["weights_sha256"].get<std::string>().size() != 64)
          throw FormatError("each entry needs a string name and a 64-digit weights_sha256", where);
        info.dependencies.push_back(
            {d["name"].get<std::string>(), d["weights_sha256"].get<std::string>()});
      }
    } catch (const nlohmann::json::exception& e) {
      throw FormatError(std::string("malformed JSON: ") + e.what(), where);
    }
  } else {
    throw AdapterError("unknown safetune.metadata_version '" + version +
                           "' (this safetune writes " + kMetadataVersion + ")",
                       file.string(), "upgrade safetune");
  }
  for (const std::string& name : header.names) {
    const std::string suffix = ".lora_A.weight";
    if (name.size() > suffix.size() &&
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) {
      std::string m = name.substr(0, name.size() - suffix.size());
      if (m.rfind(kPrefix, 0) == 0) m = m.substr(std::string(kPrefix).size());
      info.modules.push_back(m);
    }
  }
  return info;
}

AdapterFileInfo ModelAdapters::load_peft(const fs::path& dir, const std::string& name_in,
                                         bool trainable) {
  const fs::path cfg_path = dir / "adapter_config.json";
  const nlohmann::json cfg_json = adapter_config_json(cfg_path);
  const PeftConfig cfg{cfg_json, cfg_path.string()};
  const std::string peft_type = cfg.string("peft_type", "LORA");
  if (peft_type != "LORA")
    throw AdapterError("only LoRA adapters are supported, got peft_type " + peft_type,
                       cfg_path.string());
  if (cfg.boolean("use_dora", false))
    throw AdapterError("DoRA adapters are not supported", cfg_path.string());
  if (cfg.boolean("fan_in_fan_out", false))
    throw AdapterError("fan_in_fan_out adapters (GPT-2 Conv1D) are not supported",
                       cfg_path.string());

  AdapterFileInfo info = read_info(dir);
  const fs::path file = dir / "adapter_model.safetensors";
  auto tensors = io::safetensors_load(file);
  io::require_finite(tensors, file.string());
  const std::string name =
      !name_in.empty() ? name_in : (!info.name.empty() ? info.name : dir.filename().string());
  if (has(name)) throw AdapterError("an adapter with this name is already attached", name);

  LoraConfig lc;
  lc.rank = static_cast<std::int64_t>(cfg.number("r", 8));
  lc.alpha = cfg.number("lora_alpha", 8);
  lc.dropout = cfg.number("lora_dropout", 0);
  lc.use_rslora = cfg.boolean("use_rslora", false);
  lc.rank_pattern = cfg.pattern<std::int64_t>("rank_pattern");
  lc.alpha_pattern = cfg.pattern<double>("alpha_pattern");
  // PEFT's target_modules: a list of name suffixes, a regex the whole name must match, or
  // "all-linear".
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
    auto ends = [&](const std::string& s) {
      return m.size() > s.size() && m.compare(m.size() - s.size(), s.size(), s) == 0;
    };
    if (ends(a_suffix)) modules.push_back(m.substr(0, m.size() - a_suffix.size()));
    else if (!ends(b_suffix))
      throw AdapterError(
          "unexpected tensor in a LoRA adapter (only lora_A/lora_B weights are supported)",
          file.string() + ": " + key);
  }
  if (modules.empty()) throw AdapterError("adapter holds no lora_A tensors", file.string());
  if (check_targets) {
    // PEFT refuses a config whose target_modules match no module, and never loads weights for a
    // module its target_modules do not select: either way the file is not what it says.
    if (targets.select(order_).empty())
      throw AdapterError(
          "target_modules matches no Linear of the model (PEFT refuses this adapter)",
          cfg_path.string() + ": target_modules");
    for (const auto& m : modules)
      if (!targets.targets(m))
        throw AdapterError("the tensors adapt '" + m +
                               "', which target_modules does not select (PEFT would not "
                               "apply them)",
                           cfg_path.string() + ": target_modules");
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
    if (lin == linears.end())
      throw AdapterError("adapter targets a module the model does not have",
                         file.string() + ": " + m);
    auto a_it = by_name.find(kPrefix + m + ".lora_A.weight");
    if (a_it == by_name.end()) a_it = by_name.find(m + ".lora_A.weight");
    auto b_it = by_name.find(kPrefix + m + ".lora_B.weight");
    if (b_it == by_name.end()) b_it = by_name.find(m + ".lora_B.weight");
    if (b_it == by_name.end())
      throw AdapterError("lora_A without lora_B", file.string() + ": " + m);
    const at::Tensor &A = a_it->second, &B = b_it->second;
    const auto in = lin->second->in_features(), out = lin->second->out_features();
    if (A.dim() != 2 || B.dim() != 2 || A.size(1) != in || B.size(0) != out ||
        A.size(0) != B.size(1))
      throw AdapterError(
          "lora_A/lora_B shapes [" + std::to_string(A.size(0)) + ", " +
              std::to_string(A.dim() > 1 ? A.size(1) : 0) + "] / [" + std::to_string(B.size(0)) +
              ", " + std::to_string(B.dim() > 1 ? B.size(1) : 0) + "] do not fit the Linear [" +
              std::to_string(out) + ", " + std::to_string(in) + "]",
          file.string() + ": " + m);
    AdapterSpec spec = lc.spec_for(name, m, info.role, trainable);
    if (spec.rank != A.size(0))
      throw AdapterError("adapter_config.json gives rank " + std::to_string(spec.rank) +
                             " (r / rank_pattern) but the "
                             "tensors have rank " +
                             std::to_string(A.size(0)) + " (PEFT refuses this adapter)",
                         file.string() + ": " + m);
    spec.required_at_inference = info.required_at_inference;
    pending.modules.push_back({m, spec, A, B});
  }
  // The recorded hash: version 2 covers tensors, scales, role, flags and dependencies; version 1
  // (older safetune) the tensors only.
  if (info.metadata_version == 2) {
    if (adapter_sha256(pending, true, &tensors) != info.content_sha256)
      throw AdapterError(
          "adapter content does not match its recorded SHA-256 (tensors, scales, role, "
          "required_at_inference or dependencies were edited, or the file is damaged)",
          file.string());
    if (!info.weights_sha256.empty() &&
        adapter_sha256(pending, false, &tensors) != info.weights_sha256)
      throw AdapterError("adapter weights do not match their recorded weights SHA-256",
                         file.string());
  } else {
    if (info.metadata_version == 1 && tensors_sha256(tensors) != info.content_sha256)
      throw AdapterError(
          "adapter tensors do not match their recorded SHA-256 (damaged or edited file)",
          file.string());
    log_warn(
        "adapter '" + name + "' (" + dir.string() + ") carries no dependency metadata (" +
        (info.metadata_version == 1 ? "written by an older safetune" : "not written by safetune") +
        "): the adapters it needs are not checked and its role and required_at_inference flag are "
        "not covered "
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
