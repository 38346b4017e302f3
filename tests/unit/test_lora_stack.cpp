// AdapterStack: init, forward through a Linear-like hook, merge/unmerge, inference policy,
// gradients.
#include "safetune/error.hpp"
#include "safetune/lora/adapter_stack.hpp"
#include "safetune/lora/config.hpp"

#include <torch/torch.h>
#include <catch2/catch.hpp>

#include <cmath>

using namespace safetune::lora;

namespace {

// Stands in for the model's Linear: y = x W^T + b, then the hook.
struct TinyLinear {
  at::Tensor weight, bias;
  std::shared_ptr<safetune::model::LinearHook> hook;
  at::Tensor forward(const at::Tensor& x) const {
    at::Tensor y = at::linear(x, weight, bias);
    return hook && hook->active() ? hook->apply(x, y) : y;
  }
};

AdapterSpec spec(const std::string& name, std::int64_t r, double alpha, bool rslora = false) {
  AdapterSpec s;
  s.name = name;
  s.rank = r;
  s.alpha = alpha;
  s.use_rslora = rslora;
  return s;
}

// Non-zero B so adapters change the output (PEFT's default B = 0 would hide mistakes).
void randomize_B(AdapterStack& st, const std::string& name) {
  at::NoGradGuard g;
  st.get(name).B.normal_(0.0, 0.2);
}

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

}  // namespace

TEST_CASE("adapter init follows PEFT: kaiming-uniform or gaussian A and zero B", "[lora]") {
  torch::manual_seed(10);
  AdapterStack st("m", torch::zeros({64, 4096}));
  auto& a = st.add(spec("a", 4, 8));
  const double bound = 1.0 / std::sqrt(4096.0);
  CHECK(a.A.abs().max().item<double>() <= bound);
  CHECK(a.A.abs().max().item<double>() > 0.95 * bound);
  CHECK(std::abs(a.A.std().item<double>() - bound / std::sqrt(3.0)) < 0.02 * bound);
  CHECK(a.B.abs().max().item<double>() == 0.0);
  CHECK(a.A.scalar_type() == at::kFloat);
  auto s = spec("g", 4, 8);
  s.init = InitMethod::gaussian;
  auto& g = st.add(s);
  CHECK(std::abs(g.A.std().item<double>() - 0.25) < 0.01);
  CHECK(std::abs(g.A.mean().item<double>()) < 0.01);
  CHECK(g.B.abs().max().item<double>() == 0.0);
  CHECK(spec("x", 16, 32).scale() == Approx(2.0));
  CHECK(spec("x", 16, 32, true).scale() == Approx(8.0));
  CHECK_THROWS_AS(st.add(spec("a", 4, 8)), safetune::AdapterError);
  CHECK_THROWS_AS(st.add(spec("z", 0, 8)), safetune::AdapterError);
  CHECK_THROWS_AS(st.add(spec("w", 2, 8), torch::zeros({2, 5}), torch::zeros({64, 2})),
                  safetune::AdapterError);
}

TEST_CASE("stack output is base + sum of enabled scaled adapters", "[lora]") {
  torch::manual_seed(11);
  TinyLinear lin{torch::randn({24, 40}), torch::randn({24}), nullptr};
  auto st = std::make_shared<AdapterStack>("layers.0.q_proj", lin.weight);
  lin.hook = st;
  st->add(spec("safety", 4, 8));
  st->add(spec("task", 8, 4, true));
  randomize_B(*st, "safety");
  randomize_B(*st, "task");
  const auto x = torch::randn({3, 5, 40});
  auto expect = [&](std::vector<std::string> names) {
    at::NoGradGuard g;
    at::Tensor y = at::matmul(x, lin.weight.t()) + lin.bias;
    for (const auto& n : names) {
      const auto& a = st->get(n);
      y = y + at::matmul(at::matmul(x, a.A.t()), a.B.t()) * a.scale();
    }
    return y;
  };
  CHECK(max_abs_diff(lin.forward(x), expect({"safety", "task"})) < 1e-5);
  st->set_enabled("task", false);
  CHECK(max_abs_diff(lin.forward(x), expect({"safety"})) < 1e-5);
  st->set_enabled("safety", false);
  CHECK_FALSE(st->active());
  CHECK(max_abs_diff(lin.forward(x), expect({})) < 1e-6);
}

TEST_CASE("merged and unmerged forward agree and unmerge restores the base", "[lora]") {
  torch::manual_seed(12);
  const auto W0 = torch::randn({256, 384}) * 0.05;
  TinyLinear lin{W0.clone(), torch::randn({256}), nullptr};
  auto st = std::make_shared<AdapterStack>("mlp.up_proj", lin.weight);
  lin.hook = st;
  st->add(spec("safety", 8, 16));
  st->add(spec("task", 16, 16, true));
  randomize_B(*st, "safety");
  randomize_B(*st, "task");
  const auto x = torch::randn({9, 384});
  const auto y_unmerged = lin.forward(x).detach();

  SECTION("fp32, saved copy: bit-exact restore") {
    st->merge({"safety", "task"}, MergeCopy::keep);
    CHECK(st->merged_names().size() == 2);
    CHECK_FALSE(st->active());
    CHECK(max_abs_diff(lin.forward(x), y_unmerged) < 1e-5);
    CHECK_FALSE(torch::equal(lin.weight, W0));
    st->unmerge({"safety", "task"});
    CHECK(torch::equal(lin.weight, W0));
    CHECK(max_abs_diff(lin.forward(x), y_unmerged) < 1e-6);
  }
  SECTION("fp32, by subtraction: within one rounding per element") {
    st->merge({"task"});
    st->merge({"safety"}, MergeCopy::keep);
    CHECK(max_abs_diff(lin.forward(x), y_unmerged) < 1e-5);
    st->unmerge({"task"});  // not the newest group: subtracts, drops the saved copy
    st->unmerge({"safety"});
    at::Tensor delta = torch::zeros_like(W0);
    for (const auto& n : {"safety", "task"})
      delta +=
          std::abs(st->get(n).scale()) * at::mm(st->get(n).B.abs(), st->get(n).A.abs()).detach();
    // Stated tolerance: four fp32 roundings plus the fp32 rank sums, 2^-19 of the magnitudes.
    const auto bound = (W0.abs() + delta) * std::ldexp(1.0, -19);
    CHECK(((lin.weight - W0).abs() <= bound).all().item<bool>());
    CHECK(st->merged_names().empty());
  }
  SECTION("bf16 weight: merged forward within the stated bound") {
    lin.weight = W0.to(at::kBFloat16);
    lin.bias = lin.bias.to(at::kBFloat16);
    auto st16 = std::make_shared<AdapterStack>("mlp.up_proj", lin.weight);
    lin.hook = st16;
    st16->add(spec("safety", 8, 16), st->get("safety").A, st->get("safety").B);
    st16->add(spec("task", 16, 16, true), st->get("task").A, st->get("task").B);
    const auto xb = x.to(at::kBFloat16);
    const auto y_u = lin.forward(xb).to(at::kFloat);
    const auto Wbits = lin.weight.clone();
    st16->merge({"safety", "task"}, MergeCopy::keep);
    const auto y_m = lin.forward(xb).to(at::kFloat);
    // Stated bound: merged W rounds once to bf16 (2^-8 relative), each path's output rounds to
    // bf16 and its products accumulate bf16 inputs; 2^-6 of |x|·(|W| + |ΔW|)^T + |b| covers both.
    const auto Wm = lin.weight.to(at::kFloat).abs();
    const auto mag = at::mm(x.abs(), Wm.t()) + lin.bias.to(at::kFloat).abs();
    CHECK(((y_m - y_u).abs() <= mag * std::ldexp(1.0, -6)).all().item<bool>());
    st16->unmerge({"safety", "task"});
    CHECK(torch::equal(lin.weight, Wbits));
  }
}

TEST_CASE("required_at_inference adapters need an explicit, recorded override", "[lora]") {
  AdapterStack st("layers.3.v_proj", torch::randn({8, 8}));
  auto s = spec("safety", 2, 4);
  s.role = AdapterRole::safety;
  s.required_at_inference = true;
  s.trainable = false;
  st.add(s);
  st.add(spec("task", 2, 4));
  CHECK_THROWS_AS(st.set_enabled("safety", false), safetune::AdapterError);
  CHECK_THROWS_AS(st.remove("safety"), safetune::AdapterError);
  CHECK(st.get("safety").enabled);
  CHECK(st.policy_log().entries().empty());
  st.set_enabled("task", false);  // ordinary adapters need nothing
  st.remove("task");
  CHECK(st.policy_log().entries().empty());

  st.set_enabled("safety", false, "ablation study");
  CHECK_FALSE(st.get("safety").enabled);
  CHECK(st.inference_violations() == std::vector<std::string>{"safety"});
  st.set_enabled("safety", true);
  st.remove("safety", "replacing with v2");
  CHECK_FALSE(st.contains("safety"));
  const auto log = st.policy_log().entries();
  REQUIRE(log.size() == 2);
  CHECK(log[0].module == "layers.3.v_proj");
  CHECK(log[0].adapter == "safety");
  CHECK(log[0].action == "disable");
  CHECK(log[0].reason == "ablation study");
  CHECK(log[1].action == "remove");
}

TEST_CASE("safe_merge refuses non-finite results and leaves W untouched", "[lora]") {
  torch::manual_seed(13);
  const auto W0 = torch::randn({16, 12});
  AdapterStack st("o_proj", W0.clone());
  st.add(spec("good", 2, 4));
  st.add(spec("bad", 2, 4));
  randomize_B(st, "good");
  {
    at::NoGradGuard g;
    st.get("bad").B.fill_(1.0);
    st.get("bad").A[1][3] = std::numeric_limits<float>::quiet_NaN();
  }
  try {
    st.safe_merge({"good", "bad"});
    FAIL("safe_merge accepted a NaN adapter");
  } catch (const safetune::AdapterError& e) {
    CHECK_THAT(std::string(e.what()), Catch::Contains("'bad'"));
    CHECK_THAT(std::string(e.what()), !Catch::Contains("'good'"));
  }
  CHECK(torch::equal(st.base_weight(), W0));
  CHECK(st.merged_names().empty());
  st.safe_merge({"good"});
  CHECK(st.get("good").merged);
  // overflow of the sum in fp16 names the adapters that were merged
  AdapterStack h("o_proj", torch::full({4, 4}, 60000.0).to(at::kHalf));
  h.add(spec("big", 1, 1), torch::ones({1, 4}), torch::full({4, 1}, 10000.0));
  CHECK_THROWS_WITH(h.safe_merge({"big"}), Catch::Contains("'big'"));
  CHECK(torch::equal(h.base_weight(), torch::full({4, 4}, 60000.0).to(at::kHalf)));
}

TEST_CASE("frozen adapters and merged ones get no gradients and dropout acts only in training",
          "[lora]") {
  torch::manual_seed(14);
  TinyLinear lin{torch::randn({10, 6}), torch::Tensor(), nullptr};
  auto st = std::make_shared<AdapterStack>("q_proj", lin.weight);
  lin.hook = st;
  auto frozen = spec("safety", 2, 4);
  frozen.trainable = false;
  st->add(frozen);
  auto task = spec("task", 3, 6);
  task.dropout = 0.5;
  st->add(task);
  randomize_B(*st, "safety");
  randomize_B(*st, "task");
  CHECK(st->trainable_parameters().size() == 2);
  st->train(true);
  const auto x = torch::randn({4, 6});
  lin.forward(x).pow(2).sum().backward();
  CHECK_FALSE(st->get("safety").A.grad().defined());
  CHECK_FALSE(st->get("safety").B.grad().defined());
  CHECK(st->get("task").A.grad().defined());
  CHECK(st->get("task").B.grad().defined());
  CHECK_FALSE(lin.weight.requires_grad());
  // eval: dropout off, the output is deterministic and equals the plain formula
  st->train(false);
  const auto y1 = lin.forward(x), y2 = lin.forward(x);
  CHECK(torch::equal(y1, y2));
  // set_trainable flips requires_grad
  st->set_trainable("task", false);
  CHECK(st->trainable_parameters().empty());
  CHECK_FALSE(lin.forward(x).requires_grad());
  // merged adapters cannot be disabled or removed until unmerged
  st->merge({"task"});
  CHECK_THROWS_AS(st->set_enabled("task", false), safetune::AdapterError);
  CHECK_THROWS_AS(st->remove("task"), safetune::AdapterError);
  CHECK_THROWS_AS(st->merge({"task"}), safetune::AdapterError);
  CHECK_THROWS_AS(st->unmerge({"safety"}), safetune::AdapterError);
  CHECK_THROWS_AS(st->rebind_weight(torch::randn({10, 6})), safetune::AdapterError);
  st->unmerge({"task"});
  // a replaced weight tensor: the stack follows it, wrong shapes are refused
  lin.weight = torch::randn({10, 6});
  st->rebind_weight(lin.weight);
  const auto before = lin.weight.clone();
  st->merge({"task"});
  CHECK_FALSE(torch::equal(lin.weight, before));  // the merge landed in the new tensor
  CHECK(st->base_weight().is_same(lin.weight));
  st->unmerge({"task"});
  CHECK_THROWS_AS(st->rebind_weight(torch::randn({6, 10})), safetune::AdapterError);
}
