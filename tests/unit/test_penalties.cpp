// Regularizer formulas against plain full-matrix computations and autograd of the textbook form.
#include <torch/torch.h>
#include <catch2/catch.hpp>

#include "safetune/data/dataset.hpp"
#include "safetune/lora/model_adapters.hpp"
#include "safetune/model/causal_lm.hpp"
#include "safetune/train/autocast.hpp"
#include "safetune/train/penalties.hpp"
#include "safetune/train/regularizer.hpp"
#include "support.hpp"

using namespace safetune::train;

TEST_CASE("kl_anchor equals the explicit sum over masked tokens", "[regularizer]") {
  torch::manual_seed(0);
  auto a = torch::randn({2, 3, 5}, torch::kDouble), b = torch::randn({2, 3, 5}, torch::kDouble);
  auto mask = torch::tensor({{1, 0, 1}, {1, 1, 0}});
  double want = 0;
  int n = 0;
  for (int i = 0; i < 2; ++i)
    for (int t = 0; t < 3; ++t) {
      if (!mask[i][t].item<int>()) continue;
      auto p = torch::softmax(b[i][t], 0), q = torch::softmax(a[i][t], 0);
      want += (p * (p.log() - q.log())).sum().item<double>();
      ++n;
    }
  CHECK(kl_anchor(a, b, mask).item<double>() == Approx(want / n).epsilon(1e-5));
  CHECK(kl_anchor(a, a, mask).item<double>() == Approx(0).margin(1e-7));
}

TEST_CASE("kl_anchor: gradient equals autograd of the dense masked formula; an empty mask gives 0",
          "[regularizer]") {
  torch::manual_seed(4);
  auto ref = torch::randn({2, 4, 7}, torch::kDouble);
  auto mask = torch::tensor({{0, 1, 1, 0}, {1, 0, 0, 1}});
  auto x1 = torch::randn({2, 4, 7}, torch::kDouble).requires_grad_(true);
  auto x2 = x1.detach().clone().requires_grad_(true);
  kl_anchor(x1, ref, mask).backward();
  // Dense textbook form over every position, weighted by the mask.
  auto logq = torch::log_softmax(ref, -1), logp = torch::log_softmax(x2, -1);
  auto m = mask.to(torch::kDouble);
  ((logq.exp() * (logq - logp)).sum(-1) * m).sum().div(m.sum()).backward();
  CHECK(torch::allclose(x1.grad(), x2.grad(), 1e-10, 1e-12));
  CHECK(x1.grad().select(1, 0).select(0, 0).abs().max().item<double>() ==
        0.0);  // unmasked row: no gradient
  auto x3 = torch::randn({2, 4, 7}, torch::kDouble).requires_grad_(true);
  auto zero = kl_anchor(x3, ref, torch::zeros({2, 4}, torch::kLong));
  CHECK(zero.item<double>() == 0.0);
  zero.backward();
  CHECK(torch::isfinite(x3.grad()).all().item<bool>());
}

TEST_CASE("token_constrained: value and gradient of the detached form match the formula",
          "[regularizer]") {
  torch::manual_seed(1);
  auto logits = torch::randn({2, 8, 6}, torch::kDouble).requires_grad_(true);
  auto ref = torch::randn({2, 8, 6}, torch::kDouble);
  auto labels = torch::randint(0, 6, {2, 8});
  labels.index_put_({0, torch::indexing::Slice(0, 2)}, -100);  // prompt positions
  TokenBetas betas;
  double value = 0;
  auto detached = token_constrained(logits, ref, labels, betas, &value);
  auto g1 = torch::autograd::grad({detached}, {logits})[0];

  // Textbook form, per token, with the beta schedule written out by hand.
  auto lp = torch::log_softmax(logits, -1), lr = torch::log_softmax(ref, -1);
  auto total = torch::zeros({}, torch::kDouble);
  int n = 0;
  for (int i = 0; i < 2; ++i) {
    int t_resp = 0;
    for (int t = 0; t < 8; ++t) {
      int y = labels[i][t].item<int>();
      if (y == -100) continue;
      ++t_resp;
      double beta = t_resp == 1 ? 0.5 : (t_resp <= 5 ? 2.0 : 0.1);
      auto delta = lp[i][t][y] - lr[i][t][y];
      total = total - (2.0 / beta) * torch::log_sigmoid(beta * delta);
      ++n;
    }
  }
  total = total / n;
  auto g2 = torch::autograd::grad({total}, {logits})[0];
  CHECK(value == Approx(total.item<double>()).epsilon(1e-10));
  CHECK(torch::allclose(g1, g2, 1e-9, 1e-12));
}

TEST_CASE("orthogonal, l2_delta and subspace penalties equal their full-matrix forms",
          "[regularizer]") {
  torch::manual_seed(2);
  auto At = torch::randn({4, 10}, torch::kDouble), Bt = torch::randn({12, 4}, torch::kDouble);
  auto As = torch::randn({3, 10}, torch::kDouble), Bs = torch::randn({12, 3}, torch::kDouble);
  const double s = 0.75;
  CHECK(orthogonal_penalty(At, As).item<double>() ==
        Approx(At.matmul(As.t()).pow(2).sum().item<double>()));
  auto dW = s * Bt.matmul(At);
  CHECK(l2_delta_penalty(At, Bt, s).item<double>() ==
        Approx(dW.pow(2).sum().item<double>()).epsilon(1e-10));
  auto Q = column_basis(Bs);
  REQUIRE(Q.size(1) == 3);
  auto P = Bs.matmul(torch::linalg_pinv(Bs));  // projector onto col(Bs), computed independently
  auto want = (torch::eye(12, torch::kDouble) - P).matmul(dW).pow(2).sum().item<double>();
  CHECK(subspace_penalty(At, Bt, s, Q).item<double>() == Approx(want).epsilon(1e-8));
  // A task update inside the safety subspace has no penalty.
  auto Bin = Bs.matmul(torch::randn({3, 4}, torch::kDouble));
  CHECK(subspace_penalty(At, Bin, s, Q).item<double>() == Approx(0).margin(1e-9));
  // Rank-deficient safety B: the basis has the true rank.
  auto Bdef = torch::cat({Bs.narrow(1, 0, 2), Bs.narrow(1, 0, 1) * 2}, 1);
  CHECK(column_basis(Bdef).size(1) == 2);
}

TEST_CASE("gradients of the penalties match autograd of the full-matrix forms", "[regularizer]") {
  torch::manual_seed(3);
  auto At = torch::randn({4, 10}, torch::kDouble).requires_grad_(true);
  auto Bt = torch::randn({12, 4}, torch::kDouble).requires_grad_(true);
  auto Q = column_basis(torch::randn({12, 3}, torch::kDouble));
  auto g = torch::autograd::grad({subspace_penalty(At, Bt, 2.0, Q)}, {At, Bt});
  auto P = Q.matmul(Q.t());
  auto full = (torch::eye(12, torch::kDouble) - P).matmul(2.0 * Bt.matmul(At)).pow(2).sum();
  auto h = torch::autograd::grad({full}, {At, Bt});
  CHECK(torch::allclose(g[0], h[0], 1e-9, 1e-10));
  CHECK(torch::allclose(g[1], h[1], 1e-9, 1e-10));
  auto g2 = torch::autograd::grad({l2_delta_penalty(At, Bt, 2.0)}, {At, Bt});
  auto h2 = torch::autograd::grad({(2.0 * Bt.matmul(At)).pow(2).sum()}, {At, Bt});
  CHECK(torch::allclose(g2[0], h2[0], 1e-9, 1e-10));
  CHECK(torch::allclose(g2[1], h2[1], 1e-9, 1e-10));
}

TEST_CASE("gradient projection removes only the conflicting component", "[regularizer]") {
  std::vector<at::Tensor> g{torch::tensor({1.0, -2.0}), torch::tensor({0.5})};
  std::vector<at::Tensor> s{torch::tensor({0.0, 1.0}), torch::tensor({1.0})};
  double dot = project_conflicting(g, s);  // <g, s> = -2 + 0.5 = -1.5; ||s||^2 = 2
  CHECK(dot == Approx(-1.5));
  CHECK(g[0][0].item<double>() == Approx(1.0));
  CHECK(g[0][1].item<double>() == Approx(-2.0 + 0.75));
  CHECK(g[1][0].item<double>() == Approx(0.5 + 0.75));
  double after = (g[0] * s[0]).sum().item<double>() + (g[1] * s[1]).sum().item<double>();
  CHECK(after == Approx(0).margin(1e-12));
  std::vector<at::Tensor> agree{torch::tensor({0.0, 3.0}), torch::tensor({1.0})};
  project_conflicting(agree, s);
  CHECK(agree[0][1].item<double>() == 3.0);  // no conflict: unchanged
}

TEST_CASE("projection cosine equals the full-matrix cosine", "[regularizer]") {
  torch::manual_seed(4);
  auto A = torch::randn({4, 9}, torch::kDouble), B = torch::randn({7, 4}, torch::kDouble);
  auto Q = column_basis(torch::randn({7, 2}, torch::kDouble));
  auto dW = B.matmul(A), PdW = Q.matmul(Q.t()).matmul(dW);
  double want =
      (dW * PdW).sum().item<double>() / (dW.norm().item<double>() * PdW.norm().item<double>());
  CHECK(projection_cosine(A, B, Q) == Approx(want).epsilon(1e-9));
}

TEST_CASE("lm_loss: mean next-token cross-entropy over supervised tokens; none supervised gives 0",
          "[train][penalties]") {
  torch::manual_seed(3);
  auto logits = torch::randn({2, 4, 5}, torch::kDouble).requires_grad_(true);
  auto labels = torch::tensor({{-100, 1, 2, -100}, {-100, -100, 4, 0}}, torch::kLong);
  // By hand: position t predicts labels[t + 1]; supervised targets are (0,1)->1, (0,2)->2,
  // (1,2)->4, (1,3)->0.
  auto lp = torch::log_softmax(logits.detach(), -1);
  double want = -(lp[0][0][1].item<double>() + lp[0][1][2].item<double>() +
                  lp[1][1][4].item<double>() + lp[1][2][0].item<double>()) /
                4;
  CHECK(safetune::train::lm_loss(logits, labels).item<double>() == Approx(want).epsilon(1e-6));
  auto none = torch::full({2, 4}, -100, torch::kLong);
  auto zero = safetune::train::lm_loss(logits, none);
  CHECK(zero.item<double>() == 0.0);
  zero.backward();
  CHECK(torch::isfinite(logits.grad()).all().item<bool>());
}

TEST_CASE("lm_loss on response_logits rows equals lm_loss on the full logits, value and gradient",
          "[train][penalties]") {
  auto model = safetune::model::load(safetune::test::safetune_home() / "models" / "tiny-llama",
                                     torch::kFloat);
  safetune::lora::ModelAdapters adapters(*model);
  safetune::lora::LoraConfig cfg;
  cfg.all_linear = true;
  cfg.rank = 4;
  cfg.alpha = 8;
  adapters.add("task", cfg, safetune::lora::AdapterRole::task, /*trainable=*/true);
  torch::manual_seed(5);
  std::vector<at::Tensor> params;
  {
    torch::NoGradGuard ng;
    for (auto& [n, t] : adapters.trainable_parameters()) {
      t.normal_(0,
                0.02);  // B is zero at init: give both factors values so the check means something
      params.push_back(t);
    }
  }
  safetune::data::Batch b;
  b.input_ids = torch::randint(0, model->config().vocab_size, {2, 12}, torch::kLong);
  b.attention_mask = torch::ones_like(b.input_ids);
  b.attention_mask[1].narrow(0, 0, 3).fill_(0);  // left padding on row 1
  b.labels = b.input_ids.clone();
  b.labels[0].narrow(0, 0, 5).fill_(-100);  // prompt
  b.labels[1].narrow(0, 0, 7).fill_(-100);
  b.labels[1][11] = -100;

  auto full = lm_loss(model->forward(b.input_ids, b.attention_mask), b.labels);
  auto g_full = torch::autograd::grad({full}, params);
  auto rows = response_logits(*model, b);
  CHECK(rows.logits.size(0) ==
        7 + 4);  // row 0: targets 5..11 predicted at 4..10; row 1: 7..10 at 6..9
  auto sparse = lm_loss(rows);
  auto g_rows = torch::autograd::grad({sparse}, params);
  CHECK(sparse.item<double>() == Approx(full.item<double>()).epsilon(1e-5));
  for (size_t i = 0; i < params.size(); ++i)
    CHECK(torch::allclose(g_rows[i], g_full[i], 1e-4, 1e-6));
  // The fused, chunked form (lm_head inside the loss) gives the same value and gradients.
  REQUIRE(model->plain_projection_weight().defined());
  auto fused = response_lm_loss(*model, b);
  auto g_fused = torch::autograd::grad({fused}, params);
  CHECK(fused.item<double>() == Approx(full.item<double>()).epsilon(1e-5));
  for (size_t i = 0; i < params.size(); ++i)
    CHECK(torch::allclose(g_fused[i], g_full[i], 1e-4, 1e-6));
}

TEST_CASE("cross_entropy_sum: value and gradient equal torch's cross_entropy (fp64)",
          "[train][penalties]") {
  torch::manual_seed(11);
  auto logits = torch::randn({6, 13}, torch::kDouble).requires_grad_(true);
  auto targets = torch::tensor({0, 12, 5, 5, 7, 1}, torch::kLong);
  auto ours = cross_entropy_sum(logits, targets) * 0.37;  // a non-unit incoming gradient
  auto g_ours = torch::autograd::grad({ours}, {logits})[0];
  auto ref = torch::nn::functional::cross_entropy(
                 logits, targets,
                 torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum)) *
             0.37;
  auto g_ref = torch::autograd::grad({ref}, {logits})[0];
  CHECK(ours.item<double>() == Approx(ref.item<double>()).epsilon(1e-12));
  CHECK(torch::allclose(g_ours, g_ref, 1e-12, 1e-14));
  // fp32 logits give fp32 gradients; no rows is a zero loss.
  auto f = torch::randn({3, 5}).requires_grad_(true);
  auto gf = torch::autograd::grad({cross_entropy_sum(f, torch::tensor({1, 2, 3}))}, {f})[0];
  CHECK(gf.scalar_type() == torch::kFloat);
  CHECK(cross_entropy_sum(torch::zeros({0, 5}), torch::zeros({0}, torch::kLong)).item<double>() ==
        0.0);
}

TEST_CASE("linear_cross_entropy_sum and linear_kl_sum equal the unfused formulas in every chunking",
          "[train][penalties]") {
  torch::manual_seed(12);
  const std::int64_t N = 7, H = 6, V = 11;
  const auto W = torch::randn({V, H}, torch::kDouble);
  const auto h0 = torch::randn({N, H}, torch::kDouble), r0 = torch::randn({N, H}, torch::kDouble);
  const auto targets = torch::tensor({0, 10, 3, 3, 7, 1, 9}, torch::kLong);
  const auto w = torch::tensor({1.0, 0.5, 2.0, 1.0, 0.0, 1.0, 0.25}, torch::kDouble);
  // textbook forms through autograd
  auto h_ref = h0.clone().requires_grad_(true);
  auto ce_ref = torch::nn::functional::cross_entropy(
      at::mm(h_ref, W.t()), targets,
      torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum));
  auto g_ce_ref = torch::autograd::grad({ce_ref * 0.3}, {h_ref})[0];
  auto h_ref2 = h0.clone().requires_grad_(true);
  auto logp = torch::log_softmax(at::mm(h_ref2, W.t()), 1),
       logq = torch::log_softmax(at::mm(r0, W.t()), 1);
  auto kl_ref = ((logq.exp() * (logq - logp)).sum(1) * w).sum();
  auto g_kl_ref = torch::autograd::grad({kl_ref * 0.3}, {h_ref2})[0];
  for (std::int64_t chunk : {1, 3, 7, 0}) {
    INFO("chunk " << chunk);
    auto h = h0.clone().requires_grad_(true);
    auto ce = linear_cross_entropy_sum(h, W, targets, chunk);
    auto g_ce = torch::autograd::grad({ce * 0.3}, {h})[0];
    CHECK(ce.item<double>() == Approx(ce_ref.item<double>()).epsilon(1e-12));
    CHECK(torch::allclose(g_ce, g_ce_ref, 1e-10, 1e-12));
    auto h2 = h0.clone().requires_grad_(true);
    auto kl = linear_kl_sum(h2, r0, W, w, chunk);
    auto g_kl = torch::autograd::grad({kl * 0.3}, {h2})[0];
    CHECK(kl.item<double>() == Approx(kl_ref.item<double>()).epsilon(1e-12));
    CHECK(torch::allclose(g_kl, g_kl_ref, 1e-10, 1e-12));
  }
  // No gradient wanted: no graph, the same value.
  {
    torch::NoGradGuard ng;
    auto ce = linear_cross_entropy_sum(h0.clone().requires_grad_(true), W, targets);
    CHECK_FALSE(ce.requires_grad());
    CHECK(ce.item<double>() == Approx(ce_ref.item<double>()).epsilon(1e-12));
  }
}

TEST_CASE(
    "vocabulary losses under CPU bf16 autocast: fp32 statistics, gradients in the input's dtype",
    "[train][penalties]") {
  torch::manual_seed(13);
  const std::int64_t N = 40, H = 32, V = 300;
  const auto W = torch::randn({V, H}) / 4;  // an fp32 lm_head, as a CPU model holds it
  const auto h0 = torch::randn({N, H}), r0 = torch::randn({N, H});
  const auto targets = torch::randint(0, V, {N}, torch::kLong);
  const auto w = torch::ones({N});
  // fp64 references of the exact formulas
  auto hd = h0.to(torch::kDouble).requires_grad_(true);
  auto ce64 = torch::nn::functional::cross_entropy(
      at::mm(hd, W.to(torch::kDouble).t()), targets,
      torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum));
  auto g64 = torch::autograd::grad({ce64}, {hd})[0];
  auto hd2 = h0.to(torch::kDouble).requires_grad_(true);
  auto lp = torch::log_softmax(at::mm(hd2, W.to(torch::kDouble).t()), 1);
  auto lq = torch::log_softmax(at::mm(r0.to(torch::kDouble), W.to(torch::kDouble).t()), 1);
  auto kl64 = (lq.exp() * (lq - lp)).sum();
  auto gk64 = torch::autograd::grad({kl64}, {hd2})[0];
  auto rel = [](const at::Tensor& a, const at::Tensor& b) {
    return ((a.to(torch::kDouble) - b).abs().max() / b.abs().max()).item<double>();
  };

  at::Tensor ce, kl, ce_rows;
  auto h = h0.clone().requires_grad_(true), h2 = h0.clone().requires_grad_(true);
  auto logits = h0.clone().requires_grad_(true);
  {
    safetune::train::AutocastRegion ac(at::kCPU);
    ce = linear_cross_entropy_sum(h, W, targets, 16);
    kl = linear_kl_sum(h2, r0, W, w, 16);
    ce_rows =
        cross_entropy_sum(at::linear(logits, W), targets);  // logits come out bf16 under autocast
  }
  CHECK(ce.scalar_type() == torch::kFloat);
  CHECK(ce.item<double>() == Approx(ce64.item<double>()).epsilon(0.02));
  CHECK(kl.item<double>() == Approx(kl64.item<double>()).epsilon(0.1));
  CHECK(ce_rows.item<double>() == Approx(ce64.item<double>()).epsilon(0.02));
  // backward outside autocast, as the trainer runs it
  auto g = torch::autograd::grad({ce}, {h})[0];
  auto gk = torch::autograd::grad({kl}, {h2})[0];
  auto gr = torch::autograd::grad({ce_rows}, {logits})[0];
  CHECK(g.scalar_type() == torch::kFloat);
  CHECK(gk.scalar_type() == torch::kFloat);
  CHECK(gr.scalar_type() == torch::kFloat);
  CHECK(rel(g, g64) < 0.03);
  CHECK(rel(gk, gk64) < 0.1);
  CHECK(rel(gr, g64) < 0.03);
}

TEST_CASE("hidden_anchor: mean squared hidden-state difference over the selected positions",
          "[regularizer]") {
  torch::manual_seed(4);
  auto h = torch::randn({2, 3, 4}, torch::kDouble), r = torch::randn({2, 3, 4}, torch::kDouble);
  auto mask = torch::tensor({{1, 1, 0}, {0, 1, 0}});
  double want = 0;
  int n = 0;
  for (int b = 0; b < 2; ++b)
    for (int t = 0; t < 3; ++t) {
      if (!mask[b][t].item<int>()) continue;
      double sq = 0;
      for (int k = 0; k < 4; ++k)
        sq += std::pow(h[b][t][k].item<double>() - r[b][t][k].item<double>(), 2);
      want += sq / 4;
      ++n;
    }
  CHECK(hidden_anchor_penalty(h, r, mask).item<double>() == Approx(want / n).epsilon(1e-6));
  CHECK(hidden_anchor_penalty(h, h, mask).item<double>() == Approx(0).margin(1e-12));
  CHECK(hidden_anchor_penalty(h, r, torch::zeros({2, 3})).item<double>() == 0);
  // Gradient: d/dh = 2 (h - r) / (H |P|) on the selected positions, 0 elsewhere; none to the
  // reference.
  auto hg = h.clone().requires_grad_(true), rg = r.clone().requires_grad_(true);
  hidden_anchor_penalty(hg, rg, mask).backward();
  auto want_grad = 2 * (h - r) / (4.0 * n) * mask.unsqueeze(-1).to(torch::kDouble);
  CHECK(torch::allclose(hg.grad().to(torch::kDouble), want_grad, 1e-5, 1e-7));
  CHECK_FALSE(rg.grad().defined());
}

TEST_CASE("ema: the saved task adapter is the exponential moving average of its iterates",
          "[regularizer]") {
  RegularizerSection s;
  s.name = "ema";
  s.decay = 0.5;
  auto reg = make_regularizer(s);
  CHECK_FALSE(reg->needs_task_logits());
  RegContext ctx;
  // Iterates theta_0 = 4, theta_1 = 0, theta_2 = 2, final theta_3 = 8 (one scalar parameter).
  auto p = torch::tensor({4.0f});
  std::vector<at::Tensor> params{p};
  for (float v : {4.0f, 0.0f, 2.0f}) {
    p.fill_(v);
    reg->on_gradients(ctx, params);  // before each optimizer step: the previous iterate
  }
  p.fill_(8.0f);
  reg->on_train_end(params);
  // avg_0 = 4; avg_1 = 0.5*4 + 0.5*0 = 2; avg_2 = 0.5*2 + 0.5*2 = 2; avg_3 = 0.5*2 + 0.5*8 = 5.
  CHECK(p.item<float>() == Approx(5.0f));
  CHECK(reg->metrics().at("ema_steps") == 4);
  std::vector<at::Tensor> avg{torch::tensor({1.0, 3.0})};
  ema_update(avg, {torch::tensor({3.0, -1.0})}, 0.75);
  CHECK(avg[0][0].item<double>() == Approx(1.5));  // 0.75*1 + 0.25*3
  CHECK(avg[0][1].item<double>() == Approx(2.0));  // 0.75*3 + 0.25*(-1)
  CHECK(make_regularizer([] {
          RegularizerSection h;
          h.name = "hidden_anchor";
          return h;
        }())
            ->name() == "hidden_anchor");
}
