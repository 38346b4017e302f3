// Torch-free GGUF (v2/v3) header parsing and ggml type traits (internal to io/; shared by the
// reader, the writer and the fuzz target). The value types it fills are public: io/gguf_types.hpp.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "safetune/io/gguf_types.hpp"

namespace safetune::io::gguf {

// ggml tensor types by their on-disk number.
enum class GgmlType : std::uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  IQ2_XXS = 16,
  IQ2_XS = 17,
  IQ3_XXS = 18,
  IQ1_S = 19,
  IQ4_NL = 20,
  IQ3_S = 21,
  IQ2_S = 22,
  IQ4_XS = 23,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  IQ1_M = 29,
  BF16 = 30,
  TQ1_0 = 34,
  TQ2_0 = 35,
  MXFP4 = 39,
};
struct GgmlTypeTraits {
  const char* name;
  std::uint32_t block_size;  // elements per block
  std::uint32_t type_size;   // bytes per block
};
// nullptr for numbers this reader does not know.
const GgmlTypeTraits* ggml_type_traits(std::uint32_t type);
std::string ggml_type_name(std::uint32_t type);  // "Q4_K", or "type 99" when unknown

// Parses and validates a whole file image: magic, version (2 or 3), counts against the file size,
// string lengths, value types, nesting, alignment, tensor types, dims and data ranges. Every
// problem is a FormatError whose `where` names `file` (and the key or tensor concerned).
Header parse_header(std::string_view bytes, const std::string& file);

}  // namespace safetune::io::gguf
