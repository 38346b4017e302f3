// The two-stage recipe as a program you copy and change: the same steps `safetune train` runs,
// in order, each one a library call you can replace (your own data, regularizer, breach policy).
//   two_stage_trainer configs/tiny_two_stage.yaml [key.path=value ...]
// Outputs land in run.output_dir exactly as `safetune train` writes them (same seed, same numbers).
#include <safetune/safetune.hpp>

#include <cstdio>

using namespace safetune;

namespace {

// Ctrl-C / SIGTERM: the stage's checkpoint is saved and nothing was released; exit like a shell.
int interrupted(const recipes::TwoStageResult& r) {
  std::fprintf(stderr, "interrupted during %s at step %lld: checkpoint saved, nothing released\n",
               r.interrupted_stage.c_str(), static_cast<long long>(r.interrupted_step));
  return 128 + r.interrupted_signal;
}

int run_recipe(recipes::TwoStageConfig& cfg) {
  // Validates every input, locks run.output_dir, seeds torch and loads the model.
  const std::string yaml = config_dump(cfg);
  recipes::TwoStageRun run(cfg, yaml);
  recipes::TwoStageResult r;
  r.out_dir = run.out();

  // 0. Measure the model as it came: the refusal rate fine-tuning must not erode.
  r.baseline = run.assess("baseline");

  // 1. The safety adapter: trained here, or one you already trust (stage2.safety_adapter).
  if (cfg.stage1.enabled) {
    r.aligned = recipes::train_safety_adapter(run);
    if (recipes::note_interrupted(r, r.aligned, "stage 1", cfg.stage1.train, run.out() / "stage1"))
      return interrupted(r);
    if (r.aligned.status != train::TrainStatus::completed)
      return 0;  // stopped early: nothing to tune on
  } else if (!cfg.stage2.safety_adapter.empty()) {
    r.aligned = recipes::load_safety_adapter(run, std::nullopt);
  }
  if (!cfg.stage2.enabled) return 0;

  // 2. The task adapter beside the frozen safety adapter. The objective is where a new loss term
  // goes (or register a regularizer: examples/custom_regularizer.cpp); the guard decides what a
  // breach during training does (stop, roll back, boost).
  const auto started = std::chrono::steady_clock::now();
  r.safety_sha_before = recipes::add_task_adapter(run);
  recipes::TaskObjective objective(run);
  recipes::StageGuard guard(run);
  r.tuned = recipes::train_task_adapter(run, objective, guard);
  if (recipes::note_interrupted(r, r.tuned, "stage 2", cfg.stage2.train, run.out() / "stage2"))
    return interrupted(r);
  r.safety_sha_after =
      recipes::finish_task_adapter(run, r.safety_sha_before);  // throws if safety moved
  r.tuned.seconds = recipes::seconds_since(started);

  // 3. Measure again, gate against the aligned model, write the report.
  r.tuned.assessment = run.assess("tuned");
  r.tuned.task_metric = recipes::measure_task_metric(run);
  r.verdict = recipes::gate_tuned(cfg, r);
  recipes::write_two_stage_report(run, r, objective, guard, yaml);
  if (cfg.stage2.safety_mode == "merged" && run.session().adapters().has("safety"))
    run.session().adapters().unmerge({"safety"});

  // 4. Register the release (promoted only when the gates passed).
  if (!cfg.safety.release.registry.empty() && r.tuned.assessment)
    r.release_id = recipes::register_release(run, r);
  run.group()->barrier();  // data-parallel (torchrun): no rank reports before all have finished

  if (r.tuned.assessment) {
    const auto& refusal = r.tuned.assessment->refusal.overall;
    std::printf("refusal on harmful probes after stage 2: %.1f%% (n=%lld)\n", 100 * refusal.value(),
                static_cast<long long>(refusal.n));
  }
  if (r.tuned.task_metric >= 0)
    std::printf("task exact match: %.1f%%\n", 100 * r.tuned.task_metric);
  std::printf("gates: %s; outputs in %s\n", r.verdict.passed ? "passed" : "BREACHED",
              r.out_dir.c_str());
  return r.verdict.passed ? 0 : 3;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s CONFIG [key.path=value ...]\n", argv[0]);
    return 2;
  }
  try {
    log_setup(LogLevel::info);
    recipes::TwoStageConfig cfg;
    config_load(cfg, argv[1], std::vector<std::string>(argv + 2, argv + argc));
    return run_recipe(cfg);
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
