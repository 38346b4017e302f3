// Helpers shared by tests: locating fixtures and the CLI, running commands, temp directories.
#pragma once
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
// Runs the safetune CLI with the given arguments (no shell), capturing stdout and stderr.
RunResult run_cli(const std::vector<std::string>& args);

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

}  // namespace safetune::test
