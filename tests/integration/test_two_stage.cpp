// The two-stage recipe end to end on the tiny model: losses fall, the safety adapter stays frozen,
// every output is written and PEFT-loadable, resume continues, and config mistakes are caught.
#include <catch2/catch.hpp>

#include <fstream>
#include <nlohmann/json.hpp>

#include "safetune/error.hpp"
#include "safetune/io/atomic_file.hpp"
#include "safetune/lora/model_adapters.hpp"
#include "safetune/recipes/two_stage.hpp"
#include "support.hpp"

using namespace safetune;
namespace fs = std::filesystem;

namespace {
std::vector<double> losses(const fs::path& metrics) {
  std::ifstream in(metrics);
  std::vector<double> out;
  for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line)["loss"]);
  return out;
}

recipes::TwoStageConfig tiny(const fs::path& out, std::vector<std::string> extra = {}) {
  recipes::TwoStageConfig cfg;
  std::vector<std::string> o{"run.output_dir=" + out.string(), "stage1.train.max_steps=12",
                             "stage2.train.max_steps=12", "stage1.train.checkpoint_every=6",
                             "stage2.train.checkpoint_every=6", "safety.limit=3", "safety.max_new_tokens=4",
                             "stage2.task_eval_limit=3"};
  o.insert(o.end(), extra.begin(), extra.end());
  // Data paths in the config are relative to the repository root.
  fs::current_path(test::source_dir());
  config_load(cfg, test::source_dir() / "configs" / "tiny_two_stage.yaml", o);
  return cfg;
}
}  // namespace

TEST_CASE("two-stage: both stages learn, the safety adapter stays frozen, outputs are complete", "[recipe]") {
  test::TempDir dir;
  auto cfg = tiny(dir / "run");
  auto r = recipes::run_two_stage(cfg, config_dump(cfg));
  for (const char* stage : {"stage1", "stage2"}) {
    auto l = losses(dir / "run" / stage / "metrics.jsonl");
    INFO(stage);
    REQUIRE(l.size() == 12);
    CHECK(l.back() < l.front());
  }
  CHECK(r.safety_sha_before.size() == 64);
  CHECK(r.safety_sha_before == r.safety_sha_after);
  CHECK(lora::ModelAdapters::read_info(dir / "run" / "adapters" / "safety").content_sha256 == r.safety_sha_before);
  CHECK(lora::ModelAdapters::read_info(dir / "run" / "adapters" / "safety").required_at_inference);
  CHECK(lora::ModelAdapters::read_info(dir / "run" / "adapters" / "task").role == lora::AdapterRole::task);
  for (const char* f : {"config.yaml", "report/safety_report.md", "report/safety_report.json", "report/safety_report.html",
                        "assessments/baseline.json", "assessments/aligned.json", "assessments/tuned.json"})
    CHECK(fs::exists(dir / "run" / f));
  REQUIRE(r.tuned.assessment);
  CHECK(r.tuned.assessment->refusal.overall.n == 3);
  CHECK(r.tuned.task_metric >= 0);
  // The stage-2 metrics log the regularizer's own term.
  std::ifstream in(dir / "run" / "stage2" / "metrics.jsonl");
  std::string first;
  std::getline(in, first);
  auto j = nlohmann::json::parse(first);
  CHECK(j.contains("loss_kl_anchor"));
  CHECK(j.contains("loss_task_ce"));

  // Stage 2 alone on the saved safety adapter, merged into the weights (the demo's variant (a)).
  auto cfg2 = tiny(dir / "run2", {"stage1.enabled=false", "stage2.safety_adapter=" + (dir / "run" / "adapters" / "safety").string(),
                                  "stage2.safety_mode=merged", "stage2.train.max_steps=4", "safety.assess=false"});
  auto r2 = recipes::run_two_stage(cfg2, config_dump(cfg2));
  CHECK(r2.safety_sha_before == r.safety_sha_before);
  CHECK(r2.safety_sha_after == r.safety_sha_before);
  CHECK(fs::exists(dir / "run2" / "report" / "safety_report.json"));
  CHECK(fs::exists(dir / "run2" / "adapters" / "task" / "adapter_model.safetensors"));
}

TEST_CASE("two-stage: every bundled regularizer trains on the tiny model", "[recipe]") {
  for (std::string reg : {"token_constrained", "orthogonal", "subspace", "l2_delta", "replay", "gradient_projection"}) {
    test::TempDir dir;
    INFO(reg);
    auto cfg = tiny(dir / "run", {"safety.assess=false", "stage1.train.max_steps=4", "stage2.train.max_steps=4",
                                  "stage2.regularizers.0.name=" + reg, "stage2.task_eval="});
    auto r = recipes::run_two_stage(cfg, config_dump(cfg));
    CHECK(r.safety_sha_before == r.safety_sha_after);
    CHECK(losses(dir / "run" / "stage2" / "metrics.jsonl").size() == 4);
  }
}

TEST_CASE("two-stage: unknown regularizers and bad hyperparameters are config errors", "[recipe]") {
  test::TempDir dir;
  CHECK_THROWS_WITH(tiny(dir / "x", {"stage2.regularizers.0.name=kl_anchr"}),
                    Catch::Matchers::Contains("stage2.regularizers.0.name: expected one of") &&
                        Catch::Matchers::Contains("did you mean 'kl_anchor'"));
  CHECK_THROWS_WITH(tiny(dir / "x", {"stage2.regularizers.0.rho=1.5"}),
                    Catch::Matchers::Contains("stage2.regularizers.0.rho: value 1.5 is out of range"));
  CHECK_THROWS_WITH(tiny(dir / "x", {"stage2.safety_mode=fused"}),
                    Catch::Matchers::Contains("stage2.safety_mode: expected one of separate, merged"));
}
