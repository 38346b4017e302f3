// Refusing weights with NaN or infinite values at load time, naming the tensor.
#include <torch/torch.h>

#include "safetune/error.hpp"
#include "safetune/io/finite.hpp"

namespace safetune::io {

void require_finite(const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                    const std::string& file) {
  torch::NoGradGuard no_grad;
  for (const auto& [name, t] : tensors) {
    if (!t.defined() || !t.is_floating_point() || t.numel() == 0) continue;
    const auto bad = t.numel() - torch::isfinite(t).sum().item<std::int64_t>();
    if (bad > 0)
      throw FormatError("tensor has " + std::to_string(bad) + " of " + std::to_string(t.numel()) +
                            " values that are NaN or infinite",
                        file + ": " + name,
                        "the file is damaged, or was saved from a diverged run");
  }
}

}  // namespace safetune::io
