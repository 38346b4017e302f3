// Regularizer formulas on tensors; see include/safetune/train/penalties.hpp and docs/regularizers.md.
#include "safetune/train/penalties.hpp"

#include <torch/torch.h>

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
    auto logp = torch::log_softmax(upcast(logits), 1);
    auto loss = -logp.gather(1, targets.unsqueeze(1)).sum();
    ctx->save_for_backward({logp, targets});
    ctx->saved_data["dtype"] = static_cast<std::int64_t>(logits.scalar_type());
    return loss;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
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

at::Tensor kl_anchor(const at::Tensor& logits_theta, const at::Tensor& logits_ref, const at::Tensor& mask) {
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
  auto logq = torch::log_softmax(upcast(all ? flat_ref : flat_ref.index_select(0, rows)), -1).detach();
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

at::Tensor l2_delta_penalty(const at::Tensor& A, const at::Tensor& B, double scale) {
  auto aat = A.matmul(A.t());   // [r, r]
  auto btb = B.t().matmul(B);   // [r, r]
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

at::Tensor subspace_penalty(const at::Tensor& A_task, const at::Tensor& B_task, double scale, const at::Tensor& Q) {
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
  auto Ad = A.detach().to(torch::kDouble), Bd = B.detach().to(torch::kDouble), Qd = Q.detach().to(torch::kDouble);
  auto aat = Ad.matmul(Ad.t());
  auto PB = Qd.numel() ? Qd.matmul(Qd.t().matmul(Bd)) : torch::zeros_like(Bd);
  // <dW, P dW> = tr(A^T B^T P B A) = tr((A A^T)(B^T P B)); P is idempotent so ||P dW||^2 is the same.
  double inner = (aat * Bd.t().matmul(PB)).sum().item<double>();
  double norm2 = (aat * Bd.t().matmul(Bd)).sum().item<double>();
  if (norm2 <= 0) return 1.0;
  return inner / (std::sqrt(norm2) * std::sqrt(std::max(inner, 0.0)) + 1e-300);
}

}  // namespace safetune::train
