// GGUF tokenizer metadata -> BpeSpec -> byte-level BPE (or a Hugging Face tokenizer.json); the chat
// template.
#include "safetune/tokenizer/gguf.hpp"

#include <nlohmann/json.hpp>

#include "safetune/error.hpp"
#include "safetune/io/atomic_file.hpp"
#include "safetune/io/gguf.hpp"
#include "tokenizer/bpe.hpp"

namespace safetune::tokenizer {

BpeSpec bpe_spec_from_gguf(const io::GgufFile& f) {
  const std::string where = f.path().string();
  const std::string model = f.get_string("tokenizer.ggml.model", "");
  if (model != "gpt2")
    throw TokenizerError(
        "unsupported GGUF tokenizer model '" + model + "'", where,
        "only byte-level BPE (gpt2) tokenizers are read from GGUF; pass a tokenizer.json");
  BpeSpec spec;
  spec.tokens = f.get_strings("tokenizer.ggml.tokens");
  if (f.has("tokenizer.ggml.token_type"))
    for (auto t : f.get_ints("tokenizer.ggml.token_type"))
      spec.token_types.push_back(static_cast<std::int32_t>(t));
  if (f.has("tokenizer.ggml.merges")) spec.merges = f.get_strings("tokenizer.ggml.merges");
  spec.pre = f.get_string("tokenizer.ggml.pre", "default");
  spec.bos_id = f.get_int("tokenizer.ggml.bos_token_id", -1);
  spec.eos_id = f.get_int("tokenizer.ggml.eos_token_id", -1);
  spec.pad_id = f.get_int("tokenizer.ggml.padding_token_id", -1);
  spec.add_bos =
      f.has("tokenizer.ggml.add_bos_token") && f.get_bool("tokenizer.ggml.add_bos_token");
  spec.add_eos =
      f.has("tokenizer.ggml.add_eos_token") && f.get_bool("tokenizer.ggml.add_eos_token");
  return spec;
}

std::unique_ptr<Tokenizer> tokenizer_from_gguf(const io::GgufFile& f) {
  auto spec = bpe_spec_from_gguf(f);
  try {
    return bpe_from_spec(spec);
  } catch (const TokenizerError& e) {
    throw TokenizerError(e.what_only(), f.path().string(), e.hint());
  }
}

std::vector<std::string> save_hf_tokenizer(const io::GgufFile& f,
                                           const std::filesystem::path& dir) {
  const BpeSpec spec = bpe_spec_from_gguf(f);
  std::string json_text;
  try {
    bpe_from_spec(spec);  // the same checks as loading, before anything is written
    json_text = tokenizer_json_from_spec(spec);
  } catch (const TokenizerError& e) {
    throw TokenizerError(e.what_only(), f.path().string(), e.hint());
  }
  // tokenizer_config.json: what transformers reads beside tokenizer.json (names of the special
  // tokens, whether bos/eos are added, the chat template) and safetune reads too.
  auto name = [&](int64_t id) -> nlohmann::json {
    if (id < 0 || static_cast<size_t>(id) >= spec.tokens.size()) return nullptr;
    return spec.tokens[static_cast<size_t>(id)];
  };
  nlohmann::json cfg = {
      {"tokenizer_class", "PreTrainedTokenizerFast"},
      {"add_bos_token", spec.add_bos},
      {"add_eos_token", spec.add_eos},
      {"bos_token", name(spec.bos_id)},
      {"eos_token", name(spec.eos_id)},
      {"pad_token", name(spec.pad_id)},
      {"clean_up_tokenization_spaces", false},
  };
  if (f.has("tokenizer.chat_template"))
    cfg["chat_template"] = f.get_string("tokenizer.chat_template");
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  io::atomic_write(dir / "tokenizer.json", json_text);
  io::atomic_write(dir / "tokenizer_config.json", cfg.dump(2) + "\n");
  return {"tokenizer.json", "tokenizer_config.json"};
}

std::optional<ChatTemplate> chat_template_from_gguf(const io::GgufFile& f) {
  if (!f.has("tokenizer.chat_template")) return std::nullopt;
  // The special tokens apply_chat_template would pass, by their ids in the vocabulary.
  TemplateVariables vars;
  if (f.has("tokenizer.ggml.tokens")) {
    auto tokens = f.get_strings("tokenizer.ggml.tokens");
    for (auto [key, var] : {std::pair{"tokenizer.ggml.bos_token_id", "bos_token"},
                            {"tokenizer.ggml.eos_token_id", "eos_token"},
                            {"tokenizer.ggml.unknown_token_id", "unk_token"},
                            {"tokenizer.ggml.padding_token_id", "pad_token"}}) {
      auto id = f.get_int(key, -1);
      if (id >= 0 && static_cast<size_t>(id) < tokens.size())
        vars[var] = tokens[static_cast<size_t>(id)];
    }
  }
  return ChatTemplate::from_jinja(f.get_string("tokenizer.chat_template"), std::move(vars));
}

}  // namespace safetune::tokenizer
