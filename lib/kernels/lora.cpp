// LibTorch glue for the LoRA kernels: shape/device/dtype checks, CPU/CUDA dispatch, the autograd
// Function with its hand-written backward, and the plain reference implementations.
#include "safetune/kernels/lora.hpp"

#include "kernels/lora_launch.hpp"
#include "safetune/error.hpp"

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
      throw KernelError("A and B must be 2-D, got A " + shape_str(f.A) + " B " + shape_str(f.B), where);
    const auto r = f.A.size(0);
    if (r <= 0 || f.A.size(1) != in || f.B.size(0) != out || f.B.size(1) != r)
      throw KernelError("factor shapes A " + shape_str(f.A) + " B " + shape_str(f.B) +
                            " do not fit [out=" + std::to_string(out) + ", in=" + std::to_string(in) + "]",
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

// What the Function needs besides tensors. Inputs are laid out as
// {x, base, A_0..A_{n-1}, B_0..B_{n-1}, masks...}; mask_index[i] is -1 when adapter i has none.
struct LoraMeta {
  std::vector<double> scales;  // per adapter
  std::vector<std::int64_t> ranks, offsets, mask_index;
  std::int64_t n = 0, R = 0;
};

class LoraAddFunction : public torch::autograd::Function<LoraAddFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, at::TensorList inputs,
                               const LoraMeta* meta) {
    const auto n = meta->n;
    const at::Tensor& x = inputs[0];
    const at::Tensor& base = inputs[1];
    auto A = [&](std::int64_t i) { return inputs[2 + i]; };
    auto B = [&](std::int64_t i) { return inputs[2 + n + i]; };
    auto M = [&](std::int64_t i) { return inputs[2 + 2 * n + meta->mask_index[i]]; };

    // Adapters without dropout share x, so their A's form one GEMM: x [A_a; A_b; ...]^T.
    std::vector<std::int64_t> plain, dropped;
    for (std::int64_t i = 0; i < n; ++i) (meta->mask_index[i] < 0 ? plain : dropped).push_back(i);
    std::vector<at::Tensor> pieces(n);
    if (!plain.empty()) {
      std::vector<at::Tensor> as;
      for (auto i : plain) as.push_back(A(i));
      const at::Tensor h = at::mm(x, (as.size() == 1 ? as[0] : at::cat(as, 0)).t());
      std::int64_t off = 0;
      for (auto i : plain) {
        pieces[i] = h.narrow(1, off, meta->ranks[i]);
        off += meta->ranks[i];
      }
    }
    for (auto i : dropped) pieces[i] = at::mm(x * M(i), A(i).t());
    const at::Tensor H = n == 1 ? pieces[0].contiguous() : at::cat(pieces, 1);
    const at::Tensor col_scale = scale_vector(*meta, H);
    const at::Tensor Hs = H * col_scale;
    std::vector<at::Tensor> bs;
    for (std::int64_t i = 0; i < n; ++i) bs.push_back(B(i));
    const at::Tensor Bc = n == 1 ? B(0) : at::cat(bs, 1);
    // beta = 1 accumulates the B-expansion straight into (a copy of) the base output.
    at::Tensor y = at::addmm(base, Hs, Bc.t());

    variable_list saved{x, Hs};
    for (std::int64_t i = 2; i < static_cast<std::int64_t>(inputs.size()); ++i) saved.push_back(inputs[i]);
    ctx->save_for_backward(saved);
    ctx->saved_data["nin"] = static_cast<std::int64_t>(inputs.size());
    store_meta(ctx, *meta);
    return {y};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const LoraMeta meta_value = load_meta(ctx);
    const LoraMeta* meta = &meta_value;
    const auto n = meta->n;
    const auto nin = ctx->saved_data["nin"].toInt();
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& x = saved[0];
    const at::Tensor& Hs = saved[1];
    auto A = [&](std::int64_t i) { return saved[2 + i]; };
    auto B = [&](std::int64_t i) { return saved[2 + n + i]; };
    auto M = [&](std::int64_t i) { return saved[2 + 2 * n + meta->mask_index[i]]; };
    const at::Tensor g = grads[0];

    variable_list result(nin + 1);  // + the meta slot, which gets no gradient
    const bool need_x = ctx->needs_input_grad(0);
    if (ctx->needs_input_grad(1)) result[1] = g;

    std::vector<std::int64_t> need_A, need_B;
    for (std::int64_t i = 0; i < n; ++i) {
      if (ctx->needs_input_grad(2 + i)) need_A.push_back(i);
      if (ctx->needs_input_grad(2 + n + i)) need_B.push_back(i);
    }

    // dL/dB_i = g^T (s_i H_i): one GEMM over the trainable adapters' columns only.
    if (!need_B.empty()) {
      const at::Tensor cols = gather_columns(Hs, *meta, need_B);
      const at::Tensor gB = at::mm(g.t(), cols);
      std::int64_t off = 0;
      for (auto i : need_B) {
        result[2 + n + i] = gB.narrow(1, off, meta->ranks[i]).contiguous();
        off += meta->ranks[i];
      }
    }
    if (!need_x && need_A.empty()) return result;

    // G = s ⊙ (g B): the gradient at the rank-R bottleneck, shared by dx and every dA_i.
    std::vector<at::Tensor> bs;
    for (std::int64_t i = 0; i < n; ++i) bs.push_back(B(i));
    const at::Tensor Bc = n == 1 ? B(0) : at::cat(bs, 1);
    const at::Tensor G = at::mm(g, Bc) * scale_vector(*meta, g);

    std::vector<std::int64_t> plain_A;
    for (auto i : need_A) {
      if (meta->mask_index[i] < 0) {
        plain_A.push_back(i);
      } else {
        result[2 + i] = at::mm(meta_cols(G, *meta, i).t(), x * M(i));
      }
    }
    if (!plain_A.empty()) {
      const at::Tensor gA = at::mm(gather_columns(G, *meta, plain_A).t(), x);
      std::int64_t off = 0;
      for (auto i : plain_A) {
        result[2 + i] = gA.narrow(0, off, meta->ranks[i]).contiguous();
        off += meta->ranks[i];
      }
    }
    if (need_x) {
      std::vector<std::int64_t> plain;
      at::Tensor dx;
      for (std::int64_t i = 0; i < n; ++i) {
        if (meta->mask_index[i] < 0) {
          plain.push_back(i);
        } else {
          const at::Tensor part = at::mm(meta_cols(G, *meta, i), A(i)) * M(i);
          dx = dx.defined() ? dx + part : part;
        }
      }
      if (!plain.empty()) {
        std::vector<at::Tensor> as;
        for (auto i : plain) as.push_back(A(i));
        const at::Tensor part =
            at::mm(gather_columns(G, *meta, plain), as.size() == 1 ? as[0] : at::cat(as, 0));
        dx = dx.defined() ? dx + part : part;
      }
      result[0] = dx;
    }
    return result;
  }

 private:
  static void store_meta(AutogradContext* ctx, const LoraMeta& meta) {
    ctx->saved_data["scales"] = meta.scales;
    ctx->saved_data["ranks"] = meta.ranks;
    ctx->saved_data["mask_index"] = meta.mask_index;
  }
  static LoraMeta load_meta(AutogradContext* ctx) {
    return make_meta(ctx->saved_data["scales"].toDoubleVector(),
                     ctx->saved_data["ranks"].toIntVector(),
                     ctx->saved_data["mask_index"].toIntVector());
  }

 public:
  static LoraMeta make_meta(std::vector<double> scales, std::vector<std::int64_t> ranks,
                            std::vector<std::int64_t> mask_index) {
    LoraMeta m;
    m.n = static_cast<std::int64_t>(scales.size());
    m.scales = std::move(scales);
    m.ranks = std::move(ranks);
    m.mask_index = std::move(mask_index);
    for (auto r : m.ranks) {
      m.offsets.push_back(m.R);
      m.R += r;
    }
    return m;
  }

 private:
  static at::Tensor scale_vector(const LoraMeta& meta, const at::Tensor& like) {
    std::vector<double> s;
    s.reserve(meta.R);
    for (std::int64_t i = 0; i < meta.n; ++i) s.insert(s.end(), meta.ranks[i], meta.scales[i]);
    return at::tensor(s, at::TensorOptions().dtype(at::kDouble)).to(like.options());
  }
  static at::Tensor meta_cols(const at::Tensor& m, const LoraMeta& meta, std::int64_t i) {
    return m.narrow(1, meta.offsets[i], meta.ranks[i]);
  }
  static at::Tensor gather_columns(const at::Tensor& m, const LoraMeta& meta,
                                   const std::vector<std::int64_t>& idx) {
    if (static_cast<std::int64_t>(idx.size()) == meta.n) return m;
    if (idx.size() == 1) return meta_cols(m, meta, idx[0]);
    std::vector<at::Tensor> cols;
    for (auto i : idx) cols.push_back(meta_cols(m, meta, i));
    return at::cat(cols, 1);
  }
};

}  // namespace

at::Tensor lora_linear_add(const at::Tensor& x, const at::Tensor& base_out,
                           const std::vector<LoraFactors>& adapters, bool training) {
  if (!x.defined() || !base_out.defined() || x.dim() < 1 || base_out.dim() < 1)
    throw KernelError("lora_linear_add needs x [..., in] and base_out [..., out]", "input");
  if (adapters.empty()) return base_out;
  const auto in = x.size(-1), out = base_out.size(-1);
  const auto lead = x.sizes().slice(0, x.dim() - 1);
  if (lead != base_out.sizes().slice(0, base_out.dim() - 1))
    throw KernelError("x " + shape_str(x) + " and base output " + shape_str(base_out) +
                          " disagree on their leading dimensions", "input");
  if (x.device() != base_out.device()) throw KernelError("x and base output on different devices", "input");
  check_factors(adapters, out, in, x.device(), "lora_linear_add");
  const auto compute = adapters[0].A.scalar_type();
  for (const auto& f : adapters)
    if (f.A.scalar_type() != compute || f.B.scalar_type() != compute)
      throw KernelError("all adapter factors must share one dtype", "lora_linear_add",
                        "cast the adapters to a common dtype when attaching them");

  const auto N = x.numel() / std::max<std::int64_t>(in, 1);
  const at::Tensor x2 = x.reshape({N, in}).to(compute);
  const at::Tensor b2 = base_out.reshape({N, out}).to(compute);
  std::vector<at::Tensor> inputs{x2, b2};
  std::vector<double> scales;
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
      continue;
    }
    at::Tensor m;
    if (f.mask.defined()) {
      if (f.mask.numel() != N * in)
        throw KernelError("dropout mask " + shape_str(f.mask) + " does not match x " + shape_str(x),
                          "lora_linear_add");
      m = f.mask.reshape({N, in}).to(x2.options()).detach();
    } else if (f.dropout >= 1.0) {
      m = at::zeros({N, in}, x2.options());
    } else {
      at::NoGradGuard no_grad;
      m = at::empty({N, in}, x2.options()).bernoulli_(1.0 - f.dropout).div_(1.0 - f.dropout);
    }
    inputs.push_back(m);
    mask_index.push_back(masks++);
  }
  const LoraMeta meta = LoraAddFunction::make_meta(std::move(scales), std::move(ranks),
                                                   std::move(mask_index));
  at::Tensor y = LoraAddFunction::apply(at::TensorList(inputs), &meta)[0];
  return y.reshape(base_out.sizes()).to(base_out.scalar_type());
}

at::Tensor lora_linear_add_reference(const at::Tensor& x, const at::Tensor& base_out,
                                     const std::vector<LoraFactors>& adapters, bool training) {
  if (adapters.empty()) return base_out;
  const auto compute = adapters[0].A.scalar_type();
  const at::Tensor xc = x.to(compute);
  at::Tensor y = base_out.to(compute);
  for (const auto& f : adapters) {
    at::Tensor xi = xc;
    if (training && f.dropout > 0.0) {
      if (!f.mask.defined())
        throw KernelError("the reference needs explicit dropout masks", "lora_linear_add_reference");
      xi = xc * f.mask.reshape(xc.sizes()).to(compute);
    }
    y = y + at::matmul(at::matmul(xi, f.A.t()), f.B.t()) * f.scale;
  }
  return y.to(base_out.scalar_type());
}

}  // namespace safetune::kernels
