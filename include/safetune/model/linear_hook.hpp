// The seam between model Linears and LoRA: a Linear asks its hook to add the adapters' output.
#pragma once
#include <ATen/Tensor.h>

namespace safetune::model {

// Implemented by lora::AdapterStack: model/ owns the seam, lora/ fills it (the arrow points from
// lora to model). A model Linear whose hook is present and active() returns hook->forward(x, W, b);
// without one it computes x W^T + b itself.
class LinearHook {
 public:
  virtual ~LinearHook() = default;
  virtual bool active() const = 0;
  // Adds the adapters' output to a computed base output.
  virtual at::Tensor apply(const at::Tensor& x, const at::Tensor& base_out) = 0;
  // The whole Linear with the adapters; by default the base output, then apply(). Overridden by
  // AdapterStack with one fused op (kernels::lora_linear).
  virtual at::Tensor forward(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias);
};

}  // namespace safetune::model
