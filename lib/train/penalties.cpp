// Regularizer formulas on tensors; see include/safetune/train/penalties.hpp and
// docs/regularizers.md.
#include "safetune/train/penalties.hpp"

#include <ATen/autocast_mode.h>
#include <torch/torch.h>

#include <algorithm>

#include "safetune/error.hpp"

namespace safetune::train {
namespace {
// Softmax statistics in at least fp32 (bf16/fp16 logits are upcast; fp64 stays fp64).
at::Tensor upcast(const at::Tensor& t) { return t.element_size() < 4 ? t.to(torch::kFloat) : t; }
}  // namespace

namespace {
class CrossEntropySum : public torch::autograd::Function<CrossEntropySum> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& logits,
                            const at::Tensor& targets) {
    // Fixed precision whatever the autocast state (custom_fwd/custom_bwd's contract): fp32
    // softmax statistics, the gradient in the logits' dtype.
    c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
    auto logp = torch::log_softmax(upcast(logits), 1);
    auto loss = -logp.gather(1, targets.unsqueeze(1)).sum();
    ctx->save_for_backward({logp, targets});
    ctx->saved_data["dtype"] = static_cast<std::int64_t>(logits.scalar_type());
    return loss;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
    auto saved = ctx->get_saved_variables();
    const auto& logp = saved[0];
    const auto& targets = saved[1];
    auto g = grads[0].to(logp.scalar_type());
    // d/dlogits of -log p[target] = softmax - onehot(target), times the incoming scalar.
    auto grad = logp.exp();
    grad.mul_(g);
    grad.scatter_add_(1, targets.unsqueeze(1), (-g).expand({logp.size(0), 1}).contiguous());
    const auto dtype = static_cast<at::ScalarType>(ctx->saved_data["dtype"].toInt());
    return {grad.scalar_type() == dtype ? grad : grad.to(dtype), at::Tensor()};
  }
};
}  // namespace

at::Tensor cross_entropy_sum(const at::Tensor& logits, const at::Tensor& targets) {
  if (logits.dim() != 2 || targets.dim() != 1 || targets.size(0) != logits.size(0))
    throw Error("cross_entropy_sum needs logits [N, V] and targets [N]", "lm_loss");
  if (logits.size(0) == 0) return upcast(logits).sum();
  return CrossEntropySum::apply(logits, targets.to(logits.device(), at::kLong));
}

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The dtype a chunk's logits GEMM runs in: autocast's when it is on for the device (as at::linear
// would under autocast), else the hidden states' own.
at::ScalarType gemm_dtype(const at::Tensor& hidden) {
  const auto dev = hidden.device().type();
  if (hidden.scalar_type() != at::kDouble && at::autocast::is_autocast_enabled(dev))
    return at::autocast::get_autocast_dtype(dev);
  return hidden.scalar_type();
}

// Rows per chunk: about 64 MiB of fp32 logits on the CPU (cache-friendly), 256 MiB on a GPU (large
// enough GEMMs for the tensor cores; still small beside the model).
std::int64_t pick_chunk(std::int64_t rows, std::int64_t vocab, std::int64_t asked, bool gpu) {
  if (asked > 0) return std::min(asked, std::max<std::int64_t>(rows, 1));
  const std::int64_t budget = ((gpu ? 256LL : 64LL) << 20) / (4 * std::max<std::int64_t>(vocab, 1));
  return std::clamp<std::int64_t>(budget, 16, std::max<std::int64_t>(rows, 16));
}

// Shared by both losses: forward walks the rows chunk by chunk, accumulating the loss and writing
// d(loss)/d(hidden) into a buffer that backward only scales by the incoming gradient.
class FusedVocabLoss : public torch::autograd::Function<FusedVocabLoss> {
 public:
  // kind 0: cross-entropy with `aux` = targets; kind 1: KL with `aux` = row weights and `ref`.
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& hidden, const at::Tensor& ref,
                            const at::Tensor& weight, const at::Tensor& aux, std::int64_t kind,
                            std::int64_t chunk, bool want_grad, std::int64_t compute_i) {
    c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
    const auto compute = static_cast<at::ScalarType>(compute_i);
    const auto stats = compute == at::kDouble ? at::kDouble : at::kFloat;
    const at::Tensor W = weight.to(compute);
    const auto N = hidden.size(0);
    at::Tensor grad = want_grad ? at::empty_like(hidden) : at::Tensor();
    at::Tensor total = at::zeros({}, hidden.options().dtype(stats));
    for (std::int64_t s = 0; s < N; s += chunk) {
      const auto len = std::min(chunk, N - s);
      const at::Tensor h = hidden.narrow(0, s, len).to(compute);
      at::Tensor logits = at::mm(h, W.t()).to(stats);  // [len, V]
      at::Tensor dlogits;
      if (kind == 0) {
        const at::Tensor t = aux.narrow(0, s, len).unsqueeze(1);
        const at::Tensor lse = at::logsumexp(logits, 1, /*keepdim=*/true);
        total += (lse - logits.gather(1, t)).sum();
        if (want_grad) {
          dlogits = logits.sub_(lse).exp_();  // softmax - onehot, in place
          dlogits.scatter_add_(1, t, at::full({len, 1}, -1.0, dlogits.options()));
        }
      } else {
        const at::Tensor w = aux.narrow(0, s, len).to(stats).unsqueeze(1);
        const at::Tensor logq =
            at::log_softmax(at::mm(ref.narrow(0, s, len).to(compute), W.t()).to(stats), 1);
        at::Tensor logp = at::log_softmax(logits, 1);
        logits = at::Tensor();
        const at::Tensor q = logq.exp();
        total += ((q * (logq - logp)).sum(1, true) * w).sum();
        if (want_grad) dlogits = logp.exp_().sub_(q).mul_(w);  // (p - q) w, in place
      }
      if (want_grad) grad.narrow(0, s, len).copy_(at::mm(dlogits.to(compute), W));
    }
    ctx->save_for_backward({grad});
    return total;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
    const at::Tensor grad = ctx->get_saved_variables()[0];
    variable_list out(8);
    if (grad.defined()) out[0] = grad * grads[0].to(grad.scalar_type());
    return out;
  }
};

at::Tensor fused_vocab_loss(const at::Tensor& hidden, const at::Tensor& ref,
                            const at::Tensor& weight, const at::Tensor& aux, std::int64_t kind,
                            std::int64_t chunk, const char* what) {
  if (hidden.dim() != 2 || weight.dim() != 2 || hidden.size(1) != weight.size(1))
    throw Error("needs hidden [N, H] and weight [V, H]", what);
  if (aux.dim() != 1 || aux.size(0) != hidden.size(0))
    throw Error("needs one target/weight per row", what);
  if (ref.defined() && ref.sizes() != hidden.sizes())
    throw Error("hidden and reference rows differ in shape", what);
  const bool want = torch::GradMode::is_enabled() && hidden.requires_grad();
  const auto c = gemm_dtype(hidden);
  // (an empty tensor stands for "no reference rows": autograd inputs must be defined)
  return FusedVocabLoss::apply(
      hidden, ref.defined() ? ref.detach() : at::empty({0}, hidden.options()), weight.detach(), aux,
      kind, pick_chunk(hidden.size(0), weight.size(0), chunk, !hidden.is_cpu()), want,
      static_cast<std::int64_t>(c));
}

}  // namespace

at::Tensor linear_cross_entropy_sum(const at::Tensor& hidden, const at::Tensor& weight,
                                    const at::Tensor& targets, std::int64_t chunk_rows) {
  return fused_vocab_loss(hidden, at::Tensor(), weight, targets.to(hidden.device(), at::kLong), 0,
                          chunk_rows, "linear_cross_entropy_sum");
}

at::Tensor linear_kl_sum(const at::Tensor& hidden, const at::Tensor& hidden_ref,
                         const at::Tensor& weight, const at::Tensor& row_weights,
                         std::int64_t chunk_rows) {
  return fused_vocab_loss(hidden, hidden_ref, weight, row_weights.to(hidden.device()), 1,
                          chunk_rows, "linear_kl_sum");
}

at::Tensor kl_anchor(const at::Tensor& logits_theta, const at::Tensor& logits_ref,
                     const at::Tensor& mask) {
  if (logits_theta.sizes() != logits_ref.sizes())
    throw Error("logits of the model and the reference differ in shape", "kl_anchor");
  // Only the masked (response) positions enter the sum, so only their rows are normalised: the
  // softmaxes over the vocabulary dominate the cost for small models with large vocabularies.
  const auto vocab = logits_theta.size(-1);
  auto w = mask.reshape({-1});
  auto rows = w.ne(0).nonzero().squeeze(-1).to(logits_theta.device());
  if (rows.numel() == 0) return (logits_theta.sum() * 0).to(upcast(logits_theta).scalar_type());
  auto flat_theta = logits_theta.reshape({-1, vocab}), flat_ref = logits_ref.reshape({-1, vocab});
  const bool all = rows.numel() == flat_theta.size(0);  // e.g. rows picked by response_logits
  auto logp = torch::log_softmax(upcast(all ? flat_theta : flat_theta.index_select(0, rows)), -1);
  auto logq =
      torch::log_softmax(upcast(all ? flat_ref : flat_ref.index_select(0, rows)), -1).detach();
  auto kl = (logq.exp() * (logq - logp)).sum(-1);  // [rows]
  auto m = w.to(rows.device()).index_select(0, rows).to(kl.scalar_type());
  return (kl * m).sum() / m.sum();
}

at::Tensor token_constrained(const at::Tensor& logits_theta, const at::Tensor& logits_ref,
                             const at::Tensor& labels, const TokenBetas& b, double* value) {
  auto valid = labels.ne(-100);
  auto safe_labels = labels.masked_fill(~valid, 0).unsqueeze(-1);
  auto lp = torch::log_softmax(upcast(logits_theta), -1).gather(-1, safe_labels).squeeze(-1);
  auto lr = torch::log_softmax(upcast(logits_ref), -1).gather(-1, safe_labels).squeeze(-1).detach();
  // Response position t (1-based) = how many supervised tokens precede and include this one.
  auto pos = valid.to(torch::kLong).cumsum(1);
  auto beta = torch::full_like(lp, b.late);
  beta = torch::where(pos.le(b.early_until), torch::full_like(lp, b.early), beta);
  beta = torch::where(pos.eq(1), torch::full_like(lp, b.first), beta);
  auto delta = lp - lr;
  auto vf = valid.to(lp.scalar_type());
  auto n = vf.sum().clamp_min(1.0);
  if (value) {
    auto exact = (2.0 / beta) * torch::softplus(-beta * delta);  // -log sigmoid(x) = softplus(-x)
    *value = ((exact * vf).sum() / n).item<double>();
  }
  auto weight = (2.0 * torch::sigmoid(-beta * delta)).detach();
  return -(weight * lp * vf).sum() / n;
}

at::Tensor orthogonal_penalty(const at::Tensor& A_task, const at::Tensor& A_safety) {
  return A_task.matmul(A_safety.detach().t()).pow(2).sum();
}

at::Tensor hidden_anchor_penalty(const at::Tensor& hidden, const at::Tensor& hidden_ref,
                                 const at::Tensor& mask) {
  auto d =
      (hidden.to(torch::kFloat) - hidden_ref.detach().to(torch::kFloat)).pow(2).mean(-1);  // [B, T]
  auto m = mask.to(d.device()).ne(0).to(torch::kFloat);
  const double n = m.sum().item<double>();
  if (n == 0) return d.sum() * 0;
  return (d * m).sum() / n;
}

void ema_update(std::vector<at::Tensor>& average, const std::vector<at::Tensor>& params,
                double decay) {
  torch::NoGradGuard ng;
  for (std::size_t i = 0; i < params.size(); ++i)
    average[i].mul_(decay).add_(params[i].detach().to(average[i].dtype()), 1 - decay);
}

at::Tensor l2_delta_penalty(const at::Tensor& A, const at::Tensor& B, double scale) {
  auto aat = A.matmul(A.t());                // [r, r]
  auto btb = B.t().matmul(B);                // [r, r]
  return scale * scale * (aat * btb).sum();  // tr(X Y) = sum(X ∘ Y^T), both symmetric
}

at::Tensor column_basis(const at::Tensor& B_safety, double rel_tol) {
  auto Bd = B_safety.detach().to(torch::kDouble);
  auto [U, S, Vh] = torch::linalg_svd(Bd, /*full_matrices=*/false);
  if (S.numel() == 0) return torch::zeros({B_safety.size(0), 0}, B_safety.options());
  double smax = S.max().item<double>();
  std::int64_t k = smax > 0 ? S.gt(smax * rel_tol).sum().item<std::int64_t>() : 0;
  return U.narrow(1, 0, k).to(B_safety.scalar_type());
}

at::Tensor subspace_penalty(const at::Tensor& A_task, const at::Tensor& B_task, double scale,
                            const at::Tensor& Q) {
  auto C = Q.numel() ? B_task - Q.matmul(Q.t().matmul(B_task)) : B_task;
  auto aat = A_task.matmul(A_task.t());
  auto ctc = C.t().matmul(C);
  return scale * scale * (aat * ctc).sum();
}

double project_conflicting(std::vector<at::Tensor>& g, const std::vector<at::Tensor>& s) {
  if (g.size() != s.size()) throw Error("gradient lists differ in length", "gradient_projection");
  double dot = 0, ss = 0;
  for (std::size_t i = 0; i < g.size(); ++i) {
    if (!g[i].defined() || !s[i].defined()) continue;
    dot += (g[i].to(torch::kDouble) * s[i].to(torch::kDouble)).sum().item<double>();
    ss += s[i].to(torch::kDouble).pow(2).sum().item<double>();
  }
  if (dot < 0 && ss > 0) {
    const double c = dot / ss;
    for (std::size_t i = 0; i < g.size(); ++i)
      if (g[i].defined() && s[i].defined()) g[i].sub_(s[i].to(g[i].scalar_type()), c);
  }
  return dot;
}

double projection_cosine(const at::Tensor& A, const at::Tensor& B, const at::Tensor& Q) {
  auto Ad = A.detach().to(torch::kDouble), Bd = B.detach().to(torch::kDouble),
       Qd = Q.detach().to(torch::kDouble);
  auto aat = Ad.matmul(Ad.t());
  auto PB = Qd.numel() ? Qd.matmul(Qd.t().matmul(Bd)) : torch::zeros_like(Bd);
  // <dW, P dW> = tr(A^T B^T P B A) = tr((A A^T)(B^T P B)); P is idempotent so ||P dW||^2 is the
  // same.
  double inner = (aat * Bd.t().matmul(PB)).sum().item<double>();
  double norm2 = (aat * Bd.t().matmul(Bd)).sum().item<double>();
  if (norm2 <= 0) return 1.0;
  return inner / (std::sqrt(norm2) * std::sqrt(std::max(inner, 0.0)) + 1e-300);
}

}  // namespace safetune::train
