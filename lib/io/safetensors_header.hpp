// Torch-free safetensors header parsing and validation (shared by the loader and the fuzz target).
// Internal to io/: the public API is io/safetensors.hpp.
#pragma once
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace safetune::io {

// One tensor entry; begin/end are byte offsets into the data buffer that follows the header.
struct TensorInfo {
  std::string name;
  std::string dtype;  // as stored: "F32", "BF16", ...
  std::vector<int64_t> shape;
  std::uint64_t begin = 0, end = 0;
};

struct SafetensorsHeader {
  std::vector<TensorInfo> tensors;  // ordered by begin offset (file order)
  std::map<std::string, std::string> metadata;
  std::uint64_t data_offset = 0;  // where the data buffer starts in the file (8 + header length)
};

// Upper bound on the JSON header, the same as the reference implementation's.
inline constexpr std::uint64_t kSafetensorsMaxHeader = 100'000'000;

// Bytes per element of a safetensors dtype name; 0 when the name is unknown.
std::size_t safetensors_dtype_size(std::string_view dtype);

// Parses and validates a complete file image (or at least its first 8 + header-length bytes, with
// `file_size` the full size). Every problem is a FormatError whose `where` names `file` and, when
// it concerns one tensor, the tensor.
SafetensorsHeader safetensors_parse_header(std::string_view bytes, std::uint64_t file_size,
                                           const std::string& file);

// The header only (names, dtypes, shapes, metadata) for `safetune inspect`; reads just the header.
SafetensorsHeader safetensors_read_header(const std::filesystem::path& file);

}  // namespace safetune::io
