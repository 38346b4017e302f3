// AdapterStack and LoraConfig against PEFT: two adapters (one rsLoRA) on a Linear, the merged
// weight from merge_and_unload, and PEFT's target selection with rank/alpha patterns.
#include "safetune/lora/adapter_stack.hpp"
#include "safetune/lora/config.hpp"
#include "support.hpp"

#include <torch/torch.h>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <fstream>
#include <set>

using namespace safetune;
using nlohmann::json;

namespace {

std::filesystem::path lora_dir() { return test::fixture_dir() / "lora"; }

json read_json(const std::string& name) {
  std::ifstream in(lora_dir() / name);
  REQUIRE(in.good());
  return json::parse(in);
}

at::Tensor load(const json& meta, const std::string& name) {
  std::vector<std::int64_t> shape = meta.at("shapes").at(name).get<std::vector<std::int64_t>>();
  std::ifstream in(lora_dir() / (name + ".bin"), std::ios::binary);
  REQUIRE(in.good());
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::int64_t n = 1;
  for (auto d : shape) n *= d;
  REQUIRE(static_cast<std::int64_t>(bytes.size()) == n * 4);
  return torch::from_blob(bytes.data(), shape, torch::kFloat).clone();
}

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

}  // namespace

TEST_CASE("two adapters reproduce PEFT's output and merged weight", "[reference][lora]") {
  const json meta = read_json("linear.json");
  const auto x = load(meta, "x"), W = load(meta, "W"), bias = load(meta, "bias");
  lora::AdapterStack st("proj", W.clone());
  for (const std::string name : {"safety", "task"}) {
    const auto& a = meta.at("adapters").at(name);
    lora::AdapterSpec s;
    s.name = name;
    s.rank = a.at("r").get<std::int64_t>();
    s.alpha = a.at("alpha").get<double>();
    s.use_rslora = a.at("use_rslora").get<bool>();
    st.add(s, load(meta, "A_" + name), load(meta, "B_" + name));
    CHECK(st.get(name).scale() == Approx(a.at("scaling").get<double>()).epsilon(1e-12));
  }
  const auto base = at::linear(x, st.base_weight(), bias);
  CHECK(max_abs_diff(base, load(meta, "y_base")) < 1e-5);
  const auto y_both = load(meta, "y_both");
  const double d_both = max_abs_diff(st.apply(x, base), y_both);
  WARN("measured max |y - y_PEFT| with both adapters active: " << d_both);
  CHECK(d_both < 1e-5);
  // make sure the fixture is not degenerate: both adapters move the output
  CHECK(max_abs_diff(y_both, load(meta, "y_safety")) > 1e-2);
  CHECK(max_abs_diff(y_both, load(meta, "y_task")) > 1e-2);
  st.set_enabled("task", false);
  CHECK(max_abs_diff(st.apply(x, base), load(meta, "y_safety")) < 1e-5);
  st.set_enabled("task", true);
  st.set_enabled("safety", false);
  CHECK(max_abs_diff(st.apply(x, base), load(meta, "y_task")) < 1e-5);
  st.set_enabled("safety", true);

  st.merge({"safety", "task"}, lora::MergeCopy::keep);
  const double d_merged = max_abs_diff(st.base_weight(), load(meta, "W_merged"));
  WARN("measured max |W_merged - PEFT merge_and_unload| : " << d_merged);
  CHECK(d_merged < 1e-5);
  CHECK(max_abs_diff(at::linear(x, st.base_weight(), bias), y_both) < 1e-5);
  st.unmerge({"safety", "task"});
  CHECK(torch::equal(st.base_weight(), W));
}

TEST_CASE("target selection and rank/alpha patterns match PEFT", "[reference][lora]") {
  const json all = read_json("targets.json");
  for (const auto& [name, c] : all.items()) {
    INFO("case " << name);
    lora::LoraConfig cfg;
    cfg.rank = 4;
    cfg.alpha = 8;
    const auto& tm = c.at("config").at("target_modules");
    if (tm.is_array()) {
      cfg.target_suffixes = tm.get<std::vector<std::string>>();
    } else if (tm.get<std::string>() == "all-linear") {
      cfg.all_linear = true;
    } else {
      cfg.target_regex = tm.get<std::string>();
    }
    if (c.at("config").contains("rank_pattern"))
      for (const auto& [k, v] : c.at("config").at("rank_pattern").items())
        cfg.rank_pattern.emplace_back(k, v.get<std::int64_t>());
    if (c.at("config").contains("alpha_pattern"))
      for (const auto& [k, v] : c.at("config").at("alpha_pattern").items())
        cfg.alpha_pattern.emplace_back(k, v.get<double>());
    const auto names = c.at("linear_names").get<std::vector<std::string>>();
    const auto selected = cfg.select(names);
    std::set<std::string> got(selected.begin(), selected.end()), want;
    for (const auto& [module, v] : c.at("targeted").items()) {
      want.insert(module);
      CHECK(cfg.rank_for(module) == v.at("r").get<std::int64_t>());
      CHECK(cfg.alpha_for(module) == Approx(v.at("alpha").get<double>()));
    }
    CHECK(got == want);
  }
}
