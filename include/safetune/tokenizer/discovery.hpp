// Finding a model's tokenizer files and chat template on disk, as transformers lays them out
// beside the weights (or inside a GGUF's metadata); one place that knows the file names.
#pragma once
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "safetune/tokenizer/chat_template.hpp"

namespace safetune::tokenizer {

// The Hugging Face tokenizer files in `path` (a directory) or beside it (a file); empty paths for
// the files that are not there.
struct TokenizerFiles {
  std::filesystem::path dir;
  std::filesystem::path tokenizer;  // tokenizer.json, else tokenizer.model
  std::filesystem::path config;     // tokenizer_config.json (special token names, chat_template)
};
TokenizerFiles find_tokenizer_files(const std::filesystem::path& path);

// The chat template a model or tokenizer ships: a GGUF's tokenizer.chat_template, else what
// chat_template_from_dir finds in the folder (chat_template.jinja, else tokenizer_config.json's
// chat_template); nullopt when it ships none. FormatError naming the file on malformed JSON.
std::optional<ChatTemplate> shipped_chat_template(const std::filesystem::path& path);

// Writes the tokenizer files a copy of the model needs into `out`: a GGUF's tokenizer as Hugging
// Face files, or the tokenizer, template and generation files beside a Hugging Face model copied.
// Returns the names written.
std::vector<std::string> save_tokenizer_files(const std::filesystem::path& model,
                                              const std::filesystem::path& out);

}  // namespace safetune::tokenizer
