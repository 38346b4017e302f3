// LoraConfig: which Linears get adapters (suffixes, regex or all-linear) and with what rank/alpha;
// also the `lora` section of a YAML config (stage1.lora, stage2.lora).
#pragma once
#include "safetune/config.hpp"
#include "safetune/lora/adapter_stack.hpp"

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace safetune::lora {

// Defaults are PEFT's (r 8, alpha 8, no targets); a recipe's YAML section starts from its own
// (recipes::default_adapter_config).
struct LoraConfig : ConfigSection {
  // Target selection, PEFT semantics. Exactly one of these is used, in this order of precedence:
  //   all_linear: every Linear except the output head (names ending in "lm_head");
  //   target_regex (non-empty): the full module name must match (like re.fullmatch);
  //   target_suffixes: a name matches when it equals a suffix or ends with "." + suffix.
  bool all_linear = false;
  std::string target_regex;
  std::vector<std::string> target_suffixes;
  // Names never targeted (same suffix rule), applied after selection.
  std::vector<std::string> exclude_suffixes;

  std::int64_t rank = 8;
  double alpha = 8.0;
  double dropout = 0.0;
  bool use_rslora = false;
  InitMethod init = InitMethod::peft_default;
  // PEFT's rank_pattern / alpha_pattern: the first key K (in order) for which the module name
  // matches the regex "(.*\.)?(K)$" overrides rank / alpha.
  std::vector<std::pair<std::string, std::int64_t>> rank_pattern;
  std::vector<std::pair<std::string, double>> alpha_pattern;

  // YAML keys: rank, alpha, dropout, use_rslora, targets (suffixes, or [all-linear] for
  // all_linear), init (peft_default | gaussian). Regex targets and patterns are library-only.
  void describe(ConfigVisitor& v) override;

  // ConfigError when nothing selects targets, a regex is invalid or a rank/alpha is not positive.
  void validate() const;
  bool targets(const std::string& module_name) const;
  // The targeted names among `linear_module_names`, in input order.
  std::vector<std::string> select(const std::vector<std::string>& linear_module_names) const;
  std::int64_t rank_for(const std::string& module_name) const;
  double alpha_for(const std::string& module_name) const;
  // The spec of adapter `adapter_name` on `module_name` (rank/alpha after the patterns).
  AdapterSpec spec_for(const std::string& adapter_name, const std::string& module_name,
                       AdapterRole role = AdapterRole::other, bool trainable = true) const;
};

}  // namespace safetune::lora
