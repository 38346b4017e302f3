// The governance report in Markdown, JSON and self-contained HTML, with hand-written SVG charts.
#include "safetune/safety/report.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <set>

#include "safetune/error.hpp"
#include "safetune/io/atomic_file.hpp"
#include "safetune/safety/paired.hpp"
#include "safety/report_format.hpp"
#include "util/svg.hpp"

namespace safetune::safety {
namespace fs = std::filesystem;
namespace {

using json = nlohmann::json;
using report_format::num;

struct MetricView {
  const char* key;
  const char* title;
  Breakdown Assessment::*field;
};
const MetricView kMetrics[] = {
    {"refusal", "Refusal rate on harmful probes", &Assessment::refusal},
    {"benign_compliance", "Compliance on benign probes (over-refusal check)",
     &Assessment::benign_compliance},
    {"discrimination", "Discrimination accuracy", &Assessment::discrimination}};

// One row of a baseline-vs-after table.
struct Row {
  std::string scope;
  const Rate* base = nullptr;
  const Rate* after = nullptr;
};

std::vector<Row> rows_for(const Breakdown* b, const Breakdown* a) {
  std::vector<Row> rows;
  rows.push_back({"overall", b ? &b->overall : nullptr, a ? &a->overall : nullptr});
  for (auto part : {&Breakdown::by_category, &Breakdown::by_lang}) {
    std::set<std::string> keys;
    if (b)
      for (const auto& [k, v] : b->*part) keys.insert(k);
    if (a)
      for (const auto& [k, v] : a->*part) keys.insert(k);
    const std::string prefix = part == &Breakdown::by_category ? "" : "lang: ";
    for (const auto& k : keys) {
      Row r{prefix + k};
      if (b)
        if (auto it = (b->*part).find(k); it != (b->*part).end()) r.base = &it->second;
      if (a)
        if (auto it = (a->*part).find(k); it != (a->*part).end()) r.after = &it->second;
      rows.push_back(r);
    }
  }
  // Drop empty rows (a metric with no probes of that kind).
  rows.erase(std::remove_if(rows.begin(), rows.end(),
                            [](const Row& r) {
                              return (!r.base || r.base->n == 0) && (!r.after || r.after->n == 0);
                            }),
             rows.end());
  return rows;
}

std::string rate_cell(const Rate* r) {
  if (!r || r->n == 0) return "-";
  Interval ci = r->ci();
  return num(r->value() * 100) + "% (" + std::to_string(r->k) + "/" + std::to_string(r->n) +
         ", CI " + num(ci.lo * 100) + "-" + num(ci.hi * 100) + ")";
}

std::string drop_cell(const Row& r) {
  if (!r.base || !r.after || r.base->n == 0 || r.after->n == 0) return "-";
  double d = (r.base->value() - r.after->value()) * 100;
  return (d > 0 ? "+" : "") + num(d) + " pp";
}

std::string md_cell(std::string s) {
  std::string o;
  for (char c : s) {
    if (c == '|') o += "\\|";
    else if (c == '\n' || c == '\r') o += ' ';
    else o += c;
  }
  return o;
}

json rate_json(const Rate* r) {
  if (!r || r->n == 0) return nullptr;
  Interval ci = r->ci();
  return {{"k", r->k}, {"n", r->n}, {"rate", r->value()}, {"lower", ci.lo}, {"upper", ci.hi}};
}

bool comparable(const ReportInputs& in, std::string* why = nullptr) {
  if (!in.baseline || !in.after) return false;
  try {
    check_comparable(*in.baseline, *in.after);
    return true;
  } catch (const SafetyError& e) {
    if (why) *why = e.what_only();
    return false;
  }
}

std::string created(const ReportInputs& in) {
  return in.created.empty() ? utc_now_iso8601() : in.created;
}

struct Chart {
  std::string file, title, svg;
};

std::vector<Chart> charts(const ReportInputs& in) {
  std::vector<Chart> out;
  const Assessment* base = in.baseline ? &*in.baseline : nullptr;
  const Assessment* after = in.after ? &*in.after : nullptr;
  std::vector<std::string> names;
  if (base) names.push_back("baseline");
  if (after) names.push_back("after");
  for (const auto& m : kMetrics) {
    if (!base && !after) break;
    std::vector<BarGroup> groups;
    for (const Row& r :
         rows_for(base ? &(base->*m.field) : nullptr, after ? &(after->*m.field) : nullptr)) {
      BarGroup g;
      g.label = r.scope;
      auto push = [&](const Rate* x) {
        Rate z = x ? *x : Rate{};
        g.values.push_back(z.value());
        g.lo.push_back(z.ci().lo);
        g.hi.push_back(z.ci().hi);
        g.n.push_back(z.n);
      };
      if (base) push(r.base);
      if (after) push(r.after);
      groups.push_back(std::move(g));
    }
    if (groups.empty()) continue;
    out.push_back({std::string(m.key) + "_by_category.svg", m.title,
                   svg_grouped_bars(m.title, names, groups)});
  }
  if (!in.training_series.empty())
    out.push_back({"training_safety.svg", "Safety metrics over training steps",
                   svg_line_chart("Safety metrics over training steps", in.training_series, "step",
                                  "value")});
  return out;
}

}  // namespace

std::string html_escape(const std::string& s) { return svg::escape_entities(s); }

std::string default_risk_statement(const ReportInputs& in) {
  std::string s =
      "Fine-tuning an aligned model on task data can erode its safety behaviour - its refusals of "
      "harmful "
      "requests and its judgement of harmful content - even when the task data is benign (Qi et "
      "al. 2023, "
      "arXiv 2310.03693; distilled reasoning models are reported to lose up to 25 points of "
      "discrimination "
      "safety, arXiv 2503.16529). ";
  std::vector<std::string> done;
  int safety_adapters = 0;
  for (const auto& a : in.adapters)
    if (a.role == "safety") ++safety_adapters;
  if (safety_adapters)
    done.push_back(std::to_string(safety_adapters) +
                   " safety adapter(s) kept frozen and active during task training");
  if (!in.regularizers.empty()) {
    std::string r = "regularizers ";
    for (std::size_t i = 0; i < in.regularizers.size(); ++i)
      r += (i ? ", " : "") + in.regularizers[i].name + " (weight " +
           num(in.regularizers[i].weight, 3) + ")";
    done.push_back(r);
  }
  if (in.baseline)
    done.push_back("safety measured before tuning (baseline) and after, on the same probe suite");
  else if (in.after) done.push_back("safety measured after tuning (no baseline was available)");
  if (in.gates) done.push_back("promotion gated on the measured drops and floors");
  if (!in.guard_events.empty())
    done.push_back(std::to_string(in.guard_events.size()) + " in-training guard event(s) acted on");
  if (in.monitoring)
    done.push_back("post-deployment probing (" + in.monitoring->schedule + ") with rollback");
  if (done.empty()) s += "No mitigation was recorded for this run.";
  else {
    s += "What was done about it: ";
    for (std::size_t i = 0; i < done.size(); ++i) s += (i ? "; " : "") + done[i];
    s += ".";
  }
  if (in.verdict)
    s += in.verdict->passed ? " The gates passed."
                            : " The gates FAILED: this adapter set must not be promoted.";
  s += " Residual risk: probe suites sample behaviour and cannot prove its absence; phrase-based "
       "refusal "
       "scoring misses refusals worded differently and counts apologetic compliance as refusal.";
  return s;
}

std::string report_markdown(const ReportInputs& in) {
  std::string md = "# " + in.title + "\n\n";
  if (!in.run_name.empty()) md += "- Run: " + in.run_name + "\n";
  md += "- Created: " + created(in) + "\n";
  if (in.verdict)
    md += std::string("- **Gate verdict: ") + (in.verdict->passed ? "PASSED" : "FAILED") + "**\n";
  md += "\n## Model\n\n";
  md += "- Path: `" + in.model_path + "`\n- Weights SHA-256: `" + in.model_sha256 + "`\n";
  if (!in.model_identity.empty()) md += "- Identity: `" + md_cell(in.model_identity) + "`\n";
  md += "\n## Adapters\n\n";
  if (in.adapters.empty()) md += "None.\n";
  else {
    md += "| Name | Role | Path | SHA-256 |\n|---|---|---|---|\n";
    for (const auto& a : in.adapters)
      md += "| " + md_cell(a.name) + " | " + md_cell(a.role) + " | `" + md_cell(a.path) + "` | `" +
            a.sha256 + "` |\n";
  }
  md += "\n## Datasets\n\n";
  if (in.datasets.empty()) md += "None recorded.\n";
  else {
    md += "| Name | Path | Examples | SHA-256 |\n|---|---|---|---|\n";
    for (const auto& d : in.datasets)
      md += "| " + md_cell(d.name) + " | `" + md_cell(d.path) + "` | " + std::to_string(d.count) +
            " | `" + d.sha256 + "` |\n";
  }
  md += "\n## Regularizers\n\n";
  if (in.regularizers.empty()) md += "None.\n";
  else {
    md += "| Name | Weight | Detail |\n|---|---|---|\n";
    for (const auto& r : in.regularizers)
      md += "| " + md_cell(r.name) + " | " + num(r.weight, 4) + " | " + md_cell(r.detail) + " |\n";
  }
  md += "\n## Safety assessment\n\n";
  const Assessment* ref = in.after ? &*in.after : in.baseline ? &*in.baseline : nullptr;
  if (!ref) md += "No assessment was run.\n";
  else {
    md += "- Suite: " + md_cell(ref->suite_name) + " (sha256 `" + ref->suite_sha256 + "`)\n";
    md += "- Decoding and scoring: `" + md_cell(ref->decoding) + "`\n";
    std::string why;
    if (in.baseline && in.after && !comparable(in, &why))
      md += "- **Baseline not comparable:** " + md_cell(why) + "\n";
    md +=
        "\nRates with n and Wilson 95% intervals; drop = baseline - after in percentage points "
        "(positive is worse).\n";
    for (const auto& m : kMetrics) {
      auto rows = rows_for(in.baseline ? &((*in.baseline).*m.field) : nullptr,
                           in.after ? &((*in.after).*m.field) : nullptr);
      if (rows.empty()) continue;
      md += std::string("\n### ") + m.title +
            "\n\n| Scope | Baseline | After | Drop |\n|---|---|---|---|\n";
      for (const auto& r : rows)
        md += "| " + md_cell(r.scope) + " | " + rate_cell(r.base) + " | " + rate_cell(r.after) +
              " | " + drop_cell(r) + " |\n";
    }
    if (in.baseline && in.after && comparable(in, nullptr))
      if (auto paired = paired_drops_markdown(*in.baseline, *in.after); !paired.empty())
        md += "\n### Paired comparison (the same probes before and after)\n\n" + paired;
  }
  md += "\n## Gates\n\n";
  if (in.gates)
    md += "- max_refusal_drop_pp: " + num(in.gates->max_refusal_drop_pp, 2) +
          "\n- max_discrimination_drop_pp: " + num(in.gates->max_discrimination_drop_pp, 2) +
          "\n- min_benign_compliance: " + num(in.gates->min_benign_compliance, 3) +
          "\n- min_refusal_rate: " + num(in.gates->min_refusal_rate, 3) +
          "\n- require_baseline: " + (in.gates->require_baseline ? "true" : "false") + "\n";
  if (in.verdict) {
    md += std::string("\n**Verdict: ") + (in.verdict->passed ? "PASSED" : "FAILED — not promoted") +
          "**\n\n";
    for (const auto& r : in.verdict->reasons) md += "- breach: " + md_cell(r) + "\n";
    for (const auto& r : in.verdict->notes) md += "- " + md_cell(r) + "\n";
    for (const auto& r : in.verdict->not_applicable) md += "- not applicable: " + md_cell(r) + "\n";
  } else {
    md += "Gates were not evaluated.\n";
  }
  md += "\n## Guard events\n\n";
  if (in.guard_events.empty()) md += "None.\n";
  else {
    md += "| Step | Metric | Value | Threshold | Action | Detail |\n|---|---|---|---|---|---|\n";
    for (const auto& e : in.guard_events)
      md += "| " + std::to_string(e.step) + " | " + md_cell(e.metric) + " | " + num(e.value, 4) +
            " | " + num(e.threshold, 4) + " | " + md_cell(e.action) + " | " + md_cell(e.detail) +
            " |\n";
  }
  md += "\n## Inference-policy overrides\n\n";
  if (in.policy_overrides.empty()) md += "None.\n";
  for (const auto& o : in.policy_overrides) md += "- " + md_cell(o) + "\n";
  md += "\n## Risk statement\n\n" +
        (in.risk_statement.empty() ? default_risk_statement(in) : in.risk_statement) + "\n";
  md += "\n## Monitoring plan\n\n";
  if (!in.monitoring) md += "No monitoring plan recorded.\n";
  else {
    md += "- Probes: " + md_cell(in.monitoring->probes) +
          "\n- Schedule: " + md_cell(in.monitoring->schedule) + "\n";
    md += "- Rollback target: " +
          (in.monitoring->rollback_target.empty() ? std::string("none")
                                                  : md_cell(in.monitoring->rollback_target)) +
          "\n";
    for (const auto& t : in.monitoring->thresholds) md += "- Threshold: " + md_cell(t) + "\n";
  }
  auto cs = charts(in);
  if (!cs.empty()) {
    md += "\n## Charts\n\n";
    for (const auto& c : cs) md += "![" + c.title + "](charts/" + c.file + ")\n\n";
  }
  md += "\n## Resolved configuration\n\n```yaml\n" + in.resolved_config +
        (in.resolved_config.empty() || in.resolved_config.back() == '\n' ? "" : "\n") + "```\n";
  return md;
}

std::string report_json(const ReportInputs& in) {
  json j;
  j["format"] = "safetune-safety-report";
  j["version"] = 1;
  j["title"] = in.title;
  j["run_name"] = in.run_name;
  j["created"] = created(in);
  j["model"] = {
      {"path", in.model_path}, {"sha256", in.model_sha256}, {"identity", in.model_identity}};
  j["adapters"] = json::array();
  for (const auto& a : in.adapters)
    j["adapters"].push_back(
        {{"name", a.name}, {"role", a.role}, {"path", a.path}, {"sha256", a.sha256}});
  j["datasets"] = json::array();
  for (const auto& d : in.datasets)
    j["datasets"].push_back(
        {{"name", d.name}, {"path", d.path}, {"sha256", d.sha256}, {"count", d.count}});
  j["resolved_config"] = in.resolved_config;
  j["regularizers"] = json::array();
  for (const auto& r : in.regularizers)
    j["regularizers"].push_back({{"name", r.name}, {"weight", r.weight}, {"detail", r.detail}});
  auto summary = [](const std::optional<Assessment>& a) -> json {
    if (!a) return nullptr;
    return json::parse(assessment_to_json(*a, false));
  };
  j["baseline"] = summary(in.baseline);
  j["after"] = summary(in.after);
  std::string why;
  j["comparable"] = comparable(in, &why);
  if (!why.empty()) j["comparable_reason"] = why;
  j["per_metric"] = json::object();
  for (const auto& m : kMetrics) {
    json rows = json::array();
    for (const auto& r : rows_for(in.baseline ? &((*in.baseline).*m.field) : nullptr,
                                  in.after ? &((*in.after).*m.field) : nullptr)) {
      json x = {{"scope", r.scope}, {"baseline", rate_json(r.base)}, {"after", rate_json(r.after)}};
      x["drop_pp"] = (r.base && r.after && r.base->n && r.after->n)
                         ? json((r.base->value() - r.after->value()) * 100)
                         : json(nullptr);
      rows.push_back(std::move(x));
    }
    j["per_metric"][m.key] = std::move(rows);
  }
  j["paired"] = json::array();
  if (in.baseline && in.after && !in.baseline->results.empty() && !in.after->results.empty() &&
      comparable(in, nullptr))
    for (const auto& d : paired_drops(*in.baseline, *in.after))
      j["paired"].push_back({{"metric", d.metric},
                             {"n", d.counts.n()},
                             {"both", d.counts.both},
                             {"lost", d.counts.lost},
                             {"gained", d.counts.gained},
                             {"neither", d.counts.neither},
                             {"drop_pp", d.drop_pp},
                             {"ci_pp", {d.ci_pp.lo, d.ci_pp.hi}},
                             {"mcnemar_exact_p", d.p_exact},
                             {"mcnemar_mid_p", d.p_mid}});
  if (in.gates)
    j["gates"] = {{"max_refusal_drop_pp", in.gates->max_refusal_drop_pp},
                  {"max_discrimination_drop_pp", in.gates->max_discrimination_drop_pp},
                  {"min_benign_compliance", in.gates->min_benign_compliance},
                  {"min_refusal_rate", in.gates->min_refusal_rate},
                  {"require_baseline", in.gates->require_baseline}};
  else j["gates"] = nullptr;
  j["verdict"] = in.verdict ? json{{"passed", in.verdict->passed},
                                   {"reasons", in.verdict->reasons},
                                   {"notes", in.verdict->notes},
                                   {"not_applicable", in.verdict->not_applicable}}
                            : json(nullptr);
  j["guard_events"] = json::array();
  for (const auto& e : in.guard_events)
    j["guard_events"].push_back({{"step", e.step},
                                 {"metric", e.metric},
                                 {"value", e.value},
                                 {"threshold", e.threshold},
                                 {"action", e.action},
                                 {"detail", e.detail}});
  j["policy_overrides"] = in.policy_overrides;
  j["risk_statement"] = in.risk_statement.empty() ? default_risk_statement(in) : in.risk_statement;
  j["monitoring"] = in.monitoring ? json{{"probes", in.monitoring->probes},
                                         {"schedule", in.monitoring->schedule},
                                         {"thresholds", in.monitoring->thresholds},
                                         {"rollback_target", in.monitoring->rollback_target}}
                                  : json(nullptr);
  j["training_series"] = json::array();
  for (const auto& s : in.training_series) {
    json pts = json::array();
    for (const auto& p : s.points)
      pts.push_back({p.step, std::isfinite(p.value) ? json(p.value) : json(nullptr)});
    j["training_series"].push_back({{"name", s.name}, {"points", pts}});
  }
  j["charts"] = json::array();
  for (const auto& c : charts(in)) j["charts"].push_back("charts/" + c.file);
  return j.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
}

std::string report_html(const ReportInputs& in) {
  auto esc = html_escape;
  std::string h = "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>" +
                  esc(in.title) + "</title>\n";
  h += "<style>\nbody{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 "
       "1em;color:#222}\n"
       "table{border-collapse:collapse;margin:0.5em 0 1.2em}td,th{border:1px solid "
       "#ccc;padding:4px 8px;text-align:left;"
       "vertical-align:top}th{background:#f2f2f2}code,pre{background:#f6f6f6;font-size:90%}pre{"
       "padding:8px;overflow:auto}\n"
       ".pass{color:#1d7a3a;font-weight:bold}.fail{color:#b0202e;font-weight:bold}.worse{color:#"
       "b0202e}\n"
       "figure{margin:1em 0}svg{max-width:100%;height:auto}\n</style>\n</head>\n<body>\n";
  h += "<h1>" + esc(in.title) + "</h1>\n<ul>";
  if (!in.run_name.empty()) h += "<li>Run: " + esc(in.run_name) + "</li>";
  h += "<li>Created: " + esc(created(in)) + "</li>";
  if (in.verdict)
    h += std::string("<li>Gate verdict: <span id=\"verdict\" class=\"") +
         (in.verdict->passed ? "pass\">PASSED" : "fail\">FAILED") + "</span></li>";
  h += "</ul>\n<h2>Model</h2>\n<ul><li>Path: <code>" + esc(in.model_path) +
       "</code></li><li>Weights SHA-256: <code>" + esc(in.model_sha256) + "</code></li>";
  if (!in.model_identity.empty())
    h += "<li>Identity: <code>" + esc(in.model_identity) + "</code></li>";
  h += "</ul>\n<h2>Adapters</h2>\n";
  if (in.adapters.empty()) h += "<p>None.</p>\n";
  else {
    h += "<table><tr><th>Name</th><th>Role</th><th>Path</th><th>SHA-256</th></tr>\n";
    for (const auto& a : in.adapters)
      h += "<tr><td>" + esc(a.name) + "</td><td>" + esc(a.role) + "</td><td><code>" + esc(a.path) +
           "</code></td><td><code>" + esc(a.sha256) + "</code></td></tr>\n";
    h += "</table>\n";
  }
  h += "<h2>Datasets</h2>\n";
  if (in.datasets.empty()) h += "<p>None recorded.</p>\n";
  else {
    h += "<table><tr><th>Name</th><th>Path</th><th>Examples</th><th>SHA-256</th></tr>\n";
    for (const auto& d : in.datasets)
      h += "<tr><td>" + esc(d.name) + "</td><td><code>" + esc(d.path) + "</code></td><td>" +
           std::to_string(d.count) + "</td><td><code>" + esc(d.sha256) + "</code></td></tr>\n";
    h += "</table>\n";
  }
  h += "<h2>Regularizers</h2>\n";
  if (in.regularizers.empty()) h += "<p>None.</p>\n";
  else {
    h += "<table><tr><th>Name</th><th>Weight</th><th>Detail</th></tr>\n";
    for (const auto& r : in.regularizers)
      h += "<tr><td>" + esc(r.name) + "</td><td>" + num(r.weight, 4) + "</td><td>" + esc(r.detail) +
           "</td></tr>\n";
    h += "</table>\n";
  }
  h += "<h2>Safety assessment</h2>\n";
  const Assessment* ref = in.after ? &*in.after : in.baseline ? &*in.baseline : nullptr;
  if (!ref) h += "<p>No assessment was run.</p>\n";
  else {
    h += "<p>Suite: " + esc(ref->suite_name) + " (sha256 <code>" + esc(ref->suite_sha256) +
         "</code>)<br>Decoding and scoring: <code>" + esc(ref->decoding) + "</code></p>\n";
    std::string why;
    if (in.baseline && in.after && !comparable(in, &why))
      h += "<p class=\"fail\">Baseline not comparable: " + esc(why) + "</p>\n";
    h += "<p>Rates with n and Wilson 95% intervals; drop = baseline &minus; after in percentage "
         "points (positive is worse).</p>\n";
    for (const auto& m : kMetrics) {
      auto rows = rows_for(in.baseline ? &((*in.baseline).*m.field) : nullptr,
                           in.after ? &((*in.after).*m.field) : nullptr);
      if (rows.empty()) continue;
      h += std::string("<h3>") + esc(m.title) +
           "</h3>\n<table><tr><th>Scope</th><th>Baseline</th><th>After</th><th>Drop</th></tr>\n";
      for (const auto& r : rows) {
        const bool worse =
            r.base && r.after && r.base->n && r.after->n && r.base->value() > r.after->value();
        h += "<tr><td>" + esc(r.scope) + "</td><td>" + esc(rate_cell(r.base)) + "</td><td>" +
             esc(rate_cell(r.after)) + "</td><td" + (worse ? " class=\"worse\"" : "") + ">" +
             esc(drop_cell(r)) + "</td></tr>\n";
      }
      h += "</table>\n";
    }
  }
  h += "<h2>Gates</h2>\n";
  if (in.gates)
    h += "<ul><li>max_refusal_drop_pp: " + num(in.gates->max_refusal_drop_pp, 2) +
         "</li><li>max_discrimination_drop_pp: " + num(in.gates->max_discrimination_drop_pp, 2) +
         "</li><li>min_benign_compliance: " + num(in.gates->min_benign_compliance, 3) +
         "</li><li>min_refusal_rate: " + num(in.gates->min_refusal_rate, 3) +
         "</li><li>require_baseline: " + (in.gates->require_baseline ? "true" : "false") +
         "</li></ul>\n";
  if (in.verdict) {
    h += std::string("<p class=\"") +
         (in.verdict->passed ? "pass\">Verdict: PASSED"
                             : "fail\">Verdict: FAILED &mdash; not promoted") +
         "</p>\n<ul>";
    for (const auto& r : in.verdict->reasons) h += "<li class=\"fail\">breach: " + esc(r) + "</li>";
    for (const auto& r : in.verdict->notes) h += "<li>" + esc(r) + "</li>";
    for (const auto& r : in.verdict->not_applicable) h += "<li>not applicable: " + esc(r) + "</li>";
    h += "</ul>\n";
  } else {
    h += "<p>Gates were not evaluated.</p>\n";
  }
  h += "<h2>Guard events</h2>\n";
  if (in.guard_events.empty()) h += "<p>None.</p>\n";
  else {
    h += "<table><tr><th>Step</th><th>Metric</th><th>Value</th><th>Threshold</th><th>Action</"
         "th><th>Detail</th></tr>\n";
    for (const auto& e : in.guard_events)
      h += "<tr><td>" + std::to_string(e.step) + "</td><td>" + esc(e.metric) + "</td><td>" +
           num(e.value, 4) + "</td><td>" + num(e.threshold, 4) + "</td><td>" + esc(e.action) +
           "</td><td>" + esc(e.detail) + "</td></tr>\n";
    h += "</table>\n";
  }
  h += "<h2>Inference-policy overrides</h2>\n";
  if (in.policy_overrides.empty()) h += "<p>None.</p>\n";
  else {
    h += "<ul>";
    for (const auto& o : in.policy_overrides) h += "<li>" + esc(o) + "</li>";
    h += "</ul>\n";
  }
  h += "<h2>Risk statement</h2>\n<p>" +
       esc(in.risk_statement.empty() ? default_risk_statement(in) : in.risk_statement) + "</p>\n";
  h += "<h2>Monitoring plan</h2>\n";
  if (!in.monitoring) h += "<p>No monitoring plan recorded.</p>\n";
  else {
    h += "<ul><li>Probes: " + esc(in.monitoring->probes) +
         "</li><li>Schedule: " + esc(in.monitoring->schedule) + "</li><li>Rollback target: " +
         esc(in.monitoring->rollback_target.empty() ? "none" : in.monitoring->rollback_target) +
         "</li>";
    for (const auto& t : in.monitoring->thresholds) h += "<li>Threshold: " + esc(t) + "</li>";
    h += "</ul>\n";
  }
  auto cs = charts(in);
  if (!cs.empty()) {
    h += "<h2>Charts</h2>\n";
    for (const auto& c : cs)
      h += "<figure class=\"chart\">\n" + c.svg + "<figcaption>" + esc(c.title) +
           "</figcaption></figure>\n";
  }
  h += "<h2>Resolved configuration</h2>\n<pre>" + esc(in.resolved_config) +
       "</pre>\n</body>\n</html>\n";
  return h;
}

std::vector<fs::path> write_safety_report(const fs::path& dir, const ReportInputs& in_) {
  ReportInputs in = in_;
  if (in.created.empty()) in.created = utc_now_iso8601();  // one timestamp across the three files
  std::vector<fs::path> written;
  for (const auto& c : charts(in)) {
    io::atomic_write(dir / "charts" / c.file, c.svg);
    written.push_back(dir / "charts" / c.file);
  }
  io::atomic_write(dir / "safety_report.json", report_json(in));
  written.push_back(dir / "safety_report.json");
  io::atomic_write(dir / "safety_report.md", report_markdown(in));
  written.push_back(dir / "safety_report.md");
  io::atomic_write(dir / "safety_report.html", report_html(in));
  written.push_back(dir / "safety_report.html");
  return written;
}

}  // namespace safetune::safety
