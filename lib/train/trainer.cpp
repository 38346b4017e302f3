// Trainer: the optimisation loop, checkpoints (torch archives written through AtomicFile) and
// resume.
#include "safetune/train/trainer.hpp"

#include <sys/resource.h>
#include <torch/torch.h>

#include <atomic>
#include <cmath>
#include <csignal>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numbers>
#include <regex>

#include "safetune/dist/context.hpp"
#include "safetune/error.hpp"
#include "safetune/io/atomic_file.hpp"
#include "safetune/log.hpp"
#include "safetune/train/autocast.hpp"
#include "safetune/train/tensorboard.hpp"

namespace safetune::train {
namespace fs = std::filesystem;

void TrainSection::describe(ConfigVisitor& v) {
  v.field("max_steps", max_steps, Field("Optimizer steps to run.").range(1, 1e9));
  v.field("lr", lr, Field("Peak learning rate (AdamW).").range(0, 10));
  v.field("weight_decay", weight_decay, Field("AdamW decoupled weight decay.").range(0, 10));
  v.field("beta1", beta1, Field("AdamW beta1.").range(0, 0.999999));
  v.field("beta2", beta2, Field("AdamW beta2.").range(0, 0.999999));
  v.field("eps", eps, Field("AdamW epsilon.").range(1e-12, 1));
  v.field("schedule", schedule,
          Field("Learning-rate schedule after warmup.").one_of({"constant", "linear", "cosine"}));
  v.field("warmup_steps", warmup_steps, Field("Linear warmup steps from 0 to lr.").at_least(0));
  v.field("min_lr_ratio", min_lr_ratio,
          Field("Final learning rate as a fraction of lr (linear and cosine).").range(0, 1));
  v.field("grad_accum", grad_accum,
          Field("Micro-batches accumulated per optimizer step.").range(1, 1 << 16));
  v.field("max_grad_norm", max_grad_norm,
          Field("Global gradient-norm clip; 0 disables.").at_least(0));
  v.field(
      "checkpoint_every", checkpoint_every,
      Field("Save a checkpoint every N steps (0: only at the end and on interrupt).").at_least(0));
  v.field("keep_last", keep_last,
          Field("Checkpoints kept (older ones are deleted).").range(1, 1000));
  v.field("eval_every", eval_every, Field("Evaluate every N steps; 0 disables.").at_least(0));
  v.field("log_every", log_every, Field("Write a metrics line every N steps.").range(1, 1e9));
  v.field("tensorboard", tensorboard,
          Field("Also write every metrics line to a TensorBoard event file (events.out.tfevents.*) "
                "beside "
                "metrics.jsonl, for `tensorboard --logdir runs/`."));
  v.field(
      "precision", precision,
      Field(
          "auto: bf16 autocast on CUDA, fp32 on CPU; bf16: bf16 autocast on the parameters' device "
          "(CUDA or CPU); fp32: no autocast. Adapter weights and optimizer state stay fp32.")
          .one_of({"auto", "fp32", "bf16"}));
}

double lr_at(const TrainSection& c, std::int64_t step) {
  if (c.warmup_steps > 0 && step < c.warmup_steps)
    return c.lr * static_cast<double>(step + 1) / static_cast<double>(c.warmup_steps);
  if (c.schedule == "constant") return c.lr;
  const double span = static_cast<double>(std::max<std::int64_t>(1, c.max_steps - c.warmup_steps));
  const double t = std::clamp(static_cast<double>(step - c.warmup_steps) / span, 0.0, 1.0);
  const double lo = c.lr * c.min_lr_ratio;
  if (c.schedule == "linear") return lo + (c.lr - lo) * (1.0 - t);
  return lo + (c.lr - lo) * 0.5 * (1.0 + std::cos(std::numbers::pi * t));  // cosine
}

namespace {
std::atomic<int> g_signal{0};
extern "C" void on_signal(int sig) { g_signal.store(sig); }

double peak_rss_mb() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / 1024.0;
}
}  // namespace

struct Trainer::Impl {
  std::unique_ptr<torch::optim::AdamW> optim;
  std::unique_ptr<MetricsWriter> metrics;
  std::unique_ptr<TensorBoardWriter> tensorboard;
};

Trainer::Trainer(TrainSection cfg, std::vector<std::pair<std::string, at::Tensor>> params,
                 fs::path out_dir, TrainerHooks hooks)
    : impl_(std::make_unique<Impl>()),
      cfg_(std::move(cfg)),
      params_(std::move(params)),
      out_dir_(std::move(out_dir)),
      hooks_(std::move(hooks)) {
  if (!hooks_.micro_step) throw Error("Trainer needs a micro_step hook", "train");
  if (params_.empty())
    throw Error("no trainable parameters", "train", "enable at least one trainable adapter");
  std::vector<torch::Tensor> tensors;
  for (const auto& [name, t] : params_) {
    if (!t.requires_grad()) throw Error("parameter does not require grad", name);
    tensors.push_back(t);
  }
  auto opts = torch::optim::AdamWOptions(cfg_.lr)
                  .betas({cfg_.beta1, cfg_.beta2})
                  .eps(cfg_.eps)
                  .weight_decay(cfg_.weight_decay);
  impl_->optim = std::make_unique<torch::optim::AdamW>(tensors, opts);
}

Trainer::~Trainer() = default;

void Trainer::stop(std::string reason) {
  stop_reason_ = reason.empty() ? "stopped" : std::move(reason);
}

double& Trainer::scalar(const std::string& name, double initial) {
  auto it = scalars_.find(name);
  if (it == scalars_.end()) it = scalars_.emplace(name, initial).first;
  return it->second;
}

std::string Trainer::checkpoint_name(std::int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step-%08lld", static_cast<long long>(step));
  return buf;
}

void Trainer::protect_checkpoint(std::int64_t step) { protected_.push_back(step); }

void Trainer::set_dist(std::shared_ptr<dist::Context> ctx) { dist_ = std::move(ctx); }

namespace {
int world_of(const std::shared_ptr<dist::Context>& d) { return d ? d->world_size() : 1; }
}  // namespace

// Rank 0 looks at its disk; every rank gets its answer ("" when there is no checkpoint).
std::string Trainer::latest_checkpoint_name() {
  std::string name;
  if (!dist_ || dist_->is_main())
    if (auto dir = latest_checkpoint()) name = dir->filename().string();
  if (dist_) dist_->broadcast_bytes(name);
  return name;
}

std::optional<fs::path> Trainer::latest_checkpoint() const {
  fs::path pointer = out_dir_ / "checkpoints" / "latest";
  std::error_code ec;
  if (!fs::exists(pointer, ec)) return std::nullopt;
  std::string name = io::read_file(pointer);
  while (!name.empty() && std::isspace(static_cast<unsigned char>(name.back()))) name.pop_back();
  fs::path dir = out_dir_ / "checkpoints" / name;
  if (!fs::exists(dir / "trainer.pt", ec))
    throw IoError("latest checkpoint points at a missing directory", dir.string());
  return dir;
}

fs::path Trainer::save_checkpoint() {
  fs::path root = out_dir_ / "checkpoints";
  fs::create_directories(root);
  const std::string name = checkpoint_name(step_);
  fs::path final_dir = root / name;
  if (dist_ && !dist_->is_main()) return final_dir;  // rank 0 writes for everyone
  fs::path tmp_dir = root / (".tmp-" + name);
  std::error_code ec;
  fs::remove_all(tmp_dir, ec);
  fs::create_directories(tmp_dir);

  torch::serialize::OutputArchive archive;
  for (const auto& [pname, t] : params_) archive.write("param." + pname, t.detach().cpu());
  torch::serialize::OutputArchive optim_archive;
  impl_->optim->save(optim_archive);
  archive.write("optimizer", optim_archive);
  archive.write("rng.cpu", at::detail::getDefaultCPUGenerator().get_state());
  if (torch::cuda::is_available()) {
    auto gen = at::globalContext().defaultGenerator(at::Device(at::kCUDA, 0));
    archive.write("rng.cuda0", gen.get_state());
  }
  {
    io::AtomicFile f(tmp_dir / "trainer.pt");
    archive.save_to([&f](const void* data, size_t n) {
      f.write(data, n);
      return n;
    });
    f.commit();
  }
  nlohmann::json state = {{"step", step_},           {"cursor", cursor_},
                          {"scalars", scalars_},     {"losses", losses_},
                          {"protected", protected_}, {"world_size", world_of(dist_)}};
  io::atomic_write(tmp_dir / "state.json", state.dump(2));
  fs::remove_all(final_dir, ec);
  fs::rename(tmp_dir, final_dir);
  io::atomic_write(root / "latest", name + "\n");

  // keep-last-K over step-* directories, sparing protected steps.
  std::vector<std::pair<std::int64_t, fs::path>> found;
  static const std::regex re("step-([0-9]{8})");
  for (const auto& e : fs::directory_iterator(root)) {
    std::smatch m;
    std::string fname = e.path().filename().string();
    if (e.is_directory() && std::regex_match(fname, m, re))
      found.emplace_back(std::stoll(m[1]), e.path());
  }
  std::sort(found.begin(), found.end());
  std::int64_t excess = static_cast<std::int64_t>(found.size()) - cfg_.keep_last;
  for (std::int64_t i = 0; i < excess; ++i) {
    if (found[i].first == step_) continue;
    if (std::find(protected_.begin(), protected_.end(), found[i].first) != protected_.end())
      continue;
    fs::remove_all(found[i].second, ec);
  }
  log_info("checkpoint saved: " + final_dir.string());
  return final_dir;
}

void Trainer::load_checkpoint(const fs::path& dir) {
  // Rank 0 reads the files and sends their bytes: the other ranks need no shared filesystem.
  std::string state_text, archive_bytes;
  if (!dist_ || dist_->is_main()) {
    state_text = io::read_file(dir / "state.json");
    archive_bytes = io::read_file(dir / "trainer.pt");
  }
  if (dist_) {
    dist_->broadcast_bytes(state_text);
    dist_->broadcast_bytes(archive_bytes);
  }
  nlohmann::json state;
  try {
    state = nlohmann::json::parse(state_text);
    const int saved_world = state.value("world_size", 1);
    if (saved_world != world_of(dist_))
      throw ConfigError("checkpoint was written by " + std::to_string(saved_world) +
                            " ranks, this run has " + std::to_string(world_of(dist_)),
                        (dir / "state.json").string(),
                        "resume with the same world size (WORLD_SIZE)");
    step_ = state.at("step").get<std::int64_t>();
    cursor_ = state.at("cursor").get<std::int64_t>();
    scalars_ = state.at("scalars").get<std::map<std::string, double>>();
    losses_ = state.at("losses").get<std::vector<double>>();
    protected_ = state.value("protected", std::vector<std::int64_t>{});
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(std::string("damaged checkpoint state: ") + e.what(),
                      (dir / "state.json").string());
  }
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(archive_bytes.data(), archive_bytes.size());
    torch::NoGradGuard no_grad;
    for (auto& [pname, t] : params_) {
      at::Tensor saved;
      if (!archive.try_read("param." + pname, saved))
        throw FormatError("checkpoint lacks trainable tensor",
                          (dir / "trainer.pt").string() + ": " + pname);
      if (saved.sizes() != t.sizes())
        throw FormatError("checkpoint tensor has a different shape",
                          (dir / "trainer.pt").string() + ": " + pname);
      t.copy_(saved);
    }
    torch::serialize::InputArchive optim_archive;
    archive.read("optimizer", optim_archive);
    impl_->optim->load(optim_archive);
    at::Tensor rng;
    archive.read("rng.cpu", rng);
    auto cpu_gen = at::detail::getDefaultCPUGenerator();
    cpu_gen.set_state(rng);
    if (torch::cuda::is_available()) {
      at::Tensor cuda_rng;
      if (archive.try_read("rng.cuda0", cuda_rng)) {
        auto gen = at::globalContext().defaultGenerator(at::Device(at::kCUDA, 0));
        gen.set_state(cuda_rng);
      }
    }
  } catch (const c10::Error& e) {
    throw FormatError(std::string("cannot read checkpoint: ") + e.what_without_backtrace(),
                      (dir / "trainer.pt").string());
  }
  log_info("resumed from " + dir.string() + " at step " + std::to_string(step_));
}

// Sums [gradients..., loss, tokens, signal, grad-defined flags...] over ranks in one bucketed
// all-reduce and turns the gradient sums into means: afterwards every rank holds the gradient of
// the global batch, exactly as one process accumulating grad_accum * world micro-batches would.
void Trainer::average_gradients(double& loss_sum, std::int64_t& tokens, bool& signalled) {
  const auto n = static_cast<std::int64_t>(params_.size());
  at::Tensor stats = torch::zeros({3 + n}, torch::kDouble);
  auto acc = stats.accessor<double, 1>();
  acc[0] = loss_sum;
  acc[1] = static_cast<double>(tokens);
  acc[2] = signalled ? 1.0 : 0.0;
  std::vector<at::Tensor> tensors;
  for (std::int64_t i = 0; i < n; ++i) {
    auto& t = params_[i].second;
    acc[3 + i] = t.grad().defined() ? 1.0 : 0.0;
    if (!t.grad().defined()) t.mutable_grad() = torch::zeros_like(t);
    tensors.push_back(t.grad());
  }
  tensors.push_back(stats);
  dist_->all_reduce_sum(tensors);
  const double world = static_cast<double>(dist_->world_size());
  auto sums = stats.accessor<double, 1>();
  loss_sum = sums[0];
  tokens = static_cast<std::int64_t>(std::llround(sums[1]));
  signalled = sums[2] > 0;
  for (std::int64_t i = 0; i < n; ++i) {
    auto& t = params_[i].second;
    if (sums[3 + i] == 0)
      t.mutable_grad() = at::Tensor();  // no rank produced one: skip it like one process would
    else t.mutable_grad().div_(world);
  }
}

TrainStatus Trainer::run(bool resume) {
  fs::create_directories(out_dir_);
  fs::path metrics_path = out_dir_ / "metrics.jsonl";
  const bool main_rank = !dist_ || dist_->is_main();
  const int world = world_of(dist_);
  const int rank = dist_ ? dist_->rank() : 0;
  if (resume) {
    if (auto latest = latest_checkpoint_name(); !latest.empty()) {
      load_checkpoint(out_dir_ / "checkpoints" / latest);
      // Drop metric lines past the checkpoint so the resumed curve continues without overlap.
      std::error_code ec;
      if (main_rank && fs::exists(metrics_path, ec)) {
        std::ifstream in(metrics_path);
        std::string kept, line;
        while (std::getline(in, line)) {
          try {
            auto j = nlohmann::json::parse(line);
            if (!j.contains("step") || j["step"].get<std::int64_t>() <= step_) kept += line + "\n";
          } catch (const nlohmann::json::exception&) {  // torn last line of a killed run
          }
        }
        io::atomic_write(metrics_path, kept);
      }
    } else {
      log_info("no checkpoint in " + out_dir_.string() + "; starting from step 0");
    }
  }
  if (main_rank) impl_->metrics = std::make_unique<MetricsWriter>(metrics_path, /*append=*/resume);
  if (main_rank && cfg_.tensorboard)
    impl_->tensorboard = std::make_unique<TensorBoardWriter>(out_dir_);
  if (dist_ && dist_->distributed()) {
    // Every rank starts from rank 0's tensors, whatever their initialisation did.
    torch::NoGradGuard no_grad;
    for (auto& [n, t] : params_) dist_->broadcast(t);
  }

  g_signal.store(0);
  auto old_int = std::signal(SIGINT, on_signal);
  auto old_term = std::signal(SIGTERM, on_signal);
  struct Restore {
    decltype(old_int) i, t;
    ~Restore() {
      std::signal(SIGINT, i);
      std::signal(SIGTERM, t);
    }
  } restore{old_int, old_term};

  // Autocast runs on the parameters' device: bf16 on CUDA by default, and on the CPU when asked
  // for (which is how CI exercises the mixed-precision path without a GPU).
  const auto device_type = params_.empty() ? at::kCPU : params_[0].second.device().type();
  const bool autocast_bf16 =
      cfg_.precision == "bf16" || (cfg_.precision == "auto" && device_type == at::kCUDA);
  std::optional<Progress> progress;  // rank 0 draws it
  if (main_rank) {
    progress.emplace("train", cfg_.max_steps, "step");
    progress->advance(step_);
  }
  stop_reason_.clear();
  interrupt_signal_ = 0;

  while (step_ < cfg_.max_steps) {
    const auto t0 = std::chrono::steady_clock::now();
    const double lr = lr_at(cfg_, step_);
    for (auto& group : impl_->optim->param_groups())
      static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
    impl_->optim->zero_grad(true);

    double loss_sum = 0, comm_s = 0, wait_s = -1;
    std::map<std::string, double> terms;
    std::int64_t tokens = 0;
    for (std::int64_t micro = 0; micro < cfg_.grad_accum; ++micro) {
      MicroStep out;
      {
        // bf16 autocast for the forward pass only (backward follows autograd).
        AutocastRegion autocast(device_type, autocast_bf16);
        out = hooks_.micro_step(*this, cursor_ * world + rank);
      }
      ++cursor_;
      if (!out.loss.defined() || out.loss.numel() != 1)
        throw Error("micro_step must return a scalar loss", "train");
      at::Tensor scaled = out.loss.to(at::kFloat) / static_cast<double>(cfg_.grad_accum);
      scaled.backward();
      const double l = out.loss.item<double>();
      if (!std::isfinite(l) &&
          !(dist_ && dist_->distributed()))  // distributed: checked on the global sum
        throw Error("loss is not finite at step " + std::to_string(step_), "train",
                    "lower the learning rate or check the data");
      loss_sum += l;
      for (const auto& [k, v] : out.terms) terms[k] += v / static_cast<double>(cfg_.grad_accum);
      tokens += out.supervised_tokens;
    }
    bool signalled = g_signal.load() != 0;
    if (dist_ && dist_->distributed()) {
      // SAFETUNE_DIST_PROFILE=1 (bench/dist_allreduce.sh): a barrier first, so that comm_s is the
      // all-reduce itself and comm_wait_s the time spent waiting for the slowest rank.
      static const bool profile = [] {
        const char* v = std::getenv("SAFETUNE_DIST_PROFILE");
        return v && std::string(v) == "1";
      }();
      if (profile) {
        const double w0 = dist_->comm_seconds();
        dist_->barrier();
        wait_s = dist_->comm_seconds() - w0;
      }
      const double comm0 = dist_->comm_seconds();
      average_gradients(loss_sum, tokens, signalled);
      comm_s = dist_->comm_seconds() - comm0;
      if (!std::isfinite(loss_sum))
        throw Error("loss is not finite at step " + std::to_string(step_) + " on at least one rank",
                    "train", "lower the learning rate or check the data");
    }
    if (hooks_.before_optimizer_step) hooks_.before_optimizer_step(*this, step_);
    std::vector<torch::Tensor> with_grad;
    for (auto& [n, t] : params_)
      if (t.grad().defined()) with_grad.push_back(t);
    double grad_norm = 0;
    if (!with_grad.empty()) {
      grad_norm = cfg_.max_grad_norm > 0
                      ? torch::nn::utils::clip_grad_norm_(with_grad, cfg_.max_grad_norm)
                      : torch::nn::utils::clip_grad_norm_(with_grad, 1e30);
    }
    impl_->optim->step();
    ++step_;
    const double loss = loss_sum / static_cast<double>(cfg_.grad_accum * world);
    losses_.push_back(loss);
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    std::map<std::string, MetricsWriter::Value> rec{
        {"step", step_},
        {"loss", loss},
        {"lr", lr},
        {"grad_norm", grad_norm},
        {"tokens_per_s", secs > 0 ? static_cast<double>(tokens) / secs : 0.0},
        {"supervised_tokens", tokens},
        {"peak_rss_mb", peak_rss_mb()},
        {"step_s", secs}};
    if (dist_ && dist_->distributed()) {
      rec["comm_s"] = comm_s;
      if (wait_s >= 0) rec["comm_wait_s"] = wait_s;
      rec["world_size"] = static_cast<std::int64_t>(world);
    }
    for (const auto& [k, v] : terms) rec["loss_" + k] = v;
    for (const auto& [k, v] : scalars_) rec["scalar_" + k] = v;
    if (cfg_.eval_every > 0 && hooks_.evaluate && step_ % cfg_.eval_every == 0)
      for (const auto& [k, v] : hooks_.evaluate(*this, step_)) rec["eval_" + k] = v;
    if (main_rank && (step_ % cfg_.log_every == 0 || step_ == cfg_.max_steps)) {
      impl_->metrics->write(rec);
      if (impl_->tensorboard) impl_->tensorboard->write(rec);
    }

    char post[64];
    std::snprintf(post, sizeof post, "loss %.4f", loss);
    if (progress) {
      progress->set_postfix(post);
      progress->advance(1);
    }

    if (hooks_.after_step) hooks_.after_step(*this, step_);
    if (cfg_.checkpoint_every > 0 && step_ % cfg_.checkpoint_every == 0) save_checkpoint();
    // Distributed: the flag was summed with the gradients, so every rank stops at the same step.
    if (signalled) {
      // Another rank's signal reaches this one through the all-reduce only: take it as SIGTERM,
      // what launchers send to stop the remaining ranks.
      interrupt_signal_ = g_signal.load() != 0 ? g_signal.load() : SIGTERM;
      log_warn("signal " + std::to_string(g_signal.load()) +
               " received (on this or another rank): saving a checkpoint and exiting");
      if (cfg_.checkpoint_every == 0 || step_ % cfg_.checkpoint_every != 0) save_checkpoint();
      return TrainStatus::interrupted;
    }
    if (!stop_reason_.empty()) {
      log_warn("training stopped at step " + std::to_string(step_) + ": " + stop_reason_);
      return TrainStatus::stopped;
    }
  }
  if (progress) progress->finish();
  if (cfg_.checkpoint_every == 0 || step_ % cfg_.checkpoint_every != 0) save_checkpoint();
  return TrainStatus::completed;
}

}  // namespace safetune::train
