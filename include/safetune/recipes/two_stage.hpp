// The two-stage safety-preserving trainer: stage 1 trains the safety adapter, stage 2 the task
// adapter with the safety adapter frozen and active under the configured regularizers, with
// safety assessments before, between and after, the in-training guard and the report.
#pragma once
#include <filesystem>
#include <optional>
#include <string>

#include "safetune/config.hpp"
#include "safetune/data/dataset.hpp"
#include "safetune/dist/context.hpp"
#include "safetune/lora/config.hpp"
#include "safetune/safety/assessment.hpp"
#include "safetune/safety/gates.hpp"
#include "safetune/safety/guard.hpp"
#include "safetune/safety/http_judge.hpp"
#include "safetune/safety/monitor.hpp"
#include "safetune/train/regularizer.hpp"
#include "safetune/train/trainer.hpp"

namespace safetune::recipes {

// An adapter's `lora` section as a two-stage config starts it: alpha 16 on every projection of a
// decoder layer (rank 8, no dropout, PEFT's init).
inline lora::LoraConfig default_adapter_config() {
  lora::LoraConfig c;
  c.alpha = 16;
  c.target_suffixes = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  return c;
}

struct Stage1Section : ConfigSection {
  bool enabled = true;
  lora::LoraConfig lora = default_adapter_config();
  data::DataSection data;
  train::TrainSection train;
  void describe(ConfigVisitor& v) override;
};

struct Stage2Section : ConfigSection {
  bool enabled = true;
  std::string safety_mode = "separate";  // separate | merged
  std::string safety_adapter;            // PEFT dir, when stage 1 is not run
  lora::LoraConfig lora = default_adapter_config();
  data::DataSection data;
  data::DataSection anchor;  // safety anchor batches; default: stage 1's data
  SectionList<train::RegularizerSection> regularizers;
  train::TrainSection train;
  std::string task_eval;  // held-out JSONL for the task metric (exact JSON match)
  std::int64_t task_eval_limit = 0;
  std::int64_t task_eval_max_new_tokens = 64;
  double safe_lora_threshold = 0.0;  // > 0: post-hoc Safe LoRA projection
  void describe(ConfigVisitor& v) override;
};

// Releases: where a finished run is registered, and how `safetune monitor` watches the current one.
struct ReleaseSection : ConfigSection {
  std::string registry;         // release registry JSON; empty: runs are not registered
  std::string id;               // default: <run.name>-<UTC time>
  bool promote = true;          // make a run that passes its gates the current release
  std::string prometheus_file;  // monitor: node_exporter textfile ("" : none)
  bool rollback_on_regression = true;
  void describe(ConfigVisitor& v) override;
};

struct SafetySection : ConfigSection {
  bool assess = true;
  std::string suite = "data/probes";
  std::int64_t max_new_tokens = 32;
  std::int64_t batch_size = 8;
  std::int64_t limit = 0;          // probes per kind (0: all)
  safety::HttpJudgeSection judge;  // empty endpoint: keyword scoring
  safety::SafetyGates gates;
  safety::GuardSection guard;
  ReleaseSection release;
  void describe(ConfigVisitor& v) override;
};

struct TwoStageConfig : ConfigSection {
  RunSection run;
  ModelSection model;
  Stage1Section stage1;
  Stage2Section stage2;
  SafetySection safety;
  dist::DistSection dist;
  void describe(ConfigVisitor& v) override;
};

struct StageOutcome {
  std::optional<safety::Assessment> assessment;
  double task_metric = -1;  // exact-match rate on stage2.task_eval; -1 when not measured
  double seconds = 0;
  train::TrainStatus status = train::TrainStatus::completed;
  std::int64_t steps = 0;    // optimizer steps done when the stage's training ended
  int interrupt_signal = 0;  // SIGINT/SIGTERM that interrupted it (status interrupted), else 0
};

struct TwoStageResult {
  std::optional<safety::Assessment> baseline;  // the model as downloaded
  StageOutcome aligned;                        // after stage 1
  StageOutcome tuned;                          // after stage 2
  safety::GateVerdict verdict;
  std::filesystem::path out_dir;
  // The frozen safety adapter's content hash before and after stage 2 (must be equal).
  std::string safety_sha_before, safety_sha_after;
  std::string release_id;  // set when the run was registered (safety.release.registry)
  // SIGINT/SIGTERM stopped the run (0: it was not interrupted): the stage's checkpoint is saved,
  // and nothing after it happened -- no adapter of that stage, assessment, report or release.
  int interrupted_signal = 0;
  std::string interrupted_stage;  // "stage 1" | "stage 2"
  std::int64_t interrupted_step = 0;
};

struct RunOptions {
  bool resume = false;     // continue the run in run.output_dir from its checkpoints
  bool overwrite = false;  // replace a previous run in run.output_dir (never one holding a release)
  // Assessments already measured (the demo shares one baseline and one aligned model across its
  // stage-2 variants); when set they are reused instead of measured again.
  std::optional<safety::Assessment> baseline, aligned;
  // Data-parallel group; null: made from the launcher's environment (WORLD_SIZE unset: one
  // process).
  std::shared_ptr<dist::Context> dist;
};

// Runs what the config enables. `resolved_yaml` is written beside the outputs and into the report.
// Before anything is trained: every input is validated (validate_run_inputs) and run.output_dir is
// resolved and locked for the whole run (open_run_dir: a directory holding another run needs
// `resume` or `overwrite`). An interrupted run returns with `interrupted_signal` set.
TwoStageResult run_two_stage(const TwoStageConfig& cfg, const std::string& resolved_yaml,
                             const RunOptions& options = {});

// Throws safetune::Interrupted (naming the signal, stage, step and directory) when `r` was
// interrupted.
void throw_if_interrupted(const TwoStageResult& r);

// The demonstration: baseline -> stage 1 -> three stage-2 variants on the same data: (a) safety
// adapter merged, no regularizer; (b) safety adapter separate and frozen, no regularizer; (c)
// separate plus the configured regularizers. Prints and writes (run.output_dir/demo_table.md) the
// side-by-side table, including the gate verdict for (c). Returns 0.
int run_demo(const TwoStageConfig& cfg, const std::string& resolved_yaml);

// One monitoring pass over safety.release.registry's current release: loads model.path with the
// release's adapters, probes safety.suite as the run did, gates the result against the release-time
// assessment, appends to the registry history, writes safety.release.prometheus_file and rolls back
// on regression when configured. An artifact that changed since registration counts as a
// regression. SafetyError when there is no registry, no current release or no stored assessment.
safety::MonitorResult monitor_release(const TwoStageConfig& cfg);

}  // namespace safetune::recipes
