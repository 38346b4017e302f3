// The comparison's Markdown and CSV tables.
#include <cmath>

#include "compare_internal.hpp"

namespace safetune::recipes {
using namespace compare_detail;

namespace {
std::string pct_pm(const MeanStd& m) {
  if (!std::isfinite(m.mean)) return "n/a";
  return fmt("%.1f", 100 * m.mean) + " ± " + fmt("%.1f", 100 * m.std);
}
}  // namespace

std::string compare_table_markdown(const std::vector<CompareRow>& rows) {
  std::string md =
      "| variant | regularizer | lambda | safety adapter | seeds | n harmful / benign | "
      "task metric (%) | refusal retention (%) | over-refusal (%) | discrimination (%) | "
      "stage-2 time (s) | Pareto |\n"
      "|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (const auto& r : rows) {
    md += "| " + row_name(r) + " | " + r.regularizer + " | " +
          (uses_lambda(r.regularizer) ? fmt("%g", r.lambda) : "-") + " | " + r.safety_mode + " | " +
          std::to_string(r.seeds) + " | " + std::to_string(r.harmful_n) + " / " +
          std::to_string(r.benign_n) + " | " + pct_pm(r.task_metric) + " | " +
          pct_pm(r.refusal_retention) + " | " + pct_pm(r.over_refusal) + " | " +
          pct_pm(r.discrimination) + " | " + fmt("%.0f", r.train_seconds.mean) + " ± " +
          fmt("%.0f", r.train_seconds.std) + " | " + (r.pareto ? "yes" : "") + " |\n";
  }
  md +=
      "\nMean ± sample standard deviation over seeds. Refusal retention = refusal rate on "
      "harmful probes after stage 2 / the aligned model's; over-refusal = 1 - benign compliance; "
      "task metric = exact match on stage2.task_eval; n = probes per kind in each cell's "
      "assessment. Pareto: not dominated in (task metric, refusal retention) among the rows on "
      "the same task data.\n";
  return md;
}

std::string compare_table_csv(const std::vector<CompareRow>& rows) {
  std::string csv =
      "variant,regularizer,lambda,safety_mode,seeds,"
      "task_metric_mean,task_metric_std,refusal_retention_mean,refusal_retention_std,"
      "over_refusal_mean,over_refusal_std,discrimination_mean,discrimination_std,"
      "train_seconds_mean,train_seconds_std,pareto,task_mix,harmful_n,benign_n\n";
  auto quote = [](const std::string& s) {
    if (s.find_first_of(",\"\n") == std::string::npos) return s;
    std::string q = "\"";
    for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
    return q + "\"";
  };
  auto num = [](double x) { return std::isfinite(x) ? fmt("%.6f", x) : std::string("nan"); };
  for (const auto& r : rows) {
    csv += quote(r.variant) + "," + r.regularizer + "," + fmt("%g", r.lambda) + "," +
           r.safety_mode + "," + std::to_string(r.seeds);
    for (const auto* m : {&r.task_metric, &r.refusal_retention, &r.over_refusal, &r.discrimination,
                          &r.train_seconds})
      csv += "," + num(m->mean) + "," + num(m->std);
    csv += std::string(",") + (r.pareto ? "1" : "0") + "," + quote(r.task_mix) + "," +
           std::to_string(r.harmful_n) + "," + std::to_string(r.benign_n) + "\n";
  }
  return csv;
}

std::string compare_paired_markdown(const std::vector<CellResult>& cells) {
  std::string md =
      "| cell | n harmful | refusal drop (pp) [95% CI] | McNemar p (mid-p) | n benign | "
      "benign-compliance drop (pp) "
      "[95% CI] | McNemar p (mid-p) |\n|---|---|---|---|---|---|---|\n";
  auto cols = [](const safety::PairedCounts& t) {
    if (t.n() == 0) return std::string("0 | n/a | n/a");
    const auto d = safety::paired_drop("", t);
    return std::to_string(t.n()) + " | " + fmt("%+.1f", d.drop_pp) + " [" +
           fmt("%+.1f", d.ci_pp.lo) + ", " + fmt("%+.1f", d.ci_pp.hi) + "] | " +
           fmt("%.3g", d.p_exact) + " (" + fmt("%.3g", d.p_mid) + ")";
  };
  for (const auto& c : cells)
    md += "| " + c.cell + " | " + cols(c.refusal_paired) + " | " + cols(c.benign_paired) + " |\n";
  md +=
      "\nDrop = aligned - this cell on the same probes (positive = worse); interval: Newcombe's "
      "paired method 10; "
      "McNemar's test on the discordant probes (exact, two-sided; mid-p in brackets).\n";
  return md;
}

std::string compare_pooled_markdown(
    const std::vector<CompareRow>& rows, const std::vector<CellResult>& cells,
    const safety::Assessment& aligned,
    const std::function<safety::Assessment(const std::string& cell)>& tuned) {
  std::string md =
      "| variant | seeds | n harmful | refusal: aligned -> after (%) | refusal drop (pp) [95% CI] "
      "| "
      "n benign | compliance: aligned -> after (%) | compliance drop (pp) [95% CI] |\n"
      "|---|---|---|---|---|---|---|---|\n";
  auto cols = [](const std::vector<safety::PooledDrop>& drops, const std::string& metric) {
    for (const auto& d : drops)
      if (d.metric == metric)
        return std::to_string(d.n) + " | " + fmt("%.1f", 100 * d.before) + " -> " +
               fmt("%.1f", 100 * d.after) + " | " + fmt("%+.1f", d.drop_pp) + " [" +
               fmt("%+.1f", d.ci_pp.lo) + ", " + fmt("%+.1f", d.ci_pp.hi) + "]";
    return std::string("0 | n/a | n/a");
  };
  for (const auto& r : rows) {
    std::vector<safety::Assessment> after;
    for (const auto& c : cells)
      if (in_row(r, c)) after.push_back(tuned(c.cell));
    const auto drops = safety::pooled_paired_drops(aligned, after);
    md += "| " + row_name(r) + " | " + std::to_string(after.size()) + " | " +
          cols(drops, "refusal") + " | " + cols(drops, "benign_compliance") + " |\n";
  }
  md +=
      "\nPer probe: the aligned model's outcome minus the mean of the seeds' outcomes (1 = refused "
      "a harmful probe, answered a benign one); drop = the mean over probes (positive = worse); "
      "interval: mean ± 1.96 sd / sqrt(n) over probes, so the seeds are repeated measures of each "
      "probe, not more probes. With one seed the drop equals the per-cell one below.\n";
  return md;
}

}  // namespace safetune::recipes
