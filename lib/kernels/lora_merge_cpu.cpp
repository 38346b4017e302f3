// CPU multi-adapter merge: W += Bc·Ac over row blocks in parallel, fp32 accumulators, one rounding.
#include "kernels/lora_launch.hpp"

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <array>

namespace safetune::kernels {
namespace {

// A 32-row x 128-column fp32 accumulator block (16 KiB) stays in L1 while the rank loop streams
// the matching 512-byte slices of Ac through it; W itself is touched exactly once, at the end.
// Taller row blocks mean fewer passes over Ac (R x in floats) per pass over W.
constexpr std::int64_t kRowBlock = 32;
constexpr std::int64_t kColBlock = 128;

// The hot loop is compiled twice, for AVX2/FMA machines and a baseline, and picked at load time:
// the library is built without -march flags so that it runs everywhere.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SAFETUNE_CPU_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define SAFETUNE_CPU_CLONES
#endif

SAFETUNE_CPU_CLONES
void accumulate_tile(float* __restrict__ acc, const float* __restrict__ Bc, std::int64_t R,
                     const float* __restrict__ Ac, std::int64_t in, std::int64_t nr,
                     std::int64_t nc) {
  for (std::int64_t k = 0; k < R; ++k) {
    const float* __restrict__ a = Ac + k * in;
    for (std::int64_t rr = 0; rr < nr; ++rr) {
      const float b = Bc[rr * R + k];
      float* __restrict__ dst = acc + rr * kColBlock;
      for (std::int64_t j = 0; j < nc; ++j) dst[j] += b * a[j];
    }
  }
}

template <class T>
void merge_rows(T* W, std::int64_t in, std::int64_t ldw, const float* Bc, const float* Ac,
                std::int64_t R, std::int64_t r_begin, std::int64_t r_end) {
  alignas(64) std::array<float, kRowBlock * kColBlock> acc;
  for (std::int64_t r0 = r_begin; r0 < r_end; r0 += kRowBlock) {
    const std::int64_t nr = std::min(kRowBlock, r_end - r0);
    for (std::int64_t c0 = 0; c0 < in; c0 += kColBlock) {
      const std::int64_t nc = std::min(kColBlock, in - c0);
      std::fill(acc.begin(), acc.end(), 0.f);
      accumulate_tile(acc.data(), Bc + r0 * R, R, Ac + c0, in, nr, nc);
      for (std::int64_t rr = 0; rr < nr; ++rr) {
        T* __restrict__ w = W + (r0 + rr) * ldw + c0;
        const float* __restrict__ src = acc.data() + rr * kColBlock;
        for (std::int64_t j = 0; j < nc; ++j)
          w[j] = static_cast<T>(static_cast<float>(w[j]) + src[j]);
      }
    }
  }
}

template <class T>
void merge_all(void* W, std::int64_t out, std::int64_t in, std::int64_t ldw, const float* Bc,
               const float* Ac, std::int64_t R) {
  T* w = static_cast<T*>(W);
  at::parallel_for(0, out, 2 * kRowBlock, [&](std::int64_t begin, std::int64_t end) {
    merge_rows<T>(w, in, ldw, Bc, Ac, R, begin, end);
  });
}

}  // namespace

std::string lora_merge_cpu_launch(void* W, DType dtype, std::int64_t out, std::int64_t in,
                                  std::int64_t ldw, const float* Bc, const float* Ac,
                                  std::int64_t R) {
  if (out <= 0 || in <= 0 || R <= 0) return {};
  if (ldw < in) return "row stride smaller than the row length";
  switch (dtype) {
    case DType::f32: merge_all<float>(W, out, in, ldw, Bc, Ac, R); return {};
    case DType::f16: merge_all<c10::Half>(W, out, in, ldw, Bc, Ac, R); return {};
    case DType::bf16: merge_all<c10::BFloat16>(W, out, in, ldw, Bc, Ac, R); return {};
  }
  return "unsupported dtype";
}

}  // namespace safetune::kernels
