// Byte-level BPE: added-token split, NFC, PCRE2 pre-tokenizers, ranked merges with a word cache.
#include "tokenizer/bpe.hpp"

#include <unicode/normalizer2.h>
#include <unicode/unistr.h>

#include <array>
#include <bit>
#include <cstdio>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <queue>
#include <sstream>
#include <unordered_map>

#include "safetune/error.hpp"
#include "safetune/io/atomic_file.hpp"
#include "tokenizer/pcre_regex.hpp"

namespace safetune::tokenizer {

namespace regex {
const char* const gpt2 =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
const char* const llama3 =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* const qwen2 =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* const deepseek_v3[3] = {
    R"(\p{N}{1,3})",
    R"([一-龥぀-ゟ゠-ヿ]+)",
    R"([!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)",
};
const char* const deepseek_llm[6] = {
    R"([\r\n])",
    R"(\s?[A-Za-z\x{B5}\x{C0}-\x{D6}\x{D8}-\x{F6}\x{F8}-\x{1BA}\x{1BC}-\x{1BF}\x{1C4}-\x{293}\x{295}-\x{2AF}\x{370}-\x{373}\x{376}\x{377}\x{37B}-\x{37D}\x{37F}\x{386}\x{388}-\x{38A}\x{38C}\x{38E}-\x{3A1}\x{3A3}-\x{3F5}\x{3F7}-\x{481}\x{48A}-\x{52F}\x{531}-\x{556}\x{10A0}-\x{10C5}\x{13A0}-\x{13F5}\x{13F8}-\x{13FD}\x{1C90}-\x{1CBA}\x{1CBD}-\x{1CBF}\x{1D00}-\x{1D2B}\x{1D6B}-\x{1D77}\x{1D79}-\x{1D9A}\x{1E00}-\x{1F15}\x{1F18}-\x{1F1D}\x{1F20}-\x{1F45}\x{1F48}-\x{1F4D}\x{1F50}-\x{1F57}\x{1F59}\x{1F5B}\x{1F5D}\x{1F5F}-\x{1F7D}\x{1F80}-\x{1FB4}\x{1FB6}-\x{1FBC}\x{1FBE}\x{1FC2}-\x{1FC4}\x{1FC6}-\x{1FCC}\x{1FD0}-\x{1FD3}\x{1FD6}-\x{1FDB}\x{1FE0}-\x{1FEC}\x{1FF2}-\x{1FF4}\x{1FF6}-\x{1FFC}\x{2102}\x{2107}\x{210A}-\x{2113}\x{2115}\x{2119}-\x{211D}\x{2124}\x{2126}\x{2128}\x{212A}-\x{212D}\x{212F}-\x{2134}\x{2139}\x{213C}-\x{213F}\x{2145}-\x{2149}\x{214E}\x{2183}\x{2184}\x{2C00}-\x{2C7B}\x{2C7E}-\x{2CE4}\x{2CEB}-\x{2CEE}\x{2CF2}\x{2CF3}\x{A640}-\x{A66D}\x{A680}-\x{A69B}\x{A722}-\x{A76F}\x{A771}-\x{A787}\x{A78B}-\x{A78E}\x{AB70}-\x{ABBF}\x{FB00}-\x{FB06}\x{FB13}-\x{FB17}\x{FF21}-\x{FF3A}\x{FF41}-\x{FF5A}\x{10400}-\x{1044F}\x{104B0}-\x{104D3}\x{104D8}-\x{104FB}\x{10C80}-\x{10CB2}\x{10CC0}-\x{10CF2}\x{118A0}-\x{118DF}\x{1E900}-\x{1E943}]+)",
    R"(\s?[!-/:-~！-／：-～‘-‟　-。]+)",
    R"(\s+$)",
    R"([一-龥ࠀ-一가-퟿]+)",
    R"(\p{N}+)",
};
}  // namespace regex

// ---- GPT-2 byte <-> unicode ------------------------------------------------------------------

namespace {
std::string encode_utf8(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    s.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    s.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    s.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    s.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    s.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
  return s;
}

struct ByteMap {
  std::array<std::string, 256> to_unicode;
  std::array<int16_t, 512> from_codepoint;  // codepoints used are all below 0x144
  ByteMap() {
    from_codepoint.fill(-1);
    // Printable Latin-1 bytes stand for themselves; the rest are shifted to 256 + n so that every
    // byte has a visible, non-space character (GPT-2's bytes_to_unicode).
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      bool printable =
          (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      uint32_t cp = printable ? static_cast<uint32_t>(b) : static_cast<uint32_t>(256 + n++);
      to_unicode[b] = encode_utf8(cp);
      from_codepoint[cp] = static_cast<int16_t>(b);
    }
  }
};
const ByteMap& byte_map() {
  static const ByteMap m;
  return m;
}

// Decodes one UTF-8 character at s[i] (input known valid); returns its codepoint, advances i.
uint32_t next_codepoint(std::string_view s, size_t& i) {
  auto c = static_cast<unsigned char>(s[i]);
  int len = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
  if (i + len > s.size()) {
    i = s.size();
    return 0xFFFFFFFF;
  }
  uint32_t cp = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
  for (int k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  i += len;
  return cp;
}
}  // namespace

const std::string& byte_to_unicode(uint8_t b) { return byte_map().to_unicode[b]; }

bool unicode_to_bytes(std::string_view token, std::string& out) {
  out.clear();
  if (utf8_valid_prefix(token) != token.size()) return false;
  const auto& m = byte_map();
  size_t i = 0;
  while (i < token.size()) {
    uint32_t cp = next_codepoint(token, i);
    if (cp >= m.from_codepoint.size() || m.from_codepoint[cp] < 0) return false;
    out.push_back(static_cast<char>(m.from_codepoint[cp]));
  }
  return true;
}

namespace {

struct Piece {
  uint32_t begin, end;
};

// A compiled pre-tokenizer step.
struct Step {
  std::unique_ptr<Regex> re;
};

// ---- hashing helpers ----------------------------------------------------------------------------
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const noexcept {
    // FNV-1a: short keys, no allocation.
    uint64_t h = 1469598103934665603ULL;
    for (unsigned char c : s) h = (h ^ c) * 1099511628211ULL;
    return static_cast<size_t>(h ^ (h >> 29));
  }
};
using StringMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

struct MergeInfo {
  int32_t rank, merged;
};

// Open-addressing map (id pair -> merge) with linear probing: the hot lookup of BPE, where
// std::unordered_map's node chasing dominated the profile.
class MergeTable {
 public:
  void reserve(size_t n) { rehash(std::max<size_t>(16, std::bit_ceil(n * 2 + 1))); }
  // Keeps the first insertion of a key (the lowest rank).
  void insert(uint64_t key, MergeInfo v) {
    if ((size_ + 1) * 2 > slots_.size()) rehash(std::max<size_t>(16, slots_.size() * 2));
    size_t i = index(key);
    while (slots_[i].used) {
      if (slots_[i].key == key) return;
      i = (i + 1) & mask_;
    }
    slots_[i] = {key, v, true};
    ++size_;
  }
  const MergeInfo* find(uint64_t key) const {
    if (slots_.empty()) return nullptr;
    size_t i = index(key);
    while (slots_[i].used) {
      if (slots_[i].key == key) return &slots_[i].value;
      i = (i + 1) & mask_;
    }
    return nullptr;
  }

 private:
  struct Slot {
    uint64_t key = 0;
    MergeInfo value{};
    bool used = false;
  };
  size_t index(uint64_t k) const {
    return static_cast<size_t>((k * 0x9E3779B97F4A7C15ULL) >> 20) & mask_;
  }
  void rehash(size_t cap) {
    std::vector<Slot> old;
    old.swap(slots_);
    slots_.assign(cap, Slot{});
    mask_ = cap - 1;
    size_ = 0;
    for (const Slot& s : old)
      if (s.used) insert(s.key, s.value);
  }
  std::vector<Slot> slots_;
  size_t mask_ = 0, size_ = 0;
};

bool is_ws(unsigned char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

}  // namespace

// ---- the tokenizer ---------------------------------------------------------------------------

namespace {

class BpeTokenizer final : public Tokenizer {
 public:
  // Filled by the loaders.
  std::vector<std::string> vocab_forms_;  // id -> vocabulary string (GPT-2 unicode form)
  std::vector<std::string> id_bytes_;     // id -> bytes it decodes to
  StringMap bytes_to_id_;                 // bytes -> id (normal vocabulary)
  MergeTable merges_;
  std::array<int32_t, 256> byte_ids_{};
  std::vector<AddedToken> added_;
  StringMap added_by_content_;
  std::vector<uint8_t> special_flags_;  // id -> special added token
  std::vector<std::unique_ptr<Regex>> steps_;
  bool nfc_ = false;
  bool ignore_merges_ = false;
  std::vector<TokenId> prefix_ids_, suffix_ids_;  // post-processor, single sequence
  std::string where_;

  // Added-token matching: candidates by first byte, longest first.
  std::array<std::vector<int32_t>, 256> added_by_first_;

  void finish() {
    byte_ids_.fill(-1);
    for (int b = 0; b < 256; ++b) {
      auto it = bytes_to_id_.find(std::string_view(reinterpret_cast<const char*>(&b), 1));
      byte_ids_[b] = it == bytes_to_id_.end() ? -1 : it->second;
    }
    for (auto& v : added_by_first_) v.clear();
    for (size_t i = 0; i < added_.size(); ++i) {
      if (added_[i].content.empty()) continue;
      added_by_first_[static_cast<unsigned char>(added_[i].content[0])].push_back(
          static_cast<int32_t>(i));
      added_by_content_[added_[i].content] = added_[i].id;
    }
    for (auto& v : added_by_first_)
      std::stable_sort(v.begin(), v.end(), [&](int32_t a, int32_t b) {
        return added_[a].content.size() > added_[b].content.size();
      });
    size_t n = std::max(vocab_forms_.size(), id_bytes_.size());
    for (auto& a : added_) n = std::max(n, static_cast<size_t>(a.id) + 1);
    vocab_forms_.resize(n);
    id_bytes_.resize(n);
    special_flags_.assign(n, 0);
    for (auto& a : added_) {
      special_flags_[a.id] = a.special;
      id_bytes_[a.id] = a.content;
      if (vocab_forms_[a.id].empty()) vocab_forms_[a.id] = a.content;
    }
  }

  void set_id(int32_t id, const std::string& form) {
    if (id < 0 || id > 50'000'000)
      throw TokenizerError("token id out of range: " + std::to_string(id), where_);
    if (static_cast<size_t>(id) >= vocab_forms_.size()) {
      vocab_forms_.resize(id + 1);
      id_bytes_.resize(id + 1);
    }
    vocab_forms_[id] = form;
    std::string bytes;
    // A form outside the byte alphabet decodes to its own UTF-8 (as HF's ByteLevel decoder does).
    if (!unicode_to_bytes(form, bytes)) bytes = form;
    id_bytes_[id] = bytes;
    bytes_to_id_.emplace(std::move(bytes), id);
  }

  void add_merge(std::string_view left, std::string_view right, int32_t rank) {
    auto id_of = [&](std::string_view form) -> int32_t {
      std::string bytes;
      if (!unicode_to_bytes(form, bytes)) bytes = std::string(form);
      auto it = bytes_to_id_.find(bytes);
      return it == bytes_to_id_.end() ? -1 : it->second;
    };
    int32_t a = id_of(left), b = id_of(right);
    std::string joined = std::string(left) + std::string(right);
    int32_t m = id_of(joined);
    // HF refuses merges whose parts or result are missing from the vocabulary.
    if (a < 0 || b < 0 || m < 0)
      throw TokenizerError("merge '" + std::string(left) + " " + std::string(right) +
                               "' uses tokens missing from the vocabulary",
                           where_);
    uint64_t key =
        (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
    merges_.insert(key, MergeInfo{rank, m});  // first (lowest) rank wins on duplicates
  }

  // ---- Tokenizer interface --------------------------------------------------------------------
  std::vector<TokenId> encode(std::string_view text, const EncodeOptions& opt) const override {
    std::vector<TokenId> ids;
    run(text, opt, ids, nullptr);
    return ids;
  }
  std::vector<TokenSpan> encode_spans(std::string_view text,
                                      const EncodeOptions& opt) const override {
    std::vector<TokenId> ids;
    std::vector<TokenSpan> spans;
    run(text, opt, ids, &spans);
    return spans;
  }
  std::string token_bytes(TokenId id) const override {
    if (id < 0 || static_cast<size_t>(id) >= id_bytes_.size()) return {};
    return id_bytes_[id];
  }
  std::optional<TokenId> token_to_id(std::string_view token) const override {
    if (auto it = added_by_content_.find(token); it != added_by_content_.end()) return it->second;
    std::string bytes;
    if (!unicode_to_bytes(token, bytes)) bytes = std::string(token);
    if (auto it = bytes_to_id_.find(bytes); it != bytes_to_id_.end()) return it->second;
    return std::nullopt;
  }
  std::string id_to_token(TokenId id) const override {
    if (id < 0 || static_cast<size_t>(id) >= vocab_forms_.size()) return {};
    return vocab_forms_[id];
  }
  size_t vocab_size() const override { return vocab_forms_.size(); }
  bool is_special(TokenId id) const override {
    return id >= 0 && static_cast<size_t>(id) < special_flags_.size() && special_flags_[id];
  }
  const std::vector<AddedToken>& added_tokens() const override { return added_; }
  std::string kind() const override { return "bpe"; }

 private:
  // ---- encoding ---------------------------------------------------------------------------------
  void run(std::string_view input, const EncodeOptions& opt, std::vector<TokenId>& ids,
           std::vector<TokenSpan>* spans) const {
    std::string repaired;
    std::string_view text = input;
    size_t ok = utf8_valid_prefix(input);
    if (ok != input.size()) {
      if (opt.invalid_utf8 == InvalidUtf8::error)
        throw TokenizerError("invalid UTF-8 at byte " + std::to_string(ok), where_,
                             "fix the input encoding or ask for replacement (U+FFFD)");
      repaired = utf8_repair(input);
      text = repaired;
    }
    if (text.size() > 0xFFFFFFF0u)
      throw TokenizerError("text too long to encode (over 4 GiB)", where_);
    auto emit = [&](TokenId id, size_t b, size_t e) {
      ids.push_back(id);
      if (spans) spans->push_back({id, b, e});
    };
    if (opt.add_special)
      for (TokenId id : prefix_ids_) emit(id, 0, 0);

    size_t pos = 0;
    while (pos < text.size()) {
      size_t mb = text.size(), me = text.size();
      int32_t tok = find_added(text, pos, opt.parse_special, mb, me);
      if (mb > pos) encode_text(text, pos, mb, ids, spans);
      if (tok < 0) break;
      emit(tok, mb, me);
      pos = me;
    }
    if (opt.add_special)
      for (TokenId id : suffix_ids_) emit(id, text.size(), text.size());
  }

  // Leftmost-longest added token at or after `from`; returns its id and the span it covers
  // (lstrip/rstrip widen it over whitespace), or -1.
  int32_t find_added(std::string_view text, size_t from, bool parse_special, size_t& mb,
                     size_t& me) const {
    if (added_.empty()) return -1;
    for (size_t i = from; i < text.size(); ++i) {
      const auto& cands = added_by_first_[static_cast<unsigned char>(text[i])];
      if (cands.empty()) continue;
      for (int32_t ci : cands) {
        const AddedToken& a = added_[ci];
        if (!parse_special && a.special) continue;
        if (text.compare(i, a.content.size(), a.content) != 0) continue;
        size_t b = i, e = i + a.content.size();
        if (a.single_word) {
          auto word = [](unsigned char c) { return c >= 0x80 || std::isalnum(c) || c == '_'; };
          if ((b > 0 && word(text[b - 1])) || (e < text.size() && word(text[e]))) continue;
        }
        if (a.lstrip)
          while (b > from && is_ws(text[b - 1])) --b;
        if (a.rstrip)
          while (e < text.size() && is_ws(text[e])) ++e;
        mb = b;
        me = e;
        return a.id;
      }
    }
    return -1;
  }

  // Normalizes, pre-tokenizes and BPE-encodes text[b, e).
  void encode_text(std::string_view text, size_t b, size_t e, std::vector<TokenId>& ids,
                   std::vector<TokenSpan>* spans) const {
    std::string_view seg = text.substr(b, e - b);
    std::string normalized;
    bool exact_offsets = true;
    if (nfc_ && needs_nfc(seg)) {
      normalized = nfc(seg);
      if (normalized != seg) {
        seg = normalized;
        exact_offsets = false;
      }
    }
    thread_local std::vector<Piece> cur, next;
    cur.clear();
    cur.push_back({0, static_cast<uint32_t>(seg.size())});
    for (const auto& re : steps_) {
      next.clear();
      for (const Piece& p : cur) split(*re, seg, p, next);
      cur.swap(next);
    }
    thread_local std::vector<std::pair<TokenId, uint32_t>> word;  // id, byte length
    for (const Piece& p : cur) {
      word.clear();
      bpe(seg.substr(p.begin, p.end - p.begin), word);
      size_t off = p.begin;
      for (auto [id, len] : word) {
        ids.push_back(id);
        if (spans) {
          if (exact_offsets) spans->push_back({id, b + off, b + off + len});
          else spans->push_back({id, b, e});  // NFC changed the bytes: the segment is the best span
        }
        off += len;
      }
    }
  }

  static bool needs_nfc(std::string_view s) {
    // Everything below U+0300 is NFC-stable and never composes with what precedes it.
    for (unsigned char c : s)
      if (c >= 0xCC) return true;
    return false;
  }
  static std::string nfc(std::string_view s) {
    UErrorCode err = U_ZERO_ERROR;
    const icu::Normalizer2* n = icu::Normalizer2::getNFCInstance(err);
    if (U_FAILURE(err)) throw TokenizerError("ICU NFC normalizer unavailable");
    icu::UnicodeString u =
        icu::UnicodeString::fromUTF8(icu::StringPiece(s.data(), static_cast<int32_t>(s.size())));
    if (n->isNormalized(u, err) && U_SUCCESS(err)) return std::string(s);
    err = U_ZERO_ERROR;
    icu::UnicodeString out = n->normalize(u, err);
    if (U_FAILURE(err)) throw TokenizerError("NFC normalization failed");
    std::string r;
    out.toUTF8String(r);
    return r;
  }

  // Isolated split: matches and the gaps between them become pieces.
  static void split(const Regex& re, std::string_view seg, Piece p, std::vector<Piece>& out) {
    const char* subject = seg.data() + p.begin;
    size_t n = p.end - p.begin, pos = 0, last = 0, mb, me;
    while (pos <= n && re.find(subject, n, pos, mb, me)) {
      if (me == mb) {  // empty match: step over one character
        if (mb >= n) break;
        size_t k = mb + 1;
        while (k < n && (static_cast<unsigned char>(subject[k]) & 0xC0) == 0x80) ++k;
        pos = k;
        continue;
      }
      if (mb > last)
        out.push_back({static_cast<uint32_t>(p.begin + last), static_cast<uint32_t>(p.begin + mb)});
      out.push_back({static_cast<uint32_t>(p.begin + mb), static_cast<uint32_t>(p.begin + me)});
      last = pos = me;
    }
    if (last < n)
      out.push_back({static_cast<uint32_t>(p.begin + last), static_cast<uint32_t>(p.begin + n)});
  }

  // ---- BPE on one pre-token -----------------------------------------------------------------
  void bpe(std::string_view piece, std::vector<std::pair<TokenId, uint32_t>>& out) const {
    if (ignore_merges_) {
      if (auto it = bytes_to_id_.find(piece); it != bytes_to_id_.end()) {
        out.push_back({it->second, static_cast<uint32_t>(piece.size())});
        return;
      }
    }
    constexpr size_t kCacheable = 1024;
    if (piece.size() <= kCacheable) {
      std::lock_guard<std::mutex> lock(cache_mu_);
      if (auto it = cache_.find(piece); it != cache_.end()) {
        out.insert(out.end(), it->second.begin(), it->second.end());
        return;
      }
    }
    size_t start = out.size();
    merge_word(piece, out);
    if (piece.size() <= kCacheable) {
      std::lock_guard<std::mutex> lock(cache_mu_);
      // Bounded by entries and bytes; a full reset is cheap and rare.
      if (cache_.size() >= kCacheEntries || cache_bytes_ >= kCacheBytes) {
        cache_.clear();
        cache_bytes_ = 0;
      }
      cache_bytes_ += piece.size() + (out.size() - start) * sizeof(out[0]) + 64;
      cache_.emplace(std::string(piece),
                     std::vector<std::pair<TokenId, uint32_t>>(out.begin() + start, out.end()));
    }
  }

  struct Sym {
    int32_t id;
    int32_t prev, next;
    uint32_t len;
  };
  struct Cand {
    int32_t rank, pos, merged;
    bool operator<(const Cand& o) const {  // priority_queue is a max-heap: invert
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };

  const MergeInfo* merge_of(int32_t a, int32_t b) const {
    uint64_t key =
        (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
    return merges_.find(key);
  }

  // Lowest rank first, leftmost on ties, one merge at a time (as tokenizers' Word::merge_all).
  void merge_word(std::string_view piece, std::vector<std::pair<TokenId, uint32_t>>& out) const {
    thread_local std::vector<Sym> syms;
    syms.clear();
    uint32_t dropped = 0;  // bytes without a token are skipped (HF BPE without unk does the same)
    for (size_t i = 0; i < piece.size(); ++i) {
      int32_t id = byte_ids_[static_cast<unsigned char>(piece[i])];
      if (id < 0) {
        ++dropped;
        continue;
      }
      int32_t k = static_cast<int32_t>(syms.size());
      syms.push_back({id, k - 1, k + 1, 1 + dropped});
      dropped = 0;
    }
    if (syms.empty()) return;
    syms.back().next = -1;
    std::priority_queue<Cand> heap;
    for (size_t i = 0; i + 1 < syms.size(); ++i)
      if (auto* m = merge_of(syms[i].id, syms[i + 1].id))
        heap.push({m->rank, static_cast<int32_t>(i), m->merged});
    while (!heap.empty()) {
      Cand c = heap.top();
      heap.pop();
      Sym& s = syms[c.pos];
      if (s.len == 0 || s.next < 0) continue;
      Sym& nx = syms[s.next];
      const MergeInfo* m = merge_of(s.id, nx.id);
      if (!m || m->merged != c.merged) continue;  // stale candidate
      s.id = c.merged;
      s.len += nx.len;
      nx.len = 0;
      s.next = nx.next;
      if (s.next >= 0) syms[s.next].prev = c.pos;
      if (s.prev >= 0)
        if (auto* pm = merge_of(syms[s.prev].id, s.id)) heap.push({pm->rank, s.prev, pm->merged});
      if (s.next >= 0)
        if (auto* nm = merge_of(s.id, syms[s.next].id)) heap.push({nm->rank, c.pos, nm->merged});
    }
    for (int32_t i = 0; i >= 0; i = syms[i].next) out.push_back({syms[i].id, syms[i].len});
  }

  static constexpr size_t kCacheEntries = 1 << 16;
  static constexpr size_t kCacheBytes = 32u << 20;
  mutable size_t cache_bytes_ = 0;
  mutable std::mutex cache_mu_;
  mutable std::unordered_map<std::string, std::vector<std::pair<TokenId, uint32_t>>, StringHash,
                             std::equal_to<>>
      cache_;

 public:
  void add_step(const std::string& pattern, bool multiline = false) {
    steps_.push_back(std::make_unique<Regex>(pattern, multiline));
  }
};

// ---- tokenizer.json -------------------------------------------------------------------------

using json = nlohmann::json;

void parse_pre_tokenizer(const json& j, BpeTokenizer& t, const std::string& where) {
  if (j.is_null()) return;
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string())
    throw TokenizerError("pre_tokenizer without a type", where);
  std::string type = j["type"];
  if (type == "Sequence") {
    if (!j.contains("pretokenizers") || !j["pretokenizers"].is_array())
      throw TokenizerError("Sequence pre_tokenizer without pretokenizers", where);
    for (const auto& p : j["pretokenizers"]) parse_pre_tokenizer(p, t, where);
  } else if (type == "ByteLevel") {
    if (j.value("add_prefix_space", false))
      throw TokenizerError("ByteLevel add_prefix_space=true is not supported", where);
    if (j.value("use_regex", true)) t.add_step(regex::gpt2);
  } else if (type == "Split") {
    std::string behavior = j.value("behavior", "Isolated");
    if (behavior != "Isolated")
      throw TokenizerError("Split behavior '" + behavior + "' is not supported", where);
    if (j.value("invert", false)) throw TokenizerError("Split invert=true is not supported", where);
    const json& pat = j.contains("pattern") ? j["pattern"] : json();
    if (pat.is_object() && pat.contains("Regex") && pat["Regex"].is_string()) {
      std::string p = pat["Regex"];
      // Oniguruma's `$` ends a line (Ruby syntax); PCRE2 needs MULTILINE for the same meaning.
      t.add_step(p, p.find('$') != std::string::npos);
    } else if (pat.is_object() && pat.contains("String") && pat["String"].is_string()) {
      t.add_step(escape_regex(pat["String"]));
    } else {
      throw TokenizerError("Split pre_tokenizer without a pattern", where);
    }
  } else if (type == "Digits") {
    t.add_step(j.value("individual_digits", false) ? R"(\p{N})" : R"(\p{N}+)");
  } else {
    throw TokenizerError("pre_tokenizer '" + type + "' is not supported", where,
                         "supported: Sequence, ByteLevel, Split (Isolated), Digits");
  }
}

void parse_normalizer(const json& j, BpeTokenizer& t, const std::string& where) {
  if (j.is_null()) return;
  std::string type = j.value("type", "");
  if (type == "NFC") {
    t.nfc_ = true;
  } else if (type == "Sequence" && j.contains("normalizers") && j["normalizers"].is_array()) {
    for (const auto& n : j["normalizers"]) parse_normalizer(n, t, where);
  } else {
    throw TokenizerError("normalizer '" + type + "' is not supported", where, "supported: NFC");
  }
}

void parse_post_processor(const json& j, BpeTokenizer& t, const std::string& where) {
  if (j.is_null()) return;
  std::string type = j.value("type", "");
  if (type == "ByteLevel") return;  // offsets only
  if (type == "Sequence" && j.contains("processors") && j["processors"].is_array()) {
    for (const auto& p : j["processors"]) parse_post_processor(p, t, where);
    return;
  }
  if (type != "TemplateProcessing")
    throw TokenizerError("post_processor '" + type + "' is not supported", where);
  const json& single = j.contains("single") ? j["single"] : json::array();
  const json& specials = j.contains("special_tokens") ? j["special_tokens"] : json::object();
  t.prefix_ids_.clear();
  t.suffix_ids_.clear();
  bool seen_seq = false;
  for (const auto& item : single) {
    if (item.contains("Sequence")) {
      seen_seq = true;
    } else if (item.contains("SpecialToken") && item["SpecialToken"].contains("id")) {
      std::string name = item["SpecialToken"]["id"].get<std::string>();
      if (!specials.contains(name) || !specials[name].contains("ids"))
        throw TokenizerError("post_processor names unknown special token '" + name + "'", where);
      for (const auto& id : specials[name]["ids"])
        (seen_seq ? t.suffix_ids_ : t.prefix_ids_).push_back(id.get<TokenId>());
    }
  }
}

}  // namespace

std::unique_ptr<Tokenizer> bpe_from_tokenizer_json(const std::string& text,
                                                   const std::string& where) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) throw FormatError("not valid JSON", where);
  try {
    const json& model = j.at("model");
    std::string type = model.value("type", "BPE");
    if (type != "BPE")
      throw TokenizerError("model type '" + type + "' is not byte-level BPE", where);
    if (model.value("byte_fallback", false))
      throw TokenizerError(
          "byte_fallback BPE (SentencePiece-style) is not supported; use the .model file", where);
    auto t = std::make_unique<BpeTokenizer>();
    t->where_ = where;
    t->ignore_merges_ = model.value("ignore_merges", false);
    for (const auto& [form, id] : model.at("vocab").items()) t->set_id(id.get<int32_t>(), form);
    int32_t rank = 0;
    for (const auto& m : model.at("merges")) {
      if (m.is_string()) {
        const std::string& s = m.get_ref<const std::string&>();
        size_t sp = s.find(' ', 1);
        if (sp == std::string::npos)
          throw TokenizerError("merge without a space: '" + s + "'", where);
        t->add_merge(std::string_view(s).substr(0, sp), std::string_view(s).substr(sp + 1), rank++);
      } else if (m.is_array() && m.size() == 2) {
        t->add_merge(m[0].get<std::string>(), m[1].get<std::string>(), rank++);
      } else {
        throw TokenizerError("merge entry is neither \"a b\" nor [a, b]", where);
      }
    }
    if (j.contains("added_tokens") && j["added_tokens"].is_array()) {
      for (const auto& a : j["added_tokens"]) {
        AddedToken at;
        at.id = a.at("id").get<TokenId>();
        at.content = a.at("content").get<std::string>();
        at.special = a.value("special", false);
        at.lstrip = a.value("lstrip", false);
        at.rstrip = a.value("rstrip", false);
        at.single_word = a.value("single_word", false);
        at.normalized = a.value("normalized", false);
        if (at.id < 0 || at.id > 50'000'000)
          throw TokenizerError("added token id out of range", where);
        if (utf8_valid_prefix(at.content) != at.content.size())
          throw TokenizerError("added token is not valid UTF-8", where);
        t->added_.push_back(std::move(at));
      }
    }
    parse_normalizer(j.contains("normalizer") ? j["normalizer"] : json(), *t, where);
    parse_pre_tokenizer(j.contains("pre_tokenizer") ? j["pre_tokenizer"] : json(), *t, where);
    parse_post_processor(j.contains("post_processor") ? j["post_processor"] : json(), *t, where);
    if (j.contains("decoder") && j["decoder"].is_object()) {
      std::string d = j["decoder"].value("type", "");
      if (d != "ByteLevel" && d != "Sequence")
        throw TokenizerError("decoder '" + d + "' is not byte-level", where);
    }
    t->finish();
    if (!t->prefix_ids_.empty()) t->set_bos_id(t->prefix_ids_.front());
    return t;
  } catch (const json::exception& e) {
    throw FormatError(std::string("malformed tokenizer.json: ") + e.what(), where);
  }
}

std::unique_ptr<Tokenizer> bpe_from_file(const std::filesystem::path& path) {
  return bpe_from_tokenizer_json(io::read_file(path), path.string());
}

std::vector<PreTokenizerStep> pretokenizer_for(const std::string& pre) {
  using K = PreTokenizerStep::Kind;
  auto rx = [](const char* p) { return PreTokenizerStep{K::split_regex, p, true}; };
  if (pre == "default" || pre == "gpt-2" || pre == "gpt2") return {{K::byte_level_regex, {}, true}};
  if (pre == "smollm") return {{K::digits, {}, true}, {K::byte_level_regex, {}, true}};
  if (pre == "llama-bpe" || pre == "llama3" || pre == "llama-v3") return {rx(regex::llama3)};
  if (pre == "qwen2" || pre == "deepseek-r1-qwen") return {rx(regex::qwen2)};
  if (pre == "deepseek-v3")
    return {rx(regex::deepseek_v3[0]), rx(regex::deepseek_v3[1]), rx(regex::deepseek_v3[2])};
  if (pre == "deepseek-llm") {
    std::vector<PreTokenizerStep> v;
    for (auto* p : regex::deepseek_llm) v.push_back(rx(p));
    return v;
  }
  throw TokenizerError("unknown pre-tokenizer '" + pre + "'", "tokenizer.ggml.pre",
                       "supported: default, gpt-2, smollm, llama-bpe, qwen2, deepseek-r1-qwen, "
                       "deepseek-llm, deepseek-v3");
}

std::string tokenizer_json_from_spec(const BpeSpec& spec) {
  using K = PreTokenizerStep::Kind;
  json steps = json::array();
  bool byte_level_last = false;
  for (const auto& step : pretokenizer_for(spec.pre)) {
    byte_level_last = step.kind == K::byte_level_regex;
    if (step.kind == K::split_regex)
      steps.push_back({{"type", "Split"},
                       {"pattern", {{"Regex", step.pattern}}},
                       {"behavior", "Isolated"},
                       {"invert", false}});
    else if (step.kind == K::digits)
      steps.push_back({{"type", "Digits"}, {"individual_digits", step.individual_digits}});
    else
      steps.push_back({{"type", "ByteLevel"},
                       {"add_prefix_space", false},
                       {"trim_offsets", true},
                       {"use_regex", true}});
  }
  // Split pieces still need the byte-to-unicode mapping, without a second GPT-2 split.
  if (!byte_level_last)
    steps.push_back({{"type", "ByteLevel"},
                     {"add_prefix_space", false},
                     {"trim_offsets", true},
                     {"use_regex", false}});

  json vocab = json::object(), added = json::array();
  for (size_t i = 0; i < spec.tokens.size(); ++i) {
    const std::string& tok = spec.tokens[i];
    if (!vocab.contains(tok))
      vocab[tok] = i;  // bpe_from_spec keeps the first of duplicate strings too
    int32_t type = spec.token_types.empty() ? 1 : spec.token_types[i];
    if (type == 3 || type == 4)
      added.push_back({{"id", i},
                       {"content", tok},
                       {"single_word", false},
                       {"lstrip", false},
                       {"rstrip", false},
                       {"normalized", false},
                       {"special", type == 3}});
  }
  json merges = json::array();
  for (const auto& m : spec.merges) {
    size_t sp = m.find(' ', 1);
    if (sp == std::string::npos)
      throw TokenizerError("merge without a space: '" + m + "'", "tokenizer.ggml.merges");
    merges.push_back({m.substr(0, sp), m.substr(sp + 1)});
  }

  json byte_level_post = {{"type", "ByteLevel"},
                          {"add_prefix_space", false},
                          {"trim_offsets", false},
                          {"use_regex", false}};
  json post = byte_level_post;
  auto valid = [&](int64_t id) { return id >= 0 && static_cast<size_t>(id) < spec.tokens.size(); };
  const bool bos = spec.add_bos && valid(spec.bos_id), eos = spec.add_eos && valid(spec.eos_id);
  if (bos || eos) {
    json single = json::array(), pair = json::array(), specials = json::object();
    auto special = [&](int64_t id, int type_id) {
      const std::string& name = spec.tokens[static_cast<size_t>(id)];
      specials[name] = {{"id", name}, {"ids", {id}}, {"tokens", {name}}};
      return json{{"SpecialToken", {{"id", name}, {"type_id", type_id}}}};
    };
    for (int seq = 0; seq < 2; ++seq) {
      json& out = seq == 0 ? single : pair;
      for (int part = 0; part <= seq; ++part) {
        if (bos) out.push_back(special(spec.bos_id, part));
        out.push_back({{"Sequence", {{"id", part == 0 ? "A" : "B"}, {"type_id", part}}}});
        if (eos) out.push_back(special(spec.eos_id, part));
      }
    }
    post = {{"type", "Sequence"},
            {"processors",
             {byte_level_post,
              {{"type", "TemplateProcessing"},
               {"single", single},
               {"pair", pair},
               {"special_tokens", specials}}}}};
  }
  json j = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", added},
      {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "Sequence"}, {"pretokenizers", steps}}},
      {"post_processor", post},
      {"decoder",
       {{"type", "ByteLevel"},
        {"add_prefix_space", true},
        {"trim_offsets", true},
        {"use_regex", true}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"ignore_merges", spec.ignore_merges || spec.pre == "llama-bpe"},
        {"vocab", vocab},
        {"merges", merges}}},
  };
  return j.dump(1);
}

std::unique_ptr<Tokenizer> bpe_from_spec(const BpeSpec& spec) {
  auto t = std::make_unique<BpeTokenizer>();
  t->where_ = "tokenizer.ggml";
  if (!spec.token_types.empty() && spec.token_types.size() != spec.tokens.size())
    throw TokenizerError("token_types and tokens differ in length", "tokenizer.ggml.token_type");
  t->ignore_merges_ = spec.ignore_merges || spec.pre == "llama-bpe";
  for (size_t i = 0; i < spec.tokens.size(); ++i) {
    int32_t type = spec.token_types.empty() ? 1 : spec.token_types[i];
    const std::string& s = spec.tokens[i];
    if (utf8_valid_prefix(s) != s.size())
      throw TokenizerError("token " + std::to_string(i) + " is not valid UTF-8",
                           "tokenizer.ggml.tokens");
    if (type == 3 || type == 4) {
      // Control and user-defined tokens are matched in raw text, like HF's added tokens.
      AddedToken a;
      a.id = static_cast<TokenId>(i);
      a.content = s;
      a.special = type == 3;
      t->added_.push_back(a);
      t->vocab_forms_.resize(std::max(t->vocab_forms_.size(), i + 1));
      t->id_bytes_.resize(std::max(t->id_bytes_.size(), i + 1));
      t->vocab_forms_[i] = s;
    } else {
      t->set_id(static_cast<int32_t>(i), s);
    }
  }
  int32_t rank = 0;
  for (const auto& m : spec.merges) {
    size_t sp = m.find(' ', 1);
    if (sp == std::string::npos)
      throw TokenizerError("merge without a space: '" + m + "'", "tokenizer.ggml.merges");
    t->add_merge(std::string_view(m).substr(0, sp), std::string_view(m).substr(sp + 1), rank++);
  }
  for (const auto& step : pretokenizer_for(spec.pre)) {
    switch (step.kind) {
      case PreTokenizerStep::Kind::split_regex:
        t->add_step(step.pattern, step.pattern.find('$') != std::string::npos);
        break;
      case PreTokenizerStep::Kind::digits:
        t->add_step(step.individual_digits ? R"(\p{N})" : R"(\p{N}+)");
        break;
      case PreTokenizerStep::Kind::byte_level_regex: t->add_step(regex::gpt2); break;
    }
  }
  auto valid = [&](int64_t id) { return id >= 0 && static_cast<size_t>(id) < spec.tokens.size(); };
  if (spec.add_bos && valid(spec.bos_id))
    t->prefix_ids_.push_back(static_cast<TokenId>(spec.bos_id));
  if (spec.add_eos && valid(spec.eos_id))
    t->suffix_ids_.push_back(static_cast<TokenId>(spec.eos_id));
  t->finish();
  if (valid(spec.bos_id)) t->set_bos_id(static_cast<TokenId>(spec.bos_id));
  if (valid(spec.eos_id)) t->set_eos_id(static_cast<TokenId>(spec.eos_id));
  if (valid(spec.pad_id)) t->set_pad_id(static_cast<TokenId>(spec.pad_id));
  return t;
}

}  // namespace safetune::tokenizer
