// Internal: runs a Jinja chat template with llama.cpp's engine (the only file that sees it).
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "safetune/tokenizer/chat_template.hpp"

namespace safetune::tokenizer::detail {

// A stretch of rendered text; `marked` when it came from the content of an assistant message
// (the engine tracks where every output character came from: llama.cpp's "input marking").
struct JinjaPart {
  std::string text;
  bool marked = false;
};

class JinjaProgram {
 public:
  // Parses once; TokenizerError naming the position on a syntax error.
  explicit JinjaProgram(const std::string& source);
  // What apply_chat_template renders: `messages`, `add_generation_prompt` and `variables` (the
  // tokenizer's special tokens: bos_token, eos_token, ...) in the template's context. The
  // template's raise_exception and runtime errors become TokenizerError.
  std::vector<JinjaPart> render(const std::vector<ChatMessage>& messages,
                                bool add_generation_prompt,
                                const std::map<std::string, std::string>& variables) const;

 private:
  struct Impl;
  std::shared_ptr<const Impl> impl_;
};

}  // namespace safetune::tokenizer::detail
