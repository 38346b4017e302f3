// The LinearHook default: the base Linear, then the hook's own apply().
#include "safetune/model/linear_hook.hpp"

#include <ATen/ATen.h>

namespace safetune::model {

at::Tensor LinearHook::forward(const at::Tensor& x, const at::Tensor& weight,
                               const at::Tensor& bias) {
  return apply(x, at::linear(x, weight, bias));
}

}  // namespace safetune::model
