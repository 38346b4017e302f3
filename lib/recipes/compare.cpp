// The regularizer comparison recipe: stage 1 once, the stage-2 matrix cell by cell (resumable),
// then the table and the Pareto plot. Each cell is an ordinary run_two_stage run.
#include "safetune/recipes/compare.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "compare_internal.hpp"
#include "safetune/error.hpp"
#include "safetune/io/atomic_file.hpp"
#include "safetune/io/hash.hpp"
#include "safetune/log.hpp"
#include "safetune/safety/assessment.hpp"
#include "safetune/safety/paired.hpp"

namespace safetune::recipes {
namespace fs = std::filesystem;
using nlohmann::json;

using namespace compare_detail;

namespace {

std::optional<std::string> check_integer(const std::string& s) {
  std::int64_t x = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), x);
  if (ec != std::errc() || p != s.data() + s.size() || x < 0)
    return "expected a non-negative integer, got '" + s + "'";
  return std::nullopt;
}

std::optional<std::string> check_number(const std::string& s) {
  double x = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), x);
  if (ec != std::errc() || p != s.data() + s.size() || !std::isfinite(x) || x < 0)
    return "expected a non-negative number, got '" + s + "'";
  return std::nullopt;
}

double to_number(const std::string& s) {
  double x = 0;
  std::from_chars(s.data(), s.data() + s.size(), x);
  return x;
}

// A directory-safe cell name.
std::string slug(const std::string& s) {
  std::string out;
  for (char c : s)
    out += (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.') ? c : '_';
  return out;
}

// The config text a result is keyed by: the resolved config without where it lives (output
// directory, the safety adapter's path; `extra` keys the adapter by its stage 1 or its content).
std::string config_hash(const TwoStageConfig& cfg, const std::string& extra) {
  TwoStageConfig c = cfg;
  c.run.output_dir = "";
  c.stage2.safety_adapter = "";
  return io::sha256_hex(config_dump(c) + "\n" + extra);
}

std::string variant_label(const CompareVariant& v) { return v.label.empty() ? v.name : v.label; }

}  // namespace

void CompareVariant::describe(ConfigVisitor& v) {
  v.field("label", label,
          Field("Name of the variant in the table; default: the regularizer's name."));
  v.field("safety_mode", safety_mode,
          Field("separate: safety adapter frozen and active; merged: folded into the weights "
                "(the reactive baseline).")
              .one_of({"separate", "merged"}));
  RegularizerSection::describe(v);
}

void CompareTaskMix::describe(ConfigVisitor& v) {
  v.field("label", label,
          Field("Name of the task data in the table and in cell names.").required());
  v.list("datasets", datasets,
         Field("Stage-2 training datasets of this column (stage2.data.datasets keys; weights are "
               "mixing ratios)."));
}

void CompareSection::describe(ConfigVisitor& v) {
  v.list(
      "variants", variants,
      Field("Stage-2 variants: a stage2.regularizers entry each (name: none for no regularizer)."));
  v.list("task_mixes", task_mixes,
         Field("The harmful-fine-tuning grid: stage-2 task data per column, each replacing "
               "stage2.data.datasets (e.g. benign; benign + identity-shifting; benign + 5% / 30% "
               "AdvBench goal/target pairs); every variant x seed runs on each. Empty: "
               "stage2.data.datasets."));
  v.field("seeds", seeds,
          Field("Seeds; each cell sets run.seed and stage2.data.seed.")
              .check(check_integer, "integers >= 0"));
  v.field("lambdas", lambdas,
          Field("Lambda grid applied to every variant whose regularizer uses lambda; empty: each "
                "variant's own.")
              .check(check_number, "numbers >= 0"));
  v.field("output_dir", output_dir,
          Field("Directory of the comparison; empty: run.output_dir.").path());
}

void CompareConfig::describe(ConfigVisitor& v) {
  TwoStageConfig::describe(v);
  v.section("compare", compare, Field("The stage-2 comparison matrix (safetune compare)."));
}

std::string compare_reference_markdown() {
  struct CompareOnly : ConfigSection {
    CompareSection compare;
    void describe(ConfigVisitor& v) override {
      v.section("compare", compare, Field("The stage-2 comparison matrix (safetune compare)."));
    }
  } proto;
  return config_reference_markdown(proto,
                                   "Comparison configuration reference (`compare` section)") +
         "\nEvery other section (run, model, stage1, stage2, safety) is the two-stage trainer's: "
         "see "
         "docs/config.md. Each cell replaces stage2.regularizers with its variant's regularizer "
         "(and, with "
         "compare.task_mixes, stage2.data.datasets with its column's datasets).\n";
}

// ---- the recipe -------------------------------------------------------------------------------

namespace {

struct Cell {
  std::string name;
  const CompareTaskMix* mix;  // nullptr: stage2.data.datasets
  CompareVariant variant;
  double lambda;
  bool swept;
  std::int64_t seed;
};

std::vector<Cell> plan_cells(const CompareConfig& cfg) {
  const auto& c = cfg.compare;
  if (c.variants.items.empty())
    throw ConfigError("the comparison needs at least one variant", "compare.variants",
                      "add e.g. {name: none}");
  if (c.seeds.empty()) throw ConfigError("the comparison needs at least one seed", "compare.seeds");
  std::set<std::string> labels;
  for (std::size_t i = 0; i < c.variants.items.size(); ++i)
    if (!labels.insert(variant_label(c.variants.items[i])).second)
      throw ConfigError("duplicate variant label '" + variant_label(c.variants.items[i]) + "'",
                        "compare.variants." + std::to_string(i) + ".label",
                        "give each variant its own label");
  std::set<std::string> seeds(c.seeds.begin(), c.seeds.end());
  if (seeds.size() != c.seeds.size()) throw ConfigError("duplicate seeds", "compare.seeds");
  std::set<std::string> mix_labels;
  std::vector<const CompareTaskMix*> mixes;
  for (std::size_t i = 0; i < c.task_mixes.items.size(); ++i) {
    const auto& m = c.task_mixes.items[i];
    const std::string at = "compare.task_mixes." + std::to_string(i);
    if (!mix_labels.insert(m.label).second)
      throw ConfigError("duplicate task mix label '" + m.label + "'", at + ".label");
    if (m.datasets.items.empty())
      throw ConfigError("a task mix needs at least one dataset", at + ".datasets");
    mixes.push_back(&m);
  }
  if (mixes.empty()) mixes.push_back(nullptr);
  std::vector<Cell> cells;
  // Seed-major: an interrupted run has whole seeds of every variant.
  for (const auto& seed : c.seeds)
    for (const CompareTaskMix* mix : mixes)
      for (const auto& v : c.variants.items) {
        std::vector<std::pair<double, bool>> lambdas;
        if (c.lambdas.empty() || !uses_lambda(v.name)) lambdas.push_back({v.lambda, false});
        else
          for (const auto& l : c.lambdas) lambdas.push_back({to_number(l), true});
        for (auto [lambda, swept] : lambdas) {
          std::string name = (mix ? slug(mix->label) + "_" : "") + slug(variant_label(v));
          if (swept) name += "_lambda-" + slug(fmt("%g", lambda));
          name += "_seed-" + seed;
          cells.push_back(
              {name, mix, v, lambda, swept, static_cast<std::int64_t>(to_number(seed))});
        }
      }
  return cells;
}

// Stage 1's outcome, cached in output_dir/stage1/result.json.
struct Reference {
  std::string config_sha256;
  fs::path safety_adapter;
  std::optional<safety::Assessment> baseline, aligned;
};

Reference reference_stage(const CompareConfig& cfg, const fs::path& out, bool& reused) {
  const fs::path dir = out / "stage1";
  TwoStageConfig s1 = cfg;
  s1.stage2.enabled = false;
  s1.stage2.regularizers.items.clear();
  s1.run.output_dir = dir.string();
  std::string extra;
  if (!cfg.stage1.enabled) {
    if (cfg.stage2.safety_adapter.empty())
      throw ConfigError(
          "with stage1.enabled: false the comparison needs an existing safety adapter",
          "stage2.safety_adapter");
    // The reference is the given adapter: key the cache by its content.
    io::Sha256 h;
    for (const auto& e : fs::directory_iterator(cfg.stage2.safety_adapter))
      if (e.is_regular_file()) h.update_file(e.path());
    extra = "safety_adapter:" + h.hex();
  }
  Reference ref;
  ref.config_sha256 = config_hash(s1, extra);
  ref.safety_adapter =
      cfg.stage1.enabled ? dir / "adapters" / "safety" : fs::path(cfg.stage2.safety_adapter);
  const fs::path result = dir / "result.json";
  if (fs::exists(result)) {
    json j = json::parse(io::read_file(result), nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("config_sha256") ||
        !j["config_sha256"].is_string())
      throw FormatError("damaged stage-1 result", result.string(),
                        "delete " + dir.string() + " to run stage 1 again");
    if (j["config_sha256"] == ref.config_sha256) {
      reused = true;
      log_info("stage 1: reusing " + dir.string() + " (same config)");
      ref.baseline = safety::load_assessment(dir / "assessments" / "baseline.json");
      ref.aligned = safety::load_assessment(dir / "assessments" / "aligned.json");
      return ref;
    }
    log_warn("stage 1: config changed since " + result.string() + "; running it again");
  }
  if (fs::exists(dir)) fs::remove_all(dir);
  log_info(cfg.stage1.enabled ? "stage 1: training the safety adapter (the reference)"
                              : "stage 1: assessing the given safety adapter (the reference)");
  auto r = run_two_stage(s1, config_dump(s1));
  throw_if_interrupted(r);  // the CLI exits 130/143; a later `compare` runs stage 1 again
  if (cfg.stage1.enabled && r.aligned.status != train::TrainStatus::completed)
    throw SafetyError("stage 1 did not complete; the comparison needs its safety adapter",
                      dir.string());
  ref.baseline = r.baseline;
  ref.aligned = r.aligned.assessment;
  if (!ref.aligned) throw SafetyError("stage 1 produced no aligned assessment", dir.string());
  json j{{"format", "safetune.compare.stage1/1"},
         {"config_sha256", ref.config_sha256},
         {"safety_adapter", ref.safety_adapter.string()},
         {"seconds", r.aligned.seconds},
         {"aligned_refusal", ref.aligned->refusal.overall.value()},
         {"aligned_benign_compliance", ref.aligned->benign_compliance.overall.value()},
         {"aligned_discrimination", ref.aligned->discrimination.overall.value()}};
  io::atomic_write(result, j.dump(2) + "\n");
  return ref;
}

// `tuned` holds the cells' assessments by cell name: filled as cells finish, and read from disk
// once for cells finished by an earlier run, so rewriting the outputs after each cell reads nothing
// twice.
void write_outputs(const fs::path& out, const CompareConfig& cfg, const Reference& ref,
                   const std::vector<CellResult>& cells, std::vector<CompareRow>& rows,
                   std::size_t planned, std::map<std::string, safety::Assessment>& tuned) {
  rows = summarise_cells(cells);
  std::string md = "# Regularizer comparison: " + cfg.run.name + "\n\n";
  md += std::to_string(cells.size()) + " of " + std::to_string(planned) + " cells finished.\n\n";
  const auto& a = *ref.aligned;
  md += "Reference (aligned model, stage 1): refusal on harmful " +
        fmt("%.1f%%", 100 * a.refusal.overall.value()) +
        " (n=" + std::to_string(a.refusal.overall.n) + "), benign compliance " +
        fmt("%.1f%%", 100 * a.benign_compliance.overall.value()) +
        " (n=" + std::to_string(a.benign_compliance.overall.n) + "), discrimination " +
        fmt("%.1f%%", 100 * a.discrimination.overall.value()) +
        " (n=" + std::to_string(a.discrimination.overall.n) + ").\n\n";
  md += compare_table_markdown(rows);
  const auto tuned_of = [&](const std::string& cell) {
    auto it = tuned.find(cell);
    if (it == tuned.end())
      it = tuned
               .emplace(cell, safety::load_assessment(out / "cells" / cell / "assessments" /
                                                      "tuned.json"))
               .first;
    return it->second;
  };
  md +=
      "\n## Paired drops, pooled over seeds\n\nThe same probes answered by the aligned model "
      "and by each row's cells.\n\n" +
      compare_pooled_markdown(rows, cells, a, tuned_of);
  md +=
      "\n## Paired drops per cell\n\nThe same probes answered by the aligned model and by each "
      "cell.\n\n" +
      compare_paired_markdown(cells);
  io::atomic_write(out / "compare.md", md);
  io::atomic_write(out / "compare.csv", compare_table_csv(rows));
  io::atomic_write(out / "pareto.svg",
                   pareto_svg(rows, "Task metric vs safety retention: " + cfg.run.name));
}

// A cell's two-stage config: stage 1 reused from the reference, its variant's regularizer, its
// seed and (with task_mixes) its column's task data; no guard, so the regularizer acts alone.
TwoStageConfig cell_config(const CompareConfig& cfg, const Cell& cell, const Reference& ref,
                           const fs::path& dir) {
  TwoStageConfig c = cfg;
  c.run.name = cfg.run.name + "/" + cell.name;
  c.run.seed = cell.seed;
  c.run.output_dir = dir.string();
  c.stage1.enabled = false;
  c.stage2.safety_adapter = ref.safety_adapter.string();
  c.stage2.safety_mode = cell.variant.safety_mode;
  c.stage2.data.seed = cell.seed;
  if (cell.mix) c.stage2.data.datasets = cell.mix->datasets;
  train::RegularizerSection reg = cell.variant;
  reg.lambda = cell.lambda;
  c.stage2.regularizers.items.clear();
  if (reg.name != "none") c.stage2.regularizers.items.push_back(reg);
  c.safety.guard.every_n_steps = 0;
  return c;
}

// What a finished cell measured, against the aligned model it started from (paired per probe).
CellResult cell_result(const Cell& cell, const std::string& sha, const TwoStageResult& r,
                       const safety::Assessment& aligned) {
  const auto& a = *r.tuned.assessment;
  const double aligned_refusal = aligned.refusal.overall.value();
  CellResult cr;
  cr.cell = cell.name;
  cr.task_mix = cell.mix ? cell.mix->label : "";
  cr.variant = variant_label(cell.variant);
  cr.regularizer = cell.variant.name;
  cr.safety_mode = cell.variant.safety_mode;
  cr.lambda = cell.lambda;
  cr.lambda_swept = cell.swept;
  cr.seed = cell.seed;
  cr.config_sha256 = sha;
  cr.task_metric = r.tuned.task_metric;
  cr.refusal_k = a.refusal.overall.k;
  cr.refusal_n = a.refusal.overall.n;
  cr.benign_k = a.benign_compliance.overall.k;
  cr.benign_n = a.benign_compliance.overall.n;
  cr.discrimination_k = a.discrimination.overall.k;
  cr.discrimination_n = a.discrimination.overall.n;
  cr.aligned_refusal = aligned_refusal;
  cr.refusal_retention = aligned_refusal > 0 ? a.refusal.overall.value() / aligned_refusal : kNaN;
  cr.over_refusal = 1.0 - a.benign_compliance.overall.value();
  cr.discrimination = a.discrimination.overall.value();
  cr.train_seconds = r.tuned.seconds;
  if (!aligned.results.empty() && !a.results.empty())
    for (const auto& d : safety::paired_drops(aligned, a)) {
      if (d.metric == "refusal") cr.refusal_paired = d.counts;
      if (d.metric == "benign_compliance") cr.benign_paired = d.counts;
    }
  cr.status = r.tuned.status == train::TrainStatus::completed     ? "completed"
              : r.tuned.status == train::TrainStatus::interrupted ? "interrupted"
                                                                  : "stopped";
  return cr;
}

}  // namespace

CompareResult run_compare(const CompareConfig& cfg) {
  if (!cfg.safety.assess)
    throw ConfigError("the comparison measures safety: safety.assess must be true",
                      "safety.assess");
  if (!cfg.stage2.enabled)
    throw ConfigError("the comparison runs stage 2: stage2.enabled must be true", "stage2.enabled");
  const auto cells = plan_cells(cfg);
  CompareResult result;
  const fs::path out = cfg.compare.output_dir.empty() ? fs::path(cfg.run.output_dir)
                                                      : fs::path(cfg.compare.output_dir);
  result.out_dir = out;
  fs::create_directories(out / "cells");
  {
    CompareConfig c = cfg;
    io::atomic_write(out / "config.yaml", config_dump(c));
  }

  // Damaged results stop the run before any work: they are never silently redone.
  std::vector<std::optional<CellResult>> existing(cells.size());
  for (std::size_t i = 0; i < cells.size(); ++i) {
    const fs::path f = out / "cells" / cells[i].name / "result.json";
    if (fs::exists(f)) existing[i] = read_cell_result(f);
  }

  const Reference ref = reference_stage(cfg, out, result.stage1_reused);
  RunOptions ro;
  ro.baseline = ref.baseline;
  ro.aligned = ref.aligned;

  double run_seconds = 0;
  std::map<std::string, safety::Assessment> tuned;  // per-probe results for the pooled drops
  for (std::size_t i = 0; i < cells.size(); ++i) {
    const Cell& cell = cells[i];
    const fs::path dir = out / "cells" / cell.name;
    TwoStageConfig c = cell_config(cfg, cell, ref, dir);
    const std::string sha = config_hash(c, "stage1:" + ref.config_sha256);

    if (existing[i] && existing[i]->config_sha256 == sha) {
      log_info("cell " + std::to_string(i + 1) + "/" + std::to_string(cells.size()) + " " +
               cell.name + ": finished earlier, skipped");
      result.cells.push_back(*existing[i]);
      ++result.cells_skipped;
      continue;
    }
    if (existing[i])
      log_warn("cell " + cell.name + ": its config changed since it ran; running it again");
    if (fs::exists(dir)) fs::remove_all(dir);  // a partial run, or one with another config

    const std::size_t remaining = cells.size() - i;
    std::string eta =
        result.cells_run > 0
            ? ", ETA " + format_duration(run_seconds / static_cast<double>(result.cells_run) *
                                         static_cast<double>(remaining))
            : "";
    log_info("cell " + std::to_string(i + 1) + "/" + std::to_string(cells.size()) + " " +
             cell.name + eta);
    const auto t0 = std::chrono::steady_clock::now();
    auto r = run_two_stage(c, config_dump(c), ro);
    throw_if_interrupted(r);  // finished cells are kept; a later `compare` redoes this one
    if (!r.tuned.assessment) throw SafetyError("cell produced no assessment", dir.string());
    const CellResult cr = cell_result(cell, sha, r, *ref.aligned);
    io::atomic_write(dir / "result.json", cell_result_to_json(cr));
    result.cells.push_back(cr);
    tuned[cell.name] = *r.tuned.assessment;
    ++result.cells_run;
    run_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    write_outputs(out, cfg, ref, result.cells, result.rows, cells.size(), tuned);
  }
  write_outputs(out, cfg, ref, result.cells, result.rows, cells.size(), tuned);
  return result;
}

}  // namespace safetune::recipes
