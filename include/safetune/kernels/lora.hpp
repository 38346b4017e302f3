// Fused LoRA kernels: multi-adapter weight merge and the multi-adapter forward/backward (each has a
// plain reference implementation the tests compare against: lib/kernels/lora_reference.hpp).
#pragma once
#include <ATen/Tensor.h>
#include <vector>

namespace safetune::kernels {

// One low-rank adapter as the kernels see it: A [r, in], B [out, r], output scale s.
struct LoraFactors {
  at::Tensor A;
  at::Tensor B;
  double scale = 1.0;
  // Forward only: dropout probability applied to this adapter's input in training mode.
  double dropout = 0.0;
  // Forward only: a precomputed dropout mask [N, in] (or x's shape), already divided by (1 - p).
  // Lets callers replay a step exactly (and tests check gradients with dropout); when undefined
  // and dropout > 0 in training mode, a fresh mask is drawn from the default generator.
  at::Tensor mask;
};

// W[out, in] += sign * sum_i s_i * B_i A_i, in place, in one pass over W. The low-rank product is
// accumulated in fp32 and added to W with a single rounding. W: fp32/fp16/bf16 on CPU or CUDA;
// factors in any float dtype on W's device. Throws KernelError on bad shapes/devices/dtypes.
void lora_merge_(at::Tensor& W, const std::vector<LoraFactors>& adapters, double sign = 1.0);

// y = base_out + sum_i s_i * (drop_i(x) A_i^T) B_i^T for x [..., in], base_out [..., out].
// Precision (torch.amp.custom_fwd/custom_bwd's contract, whatever the autocast state around it):
// the adapters compute in the autocast dtype when autocast is on for x's device, else in
// base_out's dtype (the activation dtype); the factors (fp32 master weights, any float dtype) are
// cast to it, GEMMs accumulate in fp32, and autocast is off inside forward and backward alike. The
// result has base_out's dtype; each gradient has its input's dtype (x, base_out, A_i, B_i).
// One GEMM pair for all adapters (ranks concatenated, scales folded into B), the expansion
// accumulated onto base_out by one addmm. Kept for backward: x in the compute dtype (no copy when
// it already is; never a wider copy), the [N, R] bottleneck when a B trains, the factors, and a
// one-byte dropout mask per dropped adapter; nothing of size [N, out]. Frozen factors cost no
// weight-gradient GEMMs. Internal dropout masks are drawn from the default generator.
at::Tensor lora_linear_add(const at::Tensor& x, const at::Tensor& base_out,
                           const std::vector<LoraFactors>& adapters, bool training);

// The whole adapted Linear: y = x W^T + b + the adapters, with lora_linear_add's precision and
// gradients. The base weight and bias are frozen (they get no gradient; a weight or bias that
// requires grad is routed through at::linear + lora_linear_add instead). Computing the base GEMM
// inside the op lets the adapters' expansion accumulate into its output in place, and their input
// gradient into the base's (dx = g W, then += G A in place): the adapted Linear costs the plain one
// plus the rank-R GEMMs, with no full-size temporaries or sums. W is kept for backward as is (a
// view, no copy); y has the compute dtype (what at::linear gives under the same autocast state).
at::Tensor lora_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                       const std::vector<LoraFactors>& adapters, bool training);

// True when this build has the CUDA kernels compiled in.
bool cuda_kernels_built();

}  // namespace safetune::kernels
