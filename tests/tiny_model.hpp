// A tiny random Llama in memory (no files): the model tests and the regularizer tests build on it.
#pragma once
#include <torch/torch.h>

#include "safetune/model/checkpoint.hpp"
#include "safetune/model/config.hpp"

namespace safetune::test {

inline model::ModelConfig tiny_config() {
  model::ModelConfig c;
  c.architecture = "llama";
  c.vocab_size = 50;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 4;
  c.eos_token_ids = {2};
  return c;
}

// Random weights under HF names for a config (what save_pretrained would write).
inline model::Checkpoint make_checkpoint(const model::ModelConfig& c, std::uint64_t seed = 1) {
  torch::manual_seed(seed);
  model::Checkpoint ck;
  ck.config = c;
  auto add = [&](const std::string& n, std::vector<std::int64_t> s) {
    ck.tensors.emplace_back(n, torch::randn(s) * 0.3);
  };
  const auto H = c.hidden_size, I = c.intermediate_size, D = c.head_dim;
  const auto Q = c.num_attention_heads * D, KV = c.num_key_value_heads * D;
  add("model.embed_tokens.weight", {c.vocab_size, H});
  for (int i = 0; i < c.num_hidden_layers; ++i) {
    std::string p = "model.layers." + std::to_string(i);
    add(p + ".input_layernorm.weight", {H});
    add(p + ".post_attention_layernorm.weight", {H});
    add(p + ".self_attn.q_proj.weight", {Q, H});
    add(p + ".self_attn.k_proj.weight", {KV, H});
    add(p + ".self_attn.v_proj.weight", {KV, H});
    add(p + ".self_attn.o_proj.weight", {H, Q});
    if (c.qkv_bias || c.attention_bias) {
      add(p + ".self_attn.q_proj.bias", {Q});
      add(p + ".self_attn.k_proj.bias", {KV});
      add(p + ".self_attn.v_proj.bias", {KV});
    }
    add(p + ".mlp.gate_proj.weight", {I, H});
    add(p + ".mlp.up_proj.weight", {I, H});
    add(p + ".mlp.down_proj.weight", {H, I});
  }
  add("model.norm.weight", {H});
  if (!c.tie_word_embeddings) add("lm_head.weight", {c.vocab_size, H});
  return ck;
}

}  // namespace safetune::test
