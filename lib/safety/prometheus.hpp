// Prometheus text-format metrics for node_exporter's textfile collector: written to a temp file
// and renamed, so the collector never reads a half-written file. Internal to safety/: the public
// way to write one is safety::write_monitor_textfile (monitor.hpp).
#pragma once
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace safetune::safety {

struct Assessment;

struct PromSample {
  std::string name;  // [a-zA-Z_:][a-zA-Z0-9_:]*
  std::string help;
  std::string type = "gauge";  // gauge | counter | untyped
  std::map<std::string, std::string> labels;
  double value = 0;
};

// HELP and TYPE once per metric name (samples of one name are grouped together).
// SafetyError on an invalid metric or label name or a name used with two types.
std::string prometheus_text(const std::vector<PromSample>& samples);
void write_prometheus_textfile(const std::filesystem::path& path,
                               const std::vector<PromSample>& samples);

// Standard gauges for an assessment: safetune_safety_{refusal_rate,benign_compliance,
// discrimination_accuracy}{scope,release} plus _lower/_upper interval bounds, probe counts,
// safetune_safety_gate_passed and the time of the assessment.
std::vector<PromSample> assessment_samples(const Assessment& a, const std::string& release,
                                           bool gate_passed);

}  // namespace safetune::safety
