// PCRE2 regexes for the pre-tokenizers: compile (with the Unicode properties widened), JIT, match.
#include "tokenizer/pcre_regex.hpp"

#include <unicode/uniset.h>
#include <unicode/unistr.h>

#include <cstdio>
#include <map>
#include <mutex>
#include <string_view>

#include "safetune/error.hpp"

namespace safetune::tokenizer {

namespace {
struct MatchScratch {
  pcre2_match_data* data = nullptr;
  pcre2_match_context* ctx = nullptr;
  pcre2_jit_stack* stack = nullptr;
  MatchScratch() {
    data = pcre2_match_data_create(4, nullptr);
    ctx = pcre2_match_context_create(nullptr);
    stack = pcre2_jit_stack_create(32 * 1024, 4 * 1024 * 1024, nullptr);
    if (ctx && stack) pcre2_jit_stack_assign(ctx, nullptr, stack);
  }
  ~MatchScratch() {
    pcre2_match_data_free(data);
    pcre2_match_context_free(ctx);
    pcre2_jit_stack_free(stack);
  }
};
MatchScratch& scratch() {
  thread_local MatchScratch s;
  return s;
}

// PCRE2 classifies code points with the Unicode tables it was built with (Debian's 10.42: Unicode
// 14), HF tokenizers' Oniguruma with newer ones (Unicode 15), so `\p{S}` missed the emoji added
// since (U+1FA76 grey heart, ...) and their text split differently. ICU, linked for NFC, knows a
// newer version: the code points it assigns to a property after PCRE2's version are added to
// that property's class by hand. ("\x{A}-\x{B}..." for a class body; empty if none.)
std::string unicode_additions(const std::string& property) {
  static std::mutex mu;
  static std::map<std::string, std::string> cache;
  std::lock_guard<std::mutex> lock(mu);
  if (auto it = cache.find(property); it != cache.end()) return it->second;
  char version[32] = {};
  pcre2_config(PCRE2_CONFIG_UNICODE_VERSION, version);
  std::string age(version);  // "14.0.0": ICU's Age values are major.minor
  if (auto dot = age.find('.'); dot != std::string::npos)
    age = age.substr(0, age.find('.', dot + 1));
  // Age=V holds every code point assigned in V or earlier; a name or an age ICU does not know
  // (a PCRE2-only property, or a PCRE2 newer than ICU) leaves the class as it is.
  std::string text;
  UErrorCode err = U_ZERO_ERROR;
  icu::UnicodeSet added(
      icu::UnicodeString::fromUTF8("[\\p{" + property + "}-\\p{Age=" + age + "}]"), err);
  if (U_SUCCESS(err)) {
    char buf[40];
    for (int32_t r = 0; r < added.getRangeCount(); ++r) {
      UChar32 a = added.getRangeStart(r), b = added.getRangeEnd(r);
      if (a == b) std::snprintf(buf, sizeof buf, "\\x{%X}", static_cast<unsigned>(a));
      else
        std::snprintf(buf, sizeof buf, "\\x{%X}-\\x{%X}", static_cast<unsigned>(a),
                      static_cast<unsigned>(b));
      text += buf;
    }
  }
  return cache.emplace(property, text).first->second;
}

}  // namespace

// The pattern with every \p{X} / \pX widened by unicode_additions(X): `[\p{X}...]` outside a
// character class, `\p{X}...` inside one; \P{X} outside a class becomes `[^\p{X}...]`. (\P inside
// a class is left alone: a class cannot hold "not X, nor these".)
std::string widen_unicode_properties(const std::string& pattern) {
  std::string out;
  out.reserve(pattern.size());
  bool in_class = false;
  size_t class_body = 0;  // where the current class's body starts (a `]` there is literal)
  for (size_t i = 0; i < pattern.size();) {
    char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      char e = pattern[i + 1];
      if (e == 'Q') {  // \Q...\E quotes literally
        size_t end = pattern.find("\\E", i + 2);
        end = end == std::string::npos ? pattern.size() : end + 2;
        out.append(pattern, i, end - i);
        i = end;
        continue;
      }
      if ((e == 'p' || e == 'P') && i + 2 < pattern.size()) {
        size_t end;
        std::string name;
        if (pattern[i + 2] == '{') {
          end = pattern.find('}', i + 3);
          if (end == std::string::npos) {
            out.append(pattern, i, std::string::npos);
            break;
          }
          name = pattern.substr(i + 3, end - i - 3);
          ++end;
        } else {
          name = pattern.substr(i + 2, 1);
          end = i + 3;
        }
        bool negated = e == 'P';
        if (!name.empty() && name[0] == '^') {
          negated = !negated;
          name.erase(0, 1);
        }
        const std::string original = pattern.substr(i, end - i);
        const std::string extra = unicode_additions(name);
        if (extra.empty() || (in_class && negated)) out += original;
        else if (in_class) out += "\\p{" + name + "}" + extra;
        else out += std::string(negated ? "[^" : "[") + "\\p{" + name + "}" + extra + "]";
        i = end;
        continue;
      }
      out.append(pattern, i, 2);
      i += 2;
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      class_body = i + 1 + (i + 1 < pattern.size() && pattern[i + 1] == '^');
    } else if (in_class && c == '[' && i + 1 < pattern.size() && pattern[i + 1] == ':') {
      size_t end = pattern.find(":]", i + 2);  // POSIX class [:alpha:] inside a class
      if (end != std::string::npos) {
        out.append(pattern, i, end + 2 - i);
        i = end + 2;
        continue;
      }
    } else if (in_class && c == ']' && i != class_body) {
      in_class = false;
    }
    out.push_back(c);
    ++i;
  }
  return out;
}

Regex::Regex(const std::string& original, bool multiline) {
  int err = 0;
  PCRE2_SIZE off = 0;
  uint32_t opts = PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK | (multiline ? PCRE2_MULTILINE : 0);
  const std::string pattern = widen_unicode_properties(original);
  code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), opts, &err,
                        &off, nullptr);
  if (!code_ && pattern != original) {  // report the error against the pattern the user wrote
    pcre2_code_free(pcre2_compile(reinterpret_cast<PCRE2_SPTR>(original.data()), original.size(),
                                  opts, &err, &off, nullptr));
  }
  if (!code_) {
    PCRE2_UCHAR buf[256];
    pcre2_get_error_message(err, buf, sizeof buf);
    throw TokenizerError("bad pre-tokenizer regex at offset " + std::to_string(off) + ": " +
                             reinterpret_cast<char*>(buf),
                         original);
  }
  jit_ = pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE) == 0;
}

// Next match in subject[0, n) starting at `start`; false when none. Subject is valid UTF-8.
bool Regex::find(const char* subject, size_t n, size_t start, size_t& mb, size_t& me) const {
  auto& s = scratch();
  int rc;
  if (jit_)
    rc = pcre2_jit_match(code_, reinterpret_cast<PCRE2_SPTR>(subject), n, start, 0, s.data, s.ctx);
  else
    rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(subject), n, start, PCRE2_NO_UTF_CHECK,
                     s.data, s.ctx);
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  if (rc < 0) throw TokenizerError("pre-tokenizer regex failed (error " + std::to_string(rc) + ")");
  PCRE2_SIZE* ov = pcre2_get_ovector_pointer(s.data);
  mb = ov[0];
  me = ov[1];
  return true;
}

std::string escape_regex(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (std::string_view("\\^$.|?*+()[]{}").find(c) != std::string_view::npos) out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

}  // namespace safetune::tokenizer
