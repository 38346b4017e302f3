// The two-stage recipe's named steps: run_two_stage composes them, and a program that wants another
// order or another step (examples/two_stage_trainer.cpp) composes them itself.
#pragma once
#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "safetune/data/dataset.hpp"
#include "safetune/recipes/run_dir.hpp"
#include "safetune/recipes/session.hpp"
#include "safetune/recipes/two_stage.hpp"
#include "safetune/safety/guard.hpp"
#include "safetune/safety/report.hpp"
#include "safetune/train/regularizer.hpp"
#include "safetune/train/trainer.hpp"

namespace safetune::recipes {

// The model section as the session's options.
SessionOptions session_options(const ModelSection& m);

// What every step works on: the validated config, the locked run directory, the model session,
// the data-parallel group and the probe suite. Opening it validates every input of both stages
// (bad data fails before any training), opens and locks run.output_dir (rank 0; the others only
// create it), writes config.yaml, seeds torch with run.seed and loads the model.
class TwoStageRun {
 public:
  TwoStageRun(const TwoStageConfig& cfg, const std::string& resolved_yaml,
              const RunOptions& options = {});
  TwoStageRun(const TwoStageRun&) = delete;
  TwoStageRun& operator=(const TwoStageRun&) = delete;

  const TwoStageConfig& config() const { return cfg_; }
  const std::filesystem::path& out() const { return dir_.path; }
  bool resume() const { return resume_; }
  // Rank 0 (or the only process): the one that writes files.
  bool main_rank() const { return main_rank_; }
  Session& session() { return *session_; }
  SessionScorer& scorer() { return *scorer_; }
  const std::shared_ptr<dist::Context>& group() const { return group_; }
  // safety.suite cut to safety.limit probes per kind; empty when safety.assess is off.
  const std::optional<safety::ProbeSuite>& suite() const { return suite_; }
  const safety::AssessOptions& assess_options() const { return assess_options_; }
  // Assesses the model as it is now (adapters in eval mode), saved as assessments/<label>.json;
  // nothing when safety.assess is off.
  std::optional<safety::Assessment> assess(const std::string& label);

 private:
  const TwoStageConfig& cfg_;
  bool resume_ = false, main_rank_ = true;
  RunDir dir_;
  std::optional<Session> session_;
  std::optional<SessionScorer> scorer_;
  std::shared_ptr<dist::Context> group_;
  std::optional<safety::ProbeSuite> suite_;
  safety::AssessOptions assess_options_;
};

// Runs a stage's Trainer (resuming when the run resumes) with the model and its adapters in
// training mode; the outcome carries status and steps, no assessment.
StageOutcome train_stage(TwoStageRun& run, train::Trainer& trainer);

// Stage 1: adds the safety adapter, trains it on stage1.data, then (unless interrupted) freezes
// it, marks it required at inference, saves adapters/safety and assesses the aligned model.
StageOutcome train_safety_adapter(TwoStageRun& run);
// Stage 1 skipped: stage2.safety_adapter loaded and required at inference; assessed unless
// `aligned` already holds its assessment.
StageOutcome load_safety_adapter(TwoStageRun& run,
                                 const std::optional<safety::Assessment>& aligned);

// Records an interrupted stage in `r` and logs where its checkpoint is; false when `stage` ran on.
// An interrupted stage keeps its checkpoint and nothing else: no adapter, assessment, report or
// release.
bool note_interrupted(TwoStageResult& r, const StageOutcome& stage, const std::string& name,
                      const train::TrainSection& train, const std::filesystem::path& stage_dir);

// Stage 2's start: folds the safety adapter into the weights when stage2.safety_mode is merged,
// then adds the trainable task adapter. Returns the safety adapter's content hash ("" without one).
std::string add_task_adapter(TwoStageRun& run);

// Stage 2's loss on each micro-step: the task cross-entropy plus lambda * boost * each configured
// regularizer (boost: the guard's checkpointed Trainer scalar), on task batches with the safety
// data mixed in at the replay ratio; anchor batches are drawn lazily. Build it after
// add_task_adapter.
class TaskObjective {
 public:
  explicit TaskObjective(TwoStageRun& run);
  TaskObjective(const TaskObjective&) = delete;
  TaskObjective& operator=(const TaskObjective&) = delete;

  train::MicroStep micro_step(train::Trainer& trainer, std::int64_t cursor);
  // Gradient surgery (e.g. gradient_projection) on the task adapter's gradients.
  void before_optimizer_step(train::Trainer& trainer, std::int64_t step);
  // The trainable task-adapter tensors the Trainer optimizes.
  const std::vector<std::pair<std::string, at::Tensor>>& parameters() const { return params_; }
  // The task data files (replay included), for the report.
  std::vector<safety::ReportDataset> datasets() const;
  // After a completed stage 2: each regularizer's on_train_end (ema swaps in the averaged adapter).
  void on_train_end();

 private:
  const data::Batch& anchor_batch();
  TwoStageRun& run_;
  std::vector<std::unique_ptr<train::Regularizer>> regs_;
  data::DataLoader loader_;
  std::unique_ptr<data::DataLoader> anchor_loader_;
  std::optional<data::Batch> anchor_cache_;
  std::int64_t anchor_cursor_ = -1, current_cursor_ = 0;
  train::RegContext ctx_;
  bool needs_task_logits_ = false;
  std::vector<std::pair<std::string, at::Tensor>> params_;
};

// The in-training guard (safety.guard): probes a fixed subset every N steps and stops, rolls back
// to the last passing checkpoint or boosts the regularizers on a breach. Data-parallel ranks all
// take rank 0's decision. Inactive when safety.guard.every_n_steps is 0 or safety.assess is off.
class StageGuard {
 public:
  explicit StageGuard(TwoStageRun& run);  // measures the guard's baseline on the subset
  void after_step(train::Trainer& trainer, std::int64_t step);
  std::vector<safety::GuardEvent> events() const;
  std::vector<safety::Series> series() const;

 private:
  void share_decision(safety::GuardDecision& d);
  TwoStageRun& run_;
  std::optional<safety::SafetyGuard> guard_;
};

// Stage 2's training: the Trainer over the objective's parameters with the objective's and the
// guard's hooks, in out/stage2.
StageOutcome train_task_adapter(TwoStageRun& run, TaskObjective& objective, StageGuard& guard);
// After a completed stage 2: freezes the task adapter, checks the safety adapter is unchanged
// (SafetyError otherwise), applies the Safe LoRA projection when configured, records the safety
// adapter as the task adapter's dependency and saves adapters/task. Returns the safety hash after.
std::string finish_task_adapter(TwoStageRun& run, const std::string& safety_sha_before);
// Exact match of the generated JSON answer on stage2.task_eval (-1 when it is not set).
// Data-parallel runs split the examples round-robin over the ranks and sum the counts.
double measure_task_metric(TwoStageRun& run);
double task_metric(Session& s, const std::string& path, std::int64_t limit,
                   std::int64_t max_new_tokens, dist::Context& group);

// The gates on the tuned model, against the aligned model when there is one, else the baseline.
safety::GateVerdict gate_tuned(const TwoStageConfig& cfg, const TwoStageResult& r);
// Writes out/report (rank 0): model, adapters, data, regularizers, assessments, gates, guard.
void write_two_stage_report(TwoStageRun& run, const TwoStageResult& r,
                            const TaskObjective& objective, const StageGuard& guard,
                            const std::string& resolved_yaml);
// Registers both adapters with the tuned assessment in safety.release.registry, promoted when the
// gates passed and safety.release.promote; returns the release id ("" on ranks other than 0).
std::string register_release(TwoStageRun& run, const TwoStageResult& r);

double seconds_since(std::chrono::steady_clock::time_point t0);

}  // namespace safetune::recipes
