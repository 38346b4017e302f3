// LoraConfig target selection and rank/alpha patterns on hand-checked module names.
#include "safetune/error.hpp"
#include "safetune/lora/config.hpp"
#include "safetune/recipes/two_stage.hpp"

#include <catch2/catch.hpp>

using safetune::lora::LoraConfig;

namespace {
const std::vector<std::string> kNames{
    "model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj",
    "model.layers.0.self_attn.v_proj", "model.layers.0.self_attn.o_proj",
    "model.layers.0.mlp.gate_proj",    "model.layers.0.mlp.up_proj",
    "model.layers.0.mlp.down_proj",    "model.layers.10.self_attn.q_proj",
    "model.layers.10.mlp.down_proj",   "lm_head"};
}

TEST_CASE("target selection by suffix, regex and all-linear", "[lora][config]") {
  LoraConfig c;
  c.target_suffixes = {"q_proj", "self_attn.v_proj"};
  CHECK(c.select(kNames) == std::vector<std::string>{"model.layers.0.self_attn.q_proj",
                                                     "model.layers.0.self_attn.v_proj",
                                                     "model.layers.10.self_attn.q_proj"});
  CHECK_FALSE(c.targets("model.layers.0.self_attn.xq_proj"));  // a suffix is a whole component
  CHECK(c.targets("q_proj"));

  LoraConfig r;
  r.target_regex = R"(.*layers\.1\..*proj)";
  CHECK(r.select(kNames).empty());  // fullmatch: layers.10 is not layers.1
  r.target_regex = R"(.*layers\.10\..*)";
  CHECK(r.select(kNames).size() == 2);

  LoraConfig a;
  a.all_linear = true;
  const auto all = a.select(kNames);
  CHECK(all.size() == kNames.size() - 1);
  CHECK(std::find(all.begin(), all.end(), "lm_head") == all.end());
  a.exclude_suffixes = {"down_proj"};
  CHECK(a.select(kNames).size() == kNames.size() - 3);
}

TEST_CASE("rank and alpha patterns follow PEFT's first-match rule", "[lora][config]") {
  LoraConfig c;
  c.all_linear = true;
  c.rank = 8;
  c.alpha = 16;
  c.rank_pattern = {{"q_proj", 4}, {R"(layers\.10\..*)", 32}};
  c.alpha_pattern = {{"mlp.down_proj", 2.5}};
  CHECK(c.rank_for("model.layers.0.self_attn.q_proj") == 4);
  CHECK(c.rank_for("model.layers.10.self_attn.q_proj") == 4);  // first key wins
  CHECK(c.rank_for("model.layers.10.mlp.down_proj") == 32);
  CHECK(c.rank_for("model.layers.0.mlp.up_proj") == 8);
  CHECK(c.rank_for("model.layers.0.self_attn.xq_proj") == 8);
  CHECK(c.alpha_for("model.layers.0.mlp.down_proj") == 2.5);
  CHECK(c.alpha_for("model.layers.0.self_attn.q_proj") == 16);
  const auto s =
      c.spec_for("task", "model.layers.0.self_attn.q_proj", safetune::lora::AdapterRole::task);
  CHECK(s.rank == 4);
  CHECK(s.alpha == 16);
  CHECK(s.role == safetune::lora::AdapterRole::task);
}

TEST_CASE("invalid LoRA configs are ConfigErrors", "[lora][config]") {
  LoraConfig none;
  CHECK_THROWS_AS(none.validate(), safetune::ConfigError);
  LoraConfig bad;
  bad.target_regex = "(unclosed";
  CHECK_THROWS_AS(bad.validate(), safetune::ConfigError);
  LoraConfig rank;
  rank.target_suffixes = {"q_proj"};
  rank.rank = 0;
  CHECK_THROWS_AS(rank.validate(), safetune::ConfigError);
  LoraConfig pat;
  pat.target_suffixes = {"q_proj"};
  pat.rank_pattern = {{"[", 2}};
  CHECK_THROWS_AS(pat.validate(), safetune::ConfigError);
  CHECK_THROWS_AS(safetune::lora::parse_role("admin"), safetune::ConfigError);
  CHECK(safetune::lora::parse_role("safety") == safetune::lora::AdapterRole::safety);
}

TEST_CASE("LoraConfig as a YAML section: targets and init, recipe defaults kept",
          "[lora][config]") {
  LoraConfig c;  // PEFT's defaults: alpha 8, no targets
  CHECK(c.alpha == 8);
  safetune::config_load_string(c, "rank: 4\ntargets: [all-linear]\ninit: gaussian\n", "lora.yaml");
  CHECK(c.rank == 4);
  CHECK(c.all_linear);
  CHECK(c.target_suffixes.empty());
  CHECK(c.init == safetune::lora::InitMethod::gaussian);
  CHECK(c.targets("model.layers.0.mlp.up_proj"));
  CHECK_FALSE(c.targets("lm_head"));

  // What stage1.lora / stage2.lora start from (docs/config.md): alpha 16 on every projection.
  LoraConfig d = safetune::recipes::default_adapter_config();
  CHECK(d.alpha == 16);
  CHECK(d.target_suffixes.size() == 7);
  const std::string dumped = safetune::config_dump(d);
  CHECK_THAT(dumped, Catch::Contains("alpha: 16"));
  CHECK_THAT(dumped, Catch::Contains("init: peft_default"));
  CHECK(d.target_suffixes.size() == 7);  // dumping changes nothing
  safetune::config_load_string(d, "targets: [q_proj, v_proj]\n", "lora.yaml");
  CHECK(d.target_suffixes == std::vector<std::string>{"q_proj", "v_proj"});
  CHECK_FALSE(d.all_linear);
  CHECK(d.alpha == 16);
  CHECK_THROWS_AS(safetune::config_load_string(d, "init: xavier\n", "lora.yaml"),
                  safetune::ConfigError);
}
