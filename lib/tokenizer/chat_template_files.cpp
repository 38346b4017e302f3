// Finding a model's own chat template and special tokens in its Hugging Face files.
#include <nlohmann/json.hpp>

#include "safetune/error.hpp"
#include "safetune/io/atomic_file.hpp"
#include "safetune/tokenizer/chat_template.hpp"

namespace safetune::tokenizer {

namespace fs = std::filesystem;

namespace {
// transformers writes special tokens as plain strings or as AddedToken objects {"content": ...}.
std::optional<std::string> token_text(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string())
    return v["content"].get<std::string>();
  return std::nullopt;
}
}  // namespace

std::optional<ChatTemplate> chat_template_from_dir(const fs::path& dir) {
  std::error_code ec;
  const fs::path config = dir / "tokenizer_config.json", jinja = dir / "chat_template.jinja";
  nlohmann::json cfg = nlohmann::json::object();
  if (fs::exists(config, ec)) {
    cfg = nlohmann::json::parse(io::read_file(config), nullptr, false);
    if (cfg.is_discarded() || !cfg.is_object())
      throw FormatError("malformed JSON (want an object)", config.string());
  }
  TemplateVariables vars;
  for (const char* key : {"bos_token", "eos_token", "unk_token", "pad_token"})
    if (cfg.contains(key))
      if (auto t = token_text(cfg[key])) vars[key] = *t;
  std::optional<std::string> source;
  if (fs::exists(jinja, ec)) {
    source = io::read_file(jinja);
  } else if (cfg.contains("chat_template")) {
    const auto& t = cfg["chat_template"];
    if (t.is_string()) {
      source = t.get<std::string>();
    } else if (t.is_array()) {
      for (const auto& named : t)
        if (named.is_object() && named.value("name", "") == "default" &&
            named.contains("template") && named["template"].is_string())
          source = named["template"].get<std::string>();
      if (!source)
        throw FormatError("chat_template list has no {\"name\": \"default\"} entry",
                          config.string());
    } else if (!t.is_null()) {
      throw FormatError("chat_template is neither a string nor a list of named templates",
                        config.string());
    }
  }
  if (!source) return std::nullopt;
  return ChatTemplate::from_jinja(*source, std::move(vars));
}

}  // namespace safetune::tokenizer
