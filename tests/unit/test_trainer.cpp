// Trainer: schedules by hand-computed values, exact resume after interruption, signals,
// keep-last-K.
#include <ATen/autocast_mode.h>
#include <torch/torch.h>
#include <catch2/catch.hpp>

#include <csignal>
#include <fstream>
#include <nlohmann/json.hpp>

#include "safetune/error.hpp"
#include "safetune/train/autocast.hpp"
#include "safetune/train/trainer.hpp"
#include "support.hpp"

using namespace safetune;
using namespace safetune::train;
namespace fs = std::filesystem;

namespace {
// A small regression problem with dropout, so resume must restore RNG state to match.
struct Toy {
  torch::Tensor w = torch::zeros({8, 4}, torch::requires_grad());
  torch::Tensor target = torch::arange(32, torch::kFloat).reshape({8, 4}) / 32.0;
  MicroStep micro(std::int64_t cursor) {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(1000 + cursor);  // data depends on cursor
    auto x = torch::randn({16, 8}, gen);
    auto h = torch::dropout(x, 0.25, /*train=*/true);  // uses the global generator
    auto y = h.matmul(w);
    auto loss = (y - x.matmul(target)).pow(2).mean();
    return MicroStep{loss, {{"mse", loss.item<double>()}}, 16};
  }
};

TrainSection small_cfg() {
  TrainSection c;
  c.max_steps = 12;
  c.lr = 0.05;
  c.warmup_steps = 2;
  c.schedule = "cosine";
  c.grad_accum = 2;
  c.checkpoint_every = 4;
  c.keep_last = 2;
  c.max_grad_norm = 1.0;
  return c;
}

std::vector<double> read_metric(const fs::path& p, const std::string& key) {
  std::ifstream in(p);
  std::vector<double> out;
  for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line)[key]);
  return out;
}
}  // namespace

TEST_CASE("lr schedules match hand-computed values", "[train]") {
  TrainSection c;
  c.lr = 1.0;
  c.max_steps = 10;
  c.warmup_steps = 2;
  c.schedule = "linear";
  CHECK(lr_at(c, 0) == Approx(0.5));
  CHECK(lr_at(c, 1) == Approx(1.0));
  CHECK(lr_at(c, 2) == Approx(1.0));
  CHECK(lr_at(c, 6) == Approx(0.5));  // halfway through 8 decay steps
  c.schedule = "cosine";
  c.min_lr_ratio = 0.1;
  CHECK(lr_at(c, 6) == Approx(0.1 + 0.9 * 0.5));
  CHECK(lr_at(c, 10) == Approx(0.1));
  c.schedule = "constant";
  CHECK(lr_at(c, 9) == Approx(1.0));
}

TEST_CASE("interrupted and resumed training reproduces the uninterrupted loss curve", "[train]") {
  test::TempDir dir;
  torch::manual_seed(7);
  Toy a;
  Trainer full(small_cfg(), {{"w", a.w}}, dir / "full",
               {[&](Trainer&, std::int64_t c) { return a.micro(c); }});
  REQUIRE(full.run() == TrainStatus::completed);
  auto full_losses = full.loss_history();
  REQUIRE(full_losses.size() == 12);
  CHECK(full_losses.back() < full_losses.front());

  // The same run, killed after step 6 (no checkpoint there), then resumed from step 4's.
  torch::manual_seed(7);
  Toy c;
  {
    TrainerHooks hooks{[&](Trainer&, std::int64_t k) { return c.micro(k); }};
    hooks.after_step = [](Trainer& self, std::int64_t step) {
      if (step == 6) self.stop("simulated crash");
    };
    Trainer t(small_cfg(), {{"w", c.w}}, dir / "cut", hooks);
    REQUIRE(t.run() == TrainStatus::stopped);
  }
  torch::manual_seed(12345);  // a different process state: resume must not depend on it
  Toy d;
  Trainer resumed(small_cfg(), {{"w", d.w}}, dir / "cut",
                  {[&](Trainer&, std::int64_t k) { return d.micro(k); }});
  REQUIRE(resumed.run(/*resume=*/true) == TrainStatus::completed);
  auto resumed_losses = resumed.loss_history();
  REQUIRE(resumed_losses.size() == 12);
  for (std::size_t i = 0; i < 12; ++i) {
    INFO("step " << i + 1);
    CHECK(resumed_losses[i] == full_losses[i]);  // bit-identical on CPU
  }
  CHECK(torch::equal(d.w, a.w));
  // The metrics file holds each step exactly once, with the same losses.
  auto logged = read_metric(dir / "cut" / "metrics.jsonl", "loss");
  REQUIRE(logged.size() == 12);
  for (std::size_t i = 0; i < 12; ++i) CHECK(logged[i] == Approx(full_losses[i]).epsilon(1e-12));
  // keep_last = 2: only the two newest checkpoints remain.
  CHECK(fs::exists(dir / "cut" / "checkpoints" / "step-00000012"));
  CHECK(fs::exists(dir / "cut" / "checkpoints" / "step-00000008"));
  CHECK_FALSE(fs::exists(dir / "cut" / "checkpoints" / "step-00000004"));
}

TEST_CASE("SIGINT saves a checkpoint and the run resumes from it", "[train]") {
  test::TempDir dir;
  torch::manual_seed(3);
  Toy a;
  TrainSection cfg = small_cfg();
  cfg.checkpoint_every = 0;
  Trainer ref(cfg, {{"w", a.w}}, dir / "ref",
              {[&](Trainer&, std::int64_t c) { return a.micro(c); }});
  ref.run();

  torch::manual_seed(3);
  Toy b;
  Trainer t(cfg, {{"w", b.w}}, dir / "sig", {[&](Trainer&, std::int64_t c) {
              if (c == 9) std::raise(SIGINT);  // during step 5's second micro-batch
              return b.micro(c);
            }});
  REQUIRE(t.run() == TrainStatus::interrupted);
  CHECK(t.step() == 5);
  CHECK(fs::exists(dir / "sig" / "checkpoints" / "step-00000005" / "trainer.pt"));

  Toy c;
  Trainer resumed(cfg, {{"w", c.w}}, dir / "sig",
                  {[&](Trainer&, std::int64_t k) { return c.micro(k); }});
  REQUIRE(resumed.run(true) == TrainStatus::completed);
  auto want = ref.loss_history(), got = resumed.loss_history();
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < want.size(); ++i) CHECK(got[i] == want[i]);
}

TEST_CASE("trainer rejects bad setups and damaged checkpoints", "[train]") {
  test::TempDir dir;
  auto frozen = torch::zeros({2});
  CHECK_THROWS_WITH(Trainer(small_cfg(), {{"frozen", frozen}}, dir.path(),
                            {[](Trainer&, std::int64_t) { return MicroStep{}; }}),
                    "frozen: parameter does not require grad");
  Toy a;
  Trainer t(small_cfg(), {{"w", a.w}}, dir / "run",
            {[&](Trainer&, std::int64_t c) { return a.micro(c); }});
  auto ckpt = t.save_checkpoint();
  test::write_text(ckpt / "state.json", "{not json");
  Trainer u(small_cfg(), {{"w", a.w}}, dir / "run",
            {[&](Trainer&, std::int64_t c) { return a.micro(c); }});
  CHECK_THROWS_WITH(u.run(true), Catch::Matchers::Contains("damaged checkpoint state"));
}

TEST_CASE("train config section validates", "[train]") {
  TrainSection c;
  CHECK_THROWS_WITH(config_load_string(c, "schedule: cosin\n", "t.yaml"),
                    Catch::Matchers::Contains("schedule: expected one of constant, linear, cosine; "
                                              "got 'cosin' (did you mean 'cosine'?)"));
  CHECK_THROWS_WITH(config_load_string(c, "grad_accum: 0\n", "t.yaml"),
                    Catch::Matchers::Contains("grad_accum: value 0 is out of range"));
}

TEST_CASE("AutocastRegion nests and restores like torch.autocast", "[trainer][autocast]") {
  using at::autocast::get_autocast_dtype;
  using at::autocast::is_autocast_enabled;
  REQUIRE_FALSE(is_autocast_enabled(at::kCPU));
  auto a = torch::randn({4, 8}), b = torch::randn({8, 3});
  {
    train::AutocastRegion outer(at::kCPU);
    CHECK(is_autocast_enabled(at::kCPU));
    CHECK(get_autocast_dtype(at::kCPU) == at::kBFloat16);
    CHECK(torch::mm(a, b).scalar_type() == at::kBFloat16);  // matmul runs in the autocast dtype
    {
      train::AutocastRegion inner(at::kCPU, true, at::kHalf);
      CHECK(get_autocast_dtype(at::kCPU) == at::kHalf);
      train::AutocastRegion off(at::kCPU, false);  // a no-op: the state stays as it is
      CHECK(is_autocast_enabled(at::kCPU));
    }
    CHECK(get_autocast_dtype(at::kCPU) == at::kBFloat16);  // the outer region's dtype is back
    CHECK(is_autocast_enabled(at::kCPU));
  }
  CHECK_FALSE(is_autocast_enabled(at::kCPU));
  CHECK(torch::mm(a, b).scalar_type() == at::kFloat);
}
