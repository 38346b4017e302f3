// Stage 2's steps: the task adapter, its objective (task loss + regularizers), the in-training
// guard, its training and what follows a completed run.
#include <torch/torch.h>

#include <algorithm>

#include "safetune/error.hpp"
#include "safetune/io/hash.hpp"
#include "safetune/log.hpp"
#include "safetune/recipes/assess.hpp"
#include "safetune/recipes/two_stage_steps.hpp"
#include "safetune/safety/benchmarks.hpp"

namespace safetune::recipes {
namespace fs = std::filesystem;

std::string add_task_adapter(TwoStageRun& run) {
  const auto& s2 = run.config().stage2;
  auto& adapters = run.session().adapters();
  const bool has_safety = adapters.has("safety");
  std::string sha = has_safety ? adapters.content_sha256("safety") : "";
  if (has_safety && s2.safety_mode == "merged") adapters.merge({"safety"}, lora::MergeCopy::keep);
  adapters.add("task", s2.lora, lora::AdapterRole::task, /*trainable=*/true);
  return sha;
}

namespace {

std::vector<std::unique_ptr<train::Regularizer>> make_regularizers(TwoStageRun& run) {
  std::vector<std::unique_ptr<train::Regularizer>> regs;
  for (const auto& r : run.config().stage2.regularizers.items) {
    regs.push_back(train::make_regularizer(r));
    regs.back()->setup(run.session().adapters(), "task", "safety");
  }
  return regs;
}

// Replay mixes stage 1's safety data into the task batches at ratio rho (the regularizers' sum):
// the safety datasets keep their relative weights and take rho of the total.
data::DataSection task_data(const TwoStageConfig& cfg,
                            const std::vector<std::unique_ptr<train::Regularizer>>& regs) {
  double rho = 0;
  for (const auto& r : regs) rho += r->replay_ratio();
  data::DataSection mixed = cfg.stage2.data;
  if (rho <= 0) return mixed;
  double task_weight = 0, safety_weight = 0;
  for (const auto& d : mixed.datasets.items) task_weight += d.weight;
  for (const auto& d : cfg.stage1.data.datasets.items) safety_weight += d.weight;
  for (auto d : cfg.stage1.data.datasets.items) {
    d.weight = d.weight / safety_weight * task_weight * rho / (1 - rho);
    d.name = "replay:" + (d.name.empty() ? fs::path(d.path).stem().string() : d.name);
    mixed.datasets.items.push_back(d);
  }
  return mixed;
}

}  // namespace

TaskObjective::TaskObjective(TwoStageRun& run)
    : run_(run),
      regs_(make_regularizers(run)),
      loader_(task_data(run.config(), regs_), run.session().tokenizer(),
              run.session().chat_template()) {
  ctx_.model = &run.session().model();
  ctx_.adapters = &run.session().adapters();
  ctx_.anchor = [this]() -> const data::Batch& { return anchor_batch(); };
  needs_task_logits_ =
      std::any_of(regs_.begin(), regs_.end(), [](const auto& r) { return r->needs_task_logits(); });
  params_ = run.session().adapters().trainable_parameters();
}

// One anchor batch per micro-step, loaded on first use: only the regularizers that read anchors
// pay for their data.
const data::Batch& TaskObjective::anchor_batch() {
  if (!anchor_cache_ || anchor_cursor_ != current_cursor_) {
    const auto& cfg = run_.config();
    const data::DataSection& anchor_cfg =
        cfg.stage2.anchor.datasets.items.empty() ? cfg.stage1.data : cfg.stage2.anchor;
    if (!anchor_loader_) {
      if (anchor_cfg.datasets.items.empty())
        throw ConfigError("this regularizer needs safety anchor data", "stage2.anchor.datasets");
      anchor_loader_ = std::make_unique<data::DataLoader>(anchor_cfg, run_.session().tokenizer(),
                                                          run_.session().chat_template());
    }
    anchor_cache_ = anchor_loader_->batch(current_cursor_);
    anchor_cursor_ = current_cursor_;
  }
  return *anchor_cache_;
}

train::MicroStep TaskObjective::micro_step(train::Trainer& trainer, std::int64_t cursor) {
  current_cursor_ = cursor;
  auto& model = run_.session().model();
  auto b = loader_.batch(cursor);
  auto dev = model.device();
  // Full [B,T,V] task logits only for a regularizer that reads them; the task loss itself needs
  // just the supervised rows.
  at::Tensor logits;
  if (needs_task_logits_) logits = model.forward(b.input_ids.to(dev), b.attention_mask.to(dev));
  ctx_.task_batch = &b;
  ctx_.task_logits = logits;
  at::Tensor total;
  std::map<std::string, double> terms;
  bool replaced = false;
  for (auto& r : regs_) {
    auto term = r->loss(ctx_);
    if (!term.defined()) continue;
    auto weighted = term * (r->lambda * trainer.scalar("boost"));
    terms[r->name()] = term.item<double>();
    if (r->replaces_task_loss()) replaced = true;
    total = total.defined() ? total + weighted : weighted;
  }
  auto ce =
      needs_task_logits_ ? train::lm_loss(logits, b.labels) : train::response_lm_loss(model, b);
  terms["task_ce"] = ce.item<double>();
  if (!replaced) total = total.defined() ? total + ce : ce;
  ctx_.task_batch = nullptr;
  ctx_.task_logits = at::Tensor();
  return train::MicroStep{total, terms, b.supervised_tokens};
}

void TaskObjective::before_optimizer_step(train::Trainer&, std::int64_t step) {
  std::vector<at::Tensor> params;
  for (auto& [n, t] : params_) params.push_back(t);
  current_cursor_ = step;
  for (auto& r : regs_) r->on_gradients(ctx_, params);
}

std::vector<safety::ReportDataset> TaskObjective::datasets() const {
  std::vector<safety::ReportDataset> out;
  for (const auto& f : loader_.files())
    out.push_back({f->path().stem().string(), f->path().string(), io::sha256_file(f->path()),
                   static_cast<std::int64_t>(f->size())});
  return out;
}

void TaskObjective::on_train_end() {
  std::vector<at::Tensor> params;
  for (auto& [name, t] : params_) params.push_back(t);
  for (auto& r : regs_) r->on_train_end(params);
}

StageGuard::StageGuard(TwoStageRun& run) : run_(run) {
  const auto& cfg = run.config();
  if (cfg.safety.guard.every_n_steps <= 0 || !run.suite()) return;
  fs::path subset_file = cfg.safety.guard.subset.empty()
                             ? fs::path(cfg.safety.suite) / "guard_subset.txt"
                             : fs::path(cfg.safety.guard.subset);
  auto full = safety::load_suite_spec(cfg.safety.suite);
  auto subset = safety::select_probes(full, safety::load_id_list(subset_file), "guard");
  guard_.emplace(cfg.safety.guard, cfg.safety.gates, subset, run.assess_options());
  auto group = run.group();
  guard_->set_assessor(
      [group](const safety::ProbeSuite& probes, safety::ScoringModel& m,
              const safety::AssessOptions& o) { return assess_sharded(probes, m, o, *group); });
  run.session().model().eval();
  guard_->set_baseline(run.scorer());
}

// Decided once: every rank takes rank 0's decision (the checks agree unless decoding differs).
void StageGuard::share_decision(safety::GuardDecision& d) {
  at::Tensor v =
      torch::tensor({d.breached ? 1.0 : 0.0, static_cast<double>(d.action),
                     d.rollback_to_step ? static_cast<double>(*d.rollback_to_step) : -1.0,
                     d.continue_training ? 1.0 : 0.0, d.weight_multiplier},
                    torch::kDouble);
  run_.group()->broadcast(v);
  auto x = v.accessor<double, 1>();
  d.breached = x[0] != 0;
  d.action = static_cast<safety::GuardAction>(static_cast<int>(x[1]));
  d.rollback_to_step =
      x[2] >= 0 ? std::optional<std::int64_t>(static_cast<std::int64_t>(x[2])) : std::nullopt;
  d.continue_training = x[3] != 0;
  d.weight_multiplier = x[4];
}

void StageGuard::after_step(train::Trainer& trainer, std::int64_t step) {
  if (!guard_ || !guard_->due(step)) return;
  auto& model = run_.session().model();
  auto& adapters = run_.session().adapters();
  model.eval();
  adapters.train(false);
  auto d = guard_->check(step, run_.scorer());
  model.train();
  adapters.train(true);
  if (run_.group()->distributed()) share_decision(d);
  if (d.breached) {
    if (d.action == safety::GuardAction::boost) trainer.scalar("boost") *= d.weight_multiplier;
    if (d.action == safety::GuardAction::rollback && d.rollback_to_step)
      trainer.load_checkpoint(trainer.out_dir() / "checkpoints" /
                              train::Trainer::checkpoint_name(*d.rollback_to_step));
    if (!d.continue_training) trainer.stop("safety guard: " + d.event.detail);
  }
  const auto every = run_.config().stage2.train.checkpoint_every;
  if (every > 0 && step % every == 0) {
    guard_->checkpoint_saved(step);
    if (auto last = guard_->last_passing_checkpoint()) trainer.protect_checkpoint(*last);
  }
}

std::vector<safety::GuardEvent> StageGuard::events() const {
  return guard_ ? guard_->events() : std::vector<safety::GuardEvent>{};
}
std::vector<safety::Series> StageGuard::series() const {
  return guard_ ? guard_->series() : std::vector<safety::Series>{};
}

StageOutcome train_task_adapter(TwoStageRun& run, TaskObjective& objective, StageGuard& guard) {
  train::TrainerHooks hooks;
  hooks.micro_step = [&](train::Trainer& t, std::int64_t cursor) {
    return objective.micro_step(t, cursor);
  };
  hooks.before_optimizer_step = [&](train::Trainer& t, std::int64_t step) {
    objective.before_optimizer_step(t, step);
  };
  hooks.after_step = [&](train::Trainer& t, std::int64_t step) { guard.after_step(t, step); };
  train::Trainer trainer(run.config().stage2.train, objective.parameters(), run.out() / "stage2",
                         hooks);
  return train_stage(run, trainer);
}

std::string finish_task_adapter(TwoStageRun& run, const std::string& safety_sha_before) {
  const auto& cfg = run.config();
  auto& adapters = run.session().adapters();
  const bool has_safety = adapters.has("safety");
  adapters.set_trainable("task", false);
  std::string sha_after;
  if (has_safety) {
    sha_after = adapters.content_sha256("safety");
    if (sha_after != safety_sha_before)
      throw SafetyError("the frozen safety adapter changed during stage 2", "stage2");
  }
  if (cfg.stage2.safe_lora_threshold > 0 && has_safety) {
    auto projected =
        train::safe_lora_project(adapters, "task", "safety", cfg.stage2.safe_lora_threshold);
    log_info("Safe LoRA projection changed " + std::to_string(projected.size()) + " layers");
  }
  // The task adapter names the safety adapter it was trained with; wherever it is applied, that one
  // must be too.
  if (has_safety)
    adapters.set_dependencies("task", {{"safety", adapters.weights_sha256("safety")}});
  if (run.main_rank()) adapters.save_peft("task", run.out() / "adapters" / "task", cfg.model.path);
  return sha_after;
}

}  // namespace safetune::recipes
