// The math of the safety regularizers on plain tensors (no model): each function is the formula
// in docs/regularizers.md, written so that no full-size [out, in] matrix is materialised.
#pragma once
#include <ATen/Tensor.h>

#include <vector>

namespace safetune::train {

// Sum over rows of -log softmax(logits)[target]: logits [N, V] (fp32/fp64; lower precision is
// upcast), targets [N] int64 in [0, V). One autograd node whose backward writes softmax - onehot
// straight from the saved log-probabilities, instead of cross_entropy's zero-filled [N, V] NLL
// gradient followed by the log-softmax backward.
at::Tensor cross_entropy_sum(const at::Tensor& logits, const at::Tensor& targets);

// The same sums with the vocabulary projection fused in, computed in row chunks so that no [N, V]
// logits tensor exists at once (Liger's fused linear cross-entropy): hidden [N, H] rows, weight
// [V, H] (the frozen lm_head; it gets no gradient). The logits of a chunk are formed in the
// autocast dtype when autocast is on for hidden's device (else hidden's dtype), the softmax
// statistics in fp32, and the gradient w.r.t. hidden is formed chunk by chunk during the forward
// (when grad mode is on and hidden requires grad) and kept in hidden's dtype: [N, H] is all that
// survives to backward. chunk_rows <= 0 picks chunks of about 64 MiB of fp32 logits (256 MiB on a
// GPU).
//   linear_cross_entropy_sum = sum_i -log softmax(h_i W^T)[t_i]
at::Tensor linear_cross_entropy_sum(const at::Tensor& hidden, const at::Tensor& weight,
                                    const at::Tensor& targets, std::int64_t chunk_rows = 0);
//   linear_kl_sum = sum_i w_i KL(softmax(r_i W^T) || softmax(h_i W^T)); the reference rows r carry
//   no gradient. w: [N] row weights.
at::Tensor linear_kl_sum(const at::Tensor& hidden, const at::Tensor& hidden_ref,
                         const at::Tensor& weight, const at::Tensor& row_weights,
                         std::int64_t chunk_rows = 0);

// Token-level KL(p_ref || p_theta) over the vocabulary, averaged over positions where mask != 0.
// logits_*: [B, T, V]; mask: [B, T] (already aligned with the logits' positions).
at::Tensor kl_anchor(const at::Tensor& logits_theta, const at::Tensor& logits_ref,
                     const at::Tensor& mask);

// Qi et al. 2024 (arXiv 2406.05946) token-wise constrained SFT:
//   L = sum_t (2 / beta_t) * -log sigmoid(beta_t * (log p_theta(y_t) - log p_ref(y_t)))   / n
// with beta_t chosen by the response position t (1-based): beta_first for t = 1, beta_early for
// 2 <= t <= early_until, beta_late after. Returned in the detached-weight form, whose gradient
// equals the formula's but whose value is numerically stable:
//   L_grad = -sum_t 2 * sigmoid(-beta_t * delta_t).detach() * log p_theta(y_t) / n
// `value` receives the formula's value (for metrics). logits: [B, T, V] predicting labels [B, T]
// (labels already shifted: labels[b, t] is the token after position t; -100 = no loss).
struct TokenBetas {
  double first = 0.5, early = 2.0, late = 0.1;
  long early_until = 5;
};
at::Tensor token_constrained(const at::Tensor& logits_theta, const at::Tensor& logits_ref,
                             const at::Tensor& labels, const TokenBetas& betas,
                             double* value = nullptr);

// Hidden-state safety anchor: the mean, over positions where mask != 0, of the mean squared
// difference of the final hidden states:  (1/|P|) sum_{p in P} ||h_p - r_p||^2 / H, computed in
// fp32; h, h_ref: [B, T, H]; mask: [B, T]. 0 (not NaN) when no position is selected.
at::Tensor hidden_anchor_penalty(const at::Tensor& hidden, const at::Tensor& hidden_ref,
                                 const at::Tensor& mask);

// Exponential moving average of parameters, in place: avg = decay * avg + (1 - decay) * param.
void ema_update(std::vector<at::Tensor>& average, const std::vector<at::Tensor>& params,
                double decay);

// O-LoRA: ||A_task A_safety^T||_F^2. A_*: [r, in].
at::Tensor orthogonal_penalty(const at::Tensor& A_task, const at::Tensor& A_safety);

// ||s B A||_F^2 = s^2 tr((A A^T)(B^T B)). A [r, in], B [out, r].
at::Tensor l2_delta_penalty(const at::Tensor& A, const at::Tensor& B, double scale);

// Orthonormal basis [out, k] of the column space of B_safety [out, r] (rank-revealing; k <= r).
at::Tensor column_basis(const at::Tensor& B_safety, double rel_tol = 1e-6);

// ||(I - Q Q^T) s B_t A_t||_F^2 with Q = column_basis(B_safety), via C = B_t - Q (Q^T B_t):
// s^2 tr((A_t A_t^T)(C^T C)). Q is treated as a constant.
at::Tensor subspace_penalty(const at::Tensor& A_task, const at::Tensor& B_task, double scale,
                            const at::Tensor& Q);

// Gradient surgery: if <g, g_safe> < 0, remove the conflicting component of g in place:
// g -= (<g, g_safe> / ||g_safe||^2) g_safe, over the concatenation of all tensors. Returns the
// inner product before the projection.
double project_conflicting(std::vector<at::Tensor>& task_grads,
                           const std::vector<at::Tensor>& safety_grads);

// Safe LoRA (arXiv 2405.16833) in the adapter's terms: with P = Q Q^T the projector on the safety
// subspace, the projected update is P dW = (Q Q^T B) A. Returns cos(dW, P dW) computed through
// r x r Gram matrices.
double projection_cosine(const at::Tensor& A, const at::Tensor& B, const at::Tensor& Q);

}  // namespace safetune::train
