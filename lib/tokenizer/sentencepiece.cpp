// SentencePiece tokenizer: a thin adapter from libsentencepiece to the Tokenizer interface.
#include "tokenizer/sentencepiece.hpp"

#include <sentencepiece_processor.h>

#include <fstream>
#include <sstream>

#include "safetune/error.hpp"
#include "safetune/io/atomic_file.hpp"

namespace safetune::tokenizer {

namespace {

class SpmTokenizer final : public Tokenizer {
 public:
  SpmTokenizer(const std::string& proto, bool add_bos, bool add_eos, const std::string& where)
      : add_bos_(add_bos), add_eos_(add_eos), where_(where) {
    auto st = sp_.LoadFromSerializedProto(proto);
    if (!st.ok())
      throw TokenizerError("cannot load SentencePiece model: " + st.ToString(), where,
                           kTokenizerFormats);
    int n = sp_.GetPieceSize();
    for (int i = 0; i < n; ++i) {
      if (sp_.IsControl(i) || sp_.IsUnknown(i)) {
        AddedToken a;
        a.id = i;
        a.content = sp_.IdToPiece(i);
        a.special = true;
        added_.push_back(a);
      }
    }
    auto opt = [&](int id) -> std::optional<TokenId> {
      return id >= 0 && id < n ? std::optional<TokenId>(id) : std::nullopt;
    };
    bos_ = opt(sp_.bos_id());
    eos_ = opt(sp_.eos_id());
    pad_ = opt(sp_.pad_id());
  }

  std::vector<TokenId> encode(std::string_view text, const EncodeOptions& opt) const override {
    std::vector<TokenId> ids;
    for (const auto& s : encode_spans(text, opt)) ids.push_back(s.id);
    return ids;
  }

  std::vector<TokenSpan> encode_spans(std::string_view input,
                                      const EncodeOptions& opt) const override {
    std::string repaired;
    std::string_view text = input;
    if (size_t ok = utf8_valid_prefix(input); ok != input.size()) {
      if (opt.invalid_utf8 == InvalidUtf8::error)
        throw TokenizerError("invalid UTF-8 at byte " + std::to_string(ok), where_,
                             "fix the input encoding or ask for replacement (U+FFFD)");
      repaired = utf8_repair(input);
      text = repaired;
    }
    std::vector<TokenSpan> out;
    if (opt.add_special && add_bos_ && bos_) out.push_back({*bos_, 0, 0});
    // Special-token strings (<s>, </s>, <unk>) become their ids, as Hugging Face's Llama tokenizer
    // does; the text between them is encoded piece by piece.
    size_t pos = 0;
    while (pos <= text.size()) {
      size_t mb = text.size(), best = 0;
      const AddedToken* hit = nullptr;
      if (opt.parse_special)
        for (size_t i = pos; i < text.size() && !hit; ++i)
          for (const auto& a : added_)
            if (a.content.size() > best && text.compare(i, a.content.size(), a.content) == 0) {
              hit = &a;
              best = a.content.size();
              mb = i;
            }
      if (mb > pos) encode_piece(text, pos, mb, out);
      if (!hit) break;
      out.push_back({hit->id, mb, mb + best});
      pos = mb + best;
    }
    if (opt.add_special && add_eos_ && eos_) out.push_back({*eos_, text.size(), text.size()});
    return out;
  }

  void encode_piece(std::string_view text, size_t b, size_t e, std::vector<TokenSpan>& out) const {
    auto spt = sp_.EncodeAsImmutableProto(absl::string_view(text.data() + b, e - b));
    for (const auto& p : spt.pieces()) {
      size_t pb = b + std::min<size_t>(p.begin(), e - b), pe = b + std::min<size_t>(p.end(), e - b);
      out.push_back({static_cast<TokenId>(p.id()), pb, std::max(pb, pe)});
    }
  }

  std::string token_bytes(TokenId id) const override {
    if (id < 0 || id >= sp_.GetPieceSize() || sp_.IsControl(id)) return {};
    const std::string& piece = sp_.IdToPiece(id);
    if (sp_.IsByte(id)) {  // "<0xAB>"
      unsigned v = 0;
      if (piece.size() == 6 && std::sscanf(piece.c_str(), "<0x%2X>", &v) == 1)
        return std::string(1, static_cast<char>(v));
      return {};
    }
    if (sp_.IsUnknown(id)) return " \xE2\x81\x87 ";  // what libsentencepiece prints for <unk>
    std::string out;
    static const std::string kSpace = "\xE2\x96\x81";  // U+2581, SentencePiece's visible space
    for (size_t i = 0; i < piece.size();) {
      if (piece.compare(i, kSpace.size(), kSpace) == 0) {
        out.push_back(' ');
        i += kSpace.size();
      } else {
        out.push_back(piece[i++]);
      }
    }
    return out;
  }

  // libsentencepiece drops the dummy-prefix space and joins byte pieces itself.
  std::string decode(const std::vector<TokenId>& ids, bool skip_special) const override {
    std::vector<int> keep;
    keep.reserve(ids.size());
    int n = sp_.GetPieceSize();
    for (TokenId id : ids) {
      if (id < 0 || id >= n) continue;
      if (skip_special && is_special(id)) continue;
      keep.push_back(id);
    }
    std::string out;
    auto st = sp_.Decode(keep, &out);
    if (!st.ok()) throw TokenizerError("SentencePiece decode failed: " + st.ToString(), where_);
    return utf8_valid_prefix(out) == out.size() ? out : utf8_repair(out);
  }

  std::optional<TokenId> token_to_id(std::string_view token) const override {
    int id = sp_.PieceToId(absl::string_view(token.data(), token.size()));
    if (id == sp_.unk_id() && token != sp_.IdToPiece(id)) return std::nullopt;
    return id;
  }
  std::string id_to_token(TokenId id) const override {
    return id >= 0 && id < sp_.GetPieceSize() ? sp_.IdToPiece(id) : std::string();
  }
  size_t vocab_size() const override { return static_cast<size_t>(sp_.GetPieceSize()); }
  bool is_special(TokenId id) const override {
    return id >= 0 && id < sp_.GetPieceSize() && (sp_.IsControl(id) || sp_.IsUnknown(id));
  }
  const std::vector<AddedToken>& added_tokens() const override { return added_; }
  std::string kind() const override { return "sentencepiece"; }

 private:
  sentencepiece::SentencePieceProcessor sp_;
  bool add_bos_, add_eos_;
  std::string where_;
  std::vector<AddedToken> added_;
};

}  // namespace

std::unique_ptr<Tokenizer> sentencepiece_from_bytes(const std::string& proto, bool add_bos,
                                                    bool add_eos) {
  return std::make_unique<SpmTokenizer>(proto, add_bos, add_eos, "sentencepiece model");
}

std::unique_ptr<Tokenizer> sentencepiece_from_file(const std::filesystem::path& model, bool add_bos,
                                                   bool add_eos) {
  return std::make_unique<SpmTokenizer>(io::read_file(model), add_bos, add_eos, model.string());
}

}  // namespace safetune::tokenizer
