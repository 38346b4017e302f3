// Torch-free launchers behind the LoRA kernel glue: raw pointers, sizes, a dtype tag and a stream.
#pragma once
#include <cstdint>
#include <string>

struct CUstream_st;
typedef struct CUstream_st* cudaStream_t;  // identical to the CUDA runtime's own typedef

namespace safetune::kernels {

enum class DType { f32, f16, bf16 };

// W[out, in] (row stride ldw elements) += Bc[out, R] · Ac[R, in]. Bc and Ac are contiguous fp32
// with the adapters' scales (and sign) already folded into Bc. Returns "" on success, else the
// reason.
std::string lora_merge_cuda_launch(void* W, DType dtype, std::int64_t out, std::int64_t in,
                                   std::int64_t ldw, const float* Bc, const float* Ac,
                                   std::int64_t R, cudaStream_t stream);

// The CPU path of the same operation: tiled over rows (parallel), fp32 accumulation, one rounding,
// no full-size temporary.
std::string lora_merge_cpu_launch(void* W, DType dtype, std::int64_t out, std::int64_t in,
                                  std::int64_t ldw, const float* Bc, const float* Ac,
                                  std::int64_t R);

}  // namespace safetune::kernels
