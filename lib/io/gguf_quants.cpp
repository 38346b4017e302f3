// ggml block formats decoded to float32, in parallel over blocks, then cast to the target dtype.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstring>

#include "io/gguf_quants.hpp"
#include "safetune/error.hpp"
#include "safetune/io/gguf.hpp"

namespace safetune::io {
namespace {
using gguf::GgmlType;

inline float fp16(const std::uint8_t* p) {
  std::uint16_t bits;
  std::memcpy(&bits, p, 2);
  return static_cast<float>(c10::Half(bits, c10::Half::from_bits()));
}

// Each decoder turns one block (at `in`) into block_size floats (at `out`). The arithmetic follows
// the order gguf-py's numpy reference uses so that results agree bit for bit.
void q4_0_block(const std::uint8_t* in, float* out) {
  const float d = fp16(in);
  const std::uint8_t* qs = in + 2;
  for (int j = 0; j < 16; ++j) {
    out[j] = d * static_cast<float>(static_cast<int>(qs[j] & 0x0F) - 8);
    out[j + 16] = d * static_cast<float>(static_cast<int>(qs[j] >> 4) - 8);
  }
}

void q4_1_block(const std::uint8_t* in, float* out) {
  const float d = fp16(in), m = fp16(in + 2);
  const std::uint8_t* qs = in + 4;
  for (int j = 0; j < 16; ++j) {
    out[j] = d * static_cast<float>(qs[j] & 0x0F) + m;
    out[j + 16] = d * static_cast<float>(qs[j] >> 4) + m;
  }
}

void q8_0_block(const std::uint8_t* in, float* out) {
  const float d = fp16(in);
  const auto* qs = reinterpret_cast<const std::int8_t*>(in + 2);
  for (int j = 0; j < 32; ++j) out[j] = d * static_cast<float>(qs[j]);
}

inline std::uint32_t u32le(const std::uint8_t* p) {
  std::uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// Q5_0 / Q5_1: like Q4_0 / Q4_1 with a fifth bit per value from a 32-bit mask.
void q5_0_block(const std::uint8_t* in, float* out) {
  const float d = fp16(in);
  const std::uint32_t qh = u32le(in + 2);
  const std::uint8_t* qs = in + 6;
  for (int j = 0; j < 32; ++j) {
    const int lo = j < 16 ? (qs[j] & 0x0F) : (qs[j - 16] >> 4);
    const int q = (lo | static_cast<int>(((qh >> j) & 1u) << 4)) - 16;
    out[j] = d * static_cast<float>(q);
  }
}

void q5_1_block(const std::uint8_t* in, float* out) {
  const float d = fp16(in), m = fp16(in + 2);
  const std::uint32_t qh = u32le(in + 4);
  const std::uint8_t* qs = in + 8;
  for (int j = 0; j < 32; ++j) {
    const int lo = j < 16 ? (qs[j] & 0x0F) : (qs[j - 16] >> 4);
    const int q = lo | static_cast<int>(((qh >> j) & 1u) << 4);
    out[j] = d * static_cast<float>(q) + m;
  }
}

void k_scale_min(const std::uint8_t* sc, int j, int& scale, int& min) {
  if (j < 4) {
    scale = sc[j] & 63;
    min = sc[j + 4] & 63;
  } else {
    scale = (sc[j + 4] & 0x0F) | ((sc[j - 4] >> 6) << 4);
    min = (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4);
  }
}

// Q4_K super-block (256 values): fp16 d, fp16 dmin, 12 bytes of packed 6-bit scales and mins for
// 8 sub-blocks of 32, then 128 bytes of nibbles (sub-blocks 2c and 2c+1 share byte row c).
// Q5_K is the same layout with 32 bytes of high bits (bit j of byte e belongs to sub-block j)
// between the scales and the nibbles; `qh` is null for Q4_K.
void k_quant_4or5_block(const std::uint8_t* in, const std::uint8_t* qh, const std::uint8_t* qs,
                        float* out) {
  const float d = fp16(in), dmin = fp16(in + 2);
  const std::uint8_t* sc = in + 4;
  for (int j = 0; j < 8; ++j) {
    int scale, min;
    k_scale_min(sc, j, scale, min);
    const float ds = d * static_cast<float>(scale);
    const float dm = dmin * static_cast<float>(min);
    const std::uint8_t* row = qs + (j / 2) * 32;
    const int shift = (j % 2) * 4;
    for (int e = 0; e < 32; ++e) {
      int q = (row[e] >> shift) & 0x0F;
      if (qh) q |= ((qh[e] >> j) & 1) << 4;
      out[j * 32 + e] = ds * static_cast<float>(q) - dm;
    }
  }
}
void q5_k_block(const std::uint8_t* in, float* out) {
  k_quant_4or5_block(in, in + 16, in + 48, out);
}
void q4_k_block(const std::uint8_t* in, float* out) {
  k_quant_4or5_block(in, nullptr, in + 16, out);
}

// Q6_K super-block: 128 bytes low nibbles, 64 bytes of 2-bit highs, 16 int8 scales, fp16 d.
void q6_k_block(const std::uint8_t* in, float* out) {
  const std::uint8_t* ql = in;
  const std::uint8_t* qh = in + 128;
  const auto* scales = reinterpret_cast<const std::int8_t*>(in + 192);
  const float d = fp16(in + 208);
  for (int half = 0; half < 2; ++half) {
    for (int r = 0; r < 128; ++r) {
      const int idx = half * 128 + r;
      const int lo = (ql[half * 64 + r % 64] >> (4 * (r / 64))) & 0x0F;
      const int hi = (qh[half * 32 + r % 32] >> (2 * (r / 32))) & 0x03;
      const int q = static_cast<int>(static_cast<std::int8_t>(lo | (hi << 4))) - 32;
      const float dl = d * static_cast<float>(scales[idx / 16]);
      out[idx] = dl * static_cast<float>(q);
    }
  }
}

using BlockFn = void (*)(const std::uint8_t*, float*);

BlockFn block_decoder(std::uint32_t type) {
  switch (static_cast<GgmlType>(type)) {
    case GgmlType::Q4_0: return q4_0_block;
    case GgmlType::Q4_1: return q4_1_block;
    case GgmlType::Q8_0: return q8_0_block;
    case GgmlType::Q5_0: return q5_0_block;
    case GgmlType::Q5_1: return q5_1_block;
    case GgmlType::Q4_K: return q4_k_block;
    case GgmlType::Q5_K: return q5_k_block;
    case GgmlType::Q6_K: return q6_k_block;
    default: return nullptr;
  }
}
}  // namespace

bool gguf_type_supported(std::uint32_t t) {
  switch (static_cast<GgmlType>(t)) {
    case GgmlType::F32:
    case GgmlType::F16:
    case GgmlType::BF16: return true;
    default: return block_decoder(t) != nullptr;
  }
}

at::Tensor gguf_dequantize(const gguf::TensorInfo& info, const std::uint8_t* data,
                           at::ScalarType dtype, const std::string& where) {
  if (dtype != at::kFloat && dtype != at::kBFloat16 && dtype != at::kHalf)
    throw FormatError(std::string("cannot dequantize to ") + c10::toString(dtype) +
                          " (float32, bfloat16 or float16 only)",
                      where);
  const std::vector<int64_t> shape = info.torch_shape();
  const auto n = static_cast<int64_t>(info.n_elements);
  auto cpu = at::TensorOptions().device(at::kCPU);
  // Plain float types: copy the bytes as they are, then let torch cast (exact for widening casts).
  auto plain = [&](at::ScalarType src) {
    at::Tensor t = at::empty(shape, cpu.dtype(src));
    if (info.n_bytes > 0) std::memcpy(t.data_ptr(), data, info.n_bytes);
    return t.to(dtype);
  };
  switch (static_cast<GgmlType>(info.type)) {
    case GgmlType::F32: return plain(at::kFloat);
    case GgmlType::F16: return plain(at::kHalf);
    case GgmlType::BF16: return plain(at::kBFloat16);
    default: break;
  }
  BlockFn fn = block_decoder(info.type);
  if (!fn)
    throw FormatError(
        "unsupported ggml type " + gguf::ggml_type_name(info.type) +
            " (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K)",
        where);
  const gguf::GgmlTypeTraits* tr = gguf::ggml_type_traits(info.type);
  const int64_t block = tr->block_size, bytes = tr->type_size;
  const int64_t n_blocks = n / block;
  at::Tensor out = at::empty(shape, cpu.dtype(at::kFloat));
  float* dst = out.data_ptr<float>();
  at::parallel_for(0, n_blocks, 64, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) fn(data + b * bytes, dst + b * block);
  });
  return dtype == at::kFloat ? out : out.to(dtype);
}

}  // namespace safetune::io
