// The --adapters / --disable-adapter / --override-inference-policy options shared by the commands
// that run a model (forward, generate, assess) or build on adapters (merge).
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

// with_policy: also --disable-adapter and --override-inference-policy (commands that run the model).
void add_adapter_options(CLI::App* cmd, AdapterArgs& a, bool with_policy = true);

// Loads the --adapters directories as frozen adapters, then disables the --disable-adapter ones. A
// required_at_inference adapter is only disabled under --override-inference-policy (logged and
// recorded for reports); otherwise a UsageError says so. Returns the loaded adapter names in order.
std::vector<std::string> apply_adapter_options(lora::ModelAdapters& adapters, const AdapterArgs& a,
                                               const std::string& command);

}  // namespace safetune::cli
