// Writing GGUF v3 files (typed metadata + F32/F16/BF16 tensors), laid out as llama.cpp's gguf-py
// writes them.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "safetune/io/gguf_types.hpp"

namespace safetune::io {

class GgufWriter {
 public:
  void add_string(const std::string& key, const std::string& value);
  void add_uint32(const std::string& key, std::uint32_t value);
  void add_float32(const std::string& key, float value);
  void add_bool(const std::string& key, bool value);
  // A tensor in torch order (ggml's ne is the reversed shape), stored as F32, F16 or BF16 after its
  // dtype; anything else is a FormatError naming the tensor. Names must be unique.
  void add_tensor(const std::string& name, const at::Tensor& tensor);
  // Header, tensor infos, then the data, every tensor aligned to 32 bytes; written atomically.
  void write(const std::filesystem::path& path) const;

 private:
  struct Kv {
    std::string key;
    gguf::ValueType type;
    std::string payload;  // the value's little-endian encoding
  };
  void add(const std::string& key, gguf::ValueType type, std::string payload);
  std::vector<Kv> kv_;
  std::vector<std::pair<std::string, at::Tensor>> tensors_;
};

}  // namespace safetune::io
