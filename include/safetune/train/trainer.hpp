// The training loop: AdamW over trainable adapter tensors, LR schedules, accumulation, clipping,
// JSONL metrics, atomic keep-last-K checkpoints with exact resume, and clean SIGINT/SIGTERM exits.
#pragma once
#include <ATen/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "safetune/config.hpp"

namespace safetune::dist {
class Context;
}

namespace safetune::train {

struct TrainSection : ConfigSection {
  std::int64_t max_steps = 100;
  double lr = 2e-4;
  double weight_decay = 0.0;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  std::string schedule = "cosine";
  std::int64_t warmup_steps = 0;
  double min_lr_ratio = 0.0;
  std::int64_t grad_accum = 1;
  double max_grad_norm = 1.0;
  std::int64_t checkpoint_every = 0;
  std::int64_t keep_last = 2;
  std::int64_t eval_every = 0;
  std::int64_t log_every = 1;
  std::string precision = "auto";
  bool tensorboard = true;  // TensorBoard event files beside metrics.jsonl
  void describe(ConfigVisitor& v) override;
};

// Learning rate for optimizer step `step` (0-based): linear warmup, then constant, linear decay or
// cosine decay to lr * min_lr_ratio at max_steps.
double lr_at(const TrainSection& cfg, std::int64_t step);

// What one micro-batch contributes: the (unscaled) loss, named loss terms for the metrics, and how
// many supervised tokens it had (for tokens/s).
struct MicroStep {
  at::Tensor loss;
  std::map<std::string, double> terms;
  std::int64_t supervised_tokens = 0;
};

class Trainer;

// Each hook receives the Trainer that calls it, so it can read a checkpointed scalar, stop the run
// or load a checkpoint without a pointer patched in after the Trainer is built.
struct TrainerHooks {
  // Forward pass on micro-batch number `cursor` (0, 1, 2, ... over the whole run, resumed runs
  // continue the count). Must be deterministic in `cursor` for exact resume.
  std::function<MicroStep(Trainer&, std::int64_t cursor)> micro_step;
  // Optional: evaluation every eval_every steps; the returned values go to metrics as eval_<name>.
  std::function<std::map<std::string, double>(Trainer&, std::int64_t step)> evaluate;
  // Optional: called after backward of all micro-batches, before clipping and the optimizer step
  // (gradient surgery such as gradient_projection edits the .grad tensors here).
  std::function<void(Trainer&, std::int64_t step)> before_optimizer_step;
  // Optional: called after each optimizer step (e.g. the safety guard); may call Trainer::stop().
  std::function<void(Trainer&, std::int64_t step)> after_step;
};

enum class TrainStatus { completed, interrupted, stopped };

class Trainer {
 public:
  // `params`: the trainable tensors by name (requires_grad must be true). `out_dir` receives
  // metrics.jsonl and checkpoints/.
  Trainer(TrainSection cfg, std::vector<std::pair<std::string, at::Tensor>> params,
          std::filesystem::path out_dir, TrainerHooks hooks);
  ~Trainer();

  // Runs to max_steps. With resume, continues from the latest checkpoint in out_dir (if any).
  // SIGINT/SIGTERM during the run save a checkpoint and return TrainStatus::interrupted.
  TrainStatus run(bool resume = false);

  std::int64_t step() const noexcept { return step_; }
  std::int64_t cursor() const noexcept { return cursor_; }
  // The signal that interrupted the last run() (SIGINT or SIGTERM), 0 when it was not interrupted.
  int interrupt_signal() const noexcept { return interrupt_signal_; }
  void stop(std::string reason);            // ends the run after the current step
  std::filesystem::path save_checkpoint();  // checkpoints/<checkpoint_name(step)>, atomically
  // The directory name of step's checkpoint under out_dir()/checkpoints ("step-NNNNNNNN").
  static std::string checkpoint_name(std::int64_t step);
  void load_checkpoint(const std::filesystem::path& dir);
  std::optional<std::filesystem::path> latest_checkpoint() const;
  void protect_checkpoint(std::int64_t step);  // never deleted by keep_last (e.g. last passing)
  // Multiplies a named scalar the hooks read (e.g. a regularizer weight boosted by the guard);
  // saved with checkpoints.
  double& scalar(const std::string& name, double initial = 1.0);
  const std::filesystem::path& out_dir() const noexcept { return out_dir_; }
  std::vector<double> loss_history() const { return losses_; }
  // Data-parallel training (docs/distributed.md): rank r of W feeds micro_step the global batch
  // numbers cursor*W + r, gradients are averaged across ranks before before_optimizer_step (so
  // the run equals one process with grad_accum*W), the trainable tensors are broadcast from rank 0
  // at the start, only rank 0 writes metrics and checkpoints, and rank 0 reads checkpoints for all.
  // Hooks run on every rank and must make the same decisions (or broadcast them).
  void set_dist(std::shared_ptr<dist::Context> ctx);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  TrainSection cfg_;
  std::vector<std::pair<std::string, at::Tensor>> params_;
  std::filesystem::path out_dir_;
  TrainerHooks hooks_;
  std::int64_t step_ = 0, cursor_ = 0;
  int interrupt_signal_ = 0;
  std::vector<double> losses_;
  std::map<std::string, double> scalars_;
  std::vector<std::int64_t> protected_;
  std::string stop_reason_;
  std::shared_ptr<dist::Context> dist_;
  void average_gradients(double& loss_sum, std::int64_t& tokens, bool& signalled);
  std::string latest_checkpoint_name();
};

}  // namespace safetune::train
