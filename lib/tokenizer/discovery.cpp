// Where a model's tokenizer files and chat template are, and copying them beside a model copy.
#include "safetune/tokenizer/discovery.hpp"

#include "safetune/error.hpp"
#include "safetune/io/atomic_file.hpp"
#include "safetune/io/gguf.hpp"
#include "safetune/tokenizer/gguf.hpp"

namespace safetune::tokenizer {
namespace fs = std::filesystem;

TokenizerFiles find_tokenizer_files(const fs::path& path) {
  std::error_code ec;
  TokenizerFiles f;
  f.dir = fs::is_directory(path, ec) ? path : path.parent_path();
  auto present = [&](const char* name) {
    return fs::exists(f.dir / name, ec) ? f.dir / name : fs::path();
  };
  f.tokenizer = present("tokenizer.json");
  if (f.tokenizer.empty()) f.tokenizer = present("tokenizer.model");
  f.config = present("tokenizer_config.json");
  return f;
}

std::optional<ChatTemplate> shipped_chat_template(const fs::path& path) {
  if (path.extension() == ".gguf") return chat_template_from_gguf(io::GgufFile(path));
  return chat_template_from_dir(find_tokenizer_files(path).dir);
}

namespace {
// Files a Hugging Face model directory keeps beside its weights that a copy should carry.
constexpr const char* kTokenizerFiles[] = {
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
    "generation_config.json",
};
}  // namespace

std::vector<std::string> save_tokenizer_files(const fs::path& model, const fs::path& out) {
  // A GGUF keeps its tokenizer and chat template in metadata: written out as Hugging Face files.
  if (model.extension() == ".gguf") return save_hf_tokenizer(io::GgufFile(model), out);
  const fs::path dir = fs::is_directory(model) ? model : model.parent_path();
  std::vector<std::string> copied;
  std::error_code ec;
  for (const char* name : kTokenizerFiles) {
    if (!fs::is_regular_file(dir / name, ec)) continue;
    io::atomic_write(out / name, io::read_file(dir / name));
    copied.push_back(name);
  }
  return copied;
}

}  // namespace safetune::tokenizer
