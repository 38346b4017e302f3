// CUDA LoRA kernels against the CPU references: every dtype, awkward shapes and ranks.
#include "kernels/lora_reference.hpp"
#include "safetune/kernels/lora.hpp"

#include <torch/torch.h>
#include <catch2/catch.hpp>

#include <cmath>

namespace k = safetune::kernels;
using k::LoraFactors;

namespace {

std::vector<LoraFactors> factors(std::int64_t out, std::int64_t in, std::vector<std::int64_t> ranks,
                                 at::ScalarType dtype, at::Device dev) {
  std::vector<LoraFactors> f;
  double s = 0.5;
  for (auto r : ranks) {
    LoraFactors a;
    a.A = (torch::randn({r, in}) / std::sqrt(static_cast<double>(in))).to(dev, dtype);
    a.B = (torch::randn({out, r}) * 0.1).to(dev, dtype);
    a.scale = s;
    s += 0.75;
    f.push_back(a);
  }
  return f;
}

std::vector<LoraFactors> to_cpu(const std::vector<LoraFactors>& f) {
  auto c = f;
  for (auto& a : c) {
    a.A = a.A.cpu();
    a.B = a.B.cpu();
    if (a.mask.defined()) a.mask = a.mask.cpu();
  }
  return c;
}

}  // namespace

TEST_CASE("CUDA merge matches the reference for every dtype and awkward shape", "[gpu][lora]") {
  torch::manual_seed(21);
  const at::Device dev(at::kCUDA);
  struct Case {
    std::int64_t out, in;
    std::vector<std::int64_t> ranks;
  };
  for (const Case& c : {Case{3584, 18944, {16, 16}}, Case{18944, 3584, {64}}, Case{896, 4864, {1}},
                        Case{896, 4864, {8}}, Case{4864, 896, {16, 64}}, Case{37, 53, {1, 3}}}) {
    for (auto dtype : {at::kFloat, at::kHalf, at::kBFloat16}) {
      for (auto fdt : {at::kFloat, dtype}) {
        INFO(c.out << "x" << c.in << " dtype " << dtype << " factors " << fdt);
        const auto W0 = torch::randn({c.out, c.in}).to(dtype);
        const auto f = factors(c.out, c.in, c.ranks, fdt, dev);
        at::Tensor W = W0.to(dev);
        k::lora_merge_(W, f, 1.0);
        const auto ref = k::lora_merge_reference(W0, to_cpu(f), 1.0).to(at::kDouble);
        const auto diff = (W.cpu().to(at::kDouble) - ref).abs();
        if (dtype == at::kFloat) {
          CHECK(diff.max().item<double>() < 1e-5);
        } else {
          const double rel_ulp =
              dtype == at::kBFloat16 ? std::ldexp(1.0, -7) : std::ldexp(1.0, -10);
          // one ulp, plus fp32 accumulation loss where W and the update cancel, plus fp16
          // subnormals
          at::Tensor mag = W0.to(at::kDouble).abs();
          for (const auto& a : to_cpu(f))
            mag += std::abs(a.scale) * at::mm(a.B.to(at::kDouble).abs(), a.A.to(at::kDouble).abs());
          const auto bound = ref.abs() * rel_ulp + mag * std::ldexp(1.0, -20) +
                             (dtype == at::kHalf ? std::ldexp(1.0, -24) : 0.0);
          CHECK((diff <= bound).all().item<bool>());
          CHECK((diff == 0).to(at::kDouble).mean().item<double>() > 0.99);
        }
        // the CPU kernel and the CUDA kernel agree (same fp32 accumulation up to order)
        at::Tensor Wc = W0.clone();
        k::lora_merge_(Wc, to_cpu(f), 1.0);
        if (dtype == at::kFloat) CHECK((Wc - W.cpu()).abs().max().item<double>() < 1e-5);
        k::lora_merge_(W, f, -1.0);  // unmerge by subtraction
        if (dtype == at::kFloat) CHECK((W.cpu() - W0).abs().max().item<double>() < 1e-5);
      }
    }
  }
}

TEST_CASE("CUDA fused forward/backward matches the CPU reference", "[gpu][lora]") {
  torch::manual_seed(22);
  const at::Device dev(at::kCUDA);
  for (auto dtype : {at::kFloat, at::kHalf, at::kBFloat16}) {
    const std::int64_t in = 896, out = 4864, N = 67;
    auto f = factors(out, in, {1, 8, 16, 64}, dtype, dev);
    f[2].dropout = 0.1;
    f[2].mask = ((torch::rand({N, in}) > 0.1).to(at::kFloat) / 0.9).to(dev, dtype);
    for (auto& a : f) {
      a.A.set_requires_grad(true);
      a.B.set_requires_grad(true);
    }
    f[0].A.set_requires_grad(false);
    f[0].B.set_requires_grad(false);
    const auto x = torch::randn({N, in}).to(dev, dtype).set_requires_grad(true);
    const auto base = torch::randn({N, out}).to(dev, dtype).set_requires_grad(true);
    auto y = k::lora_linear_add(x, base, f, true);
    const auto w = torch::randn({N, out}).to(dev, dtype);
    (y * w).sum().backward();

    // reference in fp64 on the CPU
    std::vector<LoraFactors> r = to_cpu(f);
    for (auto& a : r) {
      a.A = a.A.detach().to(at::kDouble).set_requires_grad(true);
      a.B = a.B.detach().to(at::kDouble).set_requires_grad(true);
      if (a.mask.defined()) a.mask = a.mask.to(at::kDouble);
    }
    auto xr = x.detach().cpu().to(at::kDouble).set_requires_grad(true);
    auto br = base.detach().cpu().to(at::kDouble).set_requires_grad(true);
    auto yr = k::lora_linear_add_reference(xr, br, r, true);
    (yr * w.cpu().to(at::kDouble)).sum().backward();

    // fp16/bf16: inputs are exact in the fp64 reference; the error comes from rounding H, s*H and
    // the output (2^-11 / 2^-8 each) and fp32 accumulation, relative to the largest element.
    const double tol = dtype == at::kFloat ? 1e-4 : (dtype == at::kHalf ? 1e-2 : 5e-2);
    auto rel = [](const at::Tensor& got, const at::Tensor& ref) {
      return ((got.cpu().to(at::kDouble) - ref).abs().max() / (ref.abs().max() + 1e-12))
          .item<double>();
    };
    INFO("dtype " << dtype);
    CHECK(rel(y.detach(), yr.detach()) < tol);
    CHECK(rel(x.grad(), xr.grad()) < tol);
    CHECK(rel(base.grad(), br.grad()) < tol);
    CHECK_FALSE(f[0].A.grad().defined());
    CHECK_FALSE(f[0].B.grad().defined());
    for (size_t i = 1; i < f.size(); ++i) {
      CHECK(rel(f[i].A.grad(), r[i].A.grad()) < tol);
      CHECK(rel(f[i].B.grad(), r[i].B.grad()) < tol);
    }
  }
}
