// UTF-8 validation and repair shared by the tokenizers (never trust input bytes).
#include <cstdint>
#include <string>
#include <string_view>

#include "safetune/error.hpp"
#include "safetune/tokenizer/tokenizer.hpp"

namespace safetune::tokenizer {

namespace {
// Length of the valid sequence at s[i], or 0 if invalid; `max_subpart` receives how many bytes
// form the maximal prefix of a valid sequence (what one U+FFFD replaces).
size_t sequence_length(const unsigned char* s, size_t n, size_t i, size_t& max_subpart) {
  unsigned char c = s[i];
  max_subpart = 1;
  if (c < 0x80) return 1;
  size_t need;
  unsigned char lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) {
    need = 1;
  } else if (c >= 0xE0 && c <= 0xEF) {
    need = 2;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;  // no surrogates
  } else if (c >= 0xF0 && c <= 0xF4) {
    need = 3;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  for (size_t k = 1; k <= need; ++k) {
    if (i + k >= n) return 0;
    unsigned char d = s[i + k];
    unsigned char l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
    if (d < l || d > h) return 0;
    max_subpart = k + 1;
  }
  return need + 1;
}
}  // namespace

size_t utf8_valid_prefix(std::string_view sv) {
  auto* s = reinterpret_cast<const unsigned char*>(sv.data());
  size_t n = sv.size(), i = 0, sub = 0;
  while (i < n) {
    // ASCII fast path, 8 bytes at a time.
    while (i + 8 <= n) {
      uint64_t w;
      __builtin_memcpy(&w, s + i, 8);
      if (w & 0x8080808080808080ULL) break;
      i += 8;
    }
    if (i >= n) break;
    size_t len = sequence_length(s, n, i, sub);
    if (len == 0) return i;
    i += len;
  }
  return n;
}

std::string utf8_repair(std::string_view sv) {
  auto* s = reinterpret_cast<const unsigned char*>(sv.data());
  size_t n = sv.size(), i = 0, sub = 0;
  std::string out;
  out.reserve(n);
  while (i < n) {
    size_t len = sequence_length(s, n, i, sub);
    if (len == 0) {
      out += "\xEF\xBF\xBD";
      i += sub;
    } else {
      out.append(sv.data() + i, len);
      i += len;
    }
  }
  return out;
}

void utf8_check(std::string_view s, const std::string& where) {
  size_t ok = utf8_valid_prefix(s);
  if (ok != s.size())
    throw TokenizerError("invalid UTF-8 at byte " + std::to_string(ok), where,
                         "fix the input encoding or ask for replacement (U+FFFD)");
}

}  // namespace safetune::tokenizer
