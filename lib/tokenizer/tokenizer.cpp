// Shared tokenizer pieces: decoding, the streaming decoder and loading by path.
#include "safetune/tokenizer/tokenizer.hpp"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "safetune/error.hpp"
#include "safetune/io/atomic_file.hpp"
#include "safetune/io/gguf.hpp"
#include "safetune/tokenizer/discovery.hpp"
#include "safetune/tokenizer/gguf.hpp"
#include "tokenizer/bpe.hpp"
#include "tokenizer/sentencepiece.hpp"

namespace safetune::tokenizer {

namespace fs = std::filesystem;

std::string Tokenizer::decode(const std::vector<TokenId>& ids, bool skip_special) const {
  std::string bytes;
  for (TokenId id : ids) {
    if (skip_special && is_special(id)) continue;
    bytes += token_bytes(id);
  }
  if (utf8_valid_prefix(bytes) == bytes.size()) return bytes;
  return utf8_repair(bytes);
}

namespace {
// True if s (1..3 bytes) is a proper prefix of some valid UTF-8 sequence.
bool incomplete_sequence(std::string_view s) {
  auto c = static_cast<unsigned char>(s[0]);
  size_t need = (c >= 0xC2 && c <= 0xDF)   ? 2
                : (c >= 0xE0 && c <= 0xEF) ? 3
                : (c >= 0xF0 && c <= 0xF4) ? 4
                                           : 0;
  if (need <= s.size()) return false;
  std::string probe(s);
  while (probe.size() < need) {
    // The smallest continuation byte that the lead byte allows keeps the probe valid if possible.
    unsigned char next = 0x80;
    if (probe.size() == 1 && c == 0xE0) next = 0xA0;
    if (probe.size() == 1 && c == 0xF0) next = 0x90;
    probe.push_back(static_cast<char>(next));
  }
  return utf8_valid_prefix(probe) == probe.size();
}
}  // namespace

std::string StreamDecoder::push(TokenId id) {
  if (skip_special_ && tok_.is_special(id)) return {};
  pending_ += tok_.token_bytes(id);
  if (utf8_valid_prefix(pending_) == pending_.size()) return std::exchange(pending_, {});
  // Hold back a trailing partial character (its remaining bytes may come with the next token).
  size_t hold = 0;
  for (size_t k = 1; k <= 3 && k <= pending_.size(); ++k) {
    auto c = static_cast<unsigned char>(pending_[pending_.size() - k]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: look further back
    if (incomplete_sequence(std::string_view(pending_).substr(pending_.size() - k))) hold = k;
    break;
  }
  std::string head = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  return utf8_valid_prefix(head) == head.size() ? head : utf8_repair(head);
}

std::string decode_whole_characters(const Tokenizer& tok, const std::vector<TokenId>& ids,
                                    bool skip_special) {
  std::string bytes;
  std::vector<size_t> ends;  // byte offset where each token's bytes end
  for (TokenId id : ids) {
    if (!(skip_special && tok.is_special(id))) bytes += tok.token_bytes(id);
    ends.push_back(bytes.size());
  }
  size_t tail = 0;
  for (size_t k = 1; k <= 3 && k <= bytes.size(); ++k) {
    auto c = static_cast<unsigned char>(bytes[bytes.size() - k]);
    if ((c & 0xC0) == 0x80) continue;
    if (incomplete_sequence(std::string_view(bytes).substr(bytes.size() - k))) tail = k;
    break;
  }
  if (tail == 0) return tok.decode(ids, skip_special);
  const size_t cut = bytes.size() - tail;
  size_t keep = ids.size();
  while (keep > 0 && ends[keep - 1] > cut) --keep;
  std::string out =
      tok.decode(std::vector<TokenId>(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(keep)),
                 skip_special);
  // A token holding whole characters before the unfinished one keeps them.
  const size_t from = keep > 0 ? ends[keep - 1] : 0;
  if (from < cut) out += utf8_repair(std::string_view(bytes).substr(from, cut - from));
  return out;
}

std::string StreamDecoder::flush() {
  if (pending_.empty()) return {};
  std::string out = utf8_repair(pending_);
  pending_.clear();
  return out;
}

namespace {
std::optional<std::string> token_name(const nlohmann::json& cfg, const char* key) {
  auto it = cfg.find(key);
  if (it == cfg.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string())
    return (*it)["content"].get<std::string>();
  return std::nullopt;
}
}  // namespace

const char* const kTokenizerFormats =
    "supported: tokenizer.json (byte-level BPE), a SentencePiece tokenizer.model, a .gguf model, "
    "or a directory "
    "holding tokenizer.json or tokenizer.model";

namespace {
// What a file holds, by its first bytes (names lie: a GGUF renamed .bin is still a GGUF).
enum class FileKind { gguf, json, sentencepiece, other };
FileKind sniff(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  char head[4] = {};
  in.read(head, sizeof head);
  const std::string_view h(head, static_cast<size_t>(in.gcount()));
  if (h == "GGUF") return FileKind::gguf;
  if (p.extension() == ".json") return FileKind::json;
  if (p.extension() == ".model") return FileKind::sentencepiece;
  if (auto first = h.find_first_not_of(" \t\r\n"); first != h.npos && h[first] == '{')
    return FileKind::json;
  // A SentencePiece ModelProto starts with field 1 (pieces, length-delimited): tag byte 0x0A.
  if (!h.empty() && h[0] == 0x0A) return FileKind::sentencepiece;
  return FileKind::other;
}
}  // namespace

std::unique_ptr<Tokenizer> load_tokenizer(const fs::path& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw IoError("tokenizer not found", path.string());
  if (!fs::is_directory(path, ec)) {
    switch (sniff(path)) {
      case FileKind::gguf: return tokenizer_from_gguf(io::GgufFile(path));
      case FileKind::other:
        throw TokenizerError("not a tokenizer file safetune reads", path.string(),
                             kTokenizerFormats);
      default: break;
    }
  }
  const auto found = find_tokenizer_files(path);
  fs::path file = path;
  if (fs::is_directory(path, ec)) {
    if (found.tokenizer.empty())
      throw IoError("directory holds neither tokenizer.json nor tokenizer.model", path.string(),
                    kTokenizerFormats);
    file = found.tokenizer;
  }
  const fs::path config = found.config;

  std::unique_ptr<Tokenizer> tok;
  bool add_bos_cfg = true;
  nlohmann::json cfg;
  if (!config.empty()) {
    cfg = nlohmann::json::parse(io::read_file(config), nullptr, false);
    if (cfg.is_discarded() || !cfg.is_object())
      throw FormatError("not a JSON object", config.string());
    if (cfg.contains("add_bos_token") && cfg["add_bos_token"].is_boolean())
      add_bos_cfg = cfg["add_bos_token"].get<bool>();
  }
  if (file.extension() == ".json") {
    tok = bpe_from_file(file);
  } else {
    tok = sentencepiece_from_file(file, add_bos_cfg, false);
  }
  if (!config.empty()) {
    auto set = [&](const char* key, auto setter) {
      if (auto name = token_name(cfg, key)) {
        if (auto id = tok->token_to_id(*name)) (tok.get()->*setter)(*id);
      }
    };
    set("bos_token", &Tokenizer::set_bos_id);
    set("eos_token", &Tokenizer::set_eos_id);
    set("pad_token", &Tokenizer::set_pad_id);
  }
  return tok;
}

}  // namespace safetune::tokenizer
