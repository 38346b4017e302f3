// Bounded in-suite fuzzing of the safetensors and GGUF header parsers (deterministic mutations of
// tests/fuzz/corpus): no crash, no hang, and nothing but safetune::Error escapes.
#include <ATen/ATen.h>

#include <catch2/catch.hpp>
#include <random>

#include "../fuzz/mutate.hpp"
#include "io/gguf_format.hpp"
#include "io/gguf_quants.hpp"
#include "io/safetensors_header.hpp"
#include "safetune/error.hpp"
#include "safetune/io/atomic_file.hpp"
#include "safetune/io/gguf.hpp"
#include "support.hpp"

namespace fs = std::filesystem;
using namespace safetune;

namespace {
std::vector<std::string> seeds(const std::string& kind) {
  std::vector<std::string> out;
  for (const auto& e :
       fs::directory_iterator(test::source_dir() / "tests" / "fuzz" / "corpus" / kind))
    out.push_back(io::read_file(e.path()));
  std::sort(out.begin(), out.end());  // directory order is not stable
  return out;
}

struct Tally {
  int ok = 0, rejected = 0, other = 0;
  std::string first_other;
};

template <class Fn>
Tally run(const std::vector<std::string>& corpus, int iterations, std::uint64_t seed, Fn&& parse) {
  std::mt19937_64 rng(seed);
  Tally t;
  for (int i = 0; i < iterations; ++i) {
    std::string input = fuzz::mutate(corpus[static_cast<std::size_t>(i) % corpus.size()], rng);
    try {
      parse(input);
      ++t.ok;
    } catch (const Error&) {
      ++t.rejected;
    } catch (const std::exception& e) {
      if (t.other++ == 0) t.first_other = e.what();
    }
  }
  return t;
}
}  // namespace

TEST_CASE("fuzz: 20,000 mutated safetensors headers", "[io][fuzz]") {
  auto corpus = seeds("safetensors");
  REQUIRE(corpus.size() >= 3);
  for (const auto& s : corpus) CHECK_NOTHROW(io::safetensors_parse_header(s, s.size(), "seed"));
  Tally t = run(corpus, 20000, 20261127, [](const std::string& in) {
    io::safetensors_parse_header(in, in.size(), "fuzz.safetensors");
  });
  INFO("ok " << t.ok << ", rejected " << t.rejected << ", other " << t.other << ": "
             << t.first_other);
  CHECK(t.other == 0);
  CHECK(t.rejected > 1000);  // the mutations do reach the validation paths
  CHECK(t.ok > 100);         // and not everything is rejected at the first byte
}

TEST_CASE("fuzz: 20,000 mutated GGUF files, parsed and dequantized", "[io][fuzz]") {
  auto corpus = seeds("gguf");
  REQUIRE(corpus.size() >= 2);
  for (const auto& s : corpus) CHECK_NOTHROW(io::gguf::parse_header(s, "seed"));
  Tally t = run(corpus, 20000, 314159, [](const std::string& in) {
    io::gguf::Header h = io::gguf::parse_header(in, "fuzz.gguf");
    // every tensor the parser accepted must decode (or be refused) within its validated bytes
    for (const auto& info : h.tensors) {
      if (!io::gguf_type_supported(info.type) || info.n_elements > (1u << 16)) continue;
      io::gguf_dequantize(
          info, reinterpret_cast<const std::uint8_t*>(in.data()) + h.data_offset + info.offset,
          at::kFloat, info.name);
    }
  });
  INFO("ok " << t.ok << ", rejected " << t.rejected << ", other " << t.other << ": "
             << t.first_other);
  CHECK(t.other == 0);
  CHECK(t.rejected > 1000);
  CHECK(t.ok > 100);
}
