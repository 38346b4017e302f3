// llama.cpp's GGUF models as Hugging Face checkpoints: architecture metadata, tensor names and the
// Q/K row order (io/gguf.hpp reads the container; this maps what is in it).
#pragma once
#include <ATen/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "safetune/model/checkpoint.hpp"

namespace safetune::model {

// Model config from llama.cpp metadata (general.architecture llama or qwen2) and every tensor under
// its Hugging Face name, dequantized to `dtype`, with the Q/K row permutation that llama.cpp's
// converter applies for `llama` undone. llama3 rope scaling, which llama.cpp stores as the tensor
// rope_freqs.weight (per-frequency divisors), becomes config.rope_freq_factors.
Checkpoint gguf_load_checkpoint(const std::filesystem::path& path, at::ScalarType dtype);

// llama.cpp tensor name -> Hugging Face name ("blk.3.attn_q.weight" ->
// "model.layers.3.self_attn.q_proj.weight"); std::nullopt for names without an equivalent.
std::optional<std::string> gguf_to_hf_name(const std::string& gguf_name);
// The inverse ("model.layers.3.mlp.down_proj.weight" -> "blk.3.ffn_down.weight"); std::nullopt when
// none.
std::optional<std::string> hf_to_gguf_name(const std::string& hf_name);

// llama.cpp's converter reorders the Q/K rows of arch `llama` (per head, HF's rotary halves become
// interleaved pairs). inverse=false applies that permutation (HF -> GGUF) to the rows of `w`,
// inverse=true undoes it. ModelError naming `where` when the rows do not split into even heads.
at::Tensor gguf_permute_qk_rows(const at::Tensor& w, std::int64_t n_head, bool inverse,
                                const std::string& where);

}  // namespace safetune::model
