// Deterministic byte-level mutations of a seed, shared by the in-suite fuzz run (no libFuzzer
// needed).
#pragma once
#include <cstdint>
#include <random>
#include <string>

namespace safetune::fuzz {

// Applies 1-4 random edits: bit flips, interesting byte/u32/u64 values, inserts, deletes,
// truncation, chunk duplication. Length fields and counts are the targets that matter.
inline std::string mutate(std::string s, std::mt19937_64& rng) {
  auto pick = [&](std::uint64_t n) { return n == 0 ? 0 : rng() % n; };
  static const std::uint64_t interesting[] = {0,
                                              1,
                                              2,
                                              7,
                                              8,
                                              31,
                                              32,
                                              255,
                                              256,
                                              65535,
                                              0x7fffffff,
                                              0x80000000ULL,
                                              0xffffffffULL,
                                              0x100000000ULL,
                                              1ULL << 62,
                                              0x7fffffffffffffffULL,
                                              0xffffffffffffffffULL,
                                              100000001};
  const int edits = 1 + static_cast<int>(pick(4));
  for (int e = 0; e < edits; ++e) {
    switch (pick(8)) {
      case 0:
        if (!s.empty()) s[pick(s.size())] ^= static_cast<char>(1u << pick(8));
        break;
      case 1:
        if (!s.empty()) s[pick(s.size())] = static_cast<char>(pick(256));
        break;
      case 2:
      case 3: {  // overwrite 4 or 8 bytes with an interesting little-endian value
        const std::size_t w = pick(2) ? 8 : 4;
        if (s.size() < w) break;
        std::uint64_t v = interesting[pick(sizeof interesting / sizeof interesting[0])];
        std::size_t at = pick(s.size() - w + 1);
        for (std::size_t i = 0; i < w; ++i) s[at + i] = static_cast<char>((v >> (8 * i)) & 0xff);
        break;
      }
      case 4:
        s.insert(s.begin() + static_cast<std::ptrdiff_t>(pick(s.size() + 1)),
                 static_cast<char>(pick(256)));
        break;
      case 5:
        if (!s.empty()) s.erase(pick(s.size()), 1 + pick(8));
        break;
      case 6: s.resize(pick(s.size() + 1)); break;
      case 7: {  // duplicate a chunk somewhere else
        if (s.empty()) break;
        std::size_t from = pick(s.size()),
                    len = 1 + pick(std::min<std::size_t>(16, s.size() - from));
        std::string chunk = s.substr(from, len);
        s.insert(pick(s.size() + 1), chunk);
        break;
      }
    }
  }
  return s;
}

}  // namespace safetune::fuzz
