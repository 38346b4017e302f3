// Loading the command line's adapter set into a model, honouring the inference policy.
#include "adapter_args.hpp"

#include "safetune/error.hpp"
#include "safetune/lora/model_adapters.hpp"
#include "safetune/recipes/session.hpp"

namespace safetune::cli {

void add_adapter_options(CLI::App* cmd, AdapterArgs& a, bool with_disable) {
  cmd->add_option("--adapters", a.adapters, "PEFT adapter directories, comma-separated");
  if (with_disable)
    cmd->add_option("--disable-adapter", a.disabled,
                    "load but switch off this adapter (by name); repeatable");
  cmd->add_flag(
      "--override-inference-policy", a.override_policy,
      "allow a disabled required (safety) adapter or a task adapter without its safety adapter; "
      "logged and recorded in reports");
}

std::vector<std::string> apply_adapter_options(lora::ModelAdapters& adapters, const AdapterArgs& a,
                                               const std::string& command) {
  const std::string reason = "--override-inference-policy on safetune " + command;
  if (a.override_policy) adapters.set_policy_override(reason);
  std::vector<std::string> names;
  for (const auto& dir : recipes::split_paths(a.adapters))
    names.push_back(adapters.load_peft(dir).name);
  for (const auto& name : a.disabled) {
    if (!adapters.has(name))
      throw UsageError("--disable-adapter: no loaded adapter is named '" + name + "'", name);
    bool required = false;
    for (auto* st : adapters.stacks(name))
      required = required || st->get(name).spec.required_at_inference;
    if (required && !a.override_policy)
      throw UsageError(
          "adapter '" + name + "' is required at inference and cannot be disabled", name,
          "pass --override-inference-policy to do it anyway (it is logged and recorded)");
    adapters.set_enabled(name, false, required ? reason : "");
  }
  adapters.enforce_dependencies();
  return names;
}

}  // namespace safetune::cli
