// SentencePiece (.model) tokenizers through libsentencepiece, byte fallback included.
// Internal to tokenizer/: the public way in is tokenizer::load_tokenizer (tokenizer.hpp).
#pragma once
#include <filesystem>
#include <memory>
#include <string>

#include "safetune/tokenizer/tokenizer.hpp"

namespace safetune::tokenizer {

// add_bos / add_eos: what encode(text, add_special=true) adds (Llama-2 style: bos only).
std::unique_ptr<Tokenizer> sentencepiece_from_file(const std::filesystem::path& model,
                                                   bool add_bos = true, bool add_eos = false);
// From the serialized ModelProto (e.g. bytes held in memory).
std::unique_ptr<Tokenizer> sentencepiece_from_bytes(const std::string& model_proto,
                                                    bool add_bos = true, bool add_eos = false);

}  // namespace safetune::tokenizer
