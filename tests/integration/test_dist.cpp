// Data-parallel training on 2 CPU ranks (Gloo on loopback): equality with one process training the
// same global batch, and a dead or hung rank making the other exit with an error in time.
#include <catch2/catch.hpp>

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

#include "safetune/dist/context.hpp"
#include "safetune/io/safetensors.hpp"
#include "safetune/safety/assessment.hpp"
#include "support.hpp"

namespace fs = std::filesystem;
using namespace safetune;

namespace {

// A port nobody listens on right now (bound to port 0, read back, released).
int free_port() {
  int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  ::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
  int port = ntohs(a.sin_port);
  ::close(s);
  return port;
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// `safetune train` of the tiny config with few steps, no assessments (the adapters are compared).
std::vector<std::string> train_args(const fs::path& out, std::int64_t steps,
                                    std::int64_t grad_accum,
                                    const std::vector<std::string>& more = {}) {
  std::vector<std::string> a{
      "train",
      (test::source_dir() / "configs" / "tiny_two_stage.yaml").string(),
      "run.output_dir=" + out.string(),
      "safety.assess=false",
      "stage2.task_eval=",
      "model.path=" + (test::safetune_home() / "models" / "tiny-llama").string()};
  for (const char* stage : {"stage1", "stage2"}) {
    const std::string s(stage);
    a.push_back(s + ".train.max_steps=" + std::to_string(steps));
    a.push_back(s + ".train.grad_accum=" + std::to_string(grad_accum));
    a.push_back(s + ".train.checkpoint_every=0");
    a.push_back(s + ".data.batch_size=1");
  }
  a.insert(a.end(), more.begin(), more.end());
  return a;
}

// The launcher's variables (no torchrun store); an empty timeout leaves the config's default.
std::vector<std::string> rank_env(int rank, int world, int port,
                                  const std::string& timeout_s = "") {
  return {"RANK=" + std::to_string(rank),
          "WORLD_SIZE=" + std::to_string(world),
          "LOCAL_RANK=" + std::to_string(rank),
          "LOCAL_WORLD_SIZE=" + std::to_string(world),
          "MASTER_ADDR=127.0.0.1",
          "MASTER_PORT=" + std::to_string(port),
          "SAFETUNE_DIST_TIMEOUT_S=" + timeout_s,
          "TORCHELASTIC_USE_AGENT_STORE=",
          "OMP_NUM_THREADS=1"};
}

std::map<std::string, at::Tensor> tensors_of(const fs::path& file) {
  std::map<std::string, at::Tensor> m;
  for (auto& [k, v] : io::safetensors_load(file)) m[k] = v;
  return m;
}

// Waits up to `limit` for pid; returns its exit code, or -1 (still running) after the limit.
int wait_for(pid_t pid, std::chrono::seconds limit) {
  auto until = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < until) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid)
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return -1;
}

// One process accumulating 2 micro-batches per step, writing to tmp/single; its exit code.
int run_single(const test::TempDir& tmp, const std::vector<std::string>& more) {
  return test::wait_exit_code(test::spawn_cli(train_args(tmp / "single", 2, 2, more),
                                              {"OMP_NUM_THREADS=1"}, tmp / "single.out",
                                              tmp / "single.err"));
}

// Two ranks with one micro-batch each: global batch numbers 2c and 2c+1, as run_single's. Rank 0
// writes to tmp/dist; rank 1 gets its own output directory (tmp/rank1), which must stay empty.
// stderr goes to tmp/err0 and tmp/err1. The two exit codes.
std::pair<int, int> run_two_ranks(const test::TempDir& tmp, const std::vector<std::string>& more) {
  const int port = free_port();
  std::vector<pid_t> pids;
  for (int r = 0; r < 2; ++r)
    pids.push_back(test::spawn_cli(train_args(tmp / (r == 0 ? "dist" : "rank1"), 2, 1, more),
                                   rank_env(r, 2, port), tmp / ("out" + std::to_string(r)),
                                   tmp / ("err" + std::to_string(r))));
  const int rc0 = test::wait_exit_code(pids[0]);
  return {rc0, test::wait_exit_code(pids[1])};
}

}  // namespace

TEST_CASE("dist: 2 Gloo ranks train the same adapters as one process with the same global batch",
          "[dist]") {
  fs::current_path(test::source_dir());  // the config's data paths are relative to the checkout
  test::TempDir tmp;
  // Reference: one process accumulating 2 micro-batches per step.
  const int single = run_single(tmp, {});
  INFO(slurp(tmp / "single.err"));
  REQUIRE(single == 0);

  // Two ranks, one micro-batch each. Tiny buckets so that the all-reduce uses several.
  const auto [rc0, rc1] = run_two_ranks(tmp, {"dist.bucket_mb=0.01"});
  INFO(slurp(tmp / "err0") << "\n---- rank 1:\n" << slurp(tmp / "err1"));
  REQUIRE(rc0 == 0);
  REQUIRE(rc1 == 0);

  for (const char* adapter : {"safety", "task"}) {
    auto want = tensors_of(tmp / "single" / "adapters" / adapter / "adapter_model.safetensors");
    auto got = tensors_of(tmp / "dist" / "adapters" / adapter / "adapter_model.safetensors");
    REQUIRE(got.size() == want.size());
    REQUIRE(!want.empty());
    double worst = 0;
    for (auto& [name, w] : want) {
      REQUIRE(got.count(name) == 1);
      worst = std::max(worst,
                       (got[name].to(at::kDouble) - w.to(at::kDouble)).abs().max().item<double>());
    }
    INFO(adapter << ": max |dist - single| = " << worst);
    CHECK(worst <= 1e-6);
  }
  // The adapters did move (equality of two untouched inits would prove nothing).
  auto init_b = tensors_of(tmp / "dist" / "adapters" / "task" / "adapter_model.safetensors");
  double b_norm = 0;
  for (auto& [name, t] : init_b)
    if (name.find("lora_B") != std::string::npos) b_norm += t.abs().sum().item<double>();
  CHECK(b_norm > 0);
  CHECK(slurp(tmp / "dist" / "stage2" / "metrics.jsonl").find("\"world_size\":2") !=
        std::string::npos);
  std::vector<std::string> written_by_rank1;
  for (const auto& e : fs::recursive_directory_iterator(tmp / "rank1"))
    if (e.is_regular_file()) written_by_rank1.push_back(e.path().string());
  CHECK(written_by_rank1.empty());
}

TEST_CASE("dist: a killed or hung rank makes the other exit non-zero within the timeout",
          "[dist]") {
  fs::current_path(test::source_dir());
  test::TempDir tmp;
  const int timeout_s = 5;
  for (int sig : {SIGKILL, SIGSTOP}) {
    const int port = free_port();
    const fs::path out = tmp / ("run" + std::to_string(sig));
    std::vector<pid_t> pids;
    for (int r = 0; r < 2; ++r) {
      pids.push_back(test::spawn_cli(
          train_args(out, 100000, 1), rank_env(r, 2, port, std::to_string(timeout_s)),
          tmp / ("out" + std::to_string(r)), tmp / ("err" + std::to_string(r))));
    }
    // Both ranks are training once rank 0 has logged a step (each step ends in an all-reduce).
    const fs::path metrics = out / "stage1" / "metrics.jsonl";
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (slurp(metrics).empty() && std::chrono::steady_clock::now() < until)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    REQUIRE(!slurp(metrics).empty());

    ::kill(pids[1], sig);
    const auto t0 = std::chrono::steady_clock::now();
    const int rc0 = wait_for(pids[0], std::chrono::seconds(timeout_s + 15));
    const double waited =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (rc0 < 0) ::kill(pids[0], SIGKILL), test::wait_exit_code(pids[0]);
    ::kill(pids[1], SIGKILL);
    test::wait_exit_code(pids[1]);
    const std::string err = slurp(tmp / "err0");
    INFO("signal " << sig << ", rank 0 exited with " << rc0 << " after " << waited
                   << " s; stderr:\n"
                   << err);
    REQUIRE(rc0 > 0);
    CHECK(rc0 == 1);
    CHECK(waited < timeout_s + 10);
    CHECK(err.find("error: dist: rank 0 of 2: all-reduce failed (a peer died or did not answer "
                   "within 5 s)") != std::string::npos);
  }
}

TEST_CASE("dist: launcher variables are validated and world size 1 needs no store", "[dist]") {
  ::setenv("WORLD_SIZE", "two", 1);
  CHECK_THROWS_WITH(dist::LaunchEnv::from_environment(), Catch::Contains("WORLD_SIZE='two'"));
  ::setenv("WORLD_SIZE", "2", 1);
  ::setenv("RANK", "2", 1);
  CHECK_THROWS_WITH(dist::LaunchEnv::from_environment(),
                    Catch::Contains("RANK='2' is not an integer in [0, 1]"));
  ::unsetenv("WORLD_SIZE");
  ::unsetenv("RANK");
  auto ctx = dist::Context::from_env();
  CHECK_FALSE(ctx->distributed());
  CHECK(ctx->backend() == "none");
  std::vector<at::Tensor> t{at::ones({3})};
  ctx->all_reduce_mean(t);  // no-op
  CHECK(t[0].sum().item<double>() == 3.0);
}

TEST_CASE("dist: assessments are sharded over the ranks and gathered into the one-process result",
          "[dist]") {
  fs::current_path(test::source_dir());
  test::TempDir tmp;
  // Stage 1 only, assessed before and after; batch size 1 so that each probe is generated alone
  // (no padding differences between the one-process and the per-rank batches).
  const std::vector<std::string> assess{"safety.assess=true", "safety.limit=3",
                                        "safety.max_new_tokens=4", "safety.batch_size=1",
                                        "stage2.enabled=false"};
  const int single = run_single(tmp, assess);
  INFO(slurp(tmp / "single.err"));
  REQUIRE(single == 0);
  const auto [rc0, rc1] = run_two_ranks(tmp, assess);
  INFO(slurp(tmp / "err0") << slurp(tmp / "err1"));
  REQUIRE(rc0 == 0);
  REQUIRE(rc1 == 0);
  for (const char* label : {"baseline", "aligned"}) {
    INFO(label);
    auto one =
        safety::load_assessment(tmp / "single" / "assessments" / (std::string(label) + ".json"));
    auto two =
        safety::load_assessment(tmp / "dist" / "assessments" / (std::string(label) + ".json"));
    REQUIRE(one.results.size() == 9);
    REQUIRE(two.results.size() == one.results.size());
    CHECK(two.suite_sha256 == one.suite_sha256);
    CHECK(two.decoding == one.decoding);
    for (std::size_t i = 0; i < one.results.size(); ++i) {
      CHECK(two.results[i].id == one.results[i].id);
      CHECK(two.results[i].positive == one.results[i].positive);
      CHECK(two.results[i].response == one.results[i].response);
      CHECK(two.results[i].score == one.results[i].score);
    }
    CHECK(two.refusal.overall.k == one.refusal.overall.k);
    CHECK(two.discrimination.overall.k == one.discrimination.overall.k);
  }
  CHECK_FALSE(fs::exists(tmp / "rank1" / "assessments"));
}
