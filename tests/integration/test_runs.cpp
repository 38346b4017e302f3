// Runs as units of work, through the CLI on the tiny model: an interrupted run releases nothing and
// exits 130/143, and --resume finishes it; run directories are locked, never shared and never
// silently overwritten; every input is checked before stage 1 trains; small hardening cases.
#include <ATen/ATen.h>
#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

#include "safetune/io/dir_lock.hpp"
#include "safetune/io/safetensors.hpp"
#include "safetune/safety/registry.hpp"
#include "support.hpp"

using namespace safetune;
namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;

namespace {

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int count_lines(const std::string& s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

// `safetune train` on the tiny config: short sequences, one probe per kind, two generated tokens,
// releases registered in `registry` under `id`.
std::vector<std::string> train_args(const fs::path& out, const fs::path& registry,
                                    const std::string& id,
                                    const std::vector<std::string>& more = {}) {
  std::vector<std::string> a{
      "train",
      (test::source_dir() / "configs" / "tiny_two_stage.yaml").string(),
      "run.output_dir=" + out.string(),
      "model.path=" + (test::safetune_home() / "models" / "tiny-llama").string(),
      "stage1.data.max_length=48",
      "stage2.data.max_length=48",
      "stage1.data.batch_size=2",
      "stage2.data.batch_size=2",
      "stage1.train.checkpoint_every=0",
      "stage2.train.checkpoint_every=0",
      "safety.limit=1",
      "safety.max_new_tokens=2",
      "stage2.task_eval_limit=1",
      "stage2.task_eval_max_new_tokens=2",
      "safety.release.registry=" + registry.string(),
      "safety.release.id=" + id};
  a.insert(a.end(), more.begin(), more.end());
  return a;
}

// Waits until `file` holds a complete line (the trainer's first metrics line: training is under
// way), by polling the file, not a clock. FAILs with the process's stderr should it exit first.
void wait_for_line(const fs::path& file, pid_t pid, const fs::path& err) {
  for (;;) {
    if (slurp(file).find('\n') != std::string::npos) return;
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid)
      FAIL("the run ended before training started: " << slurp(err));
    ::usleep(20000);
  }
}

// The step of the latest checkpoint of a stage ("step-00000007" -> 7).
std::int64_t latest_step(const fs::path& stage_dir) {
  std::string name = slurp(stage_dir / "checkpoints" / "latest");
  REQUIRE(name.rfind("step-", 0) == 0);
  return std::stoll(name.substr(5));
}

std::vector<std::string> with(std::vector<std::string> a, const std::vector<std::string>& more) {
  a.insert(a.end(), more.begin(), more.end());
  return a;
}

}  // namespace

TEST_CASE(
    "runs: SIGINT in stage 1 releases nothing, exits 130, locks out a second run; --resume "
    "finishes it",
    "[runs][release]") {
  fs::current_path(test::source_dir());  // the config's data paths are relative to the checkout
  test::TempDir dir;
  const fs::path out = dir / "run", registry = dir / "registry.json";
  const auto args = train_args(out, registry, "r1", {"stage2.train.max_steps=2"});
  // Stage 1 long enough never to finish on its own before the signal.
  const pid_t pid = test::spawn_cli(with(args, {"stage1.train.max_steps=100000"}),
                                    {"OMP_NUM_THREADS=1"}, dir / "a.out", dir / "a.err");
  wait_for_line(out / "stage1" / "metrics.jsonl", pid, dir / "a.err");

  // A second run into the same directory fails at once with one line naming it and the holder.
  auto second = test::run_cli(args);
  CHECK(second.exit_code == 1);
  CHECK(count_lines(second.err) == 1);
  CHECK_THAT(second.err,
             StartsWith("error: " + fs::canonical(out).string()) &&
                 Contains("in use by another safetune run (pid " + std::to_string(pid) + ")"));

  REQUIRE(::kill(pid, SIGINT) == 0);
  const int code = test::wait_exit_code(pid);
  const std::string log = slurp(dir / "a.err") + slurp(dir / "a.out");
  INFO(log);
  CHECK(code == 130);
  CHECK_THAT(log, Contains("interrupted by SIGINT during stage 1"));
  CHECK_THAT(log, Contains("continue with --resume"));
  CHECK_THAT(slurp(dir / "a.out"), !Contains("gates:"));
  // The checkpoint is there; nothing that a finished stage 1 would have written is.
  const std::int64_t k = latest_step(out / "stage1");
  CHECK(k >= 1);
  CHECK_FALSE(fs::exists(out / "adapters"));
  CHECK_FALSE(fs::exists(out / "assessments" / "aligned.json"));
  CHECK_FALSE(fs::exists(out / "report"));
  CHECK_FALSE(fs::exists(registry));

  // Without --resume the directory is refused, naming both ways out.
  auto again = test::run_cli(args);
  CHECK(again.exit_code == 1);
  CHECK_THAT(again.err,
             Contains("already holds a run") && Contains("--resume") && Contains("--overwrite"));
  CHECK(latest_step(out / "stage1") == k);

  // --resume continues from step k (one more step), then stage 2, registers and promotes.
  auto resumed =
      test::run_cli(with(args, {"stage1.train.max_steps=" + std::to_string(k + 1), "--resume"}));
  INFO(resumed.out << resumed.err);
  REQUIRE(resumed.exit_code == 0);
  CHECK_THAT(resumed.err,
             Contains("at step " + std::to_string(k)));  // "resumed from ... at step k"
  CHECK_THAT(resumed.out, Contains("gates: passed"));
  CHECK(count_lines(slurp(out / "stage1" / "metrics.jsonl")) == k + 1);
  auto reg = safety::ReleaseRegistry::open(registry);
  REQUIRE(reg.current());
  CHECK(reg.current()->id == "r1");

  // A directory holding a release is never overwritten nor resumed into; its files stay as they
  // are.
  const std::string task_sha = safety::sha256_tree(out / "adapters" / "task");
  for (const char* flag : {"--overwrite", "--resume"}) {
    INFO(flag);
    auto r = test::run_cli(with(args, {flag}));
    CHECK(r.exit_code == 1);
    CHECK_THAT(r.err, Contains("holds release 'r1' of " + registry.string()) &&
                          Contains("never resumed into or overwritten"));
  }
  CHECK(safety::sha256_tree(out / "adapters" / "task") == task_sha);
  CHECK(safety::ReleaseRegistry::open(registry).verify("r1").empty());
}

TEST_CASE(
    "runs: SIGTERM in stage 2 writes no task adapter, report or release, exits 143; --resume "
    "releases it",
    "[runs][release]") {
  fs::current_path(test::source_dir());
  test::TempDir dir;
  const fs::path out = dir / "run", registry = dir / "registry.json";
  const auto args = train_args(out, registry, "r2", {"stage1.train.max_steps=2"});
  const pid_t pid = test::spawn_cli(with(args, {"stage2.train.max_steps=100000"}),
                                    {"OMP_NUM_THREADS=1"}, dir / "a.out", dir / "a.err");
  wait_for_line(out / "stage2" / "metrics.jsonl", pid, dir / "a.err");
  REQUIRE(::kill(pid, SIGTERM) == 0);
  const int code = test::wait_exit_code(pid);
  const std::string log = slurp(dir / "a.err") + slurp(dir / "a.out");
  INFO(log);
  CHECK(code == 143);
  CHECK_THAT(log, Contains("interrupted by SIGTERM during stage 2"));
  CHECK_THAT(slurp(dir / "a.out"), !Contains("gates:"));
  const std::int64_t k = latest_step(out / "stage2");
  CHECK(k >= 1);
  CHECK(
      fs::exists(out / "adapters" / "safety" / "adapter_model.safetensors"));  // stage 1 did finish
  CHECK_FALSE(fs::exists(out / "adapters" / "task"));
  CHECK_FALSE(fs::exists(out / "assessments" / "tuned.json"));
  CHECK_FALSE(fs::exists(out / "report"));
  CHECK_FALSE(fs::exists(registry));
  CHECK(fs::exists(out / io::DirectoryLock::kFileName));  // the lock file marks the run directory

  auto resumed =
      test::run_cli(with(args, {"stage2.train.max_steps=" + std::to_string(k + 1), "--resume"}));
  INFO(resumed.out << resumed.err);
  REQUIRE(resumed.exit_code == 0);
  CHECK(count_lines(slurp(out / "stage2" / "metrics.jsonl")) == k + 1);
  CHECK(fs::exists(out / "adapters" / "task" / "adapter_model.safetensors"));
  auto reg = safety::ReleaseRegistry::open(registry);
  REQUIRE(reg.current());
  CHECK(reg.current()->id == "r2");
  CHECK(reg.verify("r2").empty());
}

TEST_CASE("runs: a folder safetune did not write is never written, through a symlink or not",
          "[runs]") {
  fs::current_path(test::source_dir());
  test::TempDir dir;
  const fs::path unrelated = dir / "unrelated", link = dir / "link";
  test::write_text(unrelated / "config.yaml", "mine\n");
  test::write_text(unrelated / "report" / "notes.md", "my notes\n");
  fs::create_directory_symlink(unrelated, link);
  const std::vector<std::vector<std::string>> flag_sets{{}, {"--overwrite"}, {"--resume"}};
  for (const auto& flags : flag_sets) {
    INFO((flags.empty() ? "(no flag)" : flags[0]));
    auto r = test::run_cli(with(train_args(link, dir / "registry.json", "x"), flags));
    CHECK(r.exit_code == 1);
    CHECK(count_lines(r.err) == 1);
    // The message names the resolved folder.
    CHECK_THAT(r.err, StartsWith("error: " + fs::canonical(unrelated).string()) &&
                          Contains("holds no safetune run"));
    CHECK(slurp(unrelated / "config.yaml") == "mine\n");
    CHECK(slurp(unrelated / "report" / "notes.md") == "my notes\n");
    CHECK_FALSE(fs::exists(unrelated / io::DirectoryLock::kFileName));
    CHECK_FALSE(fs::exists(unrelated / "stage1"));
  }
  auto both = test::run_cli(
      with(train_args(dir / "new", dir / "registry.json", "x"), {"--overwrite", "--resume"}));
  CHECK(both.exit_code == 2);
}

TEST_CASE("runs: --overwrite replaces a previous (unreleased) run; no flag refuses it", "[runs]") {
  fs::current_path(test::source_dir());
  test::TempDir dir;
  const fs::path out = dir / "run";
  // A previous run: its lock file marks it, plus an old adapter it left.
  test::write_text(out / io::DirectoryLock::kFileName, "");
  test::write_text(out / "adapters" / "task" / "adapter_config.json", "{}");
  // Stage 2 only on a missing safety adapter: refused up front, so nothing is trained here.
  const auto args =
      train_args(out, dir / "registry.json", "x",
                 {"safety.assess=false", "safety.release.registry=", "stage1.enabled=false",
                  "stage2.enabled=false"});
  auto refused = test::run_cli(args);
  CHECK(refused.exit_code == 1);
  CHECK_THAT(refused.err, Contains("already holds a run"));
  CHECK(fs::exists(out / "adapters" / "task" / "adapter_config.json"));
  auto replaced = test::run_cli(with(args, {"--overwrite"}));
  INFO(replaced.err);
  CHECK(replaced.exit_code == 0);
  CHECK_FALSE(fs::exists(out / "adapters"));  // the previous run's files are gone
  CHECK(fs::exists(out / "config.yaml"));     // this run's are there
  CHECK_THAT(replaced.err, Contains("run directory: " + fs::canonical(out).string()));
}

TEST_CASE("runs: every input of both stages is validated before stage 1 trains", "[runs]") {
  fs::current_path(test::source_dir());
  test::TempDir dir;
  // Line 2 of a stage-2 dataset holds invalid UTF-8 (byte 0xff).
  const std::string good =
      R"({"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a"}]})";
  test::write_text(
      dir / "task.jsonl",
      good + "\n" +
          R"({"messages":[{"role":"user","content":"q"},{"role":"assistant","content":")" +
          std::string("\xff") + "\"}]}\n");
  test::write_text(dir / "eval.jsonl", good + "\n{oops\n");
  struct Case {
    std::vector<std::string> overrides;
    std::string expect;
  };
  const std::vector<Case> cases{
      {{"stage2.data.datasets.0.path=" + (dir / "task.jsonl").string()},
       (dir / "task.jsonl").string() + ":2: invalid UTF-8"},
      // task_eval used to be read only after stage 2 had trained.
      {{"stage2.task_eval=" + (dir / "eval.jsonl").string()},
       (dir / "eval.jsonl").string() + ":2: malformed JSON"},
      {{"stage1.data.datasets.1.path=" + (dir / "none.jsonl").string()},
       (dir / "none.jsonl").string() + ": data file not found"},
      {{"safety.guard.every_n_steps=1", "safety.guard.subset=" + (dir / "none.txt").string()},
       "none.txt"},
      {{"stage1.enabled=false", "stage2.safety_adapter=" + (dir / "no-adapter").string()},
       "no-adapter"},
  };
  for (const auto& c : cases) {
    INFO(c.overrides[0]);
    const fs::path out = dir / "run";
    auto r = test::run_cli(with(train_args(out, dir / "registry.json", "x"), c.overrides));
    CHECK(r.exit_code == 1);
    CHECK(count_lines(r.err) == 1);
    CHECK_THAT(r.err, Contains(c.expect));
    CHECK_FALSE(fs::exists(out));  // nothing trained, nothing written
  }
  // An empty output directory is a config error naming the key, at `config check` already.
  auto empty = test::run_cli({"config", "check",
                              (test::source_dir() / "configs" / "tiny_two_stage.yaml").string(),
                              "run.output_dir="});
  CHECK(empty.exit_code == 1);
  CHECK_THAT(empty.err, Contains("run.output_dir") && Contains("must not be empty"));
}

TEST_CASE("runs: small inputs that used to pass or hang are clear one-line errors", "[runs][cli]") {
  test::TempDir dir;
  auto missing = test::run_cli({"releases", "--registry", (dir / "nonexistent.json").string()});
  CHECK(missing.exit_code == 1);
  CHECK_THAT(missing.err, Contains("nonexistent.json") && Contains("no such release registry"));
  auto rollback = test::run_cli({"rollback", "--registry", (dir / "nonexistent.json").string()});
  CHECK(rollback.exit_code == 1);
  CHECK_FALSE(fs::exists(dir / "nonexistent.json"));

  // A FIFO named like a model: refused before it is opened (the reader would block forever).
  REQUIRE(::mkfifo((dir / "x.gguf").c_str(), 0600) == 0);
  auto fifo = test::run_cli({"inspect", (dir / "x.gguf").string()});
  CHECK(fifo.exit_code == 1);
  CHECK(count_lines(fifo.err) == 1);
  CHECK_THAT(fifo.err, Contains("x.gguf") && Contains("not a regular file"));

  // Weights with NaN: the tiny model with two NaN and one +inf in the last layer's q_proj is
  // refused at load, naming the file, the tensor and the count (3, as written), instead of giving
  // NaN logits.
  const fs::path tiny = test::safetune_home() / "models" / "tiny-llama", bad = dir / "nan-model";
  fs::create_directories(bad);
  for (const auto& e : fs::directory_iterator(tiny))
    if (e.path().filename() != "model.safetensors")
      fs::copy_file(e.path(), bad / e.path().filename());
  auto tensors = io::safetensors_load(tiny / "model.safetensors");
  std::string poisoned;
  for (auto& [name, t] : tensors)
    if (name.find("self_attn.q_proj.weight") != std::string::npos) poisoned = name;  // the last one
  REQUIRE(!poisoned.empty());
  for (auto& [name, t] : tensors)
    if (name == poisoned) {
      t = t.clone();
      auto flat = t.view({-1});
      flat[0] = std::numeric_limits<float>::quiet_NaN();
      flat[5] = std::numeric_limits<float>::quiet_NaN();
      flat[7] = std::numeric_limits<float>::infinity();
    }
  io::safetensors_save(bad / "model.safetensors", tensors);
  auto nan = test::run_cli({"forward", bad.string(), "--ids", "1,2,3"});
  CHECK(nan.exit_code == 1);
  CHECK(count_lines(nan.err) == 1);
  CHECK_THAT(nan.err, Contains(poisoned) && Contains("tensor has 3 of") &&
                          Contains("NaN or infinite") && Contains("nan-model"));
}
