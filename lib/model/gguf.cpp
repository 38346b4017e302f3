// GGUF -> Hugging Face checkpoint: llama/qwen2 metadata to ModelConfig, llama.cpp tensor names to
// HF names, and llama.cpp's Q/K row permutation undone.
#include "safetune/model/gguf.hpp"

#include <ATen/ATen.h>

#include <regex>

#include "safetune/error.hpp"
#include "safetune/io/gguf.hpp"

namespace safetune::model {
namespace fs = std::filesystem;

namespace {
// llama.cpp tensor names and their Hugging Face equivalents (whole names, then per-layer parts).
constexpr std::pair<const char*, const char*> kGlobalNames[] = {
    {"token_embd.weight", "model.embed_tokens.weight"},
    {"output_norm.weight", "model.norm.weight"},
    {"output_norm.bias", "model.norm.bias"},
    {"output.weight", "lm_head.weight"},
    {"output.bias", "lm_head.bias"},
};
constexpr std::pair<const char*, const char*> kLayerParts[] = {
    {"attn_q", "self_attn.q_proj"},
    {"attn_k", "self_attn.k_proj"},
    {"attn_v", "self_attn.v_proj"},
    {"attn_output", "self_attn.o_proj"},
    {"ffn_gate", "mlp.gate_proj"},
    {"ffn_up", "mlp.up_proj"},
    {"ffn_down", "mlp.down_proj"},
    {"attn_norm", "input_layernorm"},
    {"ffn_norm", "post_attention_layernorm"},
};
}  // namespace

std::optional<std::string> gguf_to_hf_name(const std::string& name) {
  for (const auto& [g, h] : kGlobalNames)
    if (name == g) return std::string(h);
  static const std::regex blk(R"(blk\.(\d{1,6})\.([a-z_]+)\.(weight|bias))");
  std::smatch m;
  if (!std::regex_match(name, m, blk)) return std::nullopt;
  for (const auto& [g, h] : kLayerParts)
    if (m[2] == g) return "model.layers." + m[1].str() + "." + h + "." + m[3].str();
  return std::nullopt;
}

std::optional<std::string> hf_to_gguf_name(const std::string& name) {
  for (const auto& [g, h] : kGlobalNames)
    if (name == h) return std::string(g);
  static const std::regex layer(
      R"(model\.layers\.(\d{1,6})\.([a-z_]+\.[a-z_]+|[a-z_]+)\.(weight|bias))");
  std::smatch m;
  if (!std::regex_match(name, m, layer)) return std::nullopt;
  for (const auto& [g, h] : kLayerParts)
    if (m[2] == h) return "blk." + m[1].str() + "." + g + "." + m[3].str();
  return std::nullopt;
}

at::Tensor gguf_permute_qk_rows(const at::Tensor& w, std::int64_t n_head, bool inverse,
                                const std::string& where) {
  const std::int64_t rows = w.size(0);
  if (n_head <= 0 || rows % n_head != 0 || (rows / n_head) % 2 != 0)
    throw ModelError(std::to_string(rows) + " rows cannot be split into " + std::to_string(n_head) +
                         " heads of even size",
                     where);
  // Forward: rows of each head go from [half0 | half1] to interleaved pairs, i.e.
  // w.reshape(n_head, 2, hd/2, ...).swapaxes(1, 2); the inverse reads the pairs back.
  std::vector<std::int64_t> shape{n_head, 2, rows / n_head / 2};
  if (inverse) std::swap(shape[1], shape[2]);
  for (std::int64_t d = 1; d < w.dim(); ++d) shape.push_back(w.size(d));
  return w.reshape(shape).transpose(1, 2).reshape(w.sizes()).contiguous();
}

Checkpoint gguf_load_checkpoint(const fs::path& path, at::ScalarType dtype) {
  io::GgufFile f(path);
  const std::string file = path.string();
  Checkpoint ck;
  ModelConfig& c = ck.config;
  const std::string arch = f.get_string("general.architecture");
  if (arch != "llama" && arch != "qwen2")
    throw ModelError("unknown architecture '" + arch + "' (llama and qwen2 are supported)",
                     file + ": key 'general.architecture'");
  c.architecture = arch;
  const std::string p = arch + ".";
  c.num_hidden_layers = f.get_int(p + "block_count");
  c.hidden_size = f.get_int(p + "embedding_length");
  c.intermediate_size = f.get_int(p + "feed_forward_length");
  c.num_attention_heads = f.get_int(p + "attention.head_count");
  c.num_key_value_heads = f.get_int(p + "attention.head_count_kv", c.num_attention_heads);
  if (c.num_hidden_layers <= 0 || c.hidden_size <= 0 || c.num_attention_heads <= 0 ||
      c.num_key_value_heads <= 0 || c.num_attention_heads % c.num_key_value_heads != 0)
    throw ModelError("inconsistent layer/head counts in metadata", file);
  c.head_dim = f.get_int(p + "attention.key_length", c.hidden_size / c.num_attention_heads);
  c.rope_theta = f.get_float(p + "rope.freq_base", 10000.0);
  c.rms_norm_eps = f.get_float(p + "attention.layer_norm_rms_epsilon", 1e-6);
  c.max_position_embeddings = f.get_int(p + "context_length", 2048);
  c.qkv_bias = arch == "qwen2";
  c.attention_bias = arch == "llama" && f.find_tensor("blk.0.attn_q.bias") != nullptr;
  c.mlp_bias = f.find_tensor("blk.0.ffn_gate.bias") != nullptr;
  c.tie_word_embeddings = f.find_tensor("output.weight") == nullptr;
  c.bos_token_id = f.get_int("tokenizer.ggml.bos_token_id", -1);
  if (f.has("tokenizer.ggml.eos_token_id"))
    c.eos_token_ids = {f.get_int("tokenizer.ggml.eos_token_id")};
  c.pad_token_id = f.get_int("tokenizer.ggml.padding_token_id", -1);
  c.torch_dtype = dtype == at::kBFloat16 ? "bfloat16" : dtype == at::kHalf ? "float16" : "float32";
  const io::gguf::TensorInfo* embd = f.find_tensor("token_embd.weight");
  if (!embd || embd->ne.size() != 2)
    throw ModelError("token_embd.weight is missing or not 2-D", file);
  c.vocab_size = static_cast<std::int64_t>(embd->ne[1]);

  static const std::regex q_or_k(R"(blk\.\d+\.attn_([qk])\.(weight|bias))");
  for (const io::gguf::TensorInfo& info : f.tensors()) {
    const std::string where = file + ": tensor '" + info.name + "'";
    if (info.name == "rope_freqs.weight") {  // llama3-style scaling as per-frequency divisors
      at::Tensor factors = f.tensor(info.name, at::kFloat).contiguous();
      if (factors.dim() != 1 || factors.size(0) * 2 != c.head_dim)
        throw ModelError("expected head_dim / 2 = " + std::to_string(c.head_dim / 2) + " values",
                         where);
      if (!at::isfinite(factors).all().item<bool>() || (factors <= 0).any().item<bool>())
        throw ModelError("rope frequency factors must be finite and positive", where);
      c.rope_freq_factors.assign(factors.data_ptr<float>(),
                                 factors.data_ptr<float>() + factors.numel());
      continue;
    }
    auto hf = gguf_to_hf_name(info.name);
    if (!hf) throw ModelError("tensor has no Hugging Face equivalent", where);
    at::Tensor t = f.tensor(info.name, dtype);
    std::smatch m;
    if (arch == "llama" && std::regex_match(info.name, m, q_or_k))
      t = gguf_permute_qk_rows(t, m[1] == "q" ? c.num_attention_heads : c.num_key_value_heads, true,
                               where);
    ck.tensors.emplace_back(std::move(*hf), std::move(t));
  }
  return ck;
}

}  // namespace safetune::model
