// Autoregressive generation with a KV cache: greedy or sampled, batched with left padding.
#pragma once
#include <ATen/Tensor.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "safetune/model/causal_lm.hpp"

namespace safetune::model {

// Field meanings follow transformers' GenerationConfig so results are comparable.
struct GenerateOptions {
  std::int64_t max_new_tokens = 64;
  bool do_sample = false;    // false: greedy (argmax)
  double temperature = 1.0;  // > 0; applied before top-k/top-p when sampling
  std::int64_t top_k = 0;    // 0 = off
  double top_p = 1.0;        // 1 = off
  double repetition_penalty =
      1.0;  // 1 = off; divides positive / multiplies negative logits of seen ids
  // Generation of a row stops after it emits one of these. nullopt: the config's eos_token_ids.
  std::optional<std::vector<std::int64_t>> stop_tokens;
  // Fills finished rows and the left padding. -1: config pad_token_id, else first stop token, else
  // 0.
  std::int64_t pad_token_id = -1;
  std::uint64_t seed = 0;  // sampling is reproducible for a given seed
};

struct GenerateResult {
  // [B, T + n] on CPU: the left-padded prompts followed by the generated tokens (finished rows are
  // filled with the pad id), exactly as transformers' generate returns them.
  at::Tensor sequences;
  // Per prompt: the generated ids, up to and including the stop token, without padding.
  std::vector<std::vector<std::int64_t>> new_tokens;
};

// input_ids [B,T] (left padded), attention_mask [B,T] (optional, 1 = token).
GenerateResult generate(CausalLM& model, const at::Tensor& input_ids,
                        const at::Tensor& attention_mask, const GenerateOptions& options);
// Convenience: prompts of any lengths, left padded here.
GenerateResult generate(CausalLM& model, const std::vector<std::vector<std::int64_t>>& prompts,
                        const GenerateOptions& options);

}  // namespace safetune::model
