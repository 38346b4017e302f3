// Fused LoRA kernels against their plain references: merge (every dtype, awkward shapes), the fused
// forward/backward, and a finite-difference gradient check in fp64.
#include "kernels/lora_autograd.hpp"
#include "kernels/lora_reference.hpp"
#include "safetune/error.hpp"
#include "safetune/kernels/lora.hpp"
#include "safetune/train/autocast.hpp"

#include <torch/torch.h>
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>

using safetune::kernels::LoraFactors;
namespace k = safetune::kernels;

namespace {

std::vector<LoraFactors> make_factors(std::int64_t out, std::int64_t in,
                                      std::vector<std::int64_t> ranks,
                                      at::ScalarType dtype = at::kFloat) {
  std::vector<LoraFactors> f;
  double s = 0.5;
  for (auto r : ranks) {
    LoraFactors a;
    a.A = torch::randn({r, in}, torch::dtype(dtype)) / std::sqrt(static_cast<double>(in));
    a.B = torch::randn({out, r}, torch::dtype(dtype)) * 0.1;
    a.scale = s;
    s += 0.75;
    f.push_back(a);
  }
  return f;
}

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

}  // namespace

TEST_CASE("merge fp32 matches the fp64 reference on awkward shapes", "[kernels][lora]") {
  torch::manual_seed(1);
  struct Case {
    std::int64_t out, in;
    std::vector<std::int64_t> ranks;
  };
  for (const Case& c : {Case{37, 53, {1, 3}}, Case{896, 4864, {1}}, Case{896, 4864, {8, 16}},
                        Case{4864, 896, {64}}, Case{130, 257, {16, 64, 1}}}) {
    const auto W0 = torch::randn({c.out, c.in});
    const auto f = make_factors(c.out, c.in, c.ranks);
    at::Tensor W = W0.clone();
    k::lora_merge_(W, f, 1.0);
    const auto ref = k::lora_merge_reference(W0, f, 1.0);
    INFO(c.out << "x" << c.in << " ranks " << c.ranks.size());
    CHECK(max_abs_diff(W, ref) < 1e-5);
    // and the plain PEFT-style formula, computed independently here
    at::Tensor naive = W0.to(at::kDouble);
    for (const auto& a : f) naive += a.scale * at::mm(a.B.to(at::kDouble), a.A.to(at::kDouble));
    CHECK(max_abs_diff(W, naive) < 1e-5);
    // sign = -1 undoes it within fp32 rounding
    k::lora_merge_(W, f, -1.0);
    CHECK(max_abs_diff(W, W0) < 1e-5);
  }
}

TEST_CASE("merge bf16/fp16 rounds once: within one ulp of the exact result", "[kernels][lora]") {
  torch::manual_seed(2);
  for (auto dtype : {at::kBFloat16, at::kHalf}) {
    // fp16/bf16 keep 8 / 11 significant bits: one ulp of v is at most |v| * 2^-7 / 2^-10.
    const double rel_ulp = dtype == at::kBFloat16 ? std::ldexp(1.0, -7) : std::ldexp(1.0, -10);
    for (auto factor_dtype : {at::kFloat, dtype}) {
      const auto W0 = torch::randn({896, 4864}).to(dtype);
      const auto f = make_factors(896, 4864, {8, 16}, factor_dtype);
      at::Tensor W = W0.clone();
      k::lora_merge_(W, f, 1.0);
      const auto ref = k::lora_merge_reference(W0, f, 1.0);  // exact in fp64, rounded once
      const auto diff = (W.to(at::kDouble) - ref.to(at::kDouble)).abs();
      // One ulp of the result, plus what fp32 accumulation may lose where W and the update cancel
      // (2^-20 of the magnitudes), plus fp16's subnormal spacing.
      at::Tensor mag = W0.to(at::kDouble).abs();
      for (const auto& a : f)
        mag += std::abs(a.scale) * at::mm(a.B.to(at::kDouble).abs(), a.A.to(at::kDouble).abs());
      const auto bound = ref.to(at::kDouble).abs() * rel_ulp + mag * std::ldexp(1.0, -20) +
                         (dtype == at::kHalf ? std::ldexp(1.0, -24) : 0.0);
      CHECK((diff <= bound).all().item<bool>());
      // Almost every element is the correctly rounded value; differences only at ties.
      const double exact = (diff == 0).to(at::kDouble).mean().item<double>();
      CHECK(exact > 0.99);
    }
  }
}

TEST_CASE("merge handles strided weights and rejects bad input", "[kernels][lora]") {
  torch::manual_seed(3);
  const auto f = make_factors(40, 30, {4});
  // a row stride larger than the row (a column slice of a wider tensor)
  auto wide = torch::randn({40, 50});
  auto W = wide.narrow(1, 10, 30);
  const auto ref = k::lora_merge_reference(W, f, 1.0);
  const auto untouched = wide.narrow(1, 0, 10).clone();
  k::lora_merge_(W, f, 1.0);
  CHECK(max_abs_diff(wide.narrow(1, 10, 30), ref) < 1e-5);
  CHECK(torch::equal(wide.narrow(1, 0, 10), untouched));
  // a transposed (column-major) view
  auto base = torch::randn({30, 40});
  auto Wt = base.t();
  const auto ref_t = k::lora_merge_reference(Wt, f, 1.0);
  k::lora_merge_(Wt, f, 1.0);
  CHECK(max_abs_diff(base.t(), ref_t) < 1e-5);

  auto Wbad = torch::randn({40, 31});
  CHECK_THROWS_AS(k::lora_merge_(Wbad, f, 1.0), safetune::KernelError);
  auto Wint = torch::zeros({40, 30}, torch::kInt);
  CHECK_THROWS_AS(k::lora_merge_(Wint, f, 1.0), safetune::KernelError);
  auto W1 = torch::randn({40});
  CHECK_THROWS_AS(k::lora_merge_(W1, f, 1.0), safetune::KernelError);
}

TEST_CASE("fused forward and backward match the per-adapter reference", "[kernels][lora]") {
  torch::manual_seed(4);
  const std::int64_t in = 96, out = 80;
  auto f = make_factors(out, in, {1, 8, 16});
  f[1].dropout = 0.3;
  const auto x0 = torch::randn({2, 7, in});
  f[1].mask = (torch::rand({2, 7, in}) > 0.3).to(at::kFloat) / 0.7;
  const auto base0 = torch::randn({2, 7, out});
  f[0].A.set_requires_grad(true);
  f[0].B.set_requires_grad(true);
  f[1].A.set_requires_grad(true);
  f[1].B.set_requires_grad(true);  // f[2] stays frozen

  auto run = [&](bool fused) {
    auto x = x0.clone().set_requires_grad(true);
    auto base = base0.clone().set_requires_grad(true);
    std::vector<LoraFactors> g;
    for (const auto& a : f) {
      LoraFactors c = a;
      c.A = a.A.detach().clone().set_requires_grad(a.A.requires_grad());
      c.B = a.B.detach().clone().set_requires_grad(a.B.requires_grad());
      g.push_back(c);
    }
    auto y = fused ? k::lora_linear_add(x, base, g, true)
                   : k::lora_linear_add_reference(x, base, g, true);
    auto w = torch::linspace(-1, 1, y.numel()).reshape(y.sizes());
    (y * w).sum().backward();
    std::vector<at::Tensor> out{y.detach(), x.grad(), base.grad()};
    for (auto& a : g) {
      out.push_back(a.A.grad());
      out.push_back(a.B.grad());
    }
    return out;
  };
  const auto got = run(true), ref = run(false);
  REQUIRE(got.size() == ref.size());
  for (size_t i = 0; i < got.size(); ++i) {
    INFO("tensor #" << i);
    REQUIRE(got[i].defined() == ref[i].defined());
    if (got[i].defined()) CHECK(max_abs_diff(got[i], ref[i]) < 1e-5);
  }
  // the frozen adapter got no gradient at all
  CHECK_FALSE(got[3 + 4].defined());
  CHECK_FALSE(got[3 + 5].defined());

  // nothing requires grad: no graph is built
  auto y = k::lora_linear_add(x0, base0, make_factors(out, in, {4}), false);
  CHECK_FALSE(y.requires_grad());
}

TEST_CASE("fused forward in bf16 stays within the stated bound of fp32", "[kernels][lora]") {
  torch::manual_seed(5);
  const std::int64_t in = 256, out = 192;
  auto f32 = make_factors(out, in, {8, 16});
  std::vector<LoraFactors> f16;
  for (auto a : f32) {
    a.A = a.A.to(at::kBFloat16);
    a.B = a.B.to(at::kBFloat16);
    f16.push_back(a);
  }
  const auto x = torch::randn({33, in});
  const auto base = torch::randn({33, out});
  const auto y32 = k::lora_linear_add(x, base, f32, false);
  const auto y16 = k::lora_linear_add(x.to(at::kBFloat16), base.to(at::kBFloat16), f16, false);
  // bf16 inputs, factors, products and output each round with relative error 2^-8; the bound
  // allows 2^-5 of the magnitude of each term.
  at::Tensor mag = base.abs();
  for (const auto& a : f32)
    mag = mag + a.scale * at::mm(at::mm(x.abs(), a.A.abs().t()), a.B.abs().t());
  CHECK(((y16.to(at::kFloat) - y32).abs() <= mag * std::ldexp(1.0, -5)).all().item<bool>());
  CHECK(y16.scalar_type() == at::kBFloat16);
}

TEST_CASE("finite-difference gradient check in fp64", "[kernels][lora]") {
  torch::manual_seed(6);
  const std::int64_t N = 3, in = 5, out = 4;
  auto opts = torch::dtype(at::kDouble);
  std::vector<at::Tensor> params{torch::randn({N, in}, opts), torch::randn({N, out}, opts)};
  const std::vector<std::int64_t> ranks{2, 3, 1};
  for (auto r : ranks) params.push_back(torch::randn({r, in}, opts));
  for (auto r : ranks) params.push_back(torch::randn({out, r}, opts));
  const std::vector<double> scales{0.7, -1.3, 2.0};
  const auto mask = (torch::rand({N, in}, opts) > 0.5).to(at::kDouble) * 2.0;
  const auto w = torch::randn({N, out}, opts);
  const size_t n = ranks.size();

  auto loss = [&](const std::vector<at::Tensor>& p) {
    std::vector<LoraFactors> f(n);
    for (size_t i = 0; i < n; ++i) {
      f[i].A = p[2 + i];
      f[i].B = p[2 + n + i];
      f[i].scale = scales[i];
    }
    f[1].dropout = 0.5;
    f[1].mask = mask;
    return (k::lora_linear_add(p[0], p[1], f, true) * w).sum();
  };

  std::vector<at::Tensor> leaves;
  for (auto& p : params) leaves.push_back(p.clone().set_requires_grad(true));
  leaves[2 + 2].set_requires_grad(false);  // a frozen A
  loss(leaves).backward();
  CHECK_FALSE(leaves[2 + 2].grad().defined());

  const double eps = 1e-6;
  for (size_t t = 0; t < params.size(); ++t) {
    if (t == 4) continue;
    auto g = leaves[t].grad();
    REQUIRE(g.defined());
    for (std::int64_t e = 0; e < params[t].numel(); ++e) {
      auto plus = params, minus = params;
      plus[t] = params[t].clone();
      minus[t] = params[t].clone();
      plus[t].view(-1)[e] += eps;
      minus[t].view(-1)[e] -= eps;
      const double numeric = (loss(plus).item<double>() - loss(minus).item<double>()) / (2 * eps);
      const double analytic = g.reshape(-1)[e].item<double>();
      INFO("input " << t << " element " << e);
      CHECK(std::abs(numeric - analytic) <= 1e-6 + 1e-6 * std::abs(numeric));
    }
  }
}

// ---- mixed precision --------------------------------------------------------------------------

namespace {

double rel_err(const at::Tensor& got, const at::Tensor& ref) {
  return ((got.to(at::kDouble) - ref).abs().max() / (ref.abs().max() + 1e-12)).item<double>();
}

}  // namespace

TEST_CASE("LoRA op across dtypes, autocast and dropout matches an fp64 reference",
          "[kernels][lora]") {
  // A model Linear as the trainer runs it: base weight in the model dtype, adapter master weights
  // in fp32 or bf16, the forward under (CPU) autocast or not, backward outside autocast.
  // Both entry points: lora_linear_add on a computed base output, and lora_linear (the whole
  // Linear, base GEMM inside the op, with a bias).
  const std::int64_t N = 24, in = 64, out = 48;
  for (bool fused : {false, true})
    for (auto base_dtype : {at::kFloat, at::kBFloat16, at::kHalf})
      for (auto adapter_dtype : {at::kFloat, at::kBFloat16})
        for (bool autocast : {false, true})
          for (bool dropout : {false, true}) {
            torch::manual_seed(7);
            const auto W = (torch::randn({out, in}) / 8).to(base_dtype);
            const auto bias = fused ? torch::randn({out}).to(base_dtype) : at::Tensor();
            auto f =
                make_factors(out, in, {4, 8}, adapter_dtype);  // #0 frozen "safety", #1 trainable
            f[1].A.set_requires_grad(true);
            f[1].B.set_requires_grad(true);
            if (dropout) {
              f[0].dropout = 0.25;  // a frozen adapter with dropout still shapes dx
              f[0].mask = (torch::rand({N, in}) > 0.25).to(at::kFloat) / 0.75;
              f[1].dropout = 0.5;
              f[1].mask = (torch::rand({N, in}) > 0.5).to(at::kFloat) * 2.0;
            }
            const auto x = torch::randn({N, in}).to(base_dtype).set_requires_grad(true);
            const auto w = torch::randn({N, out});
            at::Tensor base, y;
            {
              safetune::train::AutocastRegion ac(at::kCPU, autocast);
              base = at::linear(x, W, bias);
              y = fused ? k::lora_linear(x, W, bias, f, true)
                        : k::lora_linear_add(x, base, f, true);
            }
            (y.to(at::kFloat) * w).sum().backward();

            // fp64 reference of the same function, written out here.
            auto x64 = x.detach().to(at::kDouble).set_requires_grad(true);
            at::Tensor y64 =
                at::linear(x64, W.to(at::kDouble), fused ? bias.to(at::kDouble) : at::Tensor());
            std::vector<at::Tensor> A64, B64;
            for (const auto& a : f) {
              A64.push_back(a.A.detach().to(at::kDouble).set_requires_grad(true));
              B64.push_back(a.B.detach().to(at::kDouble).set_requires_grad(true));
            }
            for (size_t i = 0; i < f.size(); ++i) {
              const auto xi = dropout ? x64 * f[i].mask.to(at::kDouble) : x64;
              y64 = y64 + at::mm(at::mm(xi, A64[i].t()), B64[i].t()) * f[i].scale;
            }
            (y64 * w.to(at::kDouble)).sum().backward();

            const auto compute = autocast ? at::kBFloat16 : base_dtype;
            // bf16 keeps 8 significant bits, fp16 11: a few roundings of the inputs, of H and of
            // the output, relative to the largest element; fp32 accumulation throughout.
            const double tol = compute == at::kFloat ? 1e-5 : (compute == at::kHalf ? 4e-3 : 3e-2);
            INFO("fused " << fused << " base " << base_dtype << " adapters " << adapter_dtype
                          << " autocast " << autocast << " dropout " << dropout);
            CHECK(y.scalar_type() == base.scalar_type());
            CHECK(rel_err(y.detach(), y64.detach()) < tol);
            REQUIRE(x.grad().defined());
            CHECK(x.grad().scalar_type() == base_dtype);
            CHECK(rel_err(x.grad(), x64.grad()) < tol);
            CHECK_FALSE(f[0].A.grad().defined());  // frozen: no gradient, no GEMM
            CHECK_FALSE(f[0].B.grad().defined());
            REQUIRE(f[1].A.grad().defined());
            REQUIRE(f[1].B.grad().defined());
            CHECK(f[1].A.grad().scalar_type() == adapter_dtype);
            CHECK(f[1].B.grad().scalar_type() == adapter_dtype);
            // A bf16 factor's gradient is rounded to bf16 once more when it is returned.
            const double tol_factor = std::max(tol, adapter_dtype == at::kBFloat16 ? 1.5e-2 : 0.0);
            CHECK(rel_err(f[1].A.grad(), A64[1].grad()) < tol_factor);
            CHECK(rel_err(f[1].B.grad(), B64[1].grad()) < tol_factor);
          }
}

TEST_CASE("LoRA op draws its own dropout mask as documented", "[kernels][lora]") {
  // Internal masks: keep where U < 1 - p with U from the default generator in the compute dtype,
  // kept values scaled by 1 / (1 - p). Replayed here with the same seed.
  const std::int64_t N = 16, in = 32, out = 24;
  auto f = make_factors(out, in, {4});
  f[0].dropout = 0.3;
  const auto x = torch::randn({N, in}), base = torch::randn({N, out});
  torch::manual_seed(11);
  const auto y = k::lora_linear_add(x, base, f, true);
  torch::manual_seed(11);
  auto g = f;
  g[0].mask = at::rand({N, in}).lt(0.7).to(at::kFloat) / 0.7;
  const auto ref = k::lora_linear_add_reference(x, base, g, true);
  CHECK(max_abs_diff(y, ref) < 1e-5);
  const double kept = g[0].mask.ne(0).to(at::kDouble).mean().item<double>();
  CHECK(kept > 0.55);
  CHECK(kept < 0.85);
}

TEST_CASE("LoRA op keeps no [N, out] tensor and no wide copy of x for backward",
          "[kernels][lora]") {
  const std::int64_t N = 256, in = 96, out = 160;
  auto count = [&](const std::vector<at::Tensor>& saved, const at::Tensor& x,
                   const std::vector<LoraFactors>& f) {
    std::int64_t activation_bytes = 0;
    for (const auto& t : saved) {
      bool factor = false;
      for (const auto& a : f) factor = factor || t.is_same(a.A) || t.is_same(a.B);
      if (factor) continue;
      CHECK(t.numel() < N * out);  // nothing output-sized
      if (t.numel() >= N * in) {   // x-sized: x itself, a narrower copy, or a mask
        CHECK(t.element_size() <= x.element_size());
        if (t.scalar_type() == x.scalar_type()) CHECK(t.data_ptr() == x.data_ptr());  // no copy
      }
      activation_bytes += t.numel() * t.element_size();
    }
    return activation_bytes;
  };
  SECTION("bf16 model, fp32 adapters (one frozen, one trainable), no autocast") {
    const auto W = torch::randn({out, in}).to(at::kBFloat16);
    auto f = make_factors(out, in, {16, 16});
    f[1].A.set_requires_grad(true);
    f[1].B.set_requires_grad(true);
    const auto x = torch::randn({N, in}).to(at::kBFloat16).set_requires_grad(true);
    const auto y = k::lora_linear_add(x, at::linear(x, W), f, true);
    const auto bytes = count(k::lora_saved_tensors(y), x, f);
    // x is shared with the base Linear; only H [N, 32] in bf16 is new.
    CHECK(bytes == N * in * 2 + N * 32 * 2);
  }
  SECTION("fp32 model under bf16 autocast, with dropout") {
    const auto W = torch::randn({out, in});
    auto f = make_factors(out, in, {16});
    f[0].dropout = 0.1;
    f[0].A.set_requires_grad(true);
    f[0].B.set_requires_grad(true);
    const auto x = torch::randn({N, in}).set_requires_grad(true);
    at::Tensor y;
    {
      safetune::train::AutocastRegion ac(at::kCPU);
      y = k::lora_linear_add(x, at::linear(x, W), f, true);
    }
    const auto saved = k::lora_saved_tensors(y);
    const auto bytes = count(saved, x, f);
    // a bf16 copy of x (2 bytes), the bool mask (1 byte), H [N, 16] in bf16 — never fp32 x.
    CHECK(bytes == N * in * 2 + N * in * 1 + N * 16 * 2);
    bool has_mask = false;
    for (const auto& t : saved) has_mask = has_mask || t.scalar_type() == at::kBool;
    CHECK(has_mask);
  }
  SECTION("the fused Linear (base GEMM inside the op): x shared, W itself, H") {
    const auto W = torch::randn({out, in}).to(at::kBFloat16);
    auto f = make_factors(out, in, {16, 16});
    f[1].A.set_requires_grad(true);
    f[1].B.set_requires_grad(true);
    const auto x = torch::randn({N, in}).to(at::kBFloat16).set_requires_grad(true);
    const auto y = k::lora_linear(x, W, at::Tensor(), f, true);
    auto saved = k::lora_saved_tensors(y);
    bool has_W = false;
    for (const auto& t : saved) has_W = has_W || t.is_same(W);
    CHECK(has_W);  // the weight itself, no copy
    saved.erase(std::remove_if(saved.begin(), saved.end(),
                               [&](const at::Tensor& t) { return t.is_same(W); }),
                saved.end());
    CHECK(count(saved, x, f) == N * in * 2 + N * 32 * 2);
  }
  SECTION("frozen adapters only: nothing activation-sized but x") {
    const auto W = torch::randn({out, in});
    auto f = make_factors(out, in, {8});
    const auto x = torch::randn({N, in}).set_requires_grad(true);
    const auto y = k::lora_linear_add(x, at::linear(x, W), f, true);
    CHECK(count(k::lora_saved_tensors(y), x, f) == 0);
  }
}
