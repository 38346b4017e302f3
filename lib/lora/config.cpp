// LoraConfig: PEFT-compatible target selection and per-module rank/alpha patterns.
#include "safetune/lora/config.hpp"

#include "safetune/error.hpp"

#include <cmath>
#include <regex>

namespace safetune::lora {
namespace {

bool suffix_match(const std::string& name, const std::string& suffix) {
  if (name == suffix) return true;
  return name.size() > suffix.size() &&
         name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0 &&
         name[name.size() - suffix.size() - 1] == '.';
}

std::regex compile(const std::string& pattern, const std::string& key) {
  try {
    return std::regex(pattern, std::regex::ECMAScript);
  } catch (const std::regex_error& e) {
    throw ConfigError("invalid regular expression '" + pattern + "': " + e.what(), key);
  }
}

// PEFT's get_pattern_key: re.match(rf"(.*\.)?({key})$", name).
template <class V>
const V* pattern_value(const std::vector<std::pair<std::string, V>>& patterns,
                       const std::string& name, const char* key) {
  for (const auto& [pattern, value] : patterns)
    if (std::regex_match(name, compile("(.*\\.)?(" + pattern + ")", key))) return &value;
  return nullptr;
}

}  // namespace

void LoraConfig::describe(ConfigVisitor& v) {
  v.field("rank", rank, Field("LoRA rank r.").range(1, 4096));
  v.field("alpha", alpha,
          Field("LoRA alpha; the scale is alpha/r (alpha/sqrt(r) with rsLoRA).").range(1e-6, 1e6));
  v.field("dropout", dropout, Field("Dropout on the adapter input.").range(0, 0.99));
  v.field("use_rslora", use_rslora, Field("rsLoRA scaling alpha/sqrt(r)."));
  // PEFT's target_modules as YAML writes it: suffixes, or the one word all-linear.
  const std::vector<std::string> targets_before =
      all_linear ? std::vector<std::string>{"all-linear"} : target_suffixes;
  std::vector<std::string> targets = targets_before;
  v.field("targets", targets, Field("Module-name suffixes to adapt, or [all-linear]."));
  if (targets != targets_before) {
    all_linear = targets.size() == 1 && targets[0] == "all-linear";
    target_suffixes = all_linear ? std::vector<std::string>{} : targets;
  }
  std::string init_name = init == InitMethod::gaussian ? "gaussian" : "peft_default";
  v.field("init", init_name,
          Field("Initialisation of A (B starts at zero).").one_of({"peft_default", "gaussian"}));
  init = parse_init(init_name);
}

void LoraConfig::validate() const {
  if (!all_linear && target_regex.empty() && target_suffixes.empty())
    throw ConfigError("no LoRA targets: give target modules, a regex or all-linear",
                      "lora.target_modules");
  if (!target_regex.empty()) compile(target_regex, "lora.target_modules");
  if (rank <= 0) throw ConfigError("rank must be positive", "lora.rank");
  if (!std::isfinite(alpha)) throw ConfigError("alpha must be finite", "lora.alpha");
  if (!(dropout >= 0.0 && dropout < 1.0))
    throw ConfigError("dropout must lie in [0, 1)", "lora.dropout");
  for (const auto& [p, r] : rank_pattern) {
    compile("(.*\\.)?(" + p + ")", "lora.rank_pattern");
    if (r <= 0)
      throw ConfigError("rank for pattern '" + p + "' must be positive", "lora.rank_pattern");
  }
  for (const auto& [p, a] : alpha_pattern) {
    compile("(.*\\.)?(" + p + ")", "lora.alpha_pattern");
    if (!std::isfinite(a))
      throw ConfigError("alpha for pattern '" + p + "' must be finite", "lora.alpha_pattern");
  }
}

bool LoraConfig::targets(const std::string& name) const {
  for (const auto& s : exclude_suffixes)
    if (suffix_match(name, s)) return false;
  if (all_linear) return !suffix_match(name, "lm_head");
  if (!target_regex.empty())
    return std::regex_match(name, compile(target_regex, "lora.target_modules"));
  for (const auto& s : target_suffixes)
    if (suffix_match(name, s)) return true;
  return false;
}

std::vector<std::string> LoraConfig::select(const std::vector<std::string>& names) const {
  validate();
  std::vector<std::string> out;
  for (const auto& n : names)
    if (targets(n)) out.push_back(n);
  return out;
}

std::int64_t LoraConfig::rank_for(const std::string& name) const {
  const auto* v = pattern_value(rank_pattern, name, "lora.rank_pattern");
  return v ? *v : rank;
}

double LoraConfig::alpha_for(const std::string& name) const {
  const auto* v = pattern_value(alpha_pattern, name, "lora.alpha_pattern");
  return v ? *v : alpha;
}

AdapterSpec LoraConfig::spec_for(const std::string& adapter_name, const std::string& module_name,
                                 AdapterRole role, bool trainable) const {
  AdapterSpec s;
  s.name = adapter_name;
  s.rank = rank_for(module_name);
  s.alpha = alpha_for(module_name);
  s.dropout = dropout;
  s.use_rslora = use_rslora;
  s.role = role;
  s.trainable = trainable;
  s.init = init;
  return s;
}

}  // namespace safetune::lora
