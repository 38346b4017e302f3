// The seam between model Linears and LoRA: a Linear asks its hook to add the adapters' output.
#pragma once
#include <ATen/Tensor.h>

namespace safetune::lora {

// Implemented by lora::AdapterStack. A model Linear computes base = x W^T + b, then, when the hook
// is present and active(), returns hook->apply(x, base).
class LinearHook {
 public:
  virtual ~LinearHook() = default;
  virtual bool active() const = 0;
  virtual at::Tensor apply(const at::Tensor& x, const at::Tensor& base_out) = 0;
};

}  // namespace safetune::lora
