// The tokenizer interface shared by byte-level BPE and SentencePiece, plus a streaming decoder.
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace safetune::tokenizer {

using TokenId = int32_t;

// What to do with input bytes that are not valid UTF-8.
enum class InvalidUtf8 { error, replace };

struct EncodeOptions {
  bool add_special = true;    // bos/eos as the tokenizer's post-processor says
  bool parse_special = true;  // special-token strings inside the text become their ids (HF default)
  InvalidUtf8 invalid_utf8 = InvalidUtf8::error;
};

// One token and the bytes [begin, end) of the (possibly repaired) input it came from. Tokens the
// post-processor adds (bos/eos) have begin == end.
struct TokenSpan {
  TokenId id;
  size_t begin, end;
};

struct AddedToken {
  TokenId id = -1;
  std::string content;
  bool special = false;
  bool lstrip = false, rstrip = false, single_word = false, normalized = false;
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  virtual std::vector<TokenId> encode(std::string_view text, const EncodeOptions& opt) const = 0;
  std::vector<TokenId> encode(std::string_view text, bool add_special = true) const {
    EncodeOptions opt;
    opt.add_special = add_special;
    return encode(text, opt);
  }
  // Same ids as encode(), each with the input bytes it covers (used to mask loss by character
  // span).
  virtual std::vector<TokenSpan> encode_spans(std::string_view text,
                                              const EncodeOptions& opt) const = 0;

  // The bytes a token stands for (special tokens: their text). Empty for unknown ids.
  virtual std::string token_bytes(TokenId id) const = 0;
  // Joins token bytes; invalid UTF-8 in the result becomes U+FFFD (as Hugging Face does).
  virtual std::string decode(const std::vector<TokenId>& ids, bool skip_special = false) const;

  virtual std::optional<TokenId> token_to_id(std::string_view token) const = 0;  // vocabulary form
  virtual std::string id_to_token(TokenId id) const = 0;                         // vocabulary form
  virtual size_t vocab_size() const = 0;
  virtual bool is_special(TokenId id) const = 0;
  virtual const std::vector<AddedToken>& added_tokens() const = 0;

  std::optional<TokenId> bos_id() const { return bos_; }
  std::optional<TokenId> eos_id() const { return eos_; }
  std::optional<TokenId> pad_id() const { return pad_; }
  void set_bos_id(std::optional<TokenId> id) { bos_ = id; }
  void set_eos_id(std::optional<TokenId> id) { eos_ = id; }
  void set_pad_id(std::optional<TokenId> id) { pad_ = id; }
  // Lines up with the tokenizer's own name for logs ("bpe", "sentencepiece").
  virtual std::string kind() const = 0;

 protected:
  std::optional<TokenId> bos_, eos_, pad_;
};

// Feeds ids one at a time and returns only complete UTF-8 characters; an incomplete tail is held
// back until the bytes that finish it arrive (or flush() gives it up as U+FFFD).
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tok, bool skip_special = false)
      : tok_(tok), skip_special_(skip_special) {}
  std::string push(TokenId id);
  std::string flush();

 private:
  const Tokenizer& tok_;
  bool skip_special_;
  std::string pending_;
};

// decode() for text whose end may have been cut mid-character (generation stopped by
// max_new_tokens inside a multi-byte UTF-8 sequence, as byte-level BPE splits Chinese characters):
// the bytes of an unfinished last character are dropped instead of becoming U+FFFD. Invalid bytes
// elsewhere are still replaced, as decode() does.
std::string decode_whole_characters(const Tokenizer& tok, const std::vector<TokenId>& ids,
                                    bool skip_special = false);

// Loads tokenizer.json (byte-level BPE), a SentencePiece .model, a GGUF model's tokenizer, or a
// directory holding tokenizer.json / tokenizer.model (tokenizer_config.json beside it supplies
// bos/eos/pad names). TokenizerError / IoError, with kTokenizerFormats as the hint, otherwise.
std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& path);
extern const char* const kTokenizerFormats;  // the formats load_tokenizer reads, in words

// UTF-8 helpers shared by the tokenizers and the data pipeline.
// Length of the longest valid UTF-8 prefix of s.
size_t utf8_valid_prefix(std::string_view s);
// Replaces every maximal invalid subsequence by U+FFFD (the WHATWG / Python "replace" rule).
std::string utf8_repair(std::string_view s);
// Throws TokenizerError naming the byte offset of the first invalid sequence.
void utf8_check(std::string_view s, const std::string& where = {});

}  // namespace safetune::tokenizer
