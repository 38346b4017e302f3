// Plain reference implementations of the LoRA kernels, for the tests that compare against them
// (internal to kernels/: the public kernels are in safetune/kernels/lora.hpp).
#pragma once
#include <ATen/Tensor.h>
#include <vector>

#include "safetune/kernels/lora.hpp"

namespace safetune::kernels {

// Plain reference: returns (W + sign * sum_i s_i B_i A_i) computed in fp64, rounded to W's dtype.
at::Tensor lora_merge_reference(const at::Tensor& W, const std::vector<LoraFactors>& adapters,
                                double sign = 1.0);

// Plain reference of lora_linear_add (one ATen product chain per adapter in the same compute dtype;
// autograd by ATen). Uses the given masks when dropout applies; requires them when training with
// dropout > 0.
at::Tensor lora_linear_add_reference(const at::Tensor& x, const at::Tensor& base_out,
                                     const std::vector<LoraFactors>& adapters, bool training);

}  // namespace safetune::kernels
