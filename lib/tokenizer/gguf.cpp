// GGUF tokenizer metadata -> BpeSpec -> byte-level BPE; the chat template from its Jinja text.
#include "safetune/tokenizer/gguf.hpp"

#include "safetune/error.hpp"
#include "safetune/io/gguf.hpp"
#include "safetune/tokenizer/bpe.hpp"

namespace safetune::tokenizer {

std::unique_ptr<Tokenizer> tokenizer_from_gguf(const io::GgufFile& f) {
  const std::string where = f.path().string();
  const std::string model = f.get_string("tokenizer.ggml.model", "");
  if (model != "gpt2")
    throw TokenizerError("unsupported GGUF tokenizer model '" + model + "'", where,
                         "only byte-level BPE (gpt2) tokenizers are read from GGUF; pass a tokenizer.json");
  BpeSpec spec;
  spec.tokens = f.get_strings("tokenizer.ggml.tokens");
  if (f.has("tokenizer.ggml.token_type"))
    for (auto t : f.get_ints("tokenizer.ggml.token_type")) spec.token_types.push_back(static_cast<std::int32_t>(t));
  if (f.has("tokenizer.ggml.merges")) spec.merges = f.get_strings("tokenizer.ggml.merges");
  spec.pre = f.get_string("tokenizer.ggml.pre", "default");
  spec.bos_id = f.get_int("tokenizer.ggml.bos_token_id", -1);
  spec.eos_id = f.get_int("tokenizer.ggml.eos_token_id", -1);
  spec.pad_id = f.get_int("tokenizer.ggml.padding_token_id", -1);
  spec.add_bos = f.has("tokenizer.ggml.add_bos_token") && f.get_bool("tokenizer.ggml.add_bos_token");
  spec.add_eos = f.has("tokenizer.ggml.add_eos_token") && f.get_bool("tokenizer.ggml.add_eos_token");
  try {
    return bpe_from_spec(spec);
  } catch (const TokenizerError& e) {
    throw TokenizerError(e.what_only(), where, e.hint());
  }
}

std::optional<ChatTemplate> chat_template_from_gguf(const io::GgufFile& f) {
  if (!f.has("tokenizer.chat_template")) return std::nullopt;
  return ChatTemplate::from_jinja(f.get_string("tokenizer.chat_template"));
}

}  // namespace safetune::tokenizer
