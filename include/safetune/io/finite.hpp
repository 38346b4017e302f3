// Refusing weights that hold NaN or infinite values, whatever file they came from.
#pragma once
#include <ATen/Tensor.h>

#include <string>
#include <utility>
#include <vector>

namespace safetune::io {

// FormatError naming `file` and the first floating-point tensor holding NaN or infinite values
// (with their count): such weights only ever produce NaN logits, so they are refused at load time.
void require_finite(const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                    const std::string& file);

}  // namespace safetune::io
