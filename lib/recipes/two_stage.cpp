// The two-stage recipe, written as named steps an integrator can read top to bottom and copy
// (the steps: two_stage_steps.hpp; the same recipe as a program: examples/two_stage_trainer.cpp).
#include "safetune/recipes/two_stage.hpp"

#include <csignal>

#include "safetune/error.hpp"
#include "safetune/recipes/two_stage_steps.hpp"

namespace safetune::recipes {

TwoStageResult run_two_stage(const TwoStageConfig& cfg, const std::string& resolved_yaml,
                             const RunOptions& ro) {
  TwoStageRun run(cfg, resolved_yaml, ro);
  TwoStageResult result;
  result.out_dir = run.out();

  // 0. Baseline: the model as it came, no adapters.
  result.baseline = ro.baseline ? ro.baseline : run.assess("baseline");

  // 1. Stage 1: the safety adapter (or the one stage2.safety_adapter names).
  if (cfg.stage1.enabled) {
    result.aligned = train_safety_adapter(run);
    if (note_interrupted(result, result.aligned, "stage 1", cfg.stage1.train, run.out() / "stage1"))
      return result;
    if (result.aligned.status != train::TrainStatus::completed) return result;
  } else if (!cfg.stage2.safety_adapter.empty()) {
    result.aligned = load_safety_adapter(run, ro.aligned);
  }

  // 2. Stage 2: the task adapter, safety adapter frozen and active (or merged, if configured),
  // under the regularizers and the in-training guard.
  if (cfg.stage2.enabled) {
    const auto t0 = std::chrono::steady_clock::now();
    result.safety_sha_before = add_task_adapter(run);
    TaskObjective objective(run);
    StageGuard guard(run);
    result.tuned = train_task_adapter(run, objective, guard);
    if (note_interrupted(result, result.tuned, "stage 2", cfg.stage2.train, run.out() / "stage2"))
      return result;
    if (result.tuned.status == train::TrainStatus::completed) objective.on_train_end();
    result.safety_sha_after = finish_task_adapter(run, result.safety_sha_before);
    result.tuned.seconds = seconds_since(t0);
    result.tuned.assessment = run.assess("tuned");
    result.tuned.task_metric = measure_task_metric(run);

    // 3. Gates and report: against the aligned model when there is one, else the baseline.
    result.verdict = gate_tuned(cfg, result);
    write_two_stage_report(run, result, objective, guard, resolved_yaml);
    if (run.session().adapters().has("safety") && cfg.stage2.safety_mode == "merged")
      run.session().adapters().unmerge({"safety"});

    // 4. The release: both adapters with the assessment it was promoted on; never promoted on a
    // breach.
    if (!cfg.safety.release.registry.empty() && result.tuned.assessment)
      result.release_id = register_release(run, result);
  }
  // No rank reports success before all have finished (a rank that failed after training shows
  // here).
  run.group()->barrier();
  return result;
}

void throw_if_interrupted(const TwoStageResult& r) {
  if (r.interrupted_signal == 0) return;
  throw Interrupted(
      r.interrupted_signal,
      "interrupted by " + std::string(r.interrupted_signal == SIGINT ? "SIGINT" : "SIGTERM") +
          " during " + r.interrupted_stage + " at step " + std::to_string(r.interrupted_step) +
          ": checkpoint saved; nothing was registered or promoted",
      r.out_dir.string(), "continue the run with --resume");
}

}  // namespace safetune::recipes
