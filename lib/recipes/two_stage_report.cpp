// The end of a two-stage run: the gates on the tuned model, the report, the release.
#include <ctime>

#include "safetune/io/hash.hpp"
#include "safetune/log.hpp"
#include "safetune/recipes/assess.hpp"
#include "safetune/recipes/two_stage_steps.hpp"
#include "safetune/safety/registry.hpp"

namespace safetune::recipes {
namespace fs = std::filesystem;

namespace {
const std::optional<safety::Assessment>& reference_of(const TwoStageResult& r) {
  return r.aligned.assessment ? r.aligned.assessment : r.baseline;
}

// The safety adapter comes from stage 1 of this run or from stage2.safety_adapter.
fs::path safety_dir(const TwoStageRun& run) {
  return run.config().stage1.enabled ? run.out() / "adapters" / "safety"
                                     : fs::path(run.config().stage2.safety_adapter);
}
}  // namespace

safety::GateVerdict gate_tuned(const TwoStageConfig& cfg, const TwoStageResult& r) {
  const auto& reference = reference_of(r);
  if (!r.tuned.assessment) return {};
  return safety::evaluate_gates(cfg.safety.gates, *r.tuned.assessment,
                                reference ? &*reference : nullptr);
}

void write_two_stage_report(TwoStageRun& run, const TwoStageResult& r,
                            const TaskObjective& objective, const StageGuard& guard,
                            const std::string& resolved_yaml) {
  const auto& cfg = run.config();
  auto& adapters = run.session().adapters();
  auto in = report_inputs(run.session(), "Safety report: " + cfg.run.name, reference_of(r),
                          r.tuned.assessment, cfg.safety.gates, r.verdict);
  in.run_name = cfg.run.name;
  if (adapters.has("safety"))
    in.adapters.push_back(
        {"safety", "safety", safety_dir(run).string(), adapters.content_sha256("safety")});
  in.adapters.push_back({"task", "task", (run.out() / "adapters" / "task").string(),
                         adapters.content_sha256("task")});
  in.datasets = objective.datasets();
  in.resolved_config = resolved_yaml;
  for (const auto& reg : cfg.stage2.regularizers.items)
    in.regularizers.push_back({reg.name, reg.lambda, {}});
  in.guard_events = guard.events();
  in.training_series = guard.series();
  if (run.main_rank()) safety::write_safety_report(run.out() / "report", in);
}

std::string register_release(TwoStageRun& run, const TwoStageResult& r) {
  if (!run.main_rank()) return {};
  const auto& rel = run.config().safety.release;
  auto reg = safety::ReleaseRegistry::open(rel.registry);
  std::string id = rel.id;
  if (id.empty()) {
    char stamp[32];
    std::time_t now = std::time(nullptr);
    std::strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", std::gmtime(&now));
    id = run.config().run.name + "-" + stamp;
  }
  std::vector<fs::path> dirs;
  if (run.session().adapters().has("safety")) dirs.push_back(safety_dir(run));
  dirs.push_back(run.out() / "adapters" / "task");
  reg.add(id, dirs, *r.tuned.assessment, r.verdict, run.out() / "assessments" / "tuned.json");
  if (r.verdict.passed && rel.promote) reg.promote(id);
  log_info("release " + id +
           (r.verdict.passed ? (rel.promote ? " registered and promoted" : " registered")
                             : " registered as failed (gates breached; not promoted)"));
  return id;
}

}  // namespace safetune::recipes
