// A loaded checkpoint: architecture plus tensors under Hugging Face names, whatever the file
// format.
#pragma once
#include <ATen/Tensor.h>

#include <string>
#include <utility>
#include <vector>

#include "safetune/model/config.hpp"

namespace safetune::model {

struct Checkpoint {
  ModelConfig config;
  // HF names, e.g. "model.layers.0.self_attn.q_proj.weight", "model.embed_tokens.weight".
  std::vector<std::pair<std::string, at::Tensor>> tensors;
};

}  // namespace safetune::model
