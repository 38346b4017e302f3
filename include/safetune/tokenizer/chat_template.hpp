// Chat templates written out in C++ (ChatML, Llama-3, DeepSeek-R1, Llama-2), with loss spans.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "safetune/tokenizer/tokenizer.hpp"

namespace safetune::tokenizer {

struct ChatMessage {
  std::string role;  // system | user | assistant
  std::string content;
};

// A stretch [begin, end) of the rendered text. `role` is the message it belongs to ("" for
// template text outside any message); `loss` marks what the model must learn to produce: the
// assistant's content and its end-of-turn token.
struct ChatSegment {
  size_t begin, end;
  std::string role;
  bool loss = false;
};

struct RenderedChat {
  std::string text;
  std::vector<ChatSegment> segments;  // in order, covering text without gaps
};

class ChatTemplate {
 public:
  enum class Format { chatml, llama3, deepseek_r1, llama2 };

  // "chatml" (no default system prompt), "qwen2", "smollm2", "llama3", "deepseek-r1", "llama2".
  static ChatTemplate by_name(const std::string& name);
  // Recognizes a Jinja chat_template (tokenizer_config.json / GGUF tokenizer.chat_template) by
  // its distinctive strings; TokenizerError if it is none of the supported formats.
  static ChatTemplate from_jinja(const std::string& jinja);
  // A name if it is one, otherwise the text of a Jinja template.
  static ChatTemplate from_name_or_jinja(const std::string& s);

  std::string render(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const;
  RenderedChat render_segments(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const;

  const std::string& name() const { return name_; }
  Format format() const { return format_; }
  const std::string& default_system() const { return default_system_; }
  // The token text that ends an assistant turn (generation stops there).
  std::string end_of_turn() const;
  std::string bos_text() const;

 private:
  ChatTemplate(Format f, std::string name, std::string default_system = {})
      : format_(f), name_(std::move(name)), default_system_(std::move(default_system)) {}
  Format format_;
  std::string name_;
  std::string default_system_;  // ChatML: inserted when the first message is not a system one
};

// Per token: 1 if the token overlaps a loss segment of `chat` (spans from encode_spans on chat.text).
std::vector<uint8_t> loss_mask(const std::vector<TokenSpan>& tokens, const RenderedChat& chat);

// Python's str.strip() (Jinja's trim): strips Unicode whitespace at both ends.
std::string strip_unicode_space(const std::string& s);

}  // namespace safetune::tokenizer
