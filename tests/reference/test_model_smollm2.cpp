// The real SmolLM2-135M-Instruct Q4_1 GGUF against transformers loading the same file.
#include <torch/torch.h>
#include <catch2/catch.hpp>

#include <cstdio>
#include <map>

#include "safetune/io/safetensors.hpp"
#include "safetune/model/causal_lm.hpp"
#include "safetune/model/generate.hpp"
#include "support.hpp"

using namespace safetune;

TEST_CASE("model: SmolLM2 GGUF logits and greedy tokens equal transformers'",
          "[reference][model]") {
  auto ref_path = test::fixture_dir() / "model" / "smollm2_ref.safetensors";
  INFO("reference " << ref_path << " is written only when " << test::smollm2_gguf() << " exists");
  REQUIRE(std::filesystem::exists(ref_path));
  std::map<std::string, at::Tensor> ref;
  for (auto& [k, t] : io::safetensors_load(ref_path)) ref[k] = t.clone();

  auto m = model::load(test::smollm2_gguf());
  {
    torch::NoGradGuard ng;
    auto logits = m->forward(ref["ids"]);
    REQUIRE(logits.sizes() == ref["logits"].sizes());
    double err = (logits - ref["logits"]).abs().max().item<double>();
    double last = (logits[0][-1] - ref["logits"][0][-1]).abs().max().item<double>();
    std::printf(
        "[model parity] SmolLM2-135M Q4_1: max abs logits error %.3g (all 16 positions), %.3g "
        "(next token)\n",
        err, last);
    CHECK(err <= 1e-3);
  }
  model::GenerateOptions o;
  o.max_new_tokens = 32;
  o.stop_tokens = std::vector<std::int64_t>{};
  o.pad_token_id = 0;
  auto out = model::generate(*m, ref["ids"], {}, o);
  CHECK(at::equal(out.sequences, ref["greedy"].to(at::kLong)));
}

TEST_CASE("cli: inspect and forward on the SmolLM2 GGUF", "[reference][model][cli]") {
  auto ref_path = test::fixture_dir() / "model" / "smollm2_ref.safetensors";
  REQUIRE(std::filesystem::exists(ref_path));
  std::map<std::string, at::Tensor> ref;
  for (auto& [k, t] : io::safetensors_load(ref_path)) ref[k] = t.clone();

  auto r = test::run_cli({"inspect", test::smollm2_gguf().string()});
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.out, Catch::Matchers::Contains("architecture: llama"));
  CHECK_THAT(r.out, Catch::Matchers::Contains("tied embeddings: yes"));
  CHECK_THAT(r.out, Catch::Matchers::Contains("model.layers.29.mlp.down_proj.weight"));

  auto ids = ref["ids"][0].contiguous();
  std::string text;
  for (std::int64_t i = 0; i < ids.numel(); ++i)
    text += (i ? "," : "") + std::to_string(ids[i].item<std::int64_t>());
  auto f = test::run_cli({"forward", test::smollm2_gguf().string(), "--ids", text});
  REQUIRE(f.exit_code == 0);
  auto top = ref["logits"][0][-1].argmax().item<std::int64_t>();
  CHECK_THAT(f.out, Catch::Matchers::Contains("  1  id " + std::to_string(top) + "  logit"));
}
