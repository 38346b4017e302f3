// The Llama/Qwen2 decoder-only language model, its frozen Linear layers and the generation KV
// cache.
#pragma once
#include <ATen/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <torch/nn/module.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "safetune/model/checkpoint.hpp"
#include "safetune/model/config.hpp"
#include "safetune/model/linear_hook.hpp"

namespace safetune::model {

// A frozen projection y = x W^T + b. Adapters attach through `hook`, so the base weights are never
// copied or wrapped: the LoRA layer adds its output on top of ours.
class Linear : public torch::nn::Module {
 public:
  Linear(at::Tensor weight, at::Tensor bias);
  at::Tensor forward(const at::Tensor& x);
  std::int64_t in_features() const { return weight.size(1); }
  std::int64_t out_features() const { return weight.size(0); }

  at::Tensor weight;  // [out, in]
  at::Tensor bias;    // [out] or undefined
  std::shared_ptr<LinearHook> hook;
};

// Keys and values of every layer seen so far, [B, kv_heads, S, head_dim] per layer. Storage grows
// in chunks so that decoding one token does not copy the whole history each step.
class KvCache {
 public:
  explicit KvCache(std::int64_t num_layers = 0);
  // Appends this step's keys/values for `layer` and returns views of everything cached so far.
  std::pair<at::Tensor, at::Tensor> update(std::int64_t layer, const at::Tensor& k,
                                           const at::Tensor& v);
  // Tokens already cached (the same for every layer once a forward pass has finished).
  std::int64_t seq_len() const { return length_; }
  void clear();
  // Only the model calls this: marks the end of a forward pass over `tokens` new positions.
  void advance(std::int64_t tokens) { length_ += tokens; }
  std::int64_t num_layers() const { return static_cast<std::int64_t>(k_.size()); }

 private:
  std::vector<at::Tensor> k_, v_;  // capacity-sized storage
  std::int64_t length_ = 0;
};

// Decoder-only transformer with the Hugging Face Llama/Qwen2 layout. All base weights are frozen
// buffers (requires_grad false); trainable state lives in the adapters attached to linears().
class CausalLM : public torch::nn::Module {
 public:
  // Takes the tensors as they are (no dtype/device conversion). Checks that exactly the tensors
  // the config implies are present with the right shapes: ModelError naming the tensor otherwise.
  explicit CausalLM(const Checkpoint& checkpoint);
  // Same, converting every tensor to `dtype` on `device` first (no copy when they already match).
  CausalLM(const Checkpoint& checkpoint, c10::ScalarType dtype, c10::Device device);

  // input_ids [B,T] int64. attention_mask [B, past+T] with 1 = real token, 0 = padding (optional;
  // needed for left-padded batches). position_ids [B,T] (optional: derived from the mask as
  // cumsum(mask)-1 like transformers, else past..past+T-1). With a cache, keys/values are appended
  // and attention covers the cached positions. logits_to_keep > 0 computes logits only for the
  // last that many positions (generation needs just the last one). Returns logits [B,T',V].
  at::Tensor forward(const at::Tensor& input_ids, const at::Tensor& attention_mask = {},
                     const at::Tensor& position_ids = {}, KvCache* cache = nullptr,
                     std::int64_t logits_to_keep = 0);
  // The final-norm hidden states [B,T,H] (before lm_head), same arguments.
  at::Tensor hidden_states(const at::Tensor& input_ids, const at::Tensor& attention_mask = {},
                           const at::Tensor& position_ids = {}, KvCache* cache = nullptr);

  // lm_head applied to hidden states [..., H] (rows picked from hidden_states, for instance).
  at::Tensor project(const at::Tensor& hidden);

  const ModelConfig& config() const { return config_; }
  // What adapters are merged into the weights (kept by lora::ModelAdapters::merge/unmerge and
  // written to config.json by an export), so a merged model carries its own record.
  std::vector<MergedAdapter>& merged_adapters() { return config_.merged_adapters; }
  c10::ScalarType dtype() const;
  c10::Device device() const;
  // Moves/casts all weights (the rotary frequencies stay fp32, as in transformers).
  void to_device(c10::Device device, c10::ScalarType dtype);

  // Every projection under its Hugging Face module name ("model.layers.0.self_attn.q_proj", ...,
  // "lm_head"), in layer order.
  // lm_head's weight [V, H] when the projection is a plain h W^T (no bias, no active adapter), so
  // that a loss may fuse it (train::linear_cross_entropy_sum); undefined otherwise.
  at::Tensor plain_projection_weight() const;
  std::vector<std::pair<std::string, Linear*>> linears();
  // All weights under Hugging Face tensor names; lm_head.weight is left out when tied, as
  // transformers saves it.
  std::vector<std::pair<std::string, at::Tensor>> state_dict_hf() const;
  std::int64_t parameter_count() const;

  // Recompute each decoder layer in backward instead of storing its activations (training only:
  // active when is_training() and grad mode is on, ignored with a KV cache).
  void set_activation_checkpointing(bool on) { checkpointing_ = on; }
  bool activation_checkpointing() const { return checkpointing_; }

  KvCache make_cache() const { return KvCache(config_.num_hidden_layers); }

  struct Layer;  // one decoder block; defined in causal_lm.cpp

 private:
  void build(const Checkpoint& checkpoint, const c10::ScalarType* dtype, const c10::Device* device);

  ModelConfig config_;
  at::Tensor embed_;       // [V, H]
  at::Tensor final_norm_;  // [H]
  at::Tensor inv_freq_;    // [head_dim/2] fp32
  std::shared_ptr<Linear> lm_head_;
  std::vector<std::shared_ptr<Layer>> layers_;
  bool checkpointing_ = false;
};

// Loads a model: a Hugging Face directory (config.json + model.safetensors or a sharded index), a
// .safetensors file with config.json beside it, or a .gguf file. Weights end up as `dtype` on
// `device`.
std::shared_ptr<CausalLM> load(const std::filesystem::path& path,
                               c10::ScalarType dtype = c10::ScalarType::Float,
                               c10::Device device = c10::Device(c10::DeviceType::CPU));
// The checkpoint (config + HF-named tensors in file dtype) without building the model.
Checkpoint load_checkpoint(const std::filesystem::path& path);

}  // namespace safetune::model
