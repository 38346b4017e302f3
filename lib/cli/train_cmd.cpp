// `safetune train CONFIG` (the two-stage recipe) and `safetune demo CONFIG` (its three-way
// comparison).
#include <cstdio>

#include "commands.hpp"
#include "safetune/recipes/two_stage.hpp"

namespace safetune::cli {

void register_train_commands(CLI::App& app, Action& action) {
  struct Args {
    std::string file;
    std::vector<std::string> overrides;
    bool resume = false, overwrite = false;
  };
  auto a = std::make_shared<Args>();
  auto* train =
      app.add_subcommand("train", "run the two-stage safety-preserving trainer from a YAML config");
  train->add_option("config", a->file, "YAML config (see docs/config.md)")->required();
  train->add_option("overrides", a->overrides, "key.path=value overrides");
  auto* resume = train->add_flag("--resume", a->resume,
                                 "continue the run in run.output_dir from its latest checkpoints");
  train
      ->add_flag(
          "--overwrite", a->overwrite,
          "replace the previous run in run.output_dir (refused when it holds a registered release)")
      ->excludes(resume);
  train->callback([&action, a] {
    action = [a] {
      recipes::TwoStageConfig cfg;
      config_load(cfg, a->file, a->overrides);
      recipes::RunOptions ro;
      ro.resume = a->resume;
      ro.overwrite = a->overwrite;
      auto r = recipes::run_two_stage(cfg, config_dump(cfg), ro);
      recipes::throw_if_interrupted(r);  // exit 130 / 143: nothing was released
      if (r.tuned.assessment) {
        std::printf("gates: %s\n", r.verdict.passed ? "passed" : "BREACHED");
        for (const auto& reason : r.verdict.reasons) std::printf("  %s\n", reason.c_str());
      }
      std::printf("outputs in %s\n", r.out_dir.c_str());
      return r.verdict.passed ? 0 : 3;
    };
  });

  auto d = std::make_shared<Args>();
  auto* demo =
      app.add_subcommand("demo", "baseline, stage 1, and three stage-2 variants side by side");
  demo->add_option("config", d->file, "YAML config (configs/smollm2_demo.yaml)")->required();
  demo->add_option("overrides", d->overrides, "key.path=value overrides");
  demo->callback([&action, d] {
    action = [d] {
      recipes::TwoStageConfig cfg;
      config_load(cfg, d->file, d->overrides);
      return recipes::run_demo(cfg, config_dump(cfg));
    };
  });
}

}  // namespace safetune::cli
