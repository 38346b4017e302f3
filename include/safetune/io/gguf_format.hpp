// Torch-free GGUF (v2/v3) header parsing: metadata values, tensor infos, ggml type traits.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace safetune::io::gguf {

enum class ValueType : std::uint32_t {
  UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6, BOOL = 7,
  STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};
const char* value_type_name(ValueType t);

// One metadata value. Integers are kept in `u` (unsigned types) or `i` (signed types, bool),
// floats widened to double; arrays hold their elements with `elem_type` set.
struct Value {
  ValueType type = ValueType::UINT8;
  std::uint64_t u = 0;
  std::int64_t i = 0;
  double f = 0.0;
  std::string s;
  ValueType elem_type = ValueType::UINT8;
  std::vector<Value> array;
};

// ggml tensor types by their on-disk number.
enum class GgmlType : std::uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9, Q2_K = 10,
  Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15, IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18,
  IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22, IQ4_XS = 23, I8 = 24, I16 = 25, I32 = 26,
  I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30, TQ1_0 = 34, TQ2_0 = 35, MXFP4 = 39,
};
struct GgmlTypeTraits {
  const char* name;
  std::uint32_t block_size;  // elements per block
  std::uint32_t type_size;   // bytes per block
};
// nullptr for numbers this reader does not know.
const GgmlTypeTraits* ggml_type_traits(std::uint32_t type);
std::string ggml_type_name(std::uint32_t type);  // "Q4_K", or "type 99" when unknown

struct TensorInfo {
  std::string name;
  std::vector<std::uint64_t> ne;  // ggml order: ne[0] is the fastest-varying dimension
  std::uint32_t type = 0;
  std::uint64_t offset = 0;      // relative to the data section
  std::uint64_t n_elements = 0;
  std::uint64_t n_bytes = 0;
  // torch order (reversed ne)
  std::vector<std::int64_t> torch_shape() const;
};

struct Header {
  std::uint32_t version = 0;
  std::vector<std::pair<std::string, Value>> metadata;  // file order
  std::map<std::string, std::size_t> metadata_index;    // key -> position in `metadata`
  std::vector<TensorInfo> tensors;                      // file order
  std::map<std::string, std::size_t> tensor_index;
  std::uint64_t alignment = 32;
  std::uint64_t data_offset = 0;  // absolute file offset of the tensor data section
};

// Parses and validates a whole file image: magic, version (2 or 3), counts against the file size,
// string lengths, value types, nesting, alignment, tensor types, dims and data ranges. Every
// problem is a FormatError whose `where` names `file` (and the key or tensor concerned).
Header parse_header(std::string_view bytes, const std::string& file);

}  // namespace safetune::io::gguf
