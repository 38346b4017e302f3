// GGUF files (llama.cpp): the container format, typed metadata access and dequantization.
#pragma once
#include <ATen/Tensor.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "safetune/io/gguf_types.hpp"

namespace safetune::io {

// A memory-mapped, fully validated GGUF file. Accessors throw FormatError naming the file and key
// when a key is missing or has an incompatible type.
class GgufFile {
 public:
  explicit GgufFile(const std::filesystem::path& path);

  const std::filesystem::path& path() const noexcept { return path_; }
  std::uint32_t version() const noexcept { return header_.version; }
  std::uint64_t alignment() const noexcept { return header_.alignment; }
  const gguf::Header& header() const noexcept { return header_; }

  bool has(const std::string& key) const;
  const gguf::Value& get(const std::string& key) const;
  std::string get_string(const std::string& key) const;
  std::int64_t get_int(const std::string& key) const;  // any integer type or bool
  double get_float(const std::string& key) const;      // float32/float64 or any integer
  bool get_bool(const std::string& key) const;
  std::vector<std::string> get_strings(const std::string& key) const;
  std::vector<std::int64_t> get_ints(const std::string& key) const;
  std::vector<double> get_floats(const std::string& key) const;
  // with a fallback when the key is absent (a present key of the wrong type is still an error)
  std::string get_string(const std::string& key, const std::string& fallback) const;
  std::int64_t get_int(const std::string& key, std::int64_t fallback) const;
  double get_float(const std::string& key, double fallback) const;

  const std::vector<gguf::TensorInfo>& tensors() const noexcept { return header_.tensors; }
  const gguf::TensorInfo* find_tensor(const std::string& name) const;
  // Raw bytes of one tensor inside the mapping.
  const std::uint8_t* tensor_data(const gguf::TensorInfo& info) const;
  // The tensor in torch order (reversed ggml dims), dequantized to `dtype` (float32, bfloat16 or
  // float16). FormatError naming the tensor for a missing name or an unsupported ggml type.
  at::Tensor tensor(const std::string& name, at::ScalarType dtype) const;

 private:
  std::filesystem::path path_;
  std::shared_ptr<void> mapping_;  // keeps the file mapped
  const std::uint8_t* data_ = nullptr;
  gguf::Header header_;
};

}  // namespace safetune::io
