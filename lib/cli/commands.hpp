// The CLI's subcommand registry: each area adds its subcommands to the app, main() runs them.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>

namespace safetune::cli {

// Subcommands store their action here; main() runs the one the user picked after parsing.
using Action = std::function<int()>;

void register_config_commands(CLI::App& app, Action& action);
void register_model_commands(CLI::App& app, Action& action);
void register_tokenize_commands(CLI::App& app, Action& action);
void register_chat_commands(CLI::App& app, Action& action);
void register_train_commands(CLI::App& app, Action& action);
void register_data_commands(CLI::App& app, Action& action);
void register_release_commands(CLI::App& app, Action& action);
void register_adapter_commands(CLI::App& app, Action& action);
void register_compare_commands(CLI::App& app, Action& action);

}  // namespace safetune::cli
