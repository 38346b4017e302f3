// PCRE2 regexes as the Hugging Face tokenizers' pre-tokenizers use them (Oniguruma semantics):
// UTF-8, Unicode properties widened to ICU's newer tables, JIT where available.
#pragma once
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <cstddef>
#include <string>

namespace safetune::tokenizer {

class Regex {
 public:
  // TokenizerError naming the pattern when it does not compile.
  Regex(const std::string& original, bool multiline);
  ~Regex() { pcre2_code_free(code_); }
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Next match in subject[0, n) starting at `start`; false when none. Subject is valid UTF-8.
  bool find(const char* subject, size_t n, size_t start, size_t& mb, size_t& me) const;

 private:
  pcre2_code* code_ = nullptr;
  bool jit_ = false;
};

// `s` with every regex metacharacter escaped (a tokenizer.json "String" split pattern).
std::string escape_regex(const std::string& s);

// The pattern with every \p{X} / \pX widened by the code points ICU assigns to X after PCRE2's
// Unicode version (exposed for tests).
std::string widen_unicode_properties(const std::string& pattern);

}  // namespace safetune::tokenizer
