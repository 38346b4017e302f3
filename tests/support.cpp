// Test helpers: environment lookups, CLI runner (posix_spawn), temp directories.
#include "support.hpp"

#include <torch/torch.h>
#include <catch2/catch.hpp>

#include "safetune/io/safetensors.hpp"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string_view>

extern char** environ;

namespace safetune::test {
namespace fs = std::filesystem;

// The build bakes in defaults; the environment variable of the same name overrides each.
static fs::path env_path(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return (v && *v) ? v : fallback;
}

fs::path source_dir() { return env_path("SAFETUNE_SOURCE_DIR", SAFETUNE_TEST_SOURCE_DIR); }
fs::path fixture_dir() { return env_path("SAFETUNE_FIXTURE_DIR", SAFETUNE_TEST_FIXTURE_DIR); }
fs::path safetune_home() { return env_path("SAFETUNE_HOME", SAFETUNE_TEST_HOME); }
fs::path python() { return env_path("SAFETUNE_PYTHON", SAFETUNE_TEST_PYTHON); }
fs::path smollm2_gguf() { return safetune_home() / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"; }

static std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

pid_t spawn_program(const std::string& exe, const std::vector<std::string>& args,
                    const std::vector<std::string>& env, const fs::path& out, const fs::path& err) {
  std::vector<std::string> argv_s{exe};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& s : argv_s) argv.push_back(s.data());
  argv.push_back(nullptr);
  // The parent's environment, with `env` (NAME=value) replacing variables of the same name.
  std::vector<std::string> env_s(env);
  for (char** e = environ; *e; ++e) {
    std::string_view kv(*e);
    auto name = kv.substr(0, kv.find('=') + 1);
    bool replaced = false;
    for (const auto& o : env) replaced = replaced || o.compare(0, name.size(), name) == 0;
    if (!replaced) env_s.emplace_back(kv);
  }
  std::vector<char*> envp;
  for (auto& s : env_s) envp.push_back(s.data());
  envp.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&fa, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  pid_t pid;
  int rc = posix_spawn(&pid, exe.c_str(), &fa, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) throw std::runtime_error("cannot spawn " + exe);
  return pid;
}

pid_t spawn_cli(const std::vector<std::string>& args, const std::vector<std::string>& env,
                const fs::path& out, const fs::path& err) {
  return spawn_program(env_path("SAFETUNE_CLI", SAFETUNE_TEST_CLI).string(), args, env, out, err);
}

int wait_exit_code(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

RunResult run_program(const std::string& exe, const std::vector<std::string>& args) {
  TempDir tmp;
  fs::path out = tmp / "stdout", err = tmp / "stderr";
  int code = wait_exit_code(spawn_program(exe, args, {}, out, err));
  return RunResult{code, slurp(out), slurp(err)};
}

RunResult run_cli(const std::vector<std::string>& args) {
  return run_program(env_path("SAFETUNE_CLI", SAFETUNE_TEST_CLI).string(), args);
}

RunResult run_python(const std::string& script, const std::vector<std::string>& args) {
  std::vector<std::string> a{"-c", script};
  a.insert(a.end(), args.begin(), args.end());
  return run_program(python().string(), a);
}

std::vector<at::Tensor> load_checkpoint_params(const fs::path& trainer_pt) {
  torch::serialize::InputArchive archive;
  archive.load_from(trainer_pt.string());
  std::vector<at::Tensor> out;
  for (const auto& key : archive.keys()) {
    if (key.rfind("param.", 0) != 0) continue;
    at::Tensor t;
    archive.read(key, t);
    out.push_back(t);
  }
  return out;
}

TempDir::TempDir() {
  static std::mt19937_64 rng{std::random_device{}()};
  path_ = fs::temp_directory_path() / ("safetune-test-" + std::to_string(::getpid()) + "-" +
                                       std::to_string(rng() % 1000000000ULL));
  fs::create_directories(path_);
}
TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

void write_text(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream o(p, std::ios::binary);
  o << text;
}

at::Tensor tensor_in(const std::filesystem::path& file, const std::string& key) {
  for (auto& [name, t] : io::safetensors_load(file))
    if (name == key) return t;
  FAIL("no tensor " << key << " in " << file);
  return {};
}

}  // namespace safetune::test
