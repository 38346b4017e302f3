// Tokenizer and chat template from a GGUF file's tokenizer.ggml.* / tokenizer.chat_template metadata.
#pragma once
#include <memory>
#include <optional>

#include "safetune/tokenizer/chat_template.hpp"
#include "safetune/tokenizer/tokenizer.hpp"

namespace safetune::io {
class GgufFile;
}

namespace safetune::tokenizer {

// Byte-level BPE (tokenizer.ggml.model = gpt2). TokenizerError naming the file otherwise.
std::unique_ptr<Tokenizer> tokenizer_from_gguf(const io::GgufFile& file);
// The chat template the file names, when it is one safetune implements.
std::optional<ChatTemplate> chat_template_from_gguf(const io::GgufFile& file);

}  // namespace safetune::tokenizer
