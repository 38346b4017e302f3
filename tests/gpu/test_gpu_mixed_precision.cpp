// The mixed-precision paths on CUDA, as the trainer runs them at precision auto: the forward under
// CUDA bf16 autocast with bf16 base weights and fp32 adapters, the backward outside autocast.
#include "kernels/lora_autograd.hpp"
#include "safetune/kernels/lora.hpp"
#include "safetune/train/autocast.hpp"
#include "safetune/train/penalties.hpp"

#include <torch/torch.h>
#include <catch2/catch.hpp>

namespace k = safetune::kernels;

namespace {
double rel(const at::Tensor& got, const at::Tensor& ref) {
  return ((got.cpu().to(at::kDouble) - ref).abs().max() / (ref.abs().max() + 1e-12)).item<double>();
}
}  // namespace

TEST_CASE("CUDA autocast: LoRA forward/backward with bf16 base and fp32 adapters", "[gpu][lora]") {
  torch::manual_seed(31);
  const at::Device dev(at::kCUDA);
  const std::int64_t N = 129, in = 896, out = 4864;
  for (bool dropout : {false, true}) {
    const auto W = (torch::randn({out, in}) / 30).to(dev, at::kBFloat16);
    std::vector<k::LoraFactors> f(2);
    for (int i = 0; i < 2; ++i) {
      f[i].A = (torch::randn({16, in}) / 30).to(dev);
      f[i].B = (torch::randn({out, 16}) / 10).to(dev);
      f[i].scale = 2.0;
    }
    f[1].A.set_requires_grad(true);
    f[1].B.set_requires_grad(true);
    if (dropout) {
      f[1].dropout = 0.1;
      f[1].mask = ((torch::rand({N, in}) > 0.1).to(at::kFloat) / 0.9).to(dev);
    }
    const auto x = torch::randn({N, in}).to(dev, at::kBFloat16).set_requires_grad(true);
    at::Tensor y;
    {
      safetune::train::AutocastRegion ac(at::kCUDA);
      y = k::lora_linear_add(x, at::linear(x, W), f, true);
    }
    // Nothing output-sized and no fp32 copy of x kept for backward.
    for (const auto& t : k::lora_saved_tensors(y)) {
      CHECK(t.numel() < N * out);
      if (t.numel() >= N * in) CHECK(t.element_size() <= 2);
    }
    const auto w = torch::randn({N, out});
    (y.to(at::kFloat) * w.to(dev)).sum().backward();  // outside autocast: crashed before
    auto x64 = x.detach().cpu().to(at::kDouble).set_requires_grad(true);
    auto A64 = f[1].A.detach().cpu().to(at::kDouble).set_requires_grad(true);
    auto B64 = f[1].B.detach().cpu().to(at::kDouble).set_requires_grad(true);
    auto x1 = dropout ? x64 * f[1].mask.cpu().to(at::kDouble) : x64;
    auto y64 = at::linear(x64, W.cpu().to(at::kDouble)) +
               2.0 * at::mm(at::mm(x64, f[0].A.cpu().to(at::kDouble).t()),
                            f[0].B.cpu().to(at::kDouble).t()) +
               2.0 * at::mm(at::mm(x1, A64.t()), B64.t());
    (y64 * w.to(at::kDouble)).sum().backward();
    INFO("dropout " << dropout);
    CHECK(y.scalar_type() == at::kBFloat16);
    CHECK(rel(y.detach(), y64.detach()) < 3e-2);
    CHECK(x.grad().scalar_type() == at::kBFloat16);
    CHECK(rel(x.grad(), x64.grad()) < 3e-2);
    CHECK(f[1].A.grad().scalar_type() == at::kFloat);
    CHECK(f[1].B.grad().scalar_type() == at::kFloat);
    CHECK(rel(f[1].A.grad(), A64.grad()) < 3e-2);
    CHECK(rel(f[1].B.grad(), B64.grad()) < 3e-2);
    CHECK_FALSE(f[0].A.grad().defined());
  }
}

TEST_CASE("CUDA autocast: fused chunked cross-entropy and KL match fp64", "[gpu][penalties]") {
  torch::manual_seed(32);
  const at::Device dev(at::kCUDA);
  const std::int64_t N = 300, H = 256, V = 5000;
  const auto W = (torch::randn({V, H}) / 16).to(dev, at::kBFloat16);
  const auto h0 = torch::randn({N, H}).to(dev, at::kBFloat16),
             r0 = torch::randn({N, H}).to(dev, at::kBFloat16);
  const auto t = torch::randint(0, V, {N}, torch::kLong).to(dev);
  auto h = h0.clone().set_requires_grad(true), h2 = h0.clone().set_requires_grad(true);
  at::Tensor ce, kl;
  {
    safetune::train::AutocastRegion ac(at::kCUDA);
    ce = safetune::train::linear_cross_entropy_sum(h, W, t, 64);
    kl = safetune::train::linear_kl_sum(h2, r0, W, torch::ones({N}, dev), 64);
  }
  auto g = torch::autograd::grad({ce}, {h})[0], gk = torch::autograd::grad({kl}, {h2})[0];
  auto hd = h0.cpu().to(at::kDouble).set_requires_grad(true),
       hd2 = h0.cpu().to(at::kDouble).set_requires_grad(true);
  const auto Wd = W.cpu().to(at::kDouble);
  auto ce64 = torch::nn::functional::cross_entropy(
      at::mm(hd, Wd.t()), t.cpu(),
      torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum));
  auto lp = torch::log_softmax(at::mm(hd2, Wd.t()), 1),
       lq = torch::log_softmax(at::mm(r0.cpu().to(at::kDouble), Wd.t()), 1);
  auto kl64 = (lq.exp() * (lq - lp)).sum();
  auto g64 = torch::autograd::grad({ce64}, {hd})[0], gk64 = torch::autograd::grad({kl64}, {hd2})[0];
  CHECK(ce.item<double>() == Approx(ce64.item<double>()).epsilon(0.01));
  CHECK(kl.item<double>() == Approx(kl64.item<double>()).epsilon(0.05));
  CHECK(g.scalar_type() == at::kBFloat16);
  CHECK(rel(g, g64) < 3e-2);
  CHECK(rel(gk, gk64) < 5e-2);
}
