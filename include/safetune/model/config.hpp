// Architecture hyperparameters of a decoder-only model, as in a Hugging Face config.json.
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace safetune::model {

struct RopeScaling {
  std::string type;  // "" (none), "llama3", "linear"
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  std::int64_t original_max_position_embeddings = 8192;
};

// An adapter whose product was merged into the weights, as `safetune merge` records it in
// config.json ("safetune_merged_adapters"), so that loading it again can be caught.
struct MergedAdapter {
  std::string name;
  std::string role;
  std::string weights_sha256;  // lora::ModelAdapters::weights_sha256 of the adapter merged
};

struct ModelConfig {
  std::string architecture = "llama";  // "llama" or "qwen2" (model_type in config.json)
  std::int64_t vocab_size = 0;
  std::int64_t hidden_size = 0;
  std::int64_t intermediate_size = 0;
  std::int64_t num_hidden_layers = 0;
  std::int64_t num_attention_heads = 0;
  std::int64_t num_key_value_heads = 0;
  std::int64_t head_dim = 0;  // hidden_size / num_attention_heads unless given explicitly
  std::int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  // Per-frequency divisors of the rotary inverse frequencies (head_dim / 2 values), as llama.cpp
  // stores llama3-style scaling in GGUF files (tensor rope_freqs.weight). Empty: none. Applied
  // after rope_scaling, which GGUF-loaded configs leave empty.
  std::vector<float> rope_freq_factors;
  bool attention_bias = false;  // q/k/v/o biases (Llama attention_bias)
  bool qkv_bias = false;        // q/k/v biases only (Qwen2)
  bool mlp_bias = false;
  bool tie_word_embeddings = false;
  std::int64_t bos_token_id = -1;
  std::vector<std::int64_t> eos_token_ids;
  std::int64_t pad_token_id = -1;
  std::string torch_dtype = "float32";
  std::vector<MergedAdapter> merged_adapters;  // empty for a model no adapter was merged into
};

// Parses the text of a Hugging Face config.json (model_type llama|qwen2, or architectures
// LlamaForCausalLM / Qwen2ForCausalLM). Reads both the legacy rope_theta + rope_scaling keys and
// transformers v5's rope_parameters. `where` names the source in errors (FormatError for bad
// JSON, ModelError for an unsupported or inconsistent architecture).
ModelConfig config_from_json(const std::string& json_text,
                             const std::string& where = "config.json");
// Reads <dir>/config.json, or the file itself when `path` is a file.
ModelConfig load_config(const std::filesystem::path& path);
// Checks the sizes are usable (positive, heads divisible by kv heads, even head_dim, ...).
void validate_config(const ModelConfig& config, const std::string& where);
// config.json text that transformers (v4 and v5) reads back into the same architecture.
std::string to_hf_json(const ModelConfig& config);

}  // namespace safetune::model
