// `safetune tokenize`: text lines (or chat JSONL) to token ids, or ids back to text.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "commands.hpp"
#include "safetune/data/messages.hpp"
#include "safetune/error.hpp"
#include "safetune/io/atomic_file.hpp"
#include "safetune/tokenizer/chat_template.hpp"
#include "safetune/tokenizer/discovery.hpp"
#include "safetune/tokenizer/tokenizer.hpp"

namespace safetune::cli {

namespace {
struct TokenizeArgs {
  std::string tokenizer, chat, input;
  bool decode = false, no_special = false, generation_prompt = false, show_mask = false,
       replace_invalid = false;
};

int run_tokenize(const TokenizeArgs& a) {
  auto tok = tokenizer::load_tokenizer(a.tokenizer);
  std::optional<tokenizer::ChatTemplate> tmpl;
  if (a.chat == "auto") {
    // The template the tokenizer ships: the GGUF's own, or chat_template.jinja /
    // tokenizer_config.json beside it.
    tmpl = tokenizer::shipped_chat_template(a.tokenizer);
    if (!tmpl)
      throw UsageError("--chat auto: no chat template ships with the tokenizer", a.tokenizer,
                       "put tokenizer_config.json (with chat_template) or chat_template.jinja "
                       "beside it, or name one");
  } else if (!a.chat.empty()) {
    std::error_code ec;
    if (std::filesystem::is_regular_file(a.chat, ec))
      tmpl = tokenizer::ChatTemplate::from_jinja(io::read_file(a.chat));
    else tmpl = tokenizer::ChatTemplate::from_name_or_jinja(a.chat);
  }
  std::ifstream file;
  std::istream* in = &std::cin;
  std::string source = "<stdin>";
  if (!a.input.empty() && a.input != "-") {
    file.open(a.input, std::ios::binary);
    if (!file) throw IoError("cannot open input", a.input);
    in = &file;
    source = a.input;
  }
  tokenizer::EncodeOptions opt;
  opt.add_special = !a.no_special;
  opt.invalid_utf8 =
      a.replace_invalid ? tokenizer::InvalidUtf8::replace : tokenizer::InvalidUtf8::error;
  std::string line, out;
  size_t lineno = 0;
  while (std::getline(*in, line)) {
    ++lineno;
    std::string where = source + ":" + std::to_string(lineno);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    out.clear();
    try {
      if (a.decode) {
        std::vector<tokenizer::TokenId> ids;
        std::istringstream ss(line);
        std::string word;
        while (ss >> word) {
          size_t used = 0;
          long long v = -1;
          try {
            v = std::stoll(word, &used);
          } catch (const std::exception&) {
            used = 0;
          }
          if (used != word.size() || v < 0 || static_cast<size_t>(v) >= tok->vocab_size())
            throw DataError("not a token id: '" + word + "'", where);
          ids.push_back(static_cast<tokenizer::TokenId>(v));
        }
        out = tok->decode(ids, a.no_special);
      } else if (tmpl) {
        auto chat =
            tmpl->render_segments(data::parse_messages_line(line, where), a.generation_prompt);
        // The rendered text already holds bos where the template wants it.
        tokenizer::EncodeOptions copt = opt;
        copt.add_special = false;
        auto spans = tok->encode_spans(chat.text, copt);
        auto mask = tokenizer::loss_mask(spans, chat);
        for (size_t i = 0; i < spans.size(); ++i) {
          if (i) out += ' ';
          out += std::to_string(spans[i].id);
        }
        if (a.show_mask) {
          out += '\t';
          for (auto m : mask) out += m ? '1' : '0';
        }
      } else {
        auto ids = tok->encode(line, opt);
        for (size_t i = 0; i < ids.size(); ++i) {
          if (i) out += ' ';
          out += std::to_string(ids[i]);
        }
      }
    } catch (const DataError&) {
      throw;
    } catch (const TokenizerError& e) {
      throw DataError(e.what_only(), where,
                      e.hint());  // point at the input line, not the tokenizer
    }
    out += '\n';
    std::fwrite(out.data(), 1, out.size(), stdout);
  }
  return 0;
}
}  // namespace

void register_tokenize_commands(CLI::App& app, Action& action) {
  auto args = std::make_shared<TokenizeArgs>();
  auto* cmd = app.add_subcommand(
      "tokenize", "text lines (or chat JSONL with --chat) to token ids; --decode reverses");
  cmd->add_option("--tokenizer", args->tokenizer,
                  "tokenizer.json, a SentencePiece .model, a .gguf model, or a directory holding "
                  "either file")
      ->required();
  cmd->add_option("--chat", args->chat,
                  "chat template: chatml, qwen2, smollm2, llama3, deepseek-r1, llama2, a Jinja "
                  "template file, or auto "
                  "(the GGUF's own, or tokenizer_config.json beside the tokenizer); "
                  "input lines are then JSON with 'messages'");
  cmd->add_flag("--decode", args->decode, "read lines of ids, print text");
  cmd->add_flag("--no-special", args->no_special,
                "no bos/eos when encoding; skip special tokens when decoding");
  cmd->add_flag("--generation-prompt", args->generation_prompt,
                "with --chat: end with the assistant prompt");
  cmd->add_flag("--mask", args->show_mask,
                "with --chat: append a tab and the loss mask (1 = trained token)");
  cmd->add_flag("--replace-invalid", args->replace_invalid,
                "replace invalid UTF-8 by U+FFFD instead of failing");
  cmd->add_option("input", args->input, "input file (default: stdin)");
  cmd->callback([&action, args] {
    if (args->decode && !args->chat.empty())
      throw CLI::ValidationError("--decode and --chat exclude each other");
    action = [args] { return run_tokenize(*args); };
  });
}

}  // namespace safetune::cli
