// Reading and writing Hugging Face config.json for the Llama and Qwen2 families.
#include "safetune/model/config.hpp"

#include <nlohmann/json.hpp>

#include <cmath>

#include "safetune/error.hpp"
#include "safetune/io/atomic_file.hpp"

namespace safetune::model {
namespace {

using nlohmann::json;

// Typed getters: a wrong JSON type is a ModelError naming the key, never a json exception.
std::int64_t get_int(const json& j, const char* key, std::int64_t fallback,
                     const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (it->is_number_integer() || it->is_number_unsigned()) return it->get<std::int64_t>();
  if (it->is_number_float()) {
    double d = it->get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9e15)
      return static_cast<std::int64_t>(d);
  }
  throw ModelError(std::string("'") + key + "' must be an integer", where);
}

double get_double(const json& j, const char* key, double fallback, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (it->is_number()) {
    double d = it->get<double>();
    if (std::isfinite(d)) return d;
  }
  throw ModelError(std::string("'") + key + "' must be a finite number", where);
}

bool get_bool(const json& j, const char* key, bool fallback, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (it->is_boolean()) return it->get<bool>();
  throw ModelError(std::string("'") + key + "' must be true or false", where);
}

std::string get_string(const json& j, const char* key, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return {};
  if (it->is_string()) return it->get<std::string>();
  throw ModelError(std::string("'") + key + "' must be a string", where);
}

std::string architecture_of(const json& j, const std::string& where) {
  std::string type = get_string(j, "model_type", where);
  if (type.empty()) {
    auto it = j.find("architectures");
    if (it != j.end() && it->is_array()) {
      for (const auto& a : *it) {
        if (!a.is_string()) continue;
        if (a == "LlamaForCausalLM") return "llama";
        if (a == "Qwen2ForCausalLM") return "qwen2";
      }
    }
    throw ModelError("config has no model_type and no supported architectures entry", where,
                     "supported: llama, qwen2");
  }
  if (type == "llama" || type == "qwen2") return type;
  throw ModelError("unsupported model_type '" + type + "'", where, "supported: llama, qwen2");
}

void read_rope_scaling(const json& r, RopeScaling& s, const std::string& where) {
  std::string type = get_string(r, "rope_type", where);
  if (type.empty()) type = get_string(r, "type", where);
  if (type == "default" || type.empty()) {
    s.type.clear();
    return;
  }
  if (type != "llama3" && type != "linear")
    throw ModelError("unsupported rope type '" + type + "'", where,
                     "supported: default, linear, llama3");
  s.type = type;
  s.factor = get_double(r, "factor", 1.0, where);
  if (type == "llama3") {
    s.low_freq_factor = get_double(r, "low_freq_factor", 1.0, where);
    s.high_freq_factor = get_double(r, "high_freq_factor", 4.0, where);
    s.original_max_position_embeddings =
        get_int(r, "original_max_position_embeddings", s.original_max_position_embeddings, where);
  }
}

}  // namespace

ModelConfig config_from_json(const std::string& json_text, const std::string& where) {
  json j = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) throw FormatError("malformed JSON", where);
  if (!j.is_object()) throw FormatError("config must be a JSON object", where);

  ModelConfig c;
  c.architecture = architecture_of(j, where);
  c.vocab_size = get_int(j, "vocab_size", 0, where);
  c.hidden_size = get_int(j, "hidden_size", 0, where);
  c.intermediate_size = get_int(j, "intermediate_size", 0, where);
  c.num_hidden_layers = get_int(j, "num_hidden_layers", 0, where);
  c.num_attention_heads = get_int(j, "num_attention_heads", 0, where);
  c.num_key_value_heads = get_int(j, "num_key_value_heads", c.num_attention_heads, where);
  c.head_dim = get_int(j, "head_dim", 0, where);
  if (c.head_dim == 0 && c.num_attention_heads > 0)
    c.head_dim = c.hidden_size / c.num_attention_heads;
  c.max_position_embeddings =
      get_int(j, "max_position_embeddings", c.max_position_embeddings, where);
  c.rms_norm_eps = get_double(j, "rms_norm_eps", c.rms_norm_eps, where);
  c.rope_theta = get_double(j, "rope_theta", c.rope_theta, where);
  if (auto it = j.find("rope_scaling"); it != j.end() && !it->is_null()) {
    if (!it->is_object()) throw ModelError("'rope_scaling' must be an object", where);
    read_rope_scaling(*it, c.rope_scaling, where);
  }
  // transformers v5 folds rope_theta and the scaling fields into one object.
  if (auto it = j.find("rope_parameters"); it != j.end() && !it->is_null()) {
    if (!it->is_object()) throw ModelError("'rope_parameters' must be an object", where);
    c.rope_theta = get_double(*it, "rope_theta", c.rope_theta, where);
    read_rope_scaling(*it, c.rope_scaling, where);
  }
  if (c.architecture == "qwen2") {
    c.qkv_bias = true;  // Qwen2 always has q/k/v biases and no o/MLP bias
    c.tie_word_embeddings = get_bool(j, "tie_word_embeddings", false, where);
    if (get_bool(j, "use_sliding_window", false, where))
      throw ModelError("sliding-window attention is not supported", where);
  } else {
    c.attention_bias = get_bool(j, "attention_bias", false, where);
    c.mlp_bias = get_bool(j, "mlp_bias", false, where);
    c.tie_word_embeddings = get_bool(j, "tie_word_embeddings", false, where);
  }
  std::string act = get_string(j, "hidden_act", where);
  if (!act.empty() && act != "silu")
    throw ModelError("unsupported hidden_act '" + act + "'", where,
                     "only silu (SwiGLU) is supported");
  c.bos_token_id = get_int(j, "bos_token_id", -1, where);
  c.pad_token_id = get_int(j, "pad_token_id", -1, where);
  if (auto it = j.find("eos_token_id"); it != j.end() && !it->is_null()) {
    if (it->is_array()) {
      for (const auto& e : *it) {
        if (!e.is_number_integer())
          throw ModelError("'eos_token_id' entries must be integers", where);
        c.eos_token_ids.push_back(e.get<std::int64_t>());
      }
    } else {
      c.eos_token_ids.push_back(get_int(j, "eos_token_id", -1, where));
    }
  }
  std::string dtype = get_string(j, "dtype", where);
  if (dtype.empty()) dtype = get_string(j, "torch_dtype", where);
  if (!dtype.empty()) c.torch_dtype = dtype;
  if (auto it = j.find("safetune_merged_adapters"); it != j.end() && !it->is_null()) {
    if (!it->is_array()) throw ModelError("'safetune_merged_adapters' must be an array", where);
    for (const auto& e : *it) {
      if (!e.is_object())
        throw ModelError("'safetune_merged_adapters' entries must be objects", where);
      c.merged_adapters.push_back({get_string(e, "name", where), get_string(e, "role", where),
                                   get_string(e, "weights_sha256", where)});
    }
  }
  validate_config(c, where);
  return c;
}

void validate_config(const ModelConfig& c, const std::string& where) {
  auto positive = [&](const char* key, std::int64_t v) {
    if (v <= 0)
      throw ModelError(std::string("'") + key + "' must be positive, got " + std::to_string(v),
                       where);
  };
  positive("vocab_size", c.vocab_size);
  positive("hidden_size", c.hidden_size);
  positive("intermediate_size", c.intermediate_size);
  positive("num_hidden_layers", c.num_hidden_layers);
  positive("num_attention_heads", c.num_attention_heads);
  positive("num_key_value_heads", c.num_key_value_heads);
  positive("head_dim", c.head_dim);
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    throw ModelError("num_attention_heads (" + std::to_string(c.num_attention_heads) +
                         ") is not a multiple of num_key_value_heads (" +
                         std::to_string(c.num_key_value_heads) + ")",
                     where);
  if (c.head_dim % 2 != 0) throw ModelError("head_dim must be even for rotary embeddings", where);
  // Bounds that keep size arithmetic far from overflow; real models are orders of magnitude below.
  const std::int64_t limit = std::int64_t{1} << 24;
  for (auto v :
       {c.vocab_size, c.hidden_size, c.intermediate_size, c.num_attention_heads, c.head_dim})
    if (v > limit)
      throw ModelError("model dimension " + std::to_string(v) + " is implausibly large", where);
  if (c.num_hidden_layers > 4096) throw ModelError("num_hidden_layers is implausibly large", where);
  if (!(c.rms_norm_eps > 0)) throw ModelError("'rms_norm_eps' must be positive", where);
  if (!(c.rope_theta > 0)) throw ModelError("'rope_theta' must be positive", where);
  if (!c.rope_scaling.type.empty() && !(c.rope_scaling.factor > 0))
    throw ModelError("rope scaling 'factor' must be positive", where);
  if (c.rope_scaling.type == "llama3" &&
      (!(c.rope_scaling.high_freq_factor > c.rope_scaling.low_freq_factor) ||
       !(c.rope_scaling.low_freq_factor > 0) ||
       c.rope_scaling.original_max_position_embeddings <= 0))
    throw ModelError(
        "llama3 rope scaling needs 0 < low_freq_factor < high_freq_factor and "
        "original_max_position_embeddings > 0",
        where);
}

ModelConfig load_config(const std::filesystem::path& path) {
  std::filesystem::path file = path;
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) file = path / "config.json";
  if (!std::filesystem::is_regular_file(file, ec))
    throw IoError("config.json not found", file.string(),
                  "a Hugging Face model directory needs config.json beside the safetensors");
  return config_from_json(io::read_file(file), file.string());
}

std::string to_hf_json(const ModelConfig& c) {
  if (!c.rope_freq_factors.empty())
    throw ModelError("rope frequency factors (a GGUF rope_freqs tensor) have no config.json form",
                     "config.rope_freq_factors",
                     "export from the original Hugging Face checkpoint instead");
  json j = json::object();
  bool qwen = c.architecture == "qwen2";
  j["architectures"] = json::array({qwen ? "Qwen2ForCausalLM" : "LlamaForCausalLM"});
  j["model_type"] = c.architecture;
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.num_key_value_heads;
  j["head_dim"] = c.head_dim;
  j["hidden_act"] = "silu";
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rms_norm_eps"] = c.rms_norm_eps;
  // Legacy keys: transformers v4 reads them directly and v5 converts them to rope_parameters.
  j["rope_theta"] = c.rope_theta;
  if (c.rope_scaling.type.empty()) {
    j["rope_scaling"] = nullptr;
  } else {
    json r = {{"rope_type", c.rope_scaling.type}, {"factor", c.rope_scaling.factor}};
    if (c.rope_scaling.type == "llama3") {
      r["low_freq_factor"] = c.rope_scaling.low_freq_factor;
      r["high_freq_factor"] = c.rope_scaling.high_freq_factor;
      r["original_max_position_embeddings"] = c.rope_scaling.original_max_position_embeddings;
    }
    j["rope_scaling"] = r;
  }
  if (qwen) {
    j["use_sliding_window"] = false;
    j["sliding_window"] = nullptr;
    j["max_window_layers"] = c.num_hidden_layers;
  } else {
    j["attention_bias"] = c.attention_bias;
    j["mlp_bias"] = c.mlp_bias;
  }
  j["attention_dropout"] = 0.0;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["bos_token_id"] = c.bos_token_id >= 0 ? json(c.bos_token_id) : json(nullptr);
  j["pad_token_id"] = c.pad_token_id >= 0 ? json(c.pad_token_id) : json(nullptr);
  if (c.eos_token_ids.empty()) j["eos_token_id"] = nullptr;
  else if (c.eos_token_ids.size() == 1) j["eos_token_id"] = c.eos_token_ids[0];
  else j["eos_token_id"] = c.eos_token_ids;
  j["torch_dtype"] = c.torch_dtype;
  j["use_cache"] = true;
  if (!c.merged_adapters.empty()) {
    json m = json::array();
    for (const auto& a : c.merged_adapters)
      m.push_back({{"name", a.name}, {"role", a.role}, {"weights_sha256", a.weights_sha256}});
    j["safetune_merged_adapters"] = m;  // transformers keeps unknown keys and ignores them
  }
  return j.dump(2) + "\n";
}

}  // namespace safetune::model
