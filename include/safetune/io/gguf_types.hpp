// What a GGUF file holds, as io::GgufFile returns it: typed metadata values and tensor infos.
// Torch-free (the header parser and its fuzz target use the same types).
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace safetune::io::gguf {

enum class ValueType : std::uint32_t {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
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

struct TensorInfo {
  std::string name;
  std::vector<std::uint64_t> ne;  // ggml order: ne[0] is the fastest-varying dimension
  std::uint32_t type = 0;
  std::uint64_t offset = 0;  // relative to the data section
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

}  // namespace safetune::io::gguf
