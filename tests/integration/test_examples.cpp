// The example programs build and run: examples/two_stage_trainer on the tiny model writes what
// `safetune train` writes, with the same numbers for the same config and seed.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "safetune/lora/model_adapters.hpp"
#include "safetune/safety/assessment.hpp"
#include "support.hpp"

using namespace safetune;
namespace fs = std::filesystem;

namespace {

// The built example programs (SAFETUNE_EXAMPLES overrides the build's directory).
fs::path example(const std::string& name) {
  const char* dir = std::getenv("SAFETUNE_EXAMPLES");
  return fs::path(dir && *dir ? dir : SAFETUNE_TEST_EXAMPLES) / name;
}

std::vector<nlohmann::json> jsonl(const fs::path& p) {
  std::ifstream in(p);
  std::vector<nlohmann::json> out;
  for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line));
  return out;
}

// The tiny two-stage config cut short, with every step on: both stages, kl_anchor, the guard,
// assessments, the task metric, the report and a release.
std::vector<std::string> tiny_args(const fs::path& out, const fs::path& registry) {
  return {(test::source_dir() / "configs" / "tiny_two_stage.yaml").string(),
          "run.output_dir=" + out.string(),
          "stage1.train.max_steps=4",
          "stage2.train.max_steps=4",
          "stage1.train.checkpoint_every=2",
          "stage2.train.checkpoint_every=2",
          "stage1.data.max_length=64",
          "stage2.data.max_length=64",
          "safety.limit=2",
          "safety.max_new_tokens=4",
          "stage2.task_eval_limit=2",
          "safety.guard.every_n_steps=2",
          "safety.release.registry=" + registry.string()};
}

}  // namespace

TEST_CASE(
    "examples: two_stage_trainer runs the recipe as `safetune train` does, to the same numbers",
    "[examples]") {
  const fs::path exe = example("two_stage_trainer");
  if (!fs::exists(exe)) {
    WARN("examples not built (SAFETUNE_BUILD_EXAMPLES=OFF): " << exe);
    return;
  }
  test::TempDir dir;
  fs::current_path(test::source_dir());  // the config's data paths are relative to the repository
  std::vector<std::string> cli_args{"train"};
  for (auto& a : tiny_args(dir / "cli", dir / "cli_registry.json")) cli_args.push_back(a);
  auto by_cli = test::run_cli(cli_args);
  REQUIRE(by_cli.exit_code == 0);
  auto by_example =
      test::run_program(exe.string(), tiny_args(dir / "example", dir / "example_registry.json"));
  INFO(by_example.err);
  REQUIRE(by_example.exit_code == 0);
  CHECK_THAT(by_example.out, Catch::Matchers::Contains("gates: passed"));

  for (const char* f :
       {"adapters/safety/adapter_model.safetensors", "adapters/task/adapter_model.safetensors",
        "report/safety_report.md", "report/safety_report.json", "assessments/tuned.json"})
    CHECK(fs::exists(dir / "example" / f));
  // Both adapters hold the same weights: the same seed, data order and steps.
  for (const char* a : {"safety", "task"})
    CHECK(lora::ModelAdapters::read_info(dir / "example" / "adapters" / a).weights_sha256 ==
          lora::ModelAdapters::read_info(dir / "cli" / "adapters" / a).weights_sha256);
  // Every logged loss term, learning rate and gradient norm agrees step by step.
  for (const char* stage : {"stage1", "stage2"}) {
    auto want = jsonl(dir / "cli" / stage / "metrics.jsonl"),
         got = jsonl(dir / "example" / stage / "metrics.jsonl");
    INFO(stage);
    REQUIRE(got.size() == want.size());
    REQUIRE(!want.empty());
    for (std::size_t i = 0; i < want.size(); ++i)
      for (const auto& [key, value] : want[i].items())
        if (key.rfind("loss", 0) == 0 || key == "lr" || key == "grad_norm" || key == "step")
          CHECK(got[i][key] == value);
  }
  // The same assessments after each stage, and the same guard events in the report.
  for (const char* label : {"baseline", "aligned", "tuned"}) {
    auto want =
        safety::load_assessment(dir / "cli" / "assessments" / (std::string(label) + ".json"));
    auto got =
        safety::load_assessment(dir / "example" / "assessments" / (std::string(label) + ".json"));
    INFO(label);
    CHECK(got.refusal.overall.k == want.refusal.overall.k);
    CHECK(got.benign_compliance.overall.k == want.benign_compliance.overall.k);
    CHECK(got.discrimination.overall.k == want.discrimination.overall.k);
  }
  auto report = [&](const char* run) {
    std::ifstream in(dir / run / "report" / "safety_report.json");
    return nlohmann::json::parse(in);
  };
  CHECK(report("example")["guard_events"].size() == report("cli")["guard_events"].size());
  CHECK(fs::exists(dir / "example_registry.json"));
}
