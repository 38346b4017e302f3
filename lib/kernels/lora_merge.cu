// CUDA multi-adapter merge: W += Bc·Ac, computed tile by tile in registers (one read and one
// write of W).
#include "kernels/lora_launch.hpp"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace safetune::kernels {
namespace {

// A block owns a 64 x 128 tile of W. Warp w owns rows w, w+8, ..., lane l owns columns
// l, l+32, l+64, l+96: each warp touches 32 consecutive elements of a row per access (coalesced),
// and the shared-memory reads below are either broadcasts (B) or conflict-free (A).
constexpr int kBM = 64;
constexpr int kBN = 128;
constexpr int kBK = 16;
constexpr int kThreads = 256;
constexpr int kRowsPerThread = kBM / (kThreads / 32);  // 8
constexpr int kColsPerThread = kBN / 32;               // 4

__device__ __forceinline__ float load_f(const float* p) { return *p; }
__device__ __forceinline__ float load_f(const __half* p) { return __half2float(*p); }
__device__ __forceinline__ float load_f(const __nv_bfloat16* p) { return __bfloat162float(*p); }
__device__ __forceinline__ void store_f(float* p, float v) { *p = v; }
__device__ __forceinline__ void store_f(__half* p, float v) { *p = __float2half_rn(v); }
__device__ __forceinline__ void store_f(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

template <class T>
__global__ void __launch_bounds__(kThreads)
    merge_kernel(T* __restrict__ W, std::int64_t out, std::int64_t in, std::int64_t ldw,
                 const float* __restrict__ Bc, const float* __restrict__ Ac, std::int64_t R) {
  __shared__ float sA[kBK][kBN];
  __shared__ float sB[kBM][kBK + 1];
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const std::int64_t row0 = static_cast<std::int64_t>(blockIdx.y) * kBM;
  const std::int64_t col0 = static_cast<std::int64_t>(blockIdx.x) * kBN;

  float acc[kRowsPerThread][kColsPerThread];
#pragma unroll
  for (int i = 0; i < kRowsPerThread; ++i)
#pragma unroll
    for (int j = 0; j < kColsPerThread; ++j) acc[i][j] = 0.f;

  for (std::int64_t k0 = 0; k0 < R; k0 += kBK) {
    for (int idx = threadIdx.x; idx < kBK * kBN; idx += kThreads) {
      const int kk = idx / kBN, c = idx % kBN;
      const std::int64_t gk = k0 + kk, gc = col0 + c;
      sA[kk][c] = (gk < R && gc < in) ? Ac[gk * in + gc] : 0.f;
    }
    for (int idx = threadIdx.x; idx < kBM * kBK; idx += kThreads) {
      const int r = idx / kBK, kk = idx % kBK;
      const std::int64_t gr = row0 + r, gk = k0 + kk;
      sB[r][kk] = (gr < out && gk < R) ? Bc[gr * R + gk] : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kBK; ++kk) {
      float a[kColsPerThread];
#pragma unroll
      for (int j = 0; j < kColsPerThread; ++j) a[j] = sA[kk][lane + 32 * j];
#pragma unroll
      for (int i = 0; i < kRowsPerThread; ++i) {
        const float b = sB[warp + 8 * i][kk];
#pragma unroll
        for (int j = 0; j < kColsPerThread; ++j) acc[i][j] = fmaf(b, a[j], acc[i][j]);
      }
    }
    __syncthreads();
  }

#pragma unroll
  for (int i = 0; i < kRowsPerThread; ++i) {
    const std::int64_t r = row0 + warp + 8 * i;
    if (r >= out) continue;
    T* row = W + r * ldw;
#pragma unroll
    for (int j = 0; j < kColsPerThread; ++j) {
      const std::int64_t c = col0 + lane + 32 * j;
      if (c < in) store_f(row + c, load_f(row + c) + acc[i][j]);
    }
  }
}

template <class T>
std::string launch(void* W, std::int64_t out, std::int64_t in, std::int64_t ldw, const float* Bc,
                   const float* Ac, std::int64_t R, cudaStream_t stream) {
  const std::int64_t gx = (in + kBN - 1) / kBN, gy = (out + kBM - 1) / kBM;
  if (gx > 2147483647LL || gy > 65535LL) return "weight too large for the merge grid";
  merge_kernel<T>
      <<<dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy)), kThreads, 0, stream>>>(
          static_cast<T*>(W), out, in, ldw, Bc, Ac, R);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    return std::string("merge kernel launch failed: ") + cudaGetErrorString(err);
  return {};
}

}  // namespace

std::string lora_merge_cuda_launch(void* W, DType dtype, std::int64_t out, std::int64_t in,
                                   std::int64_t ldw, const float* Bc, const float* Ac,
                                   std::int64_t R, cudaStream_t stream) {
  if (out <= 0 || in <= 0 || R <= 0) return {};
  if (ldw < in) return "row stride smaller than the row length";
  switch (dtype) {
    case DType::f32: return launch<float>(W, out, in, ldw, Bc, Ac, R, stream);
    case DType::f16: return launch<__half>(W, out, in, ldw, Bc, Ac, R, stream);
    case DType::bf16: return launch<__nv_bfloat16>(W, out, in, ldw, Bc, Ac, R, stream);
  }
  return "unsupported dtype";
}

}  // namespace safetune::kernels
