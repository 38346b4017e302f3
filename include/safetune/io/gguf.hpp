// GGUF checkpoints (llama.cpp): metadata access, dequantization, and loading as an HF-named Checkpoint.
#pragma once
#include <ATen/Tensor.h>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "safetune/io/checkpoint.hpp"
#include "safetune/io/gguf_format.hpp"

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
  double get_float(const std::string& key) const;       // float32/float64 or any integer
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

// Dequantizes `info`'s bytes (`data`, exactly info.n_bytes long) into a new tensor of torch shape.
// Supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K.
at::Tensor gguf_dequantize(const gguf::TensorInfo& info, const std::uint8_t* data, at::ScalarType dtype,
                           const std::string& where);

// Whether this reader can dequantize a ggml type.
bool gguf_type_supported(std::uint32_t ggml_type);

// Model config from llama.cpp metadata (general.architecture llama or qwen2) and every tensor under
// its Hugging Face name, dequantized to `dtype`, with the Q/K row permutation that llama.cpp's
// converter applies for `llama` undone. llama3 rope scaling, which llama.cpp stores as the tensor
// rope_freqs.weight (per-frequency divisors), becomes config.rope_freq_factors.
Checkpoint gguf_load_checkpoint(const std::filesystem::path& path, at::ScalarType dtype);

// llama.cpp tensor name -> Hugging Face name ("blk.3.attn_q.weight" -> "model.layers.3.self_attn.q_proj.weight");
// std::nullopt for names without an equivalent.
std::optional<std::string> gguf_to_hf_name(const std::string& gguf_name);
// The inverse ("model.layers.3.mlp.down_proj.weight" -> "blk.3.ffn_down.weight"); std::nullopt when none.
std::optional<std::string> hf_to_gguf_name(const std::string& hf_name);

// llama.cpp's converter reorders the Q/K rows of arch `llama` (per head, HF's rotary halves become
// interleaved pairs). inverse=false applies that permutation (HF -> GGUF) to the rows of `w`,
// inverse=true undoes it. ModelError naming `where` when the rows do not split into even heads.
at::Tensor gguf_permute_qk_rows(const at::Tensor& w, std::int64_t n_head, bool inverse, const std::string& where);

}  // namespace safetune::io
