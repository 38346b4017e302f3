// LibTorch glue for the LoRA kernels: shape/device/dtype checks, CPU/CUDA dispatch, the autograd
// Function with its hand-written backward, and the plain reference implementations.
#include "safetune/kernels/lora.hpp"

#include "kernels/lora_autograd.hpp"
#include "kernels/lora_launch.hpp"
#include "kernels/lora_reference.hpp"
#include "safetune/error.hpp"

#include <ATen/autocast_mode.h>
#include <torch/torch.h>

#ifdef SAFETUNE_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include <memory>
#include <sstream>
#include <string>

namespace safetune::kernels {
namespace {

std::string shape_str(const at::Tensor& t) {
  std::ostringstream s;
  s << t.sizes();
  return s.str();
}

bool is_float_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kHalf || t == at::kBFloat16 || t == at::kDouble;
}

// Checks the factors against a weight/output of [out, in]; `what` names the caller in messages.
void check_factors(const std::vector<LoraFactors>& adapters, std::int64_t out, std::int64_t in,
                   const at::Device& device, const char* what) {
  for (size_t i = 0; i < adapters.size(); ++i) {
    const auto& f = adapters[i];
    const std::string where = std::string(what) + " adapter #" + std::to_string(i);
    if (!f.A.defined() || !f.B.defined()) throw KernelError("adapter factor is undefined", where);
    if (f.A.dim() != 2 || f.B.dim() != 2)
      throw KernelError("A and B must be 2-D, got A " + shape_str(f.A) + " B " + shape_str(f.B),
                        where);
    const auto r = f.A.size(0);
    if (r <= 0 || f.A.size(1) != in || f.B.size(0) != out || f.B.size(1) != r)
      throw KernelError("factor shapes A " + shape_str(f.A) + " B " + shape_str(f.B) +
                            " do not fit [out=" + std::to_string(out) +
                            ", in=" + std::to_string(in) + "]",
                        where, "A must be [r, in] and B [out, r]");
    if (f.A.device() != device || f.B.device() != device)
      throw KernelError("factors live on another device than the weight/input", where);
    if (!is_float_dtype(f.A.scalar_type()) || !is_float_dtype(f.B.scalar_type()))
      throw KernelError("factors must be floating point", where);
    if (!(f.dropout >= 0.0 && f.dropout <= 1.0))
      throw KernelError("dropout must lie in [0, 1]", where);
  }
}

DType to_dtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return DType::f32;
    case at::kHalf: return DType::f16;
    case at::kBFloat16: return DType::bf16;
    default: throw KernelError("merge supports fp32, fp16 and bf16 weights", "weight");
  }
}

}  // namespace

bool cuda_kernels_built() {
#ifdef SAFETUNE_WITH_CUDA
  return true;
#else
  return false;
#endif
}

// ---- merge ----------------------------------------------------------------------------------

void lora_merge_(at::Tensor& W, const std::vector<LoraFactors>& adapters, double sign) {
  if (!W.defined() || W.dim() != 2) throw KernelError("merge needs a 2-D weight", "weight");
  const auto dtype = to_dtype(W.scalar_type());
  const auto out = W.size(0), in = W.size(1);
  check_factors(adapters, out, in, W.device(), "merge");
  if (adapters.empty() || W.numel() == 0) return;

  at::NoGradGuard no_grad;
  // The scales (and the sign) go into the small B factors, so the kernels do a plain Bc·Ac.
  std::vector<at::Tensor> bs, as;
  for (const auto& f : adapters) {
    bs.push_back(f.B.to(at::kFloat) * (sign * f.scale));
    as.push_back(f.A.to(at::kFloat));
  }
  const at::Tensor Bc = at::cat(bs, 1).contiguous();
  const at::Tensor Ac = at::cat(as, 0).contiguous();
  const auto R = Ac.size(0);

  // The kernels want unit stride along a row; anything else goes through a contiguous copy.
  at::Tensor target = W.stride(1) == 1 && W.stride(0) >= in ? W : W.contiguous();
  std::string err;
  if (W.is_cuda()) {
#ifdef SAFETUNE_WITH_CUDA
    c10::cuda::CUDAGuard guard(W.device());
    err = lora_merge_cuda_launch(target.data_ptr(), dtype, out, in, target.stride(0),
                                 Bc.data_ptr<float>(), Ac.data_ptr<float>(), R,
                                 c10::cuda::getCurrentCUDAStream(W.device().index()).stream());
#else
    throw KernelError("this build has no CUDA kernels", "weight", "rebuild with SAFETUNE_CUDA=ON");
#endif
  } else if (W.is_cpu()) {
    err = lora_merge_cpu_launch(target.data_ptr(), dtype, out, in, target.stride(0),
                                Bc.data_ptr<float>(), Ac.data_ptr<float>(), R);
  } else {
    throw KernelError("merge supports CPU and CUDA tensors only", "weight");
  }
  if (!err.empty()) throw KernelError(err, "weight");
  if (!target.is_same(W)) W.copy_(target);
}

at::Tensor lora_merge_reference(const at::Tensor& W, const std::vector<LoraFactors>& adapters,
                                double sign) {
  at::NoGradGuard no_grad;
  at::Tensor acc = W.to(at::kDouble);
  for (const auto& f : adapters)
    acc += (sign * f.scale) * at::mm(f.B.to(at::kDouble), f.A.to(at::kDouble));
  return acc.to(W.scalar_type());
}

// ---- forward / backward -----------------------------------------------------------------------

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The dtype the adapters compute in: the autocast dtype when autocast is on for x's device (as
// PEFT under torch.autocast), else the activation dtype of the base output. fp64 is never lowered
// (autocast leaves fp64 alone too). Factors are cast to it (they are small); x only when it
// differs.
at::ScalarType compute_dtype_for(const at::Tensor& x, const at::Tensor& base_out) {
  const auto dev = x.device().type();
  if (base_out.scalar_type() != at::kDouble && at::autocast::is_autocast_enabled(dev))
    return at::autocast::get_autocast_dtype(dev);
  return base_out.scalar_type();
}

// What the Function needs besides tensors. Inputs are laid out as
// {x, base, A_0..A_{n-1}, B_0..B_{n-1}, masks...}; mask_index[i] is -1 when adapter i has none.
// A mask is either bool (drawn here; kept x = x * mask * mask_scale) or a float mask already
// divided by (1 - p) (given by the caller; mask_scale 1).
struct LoraMeta {
  std::vector<double> scales, mask_scales;  // per adapter
  std::vector<std::int64_t> ranks, offsets, mask_index;
  std::int64_t n = 0, R = 0;
  at::ScalarType compute = at::kFloat;
  // fused: inputs[1] is the base weight W [out, in] (and the last input its bias when has_bias):
  // the op computes y = x W^T + b + adapters itself, so that the adapters' expansion accumulates
  // into the base GEMM's output in place and, in backward, their input gradient into the base's
  // (dx = g W, then += G A in place): no [N, out] or [N, in] temporaries and no extra sum.
  // Otherwise inputs[1] is the base output to add to.
  bool fused = false, has_bias = false;
};

// Autocast is excluded inside the op: it fixes its own compute dtype in forward and backward
// (torch.amp.custom_fwd/custom_bwd's contract), so the backward never meets the forward's dtypes
// mixed with autocast's.
struct NoAutocast {
  c10::impl::ExcludeDispatchKeyGuard guard{c10::autocast_dispatch_keyset};
};

at::Tensor concat(const std::vector<at::Tensor>& parts, std::int64_t dim) {
  return parts.size() == 1 ? parts[0] : at::cat(parts, dim);
}

class LoraAddFunction : public torch::autograd::Function<LoraAddFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, at::TensorList inputs, const LoraMeta* meta) {
    NoAutocast no_autocast;
    const auto n = meta->n;
    const auto c = meta->compute;
    const at::Tensor& x = inputs[0];
    const at::Tensor& base = inputs[1];
    auto A = [&](std::int64_t i) { return inputs[2 + i].to(c); };
    const at::Tensor xc = x.to(c);

    // Adapters without dropout share x, so their A's form one GEMM: x [A_a; A_b; ...]^T.
    std::vector<std::int64_t> plain, dropped;
    for (std::int64_t i = 0; i < n; ++i) (meta->mask_index[i] < 0 ? plain : dropped).push_back(i);
    std::vector<at::Tensor> pieces(n);
    if (!plain.empty()) {
      std::vector<at::Tensor> as;
      for (auto i : plain) as.push_back(A(i));
      const at::Tensor h = at::mm(xc, concat(as, 0).t());
      std::int64_t off = 0;
      for (auto i : plain) {
        pieces[i] = h.narrow(1, off, meta->ranks[i]);
        off += meta->ranks[i];
      }
    }
    for (auto i : dropped) pieces[i] = at::mm(apply_mask(xc, inputs, *meta, i), A(i).t());
    const at::Tensor H = n == 1 ? pieces[0] : at::cat(pieces, 1);  // [N, R], small
    at::Tensor y;
    if (meta->fused) {
      // y = x W^T (+ b), then += H (s ⊙ B)^T in place, all in the compute dtype.
      const at::Tensor Wc = base.to(c);
      y = meta->has_bias ? at::addmm(inputs.back().to(c), xc, Wc.t()) : at::mm(xc, Wc.t());
      y.addmm_(H, scaled_B(inputs, *meta, c).t());
    } else {
      // y = base + H (s ⊙ B)^T: the scales live in the small B factors; beta = 1 accumulates the
      // expansion into the base output in one GEMM, in the output's dtype.
      const auto o = base.scalar_type();
      y = at::addmm(base, H.to(o), scaled_B(inputs, *meta, o).t());
    }

    // Saved: x in the compute dtype when an A needs its gradient (the same storage the base Linear
    // keeps when the dtypes agree; a narrower copy under autocast; never a wider one), H when a B
    // does, the factors, and the masks. Nothing of size [N, out].
    bool any_A = false, any_B = false;
    for (std::int64_t i = 0; i < n; ++i) {
      any_A = any_A || inputs[2 + i].requires_grad();
      any_B = any_B || inputs[2 + n + i].requires_grad();
    }
    const bool keep_narrow_x = static_cast<std::size_t>(x.element_size()) < at::elementSize(c);
    variable_list saved{any_A ? (keep_narrow_x ? x : xc) : at::Tensor(), any_B ? H : at::Tensor()};
    for (std::int64_t i = 2; i < static_cast<std::int64_t>(inputs.size()); ++i)
      saved.push_back(inputs[i]);
    if (meta->fused) saved.push_back(base);  // the weight itself (no copy), for dx = g W
    ctx->save_for_backward(saved);
    ctx->saved_data["x_dtype"] = static_cast<std::int64_t>(x.scalar_type());
    ctx->saved_data["nin"] = static_cast<std::int64_t>(inputs.size());
    store_meta(ctx, *meta);
    return {y};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    NoAutocast no_autocast;
    const LoraMeta meta_value = load_meta(ctx);
    const LoraMeta* meta = &meta_value;
    const auto n = meta->n;
    const auto c = meta->compute;
    const auto nin = ctx->saved_data["nin"].toInt();
    const auto x_dtype = static_cast<at::ScalarType>(ctx->saved_data["x_dtype"].toInt());
    const auto saved = ctx->get_saved_variables();
    const at::Tensor xc = saved[0].defined() ? saved[0].to(c) : at::Tensor();
    const at::Tensor& H = saved[1];
    // saved[2:] is laid out like inputs[2:]: A..., B..., masks...
    auto A = [&](std::int64_t i) { return saved[2 + i]; };
    const at::Tensor g = grads[0];
    const at::Tensor gc = g.to(c);

    variable_list result(nin + 1);  // + the meta slot, which gets no gradient
    // y = base + ...: the gradient passes through in base's dtype. A fused base weight is frozen.
    if (!meta->fused && ctx->needs_input_grad(1)) result[1] = g;

    std::vector<std::int64_t> need_A, need_B;
    for (std::int64_t i = 0; i < n; ++i) {
      if (ctx->needs_input_grad(2 + i)) need_A.push_back(i);
      if (ctx->needs_input_grad(2 + n + i)) need_B.push_back(i);
    }

    // dL/dB_i = s_i g^T H_i: one GEMM over the trainable adapters' columns only (a frozen adapter
    // costs no weight-gradient GEMM), returned in B_i's (master) dtype.
    if (!need_B.empty()) {
      const at::Tensor gB = at::mm(gc.t(), gather_columns(H, *meta, need_B));
      std::int64_t off = 0;
      for (auto i : need_B) {
        const auto& Bi = saved[2 + n + i];
        result[2 + n + i] = gB.narrow(1, off, meta->ranks[i])
                                .to(Bi.scalar_type())
                                .contiguous()
                                .mul_(meta->scales[i]);
        off += meta->ranks[i];
      }
    }
    const bool need_x = ctx->needs_input_grad(0);
    if (!need_x && need_A.empty()) return result;

    // G = g (s ⊙ B): the gradient at the rank-R bottleneck, shared by dx and every dA_i.
    const at::Tensor G = at::mm(gc, scaled_B(saved, *meta, c));

    std::vector<std::int64_t> plain_A;
    for (auto i : need_A) {
      const auto Ai = A(i);
      if (meta->mask_index[i] < 0) {
        plain_A.push_back(i);
      } else {
        result[2 + i] =
            at::mm(cols(G, *meta, i).t(), apply_mask(xc, saved, *meta, i)).to(Ai.scalar_type());
      }
    }
    if (!plain_A.empty()) {
      const at::Tensor gA = at::mm(gather_columns(G, *meta, plain_A).t(), xc);
      std::int64_t off = 0;
      for (auto i : plain_A) {
        result[2 + i] = gA.narrow(0, off, meta->ranks[i]).to(A(i).scalar_type());
        off += meta->ranks[i];
      }
    }
    if (need_x) {
      std::vector<std::int64_t> plain;
      at::Tensor dx = meta->fused ? at::mm(gc, saved.back().to(c)) : at::Tensor();  // g W
      for (std::int64_t i = 0; i < n; ++i) {
        if (meta->mask_index[i] < 0) {
          plain.push_back(i);
        } else {
          at::Tensor part = at::mm(cols(G, *meta, i), A(i).to(c));
          part = apply_mask(part, saved, *meta, i);
          dx = dx.defined() ? dx.add_(part) : part;
        }
      }
      if (!plain.empty()) {
        std::vector<at::Tensor> as;
        for (auto i : plain) as.push_back(A(i).to(c));
        const at::Tensor Gp = gather_columns(G, *meta, plain), Ap = concat(as, 0);
        dx = dx.defined() ? dx.addmm_(Gp, Ap) : at::mm(Gp, Ap);
      }
      result[0] = dx.to(x_dtype);
    }
    return result;
  }

  static LoraMeta make_meta(std::vector<double> scales, std::vector<std::int64_t> ranks,
                            std::vector<std::int64_t> mask_index, std::vector<double> mask_scales,
                            at::ScalarType compute, bool fused, bool has_bias) {
    LoraMeta m;
    m.fused = fused;
    m.has_bias = has_bias;
    m.n = static_cast<std::int64_t>(scales.size());
    m.scales = std::move(scales);
    m.ranks = std::move(ranks);
    m.mask_index = std::move(mask_index);
    m.mask_scales = std::move(mask_scales);
    m.compute = compute;
    for (auto r : m.ranks) {
      m.offsets.push_back(m.R);
      m.R += r;
    }
    return m;
  }

 private:
  static void store_meta(AutogradContext* ctx, const LoraMeta& meta) {
    ctx->saved_data["scales"] = meta.scales;
    ctx->saved_data["mask_scales"] = meta.mask_scales;
    ctx->saved_data["ranks"] = meta.ranks;
    ctx->saved_data["mask_index"] = meta.mask_index;
    ctx->saved_data["compute"] = static_cast<std::int64_t>(meta.compute);
    ctx->saved_data["fused"] = meta.fused;
    ctx->saved_data["has_bias"] = meta.has_bias;
  }
  static LoraMeta load_meta(AutogradContext* ctx) {
    return make_meta(ctx->saved_data["scales"].toDoubleVector(),
                     ctx->saved_data["ranks"].toIntVector(),
                     ctx->saved_data["mask_index"].toIntVector(),
                     ctx->saved_data["mask_scales"].toDoubleVector(),
                     static_cast<at::ScalarType>(ctx->saved_data["compute"].toInt()),
                     ctx->saved_data["fused"].toBool(), ctx->saved_data["has_bias"].toBool());
  }
  // The helpers below read tensors laid out as the forward's inputs, or as the saved list, which
  // shares their positions from index 2 on: A_0..A_{n-1}, B_0..B_{n-1}, masks.
  // [s_0 B_0, s_1 B_1, ...] in dtype `dt`: the scales ride on the small factors.
  static at::Tensor scaled_B(at::TensorList t, const LoraMeta& meta, at::ScalarType dt) {
    std::vector<at::Tensor> bs;
    for (std::int64_t i = 0; i < meta.n; ++i)
      bs.push_back(t[2 + meta.n + i].to(dt) * meta.scales[i]);
    return concat(bs, 1);
  }
  // v ⊙ mask_i (× 1/(1-p) for a bool mask): adapter i's dropout on x, or on dx in backward.
  static at::Tensor apply_mask(const at::Tensor& v, at::TensorList t, const LoraMeta& meta,
                               std::int64_t i) {
    at::Tensor out = v * t[2 + 2 * meta.n + meta.mask_index[i]];
    if (meta.mask_scales[i] != 1.0) out.mul_(meta.mask_scales[i]);
    return out;
  }
  static at::Tensor cols(const at::Tensor& m, const LoraMeta& meta, std::int64_t i) {
    return m.narrow(1, meta.offsets[i], meta.ranks[i]);
  }
  static at::Tensor gather_columns(const at::Tensor& m, const LoraMeta& meta,
                                   const std::vector<std::int64_t>& idx) {
    if (static_cast<std::int64_t>(idx.size()) == meta.n) return m;
    if (idx.size() == 1) return cols(m, meta, idx[0]);
    std::vector<at::Tensor> parts;
    for (auto i : idx) parts.push_back(cols(m, meta, i));
    return at::cat(parts, 1);
  }
};

// Builds the op's inputs and meta (dropout masks included) and applies it; `second` is the base
// output [N, out] or, when fused, the weight [out, in]. Returns y as [N, out].
at::Tensor apply_lora(const at::Tensor& x2, const at::Tensor& second, const at::Tensor& bias,
                      const std::vector<LoraFactors>& adapters, bool training,
                      at::ScalarType compute, bool fused, const at::Tensor& x_shape_for_errors) {
  const auto N = x2.size(0), in = x2.size(1);
  std::vector<at::Tensor> inputs{x2, second};
  std::vector<double> scales, mask_scales;
  std::vector<std::int64_t> ranks, mask_index;
  for (const auto& f : adapters) inputs.push_back(f.A);
  for (const auto& f : adapters) {
    inputs.push_back(f.B);
    scales.push_back(f.scale);
    ranks.push_back(f.A.size(0));
  }
  std::int64_t masks = 0;
  for (const auto& f : adapters) {
    if (!training || f.dropout <= 0.0) {
      mask_index.push_back(-1);
      mask_scales.push_back(1.0);
      continue;
    }
    at::NoGradGuard no_grad;
    at::Tensor m;
    double mscale = 1.0;
    if (f.mask.defined()) {
      if (f.mask.numel() != N * in)
        throw KernelError("dropout mask " + shape_str(f.mask) + " does not match x " +
                              shape_str(x_shape_for_errors),
                          "lora_linear_add");
      m = f.mask.reshape({N, in}).to(x2.device(), compute).detach();
    } else if (f.dropout >= 1.0) {
      m = at::zeros({N, in}, x2.options().dtype(at::kBool));
    } else {
      // One byte per element kept for backward, not a copy of x in the compute dtype.
      m = at::rand({N, in}, x2.options().dtype(compute)).lt_(1.0 - f.dropout).to(at::kBool);
      mscale = 1.0 / (1.0 - f.dropout);
    }
    inputs.push_back(m);
    mask_index.push_back(masks++);
    mask_scales.push_back(mscale);
  }
  if (bias.defined()) inputs.push_back(bias);
  const LoraMeta meta =
      LoraAddFunction::make_meta(std::move(scales), std::move(ranks), std::move(mask_index),
                                 std::move(mask_scales), compute, fused, bias.defined());
  return LoraAddFunction::apply(at::TensorList(inputs), &meta)[0];
}

void check_input(const at::Tensor& x, const at::Tensor& other, const char* what) {
  if (!x.defined() || !other.defined() || x.dim() < 1)
    throw KernelError(std::string("needs x [..., in] and ") + what, "input");
  if (x.device() != other.device())
    throw KernelError(std::string("x and ") + what + " on different devices", "input");
  if (!is_float_dtype(x.scalar_type()) || !is_float_dtype(other.scalar_type()))
    throw KernelError(std::string("x and ") + what + " must be floating point", "input");
}

}  // namespace

at::Tensor lora_linear_add(const at::Tensor& x, const at::Tensor& base_out,
                           const std::vector<LoraFactors>& adapters, bool training) {
  check_input(x, base_out, "the base output [..., out]");
  if (base_out.dim() < 1) throw KernelError("the base output must be [..., out]", "input");
  if (adapters.empty()) return base_out;
  const auto in = x.size(-1), out = base_out.size(-1);
  const auto lead = x.sizes().slice(0, x.dim() - 1);
  if (lead != base_out.sizes().slice(0, base_out.dim() - 1))
    throw KernelError("x " + shape_str(x) + " and base output " + shape_str(base_out) +
                          " disagree on their leading dimensions",
                      "input");
  check_factors(adapters, out, in, x.device(), "lora_linear_add");
  const auto N = x.numel() / std::max<std::int64_t>(in, 1);
  const at::Tensor y =
      apply_lora(x.reshape({N, in}), base_out.reshape({N, out}), at::Tensor(), adapters, training,
                 compute_dtype_for(x, base_out), /*fused=*/false, x);
  return y.view(base_out.sizes());
}

at::Tensor lora_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                       const std::vector<LoraFactors>& adapters, bool training) {
  check_input(x, weight, "a weight [out, in]");
  if (weight.dim() != 2 || weight.size(1) != x.size(-1))
    throw KernelError("weight " + shape_str(weight) + " does not fit x " + shape_str(x), "weight");
  if (bias.defined() && (bias.dim() != 1 || bias.size(0) != weight.size(0)))
    throw KernelError("bias " + shape_str(bias) + " does not fit weight " + shape_str(weight),
                      "bias");
  // A trainable base weight or bias needs their gradients, which the fused op does not compute.
  if (adapters.empty() || weight.requires_grad() || (bias.defined() && bias.requires_grad()))
    return lora_linear_add(x, at::linear(x, weight, bias), adapters, training);
  const auto in = x.size(-1), out = weight.size(0);
  check_factors(adapters, out, in, x.device(), "lora_linear");
  const auto N = x.numel() / std::max<std::int64_t>(in, 1);
  std::vector<std::int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = out;
  const at::Tensor y =
      apply_lora(x.reshape({N, in}), weight, bias, adapters, training, compute_dtype_for(x, weight),
                 /*fused=*/true, x);
  return y.view(shape);
}

at::Tensor lora_linear_add_reference(const at::Tensor& x, const at::Tensor& base_out,
                                     const std::vector<LoraFactors>& adapters, bool training) {
  if (adapters.empty()) return base_out;
  NoAutocast no_autocast;
  const auto compute = compute_dtype_for(x, base_out);
  const at::Tensor xc = x.to(compute);
  at::Tensor y = base_out.to(compute);
  for (const auto& f : adapters) {
    at::Tensor xi = xc;
    if (training && f.dropout > 0.0) {
      if (!f.mask.defined())
        throw KernelError("the reference needs explicit dropout masks",
                          "lora_linear_add_reference");
      xi = xc * f.mask.reshape(xc.sizes()).to(compute);
    }
    y = y + at::matmul(at::matmul(xi, f.A.to(compute).t()), f.B.to(compute).t()) * f.scale;
  }
  return y.to(base_out.scalar_type());
}

std::vector<at::Tensor> lora_saved_tensors(const at::Tensor& y) {
  // Walk back through the views/casts that follow the op to its node.
  std::vector<std::shared_ptr<torch::autograd::Node>> todo{y.grad_fn()};
  for (int depth = 0; depth < 4 && !todo.empty(); ++depth) {
    std::vector<std::shared_ptr<torch::autograd::Node>> next;
    for (const auto& node : todo) {
      if (!node) continue;
      if (auto* op = dynamic_cast<torch::autograd::CppNode<LoraAddFunction>*>(node.get())) {
        std::vector<at::Tensor> out;
        for (const auto& t : op->ctx_.get_saved_variables())
          if (t.defined()) out.push_back(t);
        return out;
      }
      for (const auto& e : node->next_edges()) next.push_back(e.function);
    }
    todo = std::move(next);
  }
  throw KernelError("no lora_linear_add node behind this tensor", "lora_saved_tensors");
}

}  // namespace safetune::kernels
