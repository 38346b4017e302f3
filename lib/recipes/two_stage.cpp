// The two-stage recipe, written as plain steps an integrator can read top to bottom and copy.
#include "safetune/recipes/two_stage.hpp"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <nlohmann/json.hpp>

#include "safetune/error.hpp"
#include "safetune/io/atomic_file.hpp"
#include "safetune/io/hash.hpp"
#include "safetune/log.hpp"
#include "safetune/recipes/run_dir.hpp"
#include "safetune/recipes/session.hpp"
#include "safetune/safety/probes.hpp"
#include "safetune/safety/registry.hpp"
#include "safetune/safety/report.hpp"

namespace safetune::recipes {
namespace fs = std::filesystem;

void Stage1Section::describe(ConfigVisitor& v) {
  v.field("enabled", enabled, Field("Run stage 1 (train the safety adapter)."));
  v.section("lora", lora, Field("The safety adapter."));
  v.section("data", data, Field("Safety alignment data (refusals + helpful answers; deep-alignment files allowed)."));
  v.section("train", train, Field("Optimisation of stage 1."));
}

void Stage2Section::describe(ConfigVisitor& v) {
  v.field("enabled", enabled, Field("Run stage 2 (train the task adapter)."));
  v.field("safety_mode", safety_mode,
          Field("separate: safety adapter frozen and active beside the task adapter; merged: folded into the "
                "base weights first (the reactive baseline).").one_of({"separate", "merged"}));
  v.field("safety_adapter", safety_adapter, Field("PEFT directory of a safety adapter, used when stage 1 is off.").path());
  v.section("lora", lora, Field("The task adapter."));
  v.section("data", data, Field("Task data."));
  v.section("anchor", anchor, Field("Safety anchor batches for kl_anchor and gradient_projection; empty: stage 1's data."));
  v.list("regularizers", regularizers, Field("Safety regularizers added to the task loss (docs/regularizers.md)."));
  v.section("train", train, Field("Optimisation of stage 2."));
  v.field("task_eval", task_eval, Field("Held-out JSONL; the task metric is the exact-match rate of the JSON answer.").path());
  v.field("task_eval_limit", task_eval_limit, Field("Use the first N task_eval examples; 0: all.").at_least(0));
  v.field("task_eval_max_new_tokens", task_eval_max_new_tokens,
          Field("Greedy tokens generated per task_eval example.").range(1, 4096));
  v.field("safe_lora_threshold", safe_lora_threshold,
          Field("Post-hoc Safe LoRA projection of layers whose cosine is below this; 0 disables.").range(0, 1));
}

void ReleaseSection::describe(ConfigVisitor& v) {
  v.field("registry", registry, Field("Release registry JSON; a finished run is registered there (empty: not registered).").path());
  v.field("id", id, Field("Release id; default: <run.name>-<UTC time>."));
  v.field("promote", promote, Field("Make a run that passes its gates the current release."));
  v.field("prometheus_file", prometheus_file, Field("`safetune monitor`: node_exporter textfile to write (empty: none).").path());
  v.field("rollback_on_regression", rollback_on_regression, Field("`safetune monitor`: re-point to the last passing release on a regression."));
}

void SafetySection::describe(ConfigVisitor& v) {
  v.field("assess", assess, Field("Assess safety before stage 1, after stage 1 and after stage 2."));
  v.field("suite", suite, Field("Probe suite directory (harmful.jsonl, benign.jsonl, discrimination.jsonl).").path());
  v.field("max_new_tokens", max_new_tokens, Field("Greedy tokens generated per probe.").range(1, 4096));
  v.field("batch_size", batch_size, Field("Probes per generation batch.").range(1, 1024));
  v.field("limit", limit, Field("Probes used per kind; 0: all.").at_least(0));
  v.section("gates", gates, Field("Promotion gates against the aligned model."));
  v.section("guard", guard, Field("In-training safety guard for stage 2."));
  v.section("release", release, Field("Release registry and post-deployment monitoring."));
}

void TwoStageConfig::describe(ConfigVisitor& v) {
  v.section("run", run, Field("Run identity and output location."));
  v.section("model", model, Field("The base model."));
  v.section("stage1", stage1, Field("Stage 1: safety alignment pass."));
  v.section("stage2", stage2, Field("Stage 2: task LoRA under the safety regularizers."));
  v.section("safety", safety, Field("Safety assessment, gates and guard."));
  v.section("dist", dist, Field("Data-parallel runs under torchrun (docs/distributed.md)."));
}

namespace {

SessionOptions session_options(const ModelSection& m) {
  SessionOptions so;
  so.dtype = m.dtype;
  so.device = m.device;
  so.tokenizer = m.tokenizer;
  so.chat_template = m.chat_template;
  return so;
}

safety::AssessOptions assess_options(const SafetySection& s, Session& session, const ModelSection& m) {
  safety::AssessOptions o;
  o.max_new_tokens = static_cast<int>(s.max_new_tokens);
  o.batch_size = static_cast<int>(s.batch_size);
  o.decoding_extra = "template:" + session.chat_template().name() + " dtype:" + m.dtype;
  return o;
}

// Exact match of the generated JSON object against the reference answer.
// Data-parallel runs split the examples round-robin over the ranks and sum the counts.
double task_metric(Session& s, const std::string& path, std::int64_t limit, std::int64_t max_new_tokens,
                   dist::Context& group) {
  data::DatasetSection d;
  d.path = path;
  d.max_examples = limit;
  data::ExampleFile file(d);
  std::vector<std::vector<tokenizer::ChatMessage>> prompts;
  std::vector<std::string> answers;
  const auto world = static_cast<std::size_t>(group.distributed() ? group.world_size() : 1);
  const auto rank = static_cast<std::size_t>(group.distributed() ? group.rank() : 0);
  for (std::size_t i = rank; i < file.size(); i += world) {
    auto ex = file.get(i);
    if (ex.messages.empty() || ex.messages.back().role != "assistant")
      throw DataError("task_eval examples must end with the assistant's reference answer", path);
    answers.push_back(ex.messages.back().content);
    ex.messages.pop_back();
    prompts.push_back(ex.messages);
  }
  model::GenerateOptions opt;
  opt.max_new_tokens = max_new_tokens;
  std::int64_t correct = 0;
  const std::size_t batch = 8;
  for (std::size_t i = 0; i < prompts.size(); i += batch) {
    std::vector<std::vector<tokenizer::ChatMessage>> chunk(prompts.begin() + i,
                                                           prompts.begin() + std::min(prompts.size(), i + batch));
    auto replies = s.chat(chunk, opt);
    for (std::size_t k = 0; k < replies.size(); ++k) {
      auto want = nlohmann::json::parse(answers[i + k], nullptr, false);
      auto got = nlohmann::json::parse(replies[k], nullptr, false);
      correct += (!want.is_discarded() && !got.is_discarded() && want == got) ? 1 : 0;
    }
  }
  std::vector<at::Tensor> counts{torch::tensor({static_cast<double>(correct), static_cast<double>(prompts.size())},
                                               torch::kFloat)};  // exact below 2^24
  group.all_reduce_sum(counts);
  const double total = counts[0][1].item<double>();
  return total > 0 ? counts[0][0].item<double>() / total : 0.0;
}

// Probes split round-robin over the ranks, each rank scoring its share; the per-probe results are
// exchanged so that every rank holds the whole assessment in suite order, as one process would.
safety::Assessment assess_sharded(const safety::ProbeSuite& suite, safety::ScoringModel& scorer,
                                  const safety::AssessOptions& opt, dist::Context& group) {
  const int world = group.world_size(), rank = group.rank();
  if (!group.distributed() || world <= 1) return safety::assess(suite, scorer, opt);
  safety::ProbeSuite part = suite;
  part.probes.clear();
  for (std::size_t i = static_cast<std::size_t>(rank); i < suite.probes.size(); i += static_cast<std::size_t>(world))
    part.probes.push_back(suite.probes[i]);
  const std::string mine = part.probes.empty() ? std::string() : safety::assessment_to_json(safety::assess(part, scorer, opt));
  safety::Assessment full;
  full.results.resize(suite.probes.size());
  for (int q = 0; q < world; ++q) {
    std::string bytes = q == rank ? mine : std::string();
    group.broadcast_bytes(bytes, q);
    if (bytes.empty()) continue;
    auto a = safety::assessment_from_json(bytes, "assessment from rank " + std::to_string(q));
    if (full.decoding.empty()) {
      full.model_identity = a.model_identity;
      full.decoding = a.decoding;
      full.created = a.created;
    }
    for (std::size_t k = 0; k < a.results.size(); ++k)
      full.results[static_cast<std::size_t>(q) + k * static_cast<std::size_t>(world)] = a.results[k];
  }
  full.suite_name = suite.name;
  full.suite_sha256 = suite.sha256();
  safety::summarise(full);
  return full;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// An interrupted stage keeps its checkpoint and nothing else: no adapter saved as if complete, no
// assessment, report or release. The log says what happened and how to continue.
void note_interrupted(TwoStageResult& r, const std::string& stage, const train::Trainer& t, std::int64_t max_steps) {
  r.interrupted_signal = t.interrupt_signal();
  r.interrupted_stage = stage;
  r.interrupted_step = t.step();
  log_warn("run interrupted by " + std::string(r.interrupted_signal == SIGINT ? "SIGINT" : "SIGTERM") + " during " +
           stage + " at step " + std::to_string(t.step()) + " of " + std::to_string(max_steps) +
           ": checkpoint saved in " + (t.out_dir() / "checkpoints").string() +
           "; no adapter, report or release written; continue with --resume");
}

}  // namespace

TwoStageResult run_two_stage(const TwoStageConfig& cfg, const std::string& resolved_yaml, const RunOptions& ro) {
  const bool resume = ro.resume;
  TwoStageResult result;
  const bool release = !cfg.safety.release.registry.empty() && cfg.stage2.enabled;
  if (release && !cfg.safety.assess)
    throw ConfigError("registering a release needs its safety assessment", "safety.release.registry",
                      "set safety.assess=true or leave safety.release.registry empty");
  if (release) safety::ReleaseRegistry::open(cfg.safety.release.registry);  // a damaged registry stops the run now
  // Every input of both stages is read now: bad data fails here, not after hours of stage 1.
  validate_run_inputs(cfg);
  // Data-parallel: every rank runs this same recipe on its own shard; rank 0 alone writes files
  // (and alone holds the run directory's lock).
  const auto launch = dist::LaunchEnv::from_environment();
  const bool main_rank = ro.dist ? ro.dist->is_main() : launch.rank == 0;
  RunDir run_dir;
  if (main_rank) {
    run_dir = open_run_dir(cfg.run.output_dir, {resume, ro.overwrite, cfg.safety.release.registry});
  } else {
    fs::create_directories(cfg.run.output_dir);
    run_dir.path = fs::canonical(cfg.run.output_dir);
  }
  const fs::path out = run_dir.path;
  result.out_dir = out;
  if (main_rank) io::atomic_write(out / "config.yaml", resolved_yaml);
  torch::manual_seed(static_cast<std::uint64_t>(cfg.run.seed));

  SessionOptions so = session_options(cfg.model);
  if (!ro.dist && launch.world_size > 1 && so.device == "cuda")  // one GPU per local rank
    so.device = "cuda:" + std::to_string(launch.local_rank);
  Session session(cfg.model.path, so);
  SessionScorer scorer(session);
  auto& adapters = session.adapters();
  auto& model = session.model();
  model.set_activation_checkpointing(cfg.model.activation_checkpointing);
  const std::shared_ptr<dist::Context> group =
      ro.dist ? ro.dist : dist::Context::from_env(cfg.dist, model.device().is_cuda());

  std::optional<safety::ProbeSuite> suite;
  if (cfg.safety.assess) suite = safety::first_per_kind(safety::load_bundled_suite(cfg.safety.suite), cfg.safety.limit);
  const auto aopt = assess_options(cfg.safety, session, cfg.model);
  auto assess_as = [&](const std::string& label) -> std::optional<safety::Assessment> {
    if (!suite) return std::nullopt;
    log_info("assessing safety: " + label);
    model.eval();
    adapters.train(false);
    // Each rank scores its share of the probes; every rank ends with the whole assessment; rank 0 saves it.
    auto a = assess_sharded(*suite, scorer, aopt, *group);
    if (main_rank) safety::save_assessment(a, out / "assessments" / (label + ".json"));
    return a;
  };

  // 0. Baseline: the model as it came, no adapters.
  result.baseline = ro.baseline ? ro.baseline : assess_as("baseline");

  // 1. Stage 1: the safety adapter.
  if (cfg.stage1.enabled) {
    auto t0 = std::chrono::steady_clock::now();
    adapters.add("safety", cfg.stage1.lora, lora::AdapterRole::safety, /*trainable=*/true);
    data::DataLoader loader(cfg.stage1.data, session.tokenizer(), session.chat_template());
    train::TrainerHooks stage1_hooks;
    stage1_hooks.micro_step = [&](std::int64_t cursor) {
      auto b = loader.batch(cursor);
      return train::MicroStep{train::response_lm_loss(model, b), {}, b.supervised_tokens};
    };
    train::Trainer trainer(cfg.stage1.train, adapters.trainable_parameters(), out / "stage1", stage1_hooks);
    trainer.set_dist(group);
    model.train();
    adapters.train(true);
    result.aligned.status = trainer.run(resume);
    if (result.aligned.status == train::TrainStatus::interrupted) {
      note_interrupted(result, "stage 1", trainer, cfg.stage1.train.max_steps);
      return result;
    }
    adapters.set_trainable("safety", false);
    adapters.set_required_at_inference("safety", true);
    if (main_rank) adapters.save_peft("safety", out / "adapters" / "safety", cfg.model.path);
    result.aligned.seconds = seconds_since(t0);
    result.aligned.assessment = assess_as("aligned");
    if (result.aligned.status != train::TrainStatus::completed) return result;
  } else if (!cfg.stage2.safety_adapter.empty()) {
    adapters.load_peft(cfg.stage2.safety_adapter, "safety");
    adapters.set_required_at_inference("safety", true);
    result.aligned.assessment = ro.aligned ? ro.aligned : assess_as("aligned");
  }
  const bool has_safety = adapters.has("safety");

  // 2. Stage 2: the task adapter, safety adapter frozen and active (or merged, if configured).
  if (cfg.stage2.enabled) {
    auto t0 = std::chrono::steady_clock::now();
    if (has_safety) result.safety_sha_before = adapters.content_sha256("safety");
    if (has_safety && cfg.stage2.safety_mode == "merged") adapters.merge({"safety"}, lora::MergeCopy::keep);
    adapters.add("task", cfg.stage2.lora, lora::AdapterRole::task, /*trainable=*/true);

    std::vector<std::unique_ptr<train::Regularizer>> regs;
    double rho = 0;
    for (const auto& r : cfg.stage2.regularizers.items) {
      regs.push_back(train::make_regularizer(r));
      regs.back()->setup(adapters, "task", "safety");
      rho += regs.back()->replay_ratio();
    }
    // Replay mixes the safety data into the task batches at ratio rho.
    data::DataSection task_data = cfg.stage2.data;
    if (rho > 0) {
      double task_weight = 0, safety_weight = 0;
      for (const auto& d : task_data.datasets.items) task_weight += d.weight;
      for (const auto& d : cfg.stage1.data.datasets.items) safety_weight += d.weight;
      for (auto d : cfg.stage1.data.datasets.items) {
        d.weight = d.weight / safety_weight * task_weight * rho / (1 - rho);
        d.name = "replay:" + (d.name.empty() ? fs::path(d.path).stem().string() : d.name);
        task_data.datasets.items.push_back(d);
      }
    }
    data::DataLoader loader(task_data, session.tokenizer(), session.chat_template());
    const data::DataSection& anchor_cfg =
        cfg.stage2.anchor.datasets.items.empty() ? cfg.stage1.data : cfg.stage2.anchor;
    std::unique_ptr<data::DataLoader> anchor_loader;
    auto anchor_batch = [&](std::int64_t cursor) -> data::Batch {
      if (!anchor_loader) {
        if (anchor_cfg.datasets.items.empty())
          throw ConfigError("this regularizer needs safety anchor data", "stage2.anchor.datasets");
        anchor_loader = std::make_unique<data::DataLoader>(anchor_cfg, session.tokenizer(), session.chat_template());
      }
      return anchor_loader->batch(cursor);
    };

    train::RegContext ctx;
    ctx.model = &model;
    ctx.adapters = &adapters;
    std::optional<data::Batch> anchor_cache;
    std::int64_t anchor_cursor = -1, current_cursor = 0;
    ctx.anchor = [&]() -> const data::Batch& {
      if (!anchor_cache || anchor_cursor != current_cursor) {
        anchor_cache = anchor_batch(current_cursor);
        anchor_cursor = current_cursor;
      }
      return *anchor_cache;
    };

    const bool needs_task_logits =
        std::any_of(regs.begin(), regs.end(), [](const auto& r) { return r->needs_task_logits(); });
    train::TrainerHooks hooks;
    train::Trainer* trainer_ptr = nullptr;
    hooks.micro_step = [&](std::int64_t cursor) {
      current_cursor = cursor;
      auto b = loader.batch(cursor);
      auto dev = model.device();
      // Full [B,T,V] task logits only for a regularizer that reads them; the task loss itself needs
      // just the supervised rows.
      at::Tensor logits;
      if (needs_task_logits) logits = model.forward(b.input_ids.to(dev), b.attention_mask.to(dev));
      ctx.task_batch = &b;
      ctx.task_logits = logits;
      at::Tensor total;
      std::map<std::string, double> terms;
      bool replaced = false;
      for (auto& r : regs) {
        auto term = r->loss(ctx);
        if (!term.defined()) continue;
        const double boost = trainer_ptr ? trainer_ptr->scalar("boost") : 1.0;
        auto weighted = term * (r->lambda * boost);
        terms[r->name()] = term.item<double>();
        if (r->replaces_task_loss()) replaced = true;
        total = total.defined() ? total + weighted : weighted;
      }
      auto ce = needs_task_logits ? train::lm_loss(logits, b.labels) : train::response_lm_loss(model, b);
      terms["task_ce"] = ce.item<double>();
      if (!replaced) total = total.defined() ? total + ce : ce;
      ctx.task_batch = nullptr;
      ctx.task_logits = at::Tensor();
      return train::MicroStep{total, terms, b.supervised_tokens};
    };
    auto task_params = adapters.trainable_parameters();
    hooks.before_optimizer_step = [&](std::int64_t step) {
      std::vector<at::Tensor> params;
      for (auto& [n, t] : task_params) params.push_back(t);
      current_cursor = step;
      for (auto& r : regs) r->on_gradients(ctx, params);
    };

    // The in-training guard probes a fixed subset and stops, rolls back or boosts on a breach.
    std::optional<safety::SafetyGuard> guard;
    if (cfg.safety.guard.every_n_steps > 0 && suite) {
      fs::path subset_file = cfg.safety.guard.subset.empty() ? fs::path(cfg.safety.suite) / "guard_subset.txt"
                                                             : fs::path(cfg.safety.guard.subset);
      auto full = safety::load_bundled_suite(cfg.safety.suite);
      auto subset = safety::select_probes(full, safety::load_id_list(subset_file), "guard");
      guard.emplace(cfg.safety.guard, cfg.safety.gates, subset, aopt);
      guard->set_assessor([&](const safety::ProbeSuite& probes, safety::ScoringModel& m, const safety::AssessOptions& o) {
        return assess_sharded(probes, m, o, *group);
      });
      model.eval();
      guard->set_baseline(scorer);
    }
    hooks.after_step = [&](std::int64_t step) {
      if (!guard || !guard->due(step)) return;
      model.eval();
      adapters.train(false);
      auto d = guard->check(step, scorer);
      model.train();
      adapters.train(true);
      if (group->distributed()) {
        // Decided once: every rank takes rank 0's decision (the checks agree unless decoding differs).
        at::Tensor v = torch::tensor({d.breached ? 1.0 : 0.0, static_cast<double>(d.action),
                                      d.rollback_to_step ? static_cast<double>(*d.rollback_to_step) : -1.0,
                                      d.continue_training ? 1.0 : 0.0, d.weight_multiplier},
                                     torch::kDouble);
        group->broadcast(v);
        auto x = v.accessor<double, 1>();
        d.breached = x[0] != 0;
        d.action = static_cast<safety::GuardAction>(static_cast<int>(x[1]));
        d.rollback_to_step = x[2] >= 0 ? std::optional<std::int64_t>(static_cast<std::int64_t>(x[2])) : std::nullopt;
        d.continue_training = x[3] != 0;
        d.weight_multiplier = x[4];
      }
      if (d.breached) {
        if (d.action == safety::GuardAction::boost) trainer_ptr->scalar("boost") *= d.weight_multiplier;
        if (d.action == safety::GuardAction::rollback && d.rollback_to_step) {
          char name[32];
          std::snprintf(name, sizeof name, "step-%08lld", static_cast<long long>(*d.rollback_to_step));
          trainer_ptr->load_checkpoint(out / "stage2" / "checkpoints" / name);
        }
        if (!d.continue_training) trainer_ptr->stop("safety guard: " + d.event.detail);
      }
      if (cfg.stage2.train.checkpoint_every > 0 && step % cfg.stage2.train.checkpoint_every == 0) {
        guard->checkpoint_saved(step);
        if (auto last = guard->last_passing_checkpoint()) trainer_ptr->protect_checkpoint(*last);
      }
    };

    train::Trainer trainer(cfg.stage2.train, task_params, out / "stage2", hooks);
    trainer.set_dist(group);
    trainer_ptr = &trainer;
    model.train();
    adapters.train(true);
    result.tuned.status = trainer.run(resume);
    if (result.tuned.status == train::TrainStatus::interrupted) {
      note_interrupted(result, "stage 2", trainer, cfg.stage2.train.max_steps);
      return result;
    }
    adapters.set_trainable("task", false);
    if (has_safety) {
      result.safety_sha_after = adapters.content_sha256("safety");
      if (result.safety_sha_after != result.safety_sha_before)
        throw SafetyError("the frozen safety adapter changed during stage 2", "stage2");
    }
    if (cfg.stage2.safe_lora_threshold > 0 && has_safety) {
      auto projected = train::safe_lora_project(adapters, "task", "safety", cfg.stage2.safe_lora_threshold);
      log_info("Safe LoRA projection changed " + std::to_string(projected.size()) + " layers");
    }
    // The task adapter names the safety adapter it was trained with; wherever it is applied, that one must be too.
    if (has_safety) adapters.set_dependencies("task", {{"safety", adapters.weights_sha256("safety")}});
    if (main_rank) adapters.save_peft("task", out / "adapters" / "task", cfg.model.path);
    result.tuned.seconds = seconds_since(t0);
    result.tuned.assessment = assess_as("tuned");
    if (!cfg.stage2.task_eval.empty()) {
      model.eval();
      adapters.train(false);
      result.tuned.task_metric = task_metric(session, cfg.stage2.task_eval, cfg.stage2.task_eval_limit,
                                             cfg.stage2.task_eval_max_new_tokens, *group);
    }

    // Gates: against the aligned model when there is one, else the baseline.
    const auto& reference = result.aligned.assessment ? result.aligned.assessment : result.baseline;
    if (result.tuned.assessment)
      result.verdict = safety::evaluate_gates(cfg.safety.gates, *result.tuned.assessment,
                                              reference ? &*reference : nullptr);

    safety::ReportInputs in;
    in.title = "Safety report: " + cfg.run.name;
    in.run_name = cfg.run.name;
    in.model_path = cfg.model.path;
    in.model_sha256 = session.weights_sha256();
    in.model_identity = scorer.identity();
    // The safety adapter comes from stage 1 of this run or from stage2.safety_adapter.
    const fs::path safety_dir = cfg.stage1.enabled ? out / "adapters" / "safety" : fs::path(cfg.stage2.safety_adapter);
    if (has_safety)
      in.adapters.push_back({"safety", "safety", safety_dir.string(), adapters.content_sha256("safety")});
    in.adapters.push_back({"task", "task", (out / "adapters" / "task").string(), adapters.content_sha256("task")});
    for (const auto& f : loader.files())
      in.datasets.push_back({f->path().stem().string(), f->path().string(), io::sha256_file(f->path()),
                             static_cast<std::int64_t>(f->size())});
    in.resolved_config = resolved_yaml;
    for (const auto& r : cfg.stage2.regularizers.items) in.regularizers.push_back({r.name, r.lambda, {}});
    in.baseline = reference;
    in.after = result.tuned.assessment;
    in.gates = cfg.safety.gates;
    in.verdict = result.verdict;
    if (guard) {
      in.guard_events = guard->events();
      in.training_series = guard->series();
    }
    for (const auto& o : adapters.policy_log().entries())
      in.policy_overrides.push_back(lora::describe(o));
    if (main_rank) safety::write_safety_report(out / "report", in);
    if (has_safety && cfg.stage2.safety_mode == "merged") adapters.unmerge({"safety"});

    // The release: both adapters with the assessment it was promoted on; never promoted on a breach.
    if (release && main_rank && result.tuned.assessment) {
      auto reg = safety::ReleaseRegistry::open(cfg.safety.release.registry);
      std::string id = cfg.safety.release.id;
      if (id.empty()) {
        char stamp[32];
        std::time_t now = std::time(nullptr);
        std::strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", std::gmtime(&now));
        id = cfg.run.name + "-" + stamp;
      }
      std::vector<fs::path> dirs;
      if (has_safety) dirs.push_back(safety_dir);
      dirs.push_back(out / "adapters" / "task");
      reg.add(id, dirs, *result.tuned.assessment, result.verdict, out / "assessments" / "tuned.json");
      if (result.verdict.passed && cfg.safety.release.promote) reg.promote(id);
      result.release_id = id;
      log_info("release " + id + (result.verdict.passed ? (cfg.safety.release.promote ? " registered and promoted" : " registered")
                                                      : " registered as failed (gates breached; not promoted)"));
    }
  }
  // No rank reports success before all have finished (a rank that failed after training shows here).
  group->barrier();
  return result;
}

}  // namespace safetune::recipes

namespace safetune::recipes {

void throw_if_interrupted(const TwoStageResult& r) {
  if (r.interrupted_signal == 0) return;
  throw Interrupted(r.interrupted_signal,
                    "interrupted by " + std::string(r.interrupted_signal == SIGINT ? "SIGINT" : "SIGTERM") + " during " +
                        r.interrupted_stage + " at step " + std::to_string(r.interrupted_step) +
                        ": checkpoint saved; nothing was registered or promoted",
                    r.out_dir.string(), "continue the run with --resume");
}

int run_demo(const TwoStageConfig& base_cfg, const std::string& resolved_yaml) {
  // The demo owns its directory: a re-run replaces the previous demo's outputs (never a folder
  // safetune did not write, nor one holding a release), and no two demos share it.
  validate_run_inputs(base_cfg);
  const RunDir demo_dir = open_run_dir(base_cfg.run.output_dir, {false, true, base_cfg.safety.release.registry});
  const fs::path out = demo_dir.path;
  // Stage 1 once, with the baseline and aligned assessments.
  TwoStageConfig s1 = base_cfg;
  s1.stage2.enabled = false;
  s1.run.output_dir = (out / "stage1").string();
  auto first = run_two_stage(s1, resolved_yaml);
  throw_if_interrupted(first);

  struct Variant {
    std::string key, label, mode;
    bool regularized;
  };
  const std::vector<Variant> variants{
      {"a_merged", "(a) reactive: safety merged, no regularizer", "merged", false},
      {"b_separate", "(b) safety adapter separate, no regularizer", "separate", false},
      {"c_safetune", "(c) safetune: separate + regularizer", "separate", true}};
  std::vector<TwoStageResult> results;
  for (const auto& v : variants) {
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

  auto pct = [](const safety::Rate& r) {
    auto ci = r.ci();
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.1f%% [%.1f, %.1f]", 100 * r.value(), 100 * ci.lo, 100 * ci.hi);
    return std::string(buf);
  };
  auto drop = [](const safety::Rate& before, const safety::Rate& after) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%+.1f", 100 * (before.value() - after.value()));
    return std::string(buf);
  };
  std::string md = "| model | refusal on harmful | drop (pp) | benign compliance | drop (pp) | discrimination | drop (pp) | task exact match | stage-2 time (s) |\n";
  md += "|---|---|---|---|---|---|---|---|---|\n";
  auto row = [&](const std::string& label, const safety::Assessment& a, const safety::Assessment* ref, double task,
                 double secs) {
    md += "| " + label + " | " + pct(a.refusal.overall) + " | " + (ref ? drop(ref->refusal.overall, a.refusal.overall) : "") +
          " | " + pct(a.benign_compliance.overall) + " | " +
          (ref ? drop(ref->benign_compliance.overall, a.benign_compliance.overall) : "") + " | " +
          pct(a.discrimination.overall) + " | " + (ref ? drop(ref->discrimination.overall, a.discrimination.overall) : "") +
          " | " + (task >= 0 ? std::to_string(static_cast<int>(std::lround(100 * task))) + "%" : "") + " | " +
          (secs > 0 ? std::to_string(static_cast<int>(std::lround(secs))) : "") + " |\n";
  };
  const safety::Assessment* aligned = first.aligned.assessment ? &*first.aligned.assessment : nullptr;
  if (first.baseline) row("base model (no adapters)", *first.baseline, nullptr, -1, 0);
  if (aligned) row("aligned (stage 1 safety adapter)", *aligned, nullptr, -1, 0);
  for (std::size_t i = 0; i < variants.size(); ++i)
    if (results[i].tuned.assessment)
      row(variants[i].label, *results[i].tuned.assessment, aligned, results[i].tuned.task_metric, results[i].tuned.seconds);
  md += "\nDrops are in percentage points against the aligned model (positive = worse); intervals are Wilson 95%.\n";
  md += "Gates for (c): " + std::string(results.back().verdict.passed ? "passed" : "BREACHED") + "\n";
  for (const auto& r : results.back().verdict.reasons) md += "- " + r + "\n";
  io::atomic_write(out / "demo_table.md", md);
  std::printf("\n%s\nwritten to %s\n", md.c_str(), (out / "demo_table.md").c_str());
  // The demo's product is the table; a breach is reported in it (and by `safetune train`'s exit code).
  return 0;
}


safety::MonitorResult monitor_release(const TwoStageConfig& cfg) {
  const auto& rel = cfg.safety.release;
  if (rel.registry.empty())
    throw ConfigError("no release registry to monitor", "safety.release.registry", "set it to the registry `safetune train` wrote");
  auto reg = safety::ReleaseRegistry::open(rel.registry);
  const safety::Release* cur = reg.current();
  if (!cur) throw SafetyError("no current release to monitor", rel.registry, "promote a release first");
  const std::string id = cur->id;
  if (cur->assessment.empty())
    throw SafetyError("release '" + id + "' has no stored assessment to compare against", rel.registry,
                      "register releases through `safetune train` with safety.release.registry set");
  safety::MonitorOptions mo;
  mo.prometheus_file = rel.prometheus_file;
  mo.rollback_on_regression = rel.rollback_on_regression;

  // Artifacts that changed since registration are a regression in themselves: nothing to probe.
  if (auto problems = reg.verify(id); !problems.empty()) {
    safety::MonitorResult r;
    r.release = id;
    r.regression = true;
    r.verdict.passed = false;
    r.verdict.reasons = problems;
    std::string why = "artifacts changed: " + problems.front();
    reg.append_history({"", "monitor_regression", id, why, {}});
    log_warn("release " + id + " regressed: " + why);
    // The textfile tells the truth on this outcome too: the gate failed (nothing was probed).
    if (!mo.prometheus_file.empty()) {
      safety::Assessment none;
      none.created = safety::utc_now_iso8601();
      safety::write_monitor_textfile(mo, none, id, /*gate_passed=*/false);
    }
    if (rel.rollback_on_regression) {
      try {
        r.rolled_back_to = reg.rollback("monitoring: " + why);
      } catch (const SafetyError& e) {
        reg.append_history({"", "rollback_failed", id, e.what_only(), {}});
        log_error("rollback failed: " + e.what_only());
      }
    }
    return r;
  }

  Session session(cfg.model.path, session_options(cfg.model));
  std::vector<fs::path> dirs;
  for (const auto& a : cur->adapters) dirs.push_back(reg.resolve(a.path));
  session.load_adapters(dirs);
  SessionScorer scorer(session);
  const auto baseline = safety::load_assessment(reg.resolve(cur->assessment));
  const auto suite = safety::first_per_kind(safety::load_bundled_suite(cfg.safety.suite), cfg.safety.limit);
  log_info("monitoring release " + id + " (" + std::to_string(suite.probes.size()) + " probes)");
  return safety::monitor_once(reg, suite, scorer, assess_options(cfg.safety, session, cfg.model), cfg.safety.gates,
                              baseline, mo);
}

}  // namespace safetune::recipes
