// Dequantizing ggml tensor data (internal to io/: GgufFile::tensor is the public way in).
#pragma once
#include <ATen/Tensor.h>

#include <cstdint>
#include <string>

#include "io/gguf_format.hpp"

namespace safetune::io {

// Dequantizes `info`'s bytes (`data`, exactly info.n_bytes long) into a new tensor of torch shape.
// Supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K.
at::Tensor gguf_dequantize(const gguf::TensorInfo& info, const std::uint8_t* data,
                           at::ScalarType dtype, const std::string& where);

// Whether this reader can dequantize a ggml type.
bool gguf_type_supported(std::uint32_t ggml_type);

}  // namespace safetune::io
