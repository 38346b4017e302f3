// Post-deployment monitoring of the current release: re-probe, gate against the release-time
// assessment, record, export and roll back on regression.
#include "safetune/safety/monitor.hpp"
#include "safetune/error.hpp"
#include "safetune/log.hpp"
#include "safetune/recipes/assess.hpp"
#include "safetune/recipes/two_stage_steps.hpp"
#include "safetune/safety/benchmarks.hpp"
#include "safetune/safety/registry.hpp"

namespace safetune::recipes {
namespace fs = std::filesystem;

namespace {
// The release's files differ from what was registered: recorded as a regression (and rolled back
// when configured) without probing anything.
safety::MonitorResult changed_artifacts(safety::ReleaseRegistry& reg, const std::string& id,
                                        const std::vector<std::string>& problems,
                                        const safety::MonitorOptions& mo) {
  safety::MonitorResult r;
  r.release = id;
  r.regression = true;
  r.verdict.passed = false;
  r.verdict.reasons = problems;
  std::string why = "artifacts changed: " + problems.front();
  reg.append_history({"", "monitor_regression", id, why, {}});
  log_warn("release " + id + " regressed: " + why);
  // The textfile tells the truth on this outcome too: the gate failed (nothing was probed).
  if (!mo.prometheus_file.empty()) {
    safety::Assessment none;
    none.created = safety::utc_now_iso8601();
    safety::write_monitor_textfile(mo, none, id, /*gate_passed=*/false);
  }
  if (mo.rollback_on_regression) {
    try {
      r.rolled_back_to = reg.rollback("monitoring: " + why);
    } catch (const SafetyError& e) {
      reg.append_history({"", "rollback_failed", id, e.what_only(), {}});
      log_error("rollback failed: " + e.what_only());
    }
  }
  return r;
}
}  // namespace

safety::MonitorResult monitor_release(const TwoStageConfig& cfg) {
  const auto& rel = cfg.safety.release;
  if (rel.registry.empty())
    throw ConfigError("no release registry to monitor", "safety.release.registry",
                      "set it to the registry `safetune train` wrote");
  auto reg = safety::ReleaseRegistry::open(rel.registry);
  const safety::Release* cur = reg.current();
  if (!cur)
    throw SafetyError("no current release to monitor", rel.registry, "promote a release first");
  const std::string id = cur->id;
  if (cur->assessment.empty())
    throw SafetyError(
        "release '" + id + "' has no stored assessment to compare against", rel.registry,
        "register releases through `safetune train` with safety.release.registry set");
  safety::MonitorOptions mo;
  mo.prometheus_file = rel.prometheus_file;
  mo.rollback_on_regression = rel.rollback_on_regression;

  // Artifacts that changed since registration are a regression in themselves: nothing to probe.
  if (auto problems = reg.verify(id); !problems.empty())
    return changed_artifacts(reg, id, problems, mo);

  Session session(cfg.model.path, session_options(cfg.model));
  std::vector<fs::path> dirs;
  for (const auto& a : cur->adapters) dirs.push_back(reg.resolve(a.path));
  session.load_adapters(dirs);
  SessionScorer scorer(session);
  const auto baseline = safety::load_assessment(reg.resolve(cur->assessment));
  const auto suite =
      safety::first_per_kind(safety::load_suite_spec(cfg.safety.suite), cfg.safety.limit);
  log_info("monitoring release " + id + " (" + std::to_string(suite.probes.size()) + " probes)");
  const auto options = assess_options(session, cfg.safety.max_new_tokens, cfg.safety.batch_size,
                                      cfg.model.dtype, cfg.safety.judge);
  return safety::monitor_once(reg, suite, scorer, options, cfg.safety.gates, baseline, mo);
}

}  // namespace safetune::recipes
