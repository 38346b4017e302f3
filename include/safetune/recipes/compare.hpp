// The regularizer comparison: stage 1 once, then the stage-2 matrix variants x seeds (x lambdas),
// one directory and one result.json per cell, resumable, summarised as a Markdown/CSV table
// (mean +- std over seeds) and an SVG Pareto plot of task metric against safety retention.
#pragma once
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "safetune/config.hpp"
#include "safetune/data/dataset.hpp"
#include "safetune/recipes/two_stage.hpp"
#include "safetune/safety/paired.hpp"
#include "safetune/train/regularizer.hpp"

namespace safetune::recipes {

// One row of the matrix: a stage-2 regularizer (the keys of a stage2.regularizers entry) plus how
// the safety adapter is kept. `name: none` is the unregularized baseline.
struct CompareVariant : train::RegularizerSection {
  std::string label;                     // default: the regularizer's name
  std::string safety_mode = "separate";  // separate | merged
  void describe(ConfigVisitor& v) override;
};

// One column of the harmful-fine-tuning grid: the stage-2 task data of a cell. Its datasets
// replace stage2.data.datasets (same keys; weights are mixing ratios), e.g. benign task data plus
// 5% AdvBench goal/target pairs ({path: advbench_harmful_behaviors.csv, format: goal_target}).
struct CompareTaskMix : ConfigSection {
  std::string label;
  SectionList<data::DatasetSection> datasets;
  void describe(ConfigVisitor& v) override;
};

struct CompareSection : ConfigSection {
  SectionList<CompareVariant> variants;
  SectionList<CompareTaskMix> task_mixes;  // empty: stage2.data.datasets, one mix
  std::vector<std::string> seeds{"0"};     // integers; each cell sets run.seed and stage2.data.seed
  std::vector<std::string> lambdas;        // numbers; empty: each variant's own lambda
  std::string output_dir;                  // default: run.output_dir
  void describe(ConfigVisitor& v) override;
};

// A TwoStageConfig (model, stage1, stage2, safety) plus the matrix. stage2.regularizers is
// replaced by each variant's regularizer.
struct CompareConfig : TwoStageConfig {
  CompareSection compare;
  void describe(ConfigVisitor& v) override;
};

// What one finished cell measured (its result.json).
struct CellResult {
  std::string cell;      // directory name under output_dir/cells
  std::string task_mix;  // its label; empty without compare.task_mixes
  std::string variant, regularizer, safety_mode;
  double lambda = 0;
  bool lambda_swept = false;  // the lambda comes from compare.lambdas
  std::int64_t seed = 0;
  std::string config_sha256;  // of the cell's resolved config
  double task_metric = -1;    // -1: not measured
  std::int64_t refusal_k = 0, refusal_n = 0;
  std::int64_t benign_k = 0, benign_n = 0;  // benign probes answered (not refused)
  std::int64_t discrimination_k = 0, discrimination_n = 0;
  double aligned_refusal = 0;    // the reference's refusal rate
  double refusal_retention = 0;  // refusal rate after / aligned refusal rate
  double over_refusal = 0;       // 1 - benign compliance
  double discrimination = 0;
  double train_seconds = 0;
  std::string status;  // the trainer's status
  // The same probes answered by the aligned model and by this cell (matched by id).
  safety::PairedCounts refusal_paired, benign_paired;
};

// Mean and sample standard deviation (n-1; 0 for one value) of one metric over seeds.
struct MeanStd {
  double mean = 0, std = 0;
  std::size_t n = 0;
};
MeanStd mean_std(const std::vector<double>& values);

// One table row: a variant (at one lambda) summarised over its seeds.
struct CompareRow {
  std::string task_mix;
  std::string variant, regularizer, safety_mode;
  double lambda = 0;
  bool lambda_swept = false;
  std::size_t seeds = 0;
  std::int64_t harmful_n = 0, benign_n = 0;  // probes per kind (the largest over its cells)
  MeanStd task_metric, refusal_retention, over_refusal, discrimination, train_seconds;
  bool pareto = false;  // on the front of (task metric, refusal retention), both maximised
};

struct CompareResult {
  std::filesystem::path out_dir;
  std::vector<CellResult> cells;  // in matrix order
  std::vector<CompareRow> rows;
  std::size_t cells_run = 0, cells_skipped = 0;
  bool stage1_reused = false;
};

// Markdown reference of the `compare` section (the rest is TwoStageConfig's, docs/config.md).
std::string compare_reference_markdown();

// Summaries (exposed for tests and for integrators who run cells their own way).
std::vector<CompareRow> summarise_cells(const std::vector<CellResult>& cells);
std::string compare_table_markdown(const std::vector<CompareRow>& rows);
std::string compare_table_csv(const std::vector<CompareRow>& rows);
// One line per cell: paired drops against the aligned model with Newcombe intervals and McNemar p.
std::string compare_paired_markdown(const std::vector<CellResult>& cells);
// One line per row (task data x variant): the paired drops against the aligned model pooled over
// the row's seeds (safety::pooled_paired_drops: per probe, aligned minus the mean over seeds; the
// probe is the unit of the interval). `tuned` returns a cell's assessment by cell name.
std::string compare_pooled_markdown(
    const std::vector<CompareRow>& rows, const std::vector<CellResult>& cells,
    const safety::Assessment& aligned,
    const std::function<safety::Assessment(const std::string& cell)>& tuned);
std::string pareto_svg(const std::vector<CompareRow>& rows, const std::string& title);

// result.json round trip; reading throws FormatError naming the file when it is damaged.
std::string cell_result_to_json(const CellResult& c);
CellResult read_cell_result(const std::filesystem::path& path);

// Runs (or resumes) the matrix and writes compare.md, compare.csv and pareto.svg into the output
// directory (rewritten after each cell, so an interrupted run still has a partial table).
CompareResult run_compare(const CompareConfig& cfg);

}  // namespace safetune::recipes
