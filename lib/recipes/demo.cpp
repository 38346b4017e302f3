// The demonstration: one stage 1, then three stage-2 variants on the same data, side by side.
#include <cmath>
#include <cstdio>

#include "safetune/io/atomic_file.hpp"
#include "safetune/log.hpp"
#include "safetune/recipes/two_stage_steps.hpp"

namespace safetune::recipes {
namespace fs = std::filesystem;

namespace {

// One stage-2 variant of the comparison.
struct Variant {
  std::string key, label, mode;
  bool regularized;
};
const std::vector<Variant> kVariants{
    {"a_merged", "(a) reactive: safety merged, no regularizer", "merged", false},
    {"b_separate", "(b) safety adapter separate, no regularizer", "separate", false},
    {"c_safetune", "(c) safetune: separate + regularizer", "separate", true}};

// The side-by-side table: base and aligned models, then each variant with its drops from the
// aligned model, and the gate verdict for (c).
std::string demo_table(const TwoStageResult& first, const std::vector<Variant>& variants,
                       const std::vector<TwoStageResult>& results) {
  auto pct = [](const safety::Rate& r) {
    auto ci = r.ci();
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.1f%% [%.1f, %.1f]", 100 * r.value(), 100 * ci.lo,
                  100 * ci.hi);
    return std::string(buf);
  };
  auto drop = [](const safety::Rate& before, const safety::Rate& after) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%+.1f", 100 * (before.value() - after.value()));
    return std::string(buf);
  };
  std::string md =
      "| model | refusal on harmful | drop (pp) | benign compliance | drop (pp) | discrimination | "
      "drop (pp) | task exact match | stage-2 time (s) |\n";
  md += "|---|---|---|---|---|---|---|---|---|\n";
  auto row = [&](const std::string& label, const safety::Assessment& a,
                 const safety::Assessment* ref, double task, double secs) {
    md += "| " + label + " | " + pct(a.refusal.overall) + " | " +
          (ref ? drop(ref->refusal.overall, a.refusal.overall) : "") + " | " +
          pct(a.benign_compliance.overall) + " | " +
          (ref ? drop(ref->benign_compliance.overall, a.benign_compliance.overall) : "") + " | " +
          pct(a.discrimination.overall) + " | " +
          (ref ? drop(ref->discrimination.overall, a.discrimination.overall) : "") + " | " +
          (task >= 0 ? std::to_string(static_cast<int>(std::lround(100 * task))) + "%" : "") +
          " | " + (secs > 0 ? std::to_string(static_cast<int>(std::lround(secs))) : "") + " |\n";
  };
  const safety::Assessment* aligned =
      first.aligned.assessment ? &*first.aligned.assessment : nullptr;
  if (first.baseline) row("base model (no adapters)", *first.baseline, nullptr, -1, 0);
  if (aligned) row("aligned (stage 1 safety adapter)", *aligned, nullptr, -1, 0);
  for (std::size_t i = 0; i < variants.size(); ++i)
    if (results[i].tuned.assessment)
      row(variants[i].label, *results[i].tuned.assessment, aligned, results[i].tuned.task_metric,
          results[i].tuned.seconds);
  md +=
      "\nDrops are in percentage points against the aligned model (positive = worse); intervals "
      "are Wilson 95%.\n";
  md +=
      "Gates for (c): " + std::string(results.back().verdict.passed ? "passed" : "BREACHED") + "\n";
  for (const auto& r : results.back().verdict.reasons) md += "- " + r + "\n";
  for (const auto& r : results.back().verdict.not_applicable) md += "- not applicable: " + r + "\n";
  return md;
}

}  // namespace

int run_demo(const TwoStageConfig& base_cfg, const std::string& resolved_yaml) {
  // The demo owns its directory: a re-run replaces the previous demo's outputs (never a folder
  // safetune did not write, nor one holding a release), and no two demos share it.
  validate_run_inputs(base_cfg);
  const RunDir demo_dir =
      open_run_dir(base_cfg.run.output_dir, {false, true, base_cfg.safety.release.registry});
  const fs::path out = demo_dir.path;
  // Stage 1 once, with the baseline and aligned assessments.
  TwoStageConfig s1 = base_cfg;
  s1.stage2.enabled = false;
  s1.run.output_dir = (out / "stage1").string();
  auto first = run_two_stage(s1, resolved_yaml);
  throw_if_interrupted(first);

  std::vector<TwoStageResult> results;
  for (const auto& v : kVariants) {
    TwoStageConfig c = base_cfg;
    c.stage1.enabled = false;
    c.stage2.safety_adapter = (out / "stage1" / "adapters" / "safety").string();
    c.stage2.safety_mode = v.mode;
    if (!v.regularized) c.stage2.regularizers.items.clear();
    c.run.output_dir = (out / v.key).string();
    c.safety.guard.every_n_steps = 0;  // the comparison measures the regularizers alone
    RunOptions ro;
    ro.baseline = first.baseline;
    ro.aligned = first.aligned.assessment;
    log_info("demo variant " + v.label);
    results.push_back(run_two_stage(c, resolved_yaml, ro));
    throw_if_interrupted(results.back());
  }

  const std::string md = demo_table(first, kVariants, results);
  io::atomic_write(out / "demo_table.md", md);
  std::printf("\n%s\nwritten to %s\n", md.c_str(), (out / "demo_table.md").c_str());
  // The demo's product is the table; a breach is reported in it (and by `safetune train`'s exit
  // code).
  return 0;
}

}  // namespace safetune::recipes
