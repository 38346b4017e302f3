// Internal introspection of the LoRA autograd op, for tests that budget what it keeps for backward.
#pragma once
#include <ATen/Tensor.h>
#include <vector>

namespace safetune::kernels {

// The tensors the lora_linear_add node behind `y` saved for its backward (undefined slots dropped).
// Throws KernelError when no such node is found within a few steps of y's grad_fn.
std::vector<at::Tensor> lora_saved_tensors(const at::Tensor& y);

}  // namespace safetune::kernels
