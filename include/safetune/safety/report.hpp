// The governance report: what was tuned, on what, how safety moved, what the gates said, what was
// done about the risk and how the release will be watched. Markdown, JSON and self-contained HTML.
#pragma once
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "safetune/safety/assessment.hpp"
#include "safetune/safety/gates.hpp"
#include "safetune/safety/guard.hpp"

namespace safetune::safety {

struct ReportAdapter {
  std::string name, role, path, sha256;
};
struct ReportDataset {
  std::string name, path, sha256;
  std::int64_t count = 0;
};
struct ReportRegularizer {
  std::string name;
  double weight = 0;
  std::string detail;
};
struct SeriesPoint {
  double step = 0, value = 0;
};
struct Series {
  std::string name;
  std::vector<SeriesPoint> points;
};
struct MonitoringPlan {
  std::string probes;    // suite name / subset
  std::string schedule;  // e.g. "every 1h"
  std::vector<std::string> thresholds;
  std::string rollback_target;  // release id
};

struct ReportInputs {
  std::string title = "Safety report";
  std::string run_name;
  std::string model_path, model_sha256, model_identity;
  std::vector<ReportAdapter> adapters;
  std::vector<ReportDataset> datasets;
  std::string resolved_config;  // YAML text
  std::vector<ReportRegularizer> regularizers;
  std::optional<Assessment> baseline;
  std::optional<Assessment> after;
  std::optional<SafetyGates> gates;
  std::optional<GateVerdict> verdict;
  std::vector<GuardEvent> guard_events;
  std::vector<std::string> policy_overrides;
  std::vector<Series> training_series;  // safety metrics over steps
  std::optional<MonitoringPlan> monitoring;
  std::string risk_statement;  // empty: a standard statement built from the inputs
  std::string created;         // empty: now
};

// Writes <dir>/safety_report.{md,json,html} and <dir>/charts/*.svg atomically; returns the paths.
std::vector<std::filesystem::path> write_safety_report(const std::filesystem::path& dir,
                                                       const ReportInputs& in);
std::string report_markdown(const ReportInputs& in);
std::string report_json(const ReportInputs& in);
std::string report_html(const ReportInputs& in);
std::string default_risk_statement(const ReportInputs& in);

// ---- charts (hand-written SVG, no scripts) ------------------------------------------------------
struct BarGroup {
  std::string label;  // e.g. a category
  // One bar per series (e.g. baseline, after); value and interval in [0, 1]; n == 0 -> no bar.
  std::vector<double> values, lo, hi;
  std::vector<std::int64_t> n;
};
std::string svg_grouped_bars(const std::string& title, const std::vector<std::string>& series_names,
                             const std::vector<BarGroup>& groups);
std::string svg_line_chart(const std::string& title, const std::vector<Series>& series,
                           const std::string& x_label, const std::string& y_label);

std::string html_escape(const std::string& s);

}  // namespace safetune::safety
