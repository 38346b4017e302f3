// Post-deployment monitoring: probe the current release, gate it against its release-time
// assessment, record the result in the registry history and a Prometheus textfile, and roll back
// on regression.
#pragma once
#include <chrono>
#include <filesystem>
#include <string>

#include "safetune/safety/assessment.hpp"
#include "safetune/safety/gates.hpp"
#include "safetune/safety/registry.hpp"

namespace safetune::safety {

struct MonitorOptions {
  std::filesystem::path prometheus_file;  // empty: no textfile
  bool rollback_on_regression = true;
};

struct MonitorResult {
  std::string release;
  Assessment assessment;
  GateVerdict verdict;
  bool regression = false;
  std::string rolled_back_to;  // empty unless a rollback happened
};

// `model` must already run the current release's adapters; `baseline` is that release's
// assessment from release time (same suite and options). SafetyError when there is no current
// release. A regression that cannot be rolled back (no earlier passing release) is still reported
// as a regression, with the reason in the history.
MonitorResult monitor_once(ReleaseRegistry& registry, const ProbeSuite& suite, ScoringModel& model,
                           const AssessOptions& options, const SafetyGates& gates,
                           const Assessment& baseline, const MonitorOptions& monitor);

// Writes the monitoring gauges of `assessment` for `release` (prometheus text format, atomically)
// to monitor.prometheus_file; nothing when that is empty.
void write_monitor_textfile(const MonitorOptions& monitor, const Assessment& assessment,
                            const std::string& release, bool gate_passed);

// "90s", "15m", "1h", "2d" (a bare number is seconds). UsageError otherwise.
std::chrono::seconds parse_interval(const std::string& text);

}  // namespace safetune::safety
