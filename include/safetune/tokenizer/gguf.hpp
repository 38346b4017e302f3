// Tokenizer and chat template from a GGUF file's tokenizer.ggml.* / tokenizer.chat_template
// metadata.
#pragma once
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "safetune/tokenizer/chat_template.hpp"
#include "safetune/tokenizer/tokenizer.hpp"

namespace safetune::io {
class GgufFile;
}

namespace safetune::tokenizer {

// Byte-level BPE (tokenizer.ggml.model = gpt2). TokenizerError naming the file otherwise.
std::unique_ptr<Tokenizer> tokenizer_from_gguf(const io::GgufFile& file);
// Writes the file's tokenizer as Hugging Face files into `dir` (tokenizer.json, and
// tokenizer_config.json with the special token names and the GGUF's chat template), so that a
// directory made from a GGUF model loads in transformers and in safetune. Returns the names
// written.
std::vector<std::string> save_hf_tokenizer(const io::GgufFile& file,
                                           const std::filesystem::path& dir);
// The file's own chat template (tokenizer.chat_template), run as Jinja with the file's special
// tokens; nullopt if it holds none.
std::optional<ChatTemplate> chat_template_from_gguf(const io::GgufFile& file);

}  // namespace safetune::tokenizer
