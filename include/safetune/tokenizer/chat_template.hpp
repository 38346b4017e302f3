// Chat templates: the model's own Jinja source (run by an embedded Jinja engine, byte-identical to
// transformers' apply_chat_template) or a named built-in renderer, both with loss spans.
#pragma once
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
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

namespace detail {
class JinjaProgram;
}

// The variables apply_chat_template puts beside `messages`: the tokenizer's special tokens
// (bos_token, eos_token, unk_token, pad_token) as text.
using TemplateVariables = std::map<std::string, std::string>;

class ChatTemplate {
 public:
  enum class Format { chatml, llama3, deepseek_r1, llama2, jinja };

  // A built-in renderer, for models that ship no template: "chatml" (no default system prompt),
  // "qwen2", "smollm2", "llama3", "deepseek-r1", "llama2".
  static ChatTemplate by_name(const std::string& name);
  // The model's own Jinja chat_template (tokenizer_config.json, chat_template.jinja or GGUF
  // tokenizer.chat_template), executed as transformers does. TokenizerError if it does not parse.
  static ChatTemplate from_jinja(const std::string& jinja, TemplateVariables variables = {});
  // A name if it is one, otherwise the text of a Jinja template.
  static ChatTemplate from_name_or_jinja(const std::string& s, TemplateVariables variables = {});

  std::string render(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const;
  // The rendered text cut into segments. For a Jinja template, message i owns the text that
  // rendering messages[0..i] adds to rendering messages[0..i-1]; in an assistant message's text,
  // the loss runs from where its content starts (the engine tracks it) to the end of its turn
  // (trailing whitespace excluded). Templates whose renders are not prefixes of each other (e.g.
  // reasoning dropped from earlier turns) get the content plus the end-of-turn text instead.
  RenderedChat render_segments(const std::vector<ChatMessage>& messages,
                               bool add_generation_prompt) const;

  const std::string& name() const { return name_; }
  Format format() const { return format_; }
  const std::string& default_system() const { return default_system_; }
  // The text that ends an assistant turn (for a Jinja template: what it renders after the
  // content of a one-turn reply, trailing whitespace excluded; empty if that cannot be told).
  std::string end_of_turn() const;
  std::string bos_text() const;
  // The Jinja source ("" for a built-in renderer) and the variables it runs with.
  const std::string& source() const { return source_; }
  const TemplateVariables& variables() const { return variables_; }

 private:
  ChatTemplate(Format f, std::string name, std::string default_system = {})
      : format_(f), name_(std::move(name)), default_system_(std::move(default_system)) {}
  RenderedChat render_jinja(const std::vector<ChatMessage>& messages,
                            bool add_generation_prompt) const;
  std::string render_jinja_text(const std::vector<ChatMessage>& messages,
                                bool add_generation_prompt) const;
  Format format_;
  std::string name_;
  std::string default_system_;  // ChatML: inserted when the first message is not a system one
  std::string source_;
  std::shared_ptr<const detail::JinjaProgram> program_;
  TemplateVariables variables_;
  std::string end_of_turn_;  // Jinja: found once by rendering a one-turn reply
};

// The chat template a Hugging Face model directory ships: chat_template.jinja (transformers v5)
// or tokenizer_config.json's chat_template (a string, or a list of {name, template} of which
// "default" is taken), with the special tokens tokenizer_config.json names (strings or
// AddedToken objects). nullopt if the directory ships none; FormatError on malformed files.
std::optional<ChatTemplate> chat_template_from_dir(const std::filesystem::path& dir);

// Per token: 1 if the token overlaps a loss segment of `chat` (spans from encode_spans on
// chat.text).
std::vector<uint8_t> loss_mask(const std::vector<TokenSpan>& tokens, const RenderedChat& chat);

// Python's str.strip() (Jinja's trim): strips Unicode whitespace at both ends.
std::string strip_unicode_space(const std::string& s);

}  // namespace safetune::tokenizer
