// `safetune config check|show|reference`: validate and print configuration.
#include <cstdio>
#include <iostream>

#include "commands.hpp"
#include "safetune/config.hpp"
#include "safetune/io/atomic_file.hpp"
#include "safetune/recipes/compare.hpp"
#include "safetune/recipes/two_stage.hpp"

namespace safetune::cli {
namespace {
// A config with a top-level `compare:` section is a `safetune compare` config.
// A missing file falls through to the loader, which reports it as a config error.
std::unique_ptr<recipes::TwoStageConfig> schema_for(const std::string& file) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(file, ec))
    return std::make_unique<recipes::TwoStageConfig>();
  const std::string text = io::read_file(file);
  const bool compare =
      text.rfind("compare:", 0) == 0 || text.find("\ncompare:") != std::string::npos;
  if (compare) return std::make_unique<recipes::CompareConfig>();
  return std::make_unique<recipes::TwoStageConfig>();
}
}  // namespace

void register_config_commands(CLI::App& app, Action& action) {
  auto* config = app.add_subcommand("config", "validate and print configuration files");
  config->require_subcommand(1);

  struct Args {
    std::string file;
    std::vector<std::string> overrides;
  };
  auto args = std::make_shared<Args>();

  auto* check = config->add_subcommand("check", "validate FILE (with key.path=value overrides)");
  check->add_option("file", args->file, "YAML config")->required();
  check->add_option("overrides", args->overrides, "key.path=value overrides");
  check->callback([&action, args] {
    action = [args] {
      auto cfg = schema_for(args->file);
      config_load(*cfg, args->file, args->overrides);
      std::printf("%s: ok\n", args->file.c_str());
      return 0;
    };
  });

  auto* show = config->add_subcommand("show", "print the validated, fully resolved FILE");
  show->add_option("file", args->file, "YAML config")->required();
  show->add_option("overrides", args->overrides, "key.path=value overrides");
  show->callback([&action, args] {
    action = [args] {
      auto cfg = schema_for(args->file);
      config_load(*cfg, args->file, args->overrides);
      std::cout << config_dump(*cfg);
      return 0;
    };
  });

  auto* reference =
      config->add_subcommand("reference", "print the Markdown reference of every key");
  reference->callback([&action] {
    action = [] {
      recipes::TwoStageConfig cfg;
      std::cout << config_reference_markdown(cfg, "Configuration reference");
      return 0;
    };
  });
}

}  // namespace safetune::cli
