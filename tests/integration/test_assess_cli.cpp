// `safetune assess` on public benchmark files with the default flags: harmful-only and benign-only
// suites, on the tiny model (its answers do not matter; the exit code and the gates do).
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "safetune/io/atomic_file.hpp"
#include "support.hpp"

using namespace safetune;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {
fs::path data(const char* file) { return test::source_dir() / "tests/data/safety" / file; }
}  // namespace

TEST_CASE(
    "assess CLI: a harmful-only suite passes its default gates, the benign floor not applicable",
    "[assess_cli]") {
  const fs::path tiny = test::safetune_home() / "models" / "tiny-llama";
  REQUIRE(fs::exists(tiny / "config.json"));
  test::TempDir tmp;
  // docs/public-benchmarks.md's example: AdvBench with the default flags (it exited 3 before).
  auto r = test::run_cli({"assess", tiny.string(), "--suite", data("advbench_small.csv").string(),
                          "--format", "advbench", "--max-new-tokens", "2", "--out",
                          (tmp / "adv").string()});
  INFO(r.out << r.err);
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.out,
             Contains("gates: passed") && Contains("not applicable: benign compliance floor"));
  auto report = nlohmann::json::parse(io::read_file(tmp / "adv" / "report" / "safety_report.json"));
  CHECK(report["verdict"]["passed"] == true);
  CHECK(report["verdict"]["not_applicable"].size() == 1);

  // JailbreakBench's benign file, declared benign two ways: now the benign floor is evaluable.
  for (std::vector<std::string> how :
       {std::vector<std::string>{"--suite",
                                 "jailbreakbench:benign:" + data("jbb_small.csv").string()},
        {"--suite", data("jbb_small.csv").string(), "--format", "jailbreakbench", "--kind",
         "benign"}}) {
    std::vector<std::string> args = {
        "assess", tiny.string(), "--max-new-tokens",    "2", "--min-benign-compliance",
        "1.0",    "--out",       (tmp / "jbb").string()};
    args.insert(args.end(), how.begin(), how.end());
    auto b = test::run_cli(args);
    INFO(b.out << b.err);
    auto j = nlohmann::json::parse(io::read_file(tmp / "jbb" / "assessment.json"));
    CHECK(j["metrics"]["benign_compliance"]["overall"]["n"] == 3);
    CHECK(j["metrics"]["refusal"]["overall"]["n"] == 0);
    CHECK(
        (b.exit_code == 0 || b.exit_code == 3));  // the tiny model's answers decide; no usage error
    CHECK_THAT(b.out, !Contains("benign compliance floor not applicable"));
  }
}
