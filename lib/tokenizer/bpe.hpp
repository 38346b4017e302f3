// Byte-level BPE (GPT-2 family: GPT-2, Llama-3, Qwen2, SmolLM2, DeepSeek) from tokenizer.json or a
// spec. Internal to tokenizer/: the public way in is tokenizer::load_tokenizer (tokenizer.hpp).
#pragma once
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "safetune/tokenizer/tokenizer.hpp"

namespace safetune::io {
class GgufFile;
}

namespace safetune::tokenizer {

// One pre-tokenizer step, applied in order to every piece the previous step produced.
struct PreTokenizerStep {
  enum class Kind {
    split_regex,       // keep matches and the gaps between them as separate pieces ("Isolated")
    digits,            // every digit its own piece (individual_digits) or runs of digits
    byte_level_regex,  // ByteLevel(use_regex=true): the GPT-2 split
  };
  Kind kind = Kind::split_regex;
  std::string pattern;            // split_regex only (PCRE2 syntax)
  bool individual_digits = true;  // digits only
};

// What a GGUF file (tokenizer.ggml.*) says about a gpt2-style tokenizer. Token strings are in the
// GPT-2 byte-to-unicode form, as in tokenizer.json.
struct BpeSpec {
  std::vector<std::string> tokens;
  std::vector<int32_t>
      token_types;  // GGUF: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte
  std::vector<std::string> merges;  // "a b"
  std::string pre = "default";      // tokenizer.ggml.pre
  int64_t bos_id = -1, eos_id = -1, pad_id = -1;
  bool add_bos = false, add_eos = false;
  bool ignore_merges = false;  // unset in GGUF; llama-bpe turns it on as Llama-3 does
};

// The pre-tokenizer steps a GGUF `tokenizer.ggml.pre` value stands for; TokenizerError if unknown.
std::vector<PreTokenizerStep> pretokenizer_for(const std::string& pre);

// The regexes the supported families split with (exposed for tests and the benchmark).
namespace regex {
extern const char* const gpt2;
extern const char* const llama3;
extern const char* const qwen2;
extern const char* const deepseek_v3[3];
extern const char* const deepseek_llm[6];
}  // namespace regex

std::unique_ptr<Tokenizer> bpe_from_tokenizer_json(const std::string& json_text,
                                                   const std::string& where = "tokenizer.json");
std::unique_ptr<Tokenizer> bpe_from_file(const std::filesystem::path& tokenizer_json);
std::unique_ptr<Tokenizer> bpe_from_spec(const BpeSpec& spec);
// The spec as a Hugging Face tokenizer.json (BPE model, its pre-tokenizer steps, the bos/eos
// post-processor, control and user-defined tokens as added tokens): tokenizers and safetune read
// it back with the ids bpe_from_spec gives.
std::string tokenizer_json_from_spec(const BpeSpec& spec);

// GPT-2's reversible byte <-> printable-unicode mapping (as UTF-8 strings).
const std::string& byte_to_unicode(uint8_t b);
// Maps a vocabulary string back to bytes; false if it holds a character outside the mapping.
bool unicode_to_bytes(std::string_view token, std::string& out);

// The tokenizer.ggml.* metadata of a byte-level BPE (tokenizer.ggml.model = gpt2) file;
// TokenizerError naming the file for any other tokenizer model.
BpeSpec bpe_spec_from_gguf(const io::GgufFile& file);

}  // namespace safetune::tokenizer
