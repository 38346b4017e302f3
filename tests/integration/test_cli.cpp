// The safetune command line: exit codes (0 ok, 1 error, 2 usage) and one-line error messages.
#include <catch2/catch.hpp>

#include "support.hpp"

using namespace safetune;
using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;

namespace {
int count_lines(const std::string& s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n;
}
}  // namespace

TEST_CASE("cli: --version and --help", "[cli]") {
  auto v = test::run_cli({"--version"});
  CHECK(v.exit_code == 0);
  CHECK_THAT(v.out, StartsWith("safetune "));
  auto h = test::run_cli({"--help"});
  CHECK(h.exit_code == 0);
  CHECK_THAT(h.out, Contains("config"));
}

TEST_CASE("cli: usage errors exit 2", "[cli]") {
  auto r = test::run_cli({"no-such-command"});
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.err, StartsWith("error: "));
  auto bad = test::run_cli({"--log-level", "loud", "config", "reference"});
  CHECK(bad.exit_code == 2);
  CHECK_THAT(bad.err, Contains("unknown log level 'loud'"));
}

TEST_CASE("cli: global flags are accepted after the subcommand too", "[cli]") {
  test::TempDir dir;
  test::write_text(dir / "ok.yaml", "model:\n  path: m.gguf\n");
  auto quiet = test::run_cli({"config", "check", (dir / "ok.yaml").string(), "--quiet"});
  CHECK(quiet.exit_code == 0);
  auto level =
      test::run_cli({"config", "check", (dir / "ok.yaml").string(), "--log-level", "warn"});
  CHECK(level.exit_code == 0);
  // The value reaches the global option: its own check rejects it, not CLI11's "not expected".
  auto bad = test::run_cli({"config", "check", (dir / "ok.yaml").string(), "--log-level", "loud"});
  CHECK(bad.exit_code == 2);
  CHECK_THAT(bad.err, Contains("unknown log level 'loud'"));
  // A nested subcommand too, and an option no command knows is still a usage error.
  auto nested = test::run_cli({"config", "reference", "-q"});
  CHECK(nested.exit_code == 0);
  auto unknown = test::run_cli({"config", "check", (dir / "ok.yaml").string(), "--loud"});
  CHECK(unknown.exit_code == 2);
}

TEST_CASE("cli: config check and show", "[cli]") {
  test::TempDir dir;
  test::write_text(dir / "ok.yaml", "model:\n  path: m.gguf\n");
  auto ok = test::run_cli({"config", "check", (dir / "ok.yaml").string()});
  CHECK(ok.exit_code == 0);
  auto show =
      test::run_cli({"config", "show", (dir / "ok.yaml").string(), "stage2.train.max_steps=7"});
  CHECK(show.exit_code == 0);
  CHECK_THAT(show.out, Contains("max_steps: 7"));
  CHECK_THAT(show.out, Contains("path: m.gguf"));

  test::write_text(dir / "bad.yaml", "model:\n  path: m.gguf\n  dtype: fp8\n");
  auto bad = test::run_cli({"config", "check", (dir / "bad.yaml").string()});
  CHECK(bad.exit_code == 1);
  CHECK(count_lines(bad.err) == 1);
  CHECK_THAT(bad.err, StartsWith("error: " + (dir / "bad.yaml").string() +
                                 ":3:10: model.dtype: expected one of"));
  test::write_text(dir / "reg.yaml",
                   "model:\n  path: m.gguf\nstage2:\n  regularizers:\n    - {name: kl_anchr}\n");
  auto reg = test::run_cli({"config", "check", (dir / "reg.yaml").string()});
  CHECK(reg.exit_code == 1);
  CHECK_THAT(reg.err, Contains("stage2.regularizers.0.name: expected one of"));
  CHECK_THAT(reg.err, Contains("(did you mean 'kl_anchor'?)"));

  auto missing = test::run_cli({"config", "check", (dir / "nope.yaml").string()});
  CHECK(missing.exit_code == 1);
  CHECK_THAT(missing.err, Contains("config file not found"));

  auto syntax = test::run_cli({"config", "show", (dir / "ok.yaml").string(), "stage2.train.lr"});
  CHECK(syntax.exit_code == 2);
  CHECK_THAT(syntax.err, Contains("bad override 'stage2.train.lr'"));
}

TEST_CASE("cli: bundled configs validate", "[cli]") {
  for (const auto& entry : std::filesystem::directory_iterator(test::source_dir() / "configs")) {
    if (entry.path().extension() != ".yaml") continue;
    INFO(entry.path());
    auto r = test::run_cli({"config", "check", entry.path().string()});
    CHECK(r.exit_code == 0);
    CHECK(r.err == "");
  }
}
