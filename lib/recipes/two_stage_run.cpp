// The two-stage run's shared state (directory, session, group, suite) and stage 1's steps.
#include <torch/torch.h>

#include <csignal>

#include "safetune/error.hpp"
#include "safetune/io/atomic_file.hpp"
#include "safetune/log.hpp"
#include "safetune/recipes/assess.hpp"
#include "safetune/recipes/two_stage_steps.hpp"
#include "safetune/safety/benchmarks.hpp"
#include "safetune/safety/registry.hpp"

namespace safetune::recipes {
namespace fs = std::filesystem;

TwoStageRun::TwoStageRun(const TwoStageConfig& cfg, const std::string& resolved_yaml,
                         const RunOptions& ro)
    : cfg_(cfg), resume_(ro.resume) {
  const bool release = !cfg.safety.release.registry.empty() && cfg.stage2.enabled;
  if (release && !cfg.safety.assess)
    throw ConfigError("registering a release needs its safety assessment",
                      "safety.release.registry",
                      "set safety.assess=true or leave safety.release.registry empty");
  if (release)
    safety::ReleaseRegistry::open(
        cfg.safety.release.registry);  // a damaged registry stops the run now
  // Every input of both stages is read now: bad data fails here, not after hours of stage 1.
  validate_run_inputs(cfg);
  // Data-parallel: every rank runs this same recipe on its own shard; rank 0 alone writes files
  // (and alone holds the run directory's lock).
  const auto launch = dist::LaunchEnv::from_environment();
  main_rank_ = ro.dist ? ro.dist->is_main() : launch.rank == 0;
  if (main_rank_) {
    dir_ = open_run_dir(cfg.run.output_dir, {ro.resume, ro.overwrite, cfg.safety.release.registry});
  } else {
    fs::create_directories(cfg.run.output_dir);
    dir_.path = fs::canonical(cfg.run.output_dir);
  }
  if (main_rank_) io::atomic_write(out() / "config.yaml", resolved_yaml);
  torch::manual_seed(static_cast<std::uint64_t>(cfg.run.seed));

  SessionOptions so = session_options(cfg.model);
  if (!ro.dist && launch.world_size > 1 && so.device == "cuda")  // one GPU per local rank
    so.device = "cuda:" + std::to_string(launch.local_rank);
  session_.emplace(cfg.model.path, so);
  scorer_.emplace(*session_);
  auto& model = session_->model();
  model.set_activation_checkpointing(cfg.model.activation_checkpointing);
  group_ = ro.dist ? ro.dist : dist::Context::from_env(cfg.dist, model.device().is_cuda());
  if (cfg.safety.assess)
    suite_ = safety::first_per_kind(safety::load_suite_spec(cfg.safety.suite), cfg.safety.limit);
  assess_options_ =
      recipes::assess_options(*session_, cfg.safety.max_new_tokens, cfg.safety.batch_size,
                              cfg.model.dtype, cfg.safety.judge);
}

std::optional<safety::Assessment> TwoStageRun::assess(const std::string& label) {
  if (!suite_) return std::nullopt;
  log_info("assessing safety: " + label);
  session_->model().eval();
  session_->adapters().train(false);
  // Each rank scores its share of the probes; every rank ends with the whole assessment; rank 0
  // saves it.
  auto a = assess_sharded(*suite_, *scorer_, assess_options_, *group_);
  if (main_rank_) safety::save_assessment(a, out() / "assessments" / (label + ".json"));
  return a;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

StageOutcome train_stage(TwoStageRun& run, train::Trainer& trainer) {
  trainer.set_dist(run.group());
  run.session().model().train();
  run.session().adapters().train(true);
  StageOutcome o;
  o.status = trainer.run(run.resume());
  o.steps = trainer.step();
  o.interrupt_signal = trainer.interrupt_signal();
  return o;
}

StageOutcome train_safety_adapter(TwoStageRun& run) {
  const auto t0 = std::chrono::steady_clock::now();
  const auto& cfg = run.config();
  auto& session = run.session();
  auto& adapters = session.adapters();
  adapters.add("safety", cfg.stage1.lora, lora::AdapterRole::safety, /*trainable=*/true);
  data::DataLoader loader(cfg.stage1.data, session.tokenizer(), session.chat_template());
  train::TrainerHooks hooks;
  hooks.micro_step = [&](train::Trainer&, std::int64_t cursor) {
    auto b = loader.batch(cursor);
    return train::MicroStep{train::response_lm_loss(session.model(), b), {}, b.supervised_tokens};
  };
  train::Trainer trainer(cfg.stage1.train, adapters.trainable_parameters(), run.out() / "stage1",
                         hooks);
  StageOutcome o = train_stage(run, trainer);
  if (o.status == train::TrainStatus::interrupted) return o;
  adapters.set_trainable("safety", false);
  adapters.set_required_at_inference("safety", true);
  if (run.main_rank())
    adapters.save_peft("safety", run.out() / "adapters" / "safety", cfg.model.path);
  o.seconds = seconds_since(t0);
  o.assessment = run.assess("aligned");
  return o;
}

StageOutcome load_safety_adapter(TwoStageRun& run,
                                 const std::optional<safety::Assessment>& aligned) {
  auto& adapters = run.session().adapters();
  adapters.load_peft(run.config().stage2.safety_adapter, "safety");
  adapters.set_required_at_inference("safety", true);
  StageOutcome o;
  o.assessment = aligned ? aligned : run.assess("aligned");
  return o;
}

bool note_interrupted(TwoStageResult& r, const StageOutcome& stage, const std::string& name,
                      const train::TrainSection& train, const fs::path& stage_dir) {
  if (stage.status != train::TrainStatus::interrupted) return false;
  r.interrupted_signal = stage.interrupt_signal;
  r.interrupted_stage = name;
  r.interrupted_step = stage.steps;
  log_warn("run interrupted by " +
           std::string(r.interrupted_signal == SIGINT ? "SIGINT" : "SIGTERM") + " during " + name +
           " at step " + std::to_string(stage.steps) + " of " + std::to_string(train.max_steps) +
           ": checkpoint saved in " + (stage_dir / "checkpoints").string() +
           "; no adapter, report or release written; continue with --resume");
  return true;
}

}  // namespace safetune::recipes
