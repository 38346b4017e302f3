// `safetune compare CONFIG`: the stage-2 regularizer matrix (variants x seeds x lambdas),
// resumable.
#include <cstdio>
#include <iostream>

#include "commands.hpp"
#include "safetune/error.hpp"
#include "safetune/io/atomic_file.hpp"
#include "safetune/recipes/compare.hpp"

namespace safetune::cli {

void register_compare_commands(CLI::App& app, Action& action) {
  struct Args {
    std::string file;
    std::vector<std::string> overrides;
    bool reference = false;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("compare",
                                 "run the stage-2 regularizer matrix (variants x seeds x lambdas) "
                                 "and write the table and Pareto plot");
  cmd->add_option("config", a->file, "YAML config (configs/compare_regularizers.yaml)");
  cmd->add_option("overrides", a->overrides, "key.path=value overrides");
  cmd->add_flag("--reference", a->reference,
                "print the Markdown reference of the compare section and exit");
  cmd->callback([&action, a] {
    action = [a] {
      if (a->reference) {
        std::cout << recipes::compare_reference_markdown();
        return 0;
      }
      if (a->file.empty()) throw UsageError("compare needs a CONFIG file", "compare");
      recipes::CompareConfig cfg;
      config_load(cfg, a->file, a->overrides);
      auto r = recipes::run_compare(cfg);
      std::printf("\n%s\n", io::read_file(r.out_dir / "compare.md").c_str());
      std::printf("%zu cells run, %zu skipped (finished earlier)%s\n", r.cells_run, r.cells_skipped,
                  r.stage1_reused ? ", stage 1 reused" : "");
      std::printf("written: %s, %s, %s\n", (r.out_dir / "compare.md").c_str(),
                  (r.out_dir / "compare.csv").c_str(), (r.out_dir / "pareto.svg").c_str());
      return 0;
    };
  });
}

}  // namespace safetune::cli
