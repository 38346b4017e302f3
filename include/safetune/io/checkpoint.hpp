// A loaded checkpoint: architecture plus tensors under Hugging Face names, whatever the file format.
#pragma once
#include <ATen/Tensor.h>

#include <string>
#include <utility>
#include <vector>

#include "safetune/model/config.hpp"

namespace safetune::io {

struct Checkpoint {
  model::ModelConfig config;
  // HF names, e.g. "model.layers.0.self_attn.q_proj.weight", "model.embed_tokens.weight".
  std::vector<std::pair<std::string, at::Tensor>> tensors;
};

// FormatError naming `file` and the first floating-point tensor holding NaN or infinite values (with
// their count): such weights only ever produce NaN logits, so they are refused at load time.
void require_finite(const std::vector<std::pair<std::string, at::Tensor>>& tensors, const std::string& file);

}  // namespace safetune::io
