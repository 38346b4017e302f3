// Helpers shared by tests: locating fixtures and the CLI, running commands, temp directories.
#pragma once
#include <ATen/core/Tensor.h>
#include <sys/types.h>

#include <filesystem>
#include <string>
#include <vector>

namespace safetune::test {

std::filesystem::path source_dir();
std::filesystem::path fixture_dir();    // written by tests/reference/make_fixtures.py
std::filesystem::path safetune_home();  // bootstrap cache (venv, models)
std::filesystem::path smollm2_gguf();   // the real model
std::filesystem::path python();         // interpreter with the reference packages

struct RunResult {
  int exit_code;
  std::string out, err;
};
// Runs a program / the safetune CLI / the reference Python (`python -c script args...`) with the
// given arguments (no shell), capturing stdout and stderr.
RunResult run_program(const std::string& exe, const std::vector<std::string>& args);
RunResult run_cli(const std::vector<std::string>& args);
RunResult run_python(const std::string& script, const std::vector<std::string>& args = {});
// The trainable parameters stored in a Trainer checkpoint (trainer.pt), in archive order.
std::vector<at::Tensor> load_checkpoint_params(const std::filesystem::path& trainer_pt);
// Starts the CLI without waiting; `env` entries (NAME=value) are added to or replace the
// inherited environment; stdout and stderr go to the given files. Returns the process id.
pid_t spawn_cli(const std::vector<std::string>& args, const std::vector<std::string>& env,
                const std::filesystem::path& out, const std::filesystem::path& err);
pid_t spawn_program(const std::string& exe, const std::vector<std::string>& args,
                    const std::vector<std::string>& env, const std::filesystem::path& out,
                    const std::filesystem::path& err);
// Waits for a spawned process: its exit code, or 128 + signal number.
int wait_exit_code(pid_t pid);

// A fresh directory removed at scope exit.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

void write_text(const std::filesystem::path& p, const std::string& text);

// The tensor named `key` in a safetensors file; fails the running test case when it is absent.
at::Tensor tensor_in(const std::filesystem::path& file, const std::string& key);

}  // namespace safetune::test
