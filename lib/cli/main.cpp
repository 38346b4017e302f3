// The `safetune` command: parse arguments, set up logging, run one subcommand, map errors to exit
// codes.

#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <functional>

#include "commands.hpp"
#include "safetune/error.hpp"
#include "safetune/log.hpp"
#include "safetune/lora/adapter_stack.hpp"  // PolicyError

int main(int argc, char** argv) {
  using namespace safetune;
  CLI::App app{"safetune: LoRA fine-tuning that keeps safety alignment"};
  app.set_version_flag("--version", std::string("safetune ") + SAFETUNE_VERSION);
  app.require_subcommand(1);
  std::string log_level = "info";
  bool quiet = false;
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error or off")
      ->capture_default_str();
  app.add_flag("-q,--quiet", quiet, "only warnings and errors");

  cli::Action action;
  cli::register_config_commands(app, action);
  cli::register_model_commands(app, action);
  cli::register_tokenize_commands(app, action);
  cli::register_chat_commands(app, action);
  cli::register_train_commands(app, action);
  cli::register_data_commands(app, action);
  cli::register_release_commands(app, action);
  cli::register_adapter_commands(app, action);
  cli::register_compare_commands(app, action);
  // Global flags typed after the subcommand (`safetune train CONFIG --quiet`) reach the top level.
  std::function<void(CLI::App*)> fall_through = [&](CLI::App* parent) {
    for (CLI::App* sub : parent->get_subcommands({})) {
      sub->fallthrough();
      fall_through(sub);
    }
  };
  fall_through(&app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    std::fprintf(stderr, "run with --help for usage\n");
    return 2;
  }
  try {
    log_setup(parse_log_level(log_level), quiet);
    return action ? action() : 0;
  } catch (const Interrupted& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 128 + e.signal();
  } catch (const UsageError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  } catch (const PolicyError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
