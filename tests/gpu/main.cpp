// Entry point of the GPU suite: skips (exit 77, which CTest shows as skipped) without a CUDA
// device.
#define CATCH_CONFIG_RUNNER
#include <torch/torch.h>
#include <catch2/catch.hpp>

#include "safetune/kernels/lora.hpp"

#include <cstdio>

int main(int argc, char** argv) {
  if (!torch::cuda::is_available()) {
    std::puts("SKIPPED: no CUDA device visible");
    return 77;
  }
  if (!safetune::kernels::cuda_kernels_built()) {
    std::puts("SKIPPED: this build has no CUDA kernels (configure with SAFETUNE_CUDA=ON)");
    return 77;
  }
  return Catch::Session().run(argc, argv);
}
