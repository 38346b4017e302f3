// One monitoring pass over the current release, and the interval syntax of `monitor --interval`.
#include "safetune/safety/monitor.hpp"

#include <cctype>

#include "safetune/error.hpp"
#include "safetune/log.hpp"
#include "safety/prometheus.hpp"

namespace safetune::safety {

MonitorResult monitor_once(ReleaseRegistry& registry, const ProbeSuite& suite, ScoringModel& model,
                           const AssessOptions& options, const SafetyGates& gates,
                           const Assessment& baseline, const MonitorOptions& monitor) {
  const Release* cur = registry.current();
  if (!cur)
    throw SafetyError("no current release to monitor", registry.path().string(),
                      "promote a release first");
  MonitorResult r;
  r.release = cur->id;
  r.assessment = assess(suite, model, options);
  r.verdict = evaluate_gates(gates, r.assessment, &baseline);
  r.regression = !r.verdict.passed;
  std::string why;
  for (const auto& s : r.verdict.reasons) why += (why.empty() ? "" : "; ") + s;
  const std::map<std::string, double> metrics = {
      {"refusal_rate", r.assessment.refusal.overall.value()},
      {"benign_compliance", r.assessment.benign_compliance.overall.value()},
      {"discrimination_accuracy", r.assessment.discrimination.overall.value()}};
  registry.append_history(
      {"", r.regression ? "monitor_regression" : "monitor_ok", r.release, why, metrics});
  write_monitor_textfile(monitor, r.assessment, r.release, r.verdict.passed);
  if (r.regression) {
    log_warn("release " + r.release + " regressed: " + why);
    if (monitor.rollback_on_regression) {
      try {
        r.rolled_back_to = registry.rollback("monitoring: " + why);
        log_warn("rolled back to release " + r.rolled_back_to);
      } catch (const SafetyError& e) {
        registry.append_history({"", "rollback_failed", r.release, e.what_only(), {}});
        log_error("rollback failed: " + e.what_only());
      }
    }
  }
  return r;
}

void write_monitor_textfile(const MonitorOptions& monitor, const Assessment& assessment,
                            const std::string& release, bool gate_passed) {
  if (monitor.prometheus_file.empty()) return;
  write_prometheus_textfile(monitor.prometheus_file,
                            assessment_samples(assessment, release, gate_passed));
}

std::chrono::seconds parse_interval(const std::string& text) {
  std::size_t i = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
  const std::string digits = text.substr(0, i), unit = text.substr(i);
  if (digits.empty() || digits.size() > 9)
    throw UsageError("bad interval '" + text + "'", "--interval", "e.g. 90s, 15m, 1h, 1d");
  const long long n = std::stoll(digits);
  long long mult = 0;
  if (unit.empty() || unit == "s") mult = 1;
  else if (unit == "m") mult = 60;
  else if (unit == "h") mult = 3600;
  else if (unit == "d") mult = 86400;
  else throw UsageError("bad interval unit in '" + text + "'", "--interval", "use s, m, h or d");
  if (n <= 0) throw UsageError("interval must be positive", "--interval");
  return std::chrono::seconds(n * mult);
}

}  // namespace safetune::safety
