// The --adapters / --disable-adapter / --override-inference-policy options shared by the commands
// that run a model (forward, generate, assess) or build on adapters (merge, export).
#pragma once
#include <CLI/CLI.hpp>
#include <string>
#include <vector>

namespace safetune::lora {
class ModelAdapters;
}

namespace safetune::cli {

struct AdapterArgs {
  std::string adapters;               // PEFT directories, comma-separated
  std::vector<std::string> disabled;  // adapter names to switch off after loading
  bool override_policy = false;
};

// with_disable: also --disable-adapter (commands that run the model). --override-inference-policy
// is always there: it is the one way past the inference policy (required adapters, dependencies).
void add_adapter_options(CLI::App* cmd, AdapterArgs& a, bool with_disable = true);

// Loads the --adapters directories as frozen adapters, then disables the --disable-adapter ones. A
// required_at_inference adapter is only disabled under --override-inference-policy (logged and
// recorded for reports); otherwise a UsageError says so. Then checks that every adapter in effect
// has the adapters it depends on (a task adapter its safety adapter): PolicyError (exit 2) naming
// the missing one, unless --override-inference-policy. Returns the loaded adapter names in order.
std::vector<std::string> apply_adapter_options(lora::ModelAdapters& adapters, const AdapterArgs& a,
                                               const std::string& command);

}  // namespace safetune::cli
