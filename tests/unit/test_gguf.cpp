// GGUF parsing and validation against hand-built files whose every byte is known.
#include <ATen/ATen.h>

#include <sys/stat.h>
#include <catch2/catch.hpp>
#include <cstring>
#include <fstream>

#include "safetune/error.hpp"
#include "safetune/io/gguf.hpp"
#include "safetune/model/gguf.hpp"
#include "support.hpp"

namespace fs = std::filesystem;
using namespace safetune;
using io::gguf::ValueType;

namespace {
// Minimal GGUF writer for tests, following the spec: header, key/values, tensor infos, padding,
// data.
struct GgufBuilder {
  std::string kv, infos, data;
  std::uint64_t n_kv = 0, n_tensors = 0;
  std::uint32_t version = 3;
  std::string magic = "GGUF";
  std::uint64_t alignment = 32;

  template <class T>
  static void put(std::string& s, T v) {
    s.append(reinterpret_cast<const char*>(&v), sizeof v);
  }
  static void put_str(std::string& s, const std::string& v) {
    put<std::uint64_t>(s, v.size());
    s += v;
  }
  void add_u32(const std::string& key, std::uint32_t v) {
    put_str(kv, key);
    put<std::uint32_t>(kv, 4);
    put(kv, v);
    ++n_kv;
  }
  void add_string(const std::string& key, const std::string& v) {
    put_str(kv, key);
    put<std::uint32_t>(kv, 8);
    put_str(kv, v);
    ++n_kv;
  }
  void add_raw_kv(const std::string& raw) {  // pre-encoded key + type + value
    kv += raw;
    ++n_kv;
  }
  // ne in ggml order; raw data bytes appended at the next aligned offset
  void add_tensor(const std::string& name, std::vector<std::uint64_t> ne, std::uint32_t type,
                  const std::string& bytes, std::int64_t offset_override = -1) {
    while (data.size() % alignment) data.push_back('\0');
    put_str(infos, name);
    put<std::uint32_t>(infos, static_cast<std::uint32_t>(ne.size()));
    for (auto d : ne) put<std::uint64_t>(infos, d);
    put<std::uint32_t>(infos, type);
    put<std::uint64_t>(
        infos, offset_override >= 0 ? static_cast<std::uint64_t>(offset_override) : data.size());
    data += bytes;
    ++n_tensors;
  }
  std::string bytes() const {
    std::string s = magic;
    put<std::uint32_t>(s, version);
    put<std::uint64_t>(s, n_tensors);
    put<std::uint64_t>(s, n_kv);
    s += kv;
    s += infos;
    while (s.size() % alignment) s.push_back('\0');
    return s + data;
  }
};

std::string floats(std::initializer_list<float> v) {
  return std::string(reinterpret_cast<const char*>(v.begin()), v.size() * sizeof(float));
}

void write_bytes(const fs::path& p, const std::string& bytes) {
  std::ofstream o(p, std::ios::binary);
  o.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string open_error(const test::TempDir& dir, const std::string& bytes) {
  fs::path p = dir / "bad.gguf";
  write_bytes(p, bytes);
  try {
    io::GgufFile f(p);
  } catch (const FormatError& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST_CASE("gguf: hand-built file parses, metadata and tensors as written", "[io][gguf]") {
  test::TempDir dir;
  GgufBuilder b;
  b.add_string("general.architecture", "llama");
  b.add_u32("x.count", 7);
  b.add_tensor("w", {3, 2}, 0, floats({1, 2, 3, 4, 5, 6}));
  b.add_tensor("v", {2}, 0, floats({-1, 0.5f}));
  fs::path p = dir / "ok.gguf";
  write_bytes(p, b.bytes());
  io::GgufFile f(p);
  CHECK(f.version() == 3);
  CHECK(f.get_string("general.architecture") == "llama");
  CHECK(f.get_int("x.count") == 7);
  CHECK(f.get_float("x.count") == 7.0);
  CHECK(f.has("x.count"));
  CHECK_FALSE(f.has("y"));
  CHECK(f.get_int("y", 42) == 42);
  CHECK_THROWS_WITH(f.get_int("y"), Catch::Contains("missing") && Catch::Contains("key 'y'"));
  CHECK_THROWS_WITH(f.get_string("x.count"),
                    Catch::Contains("expected a string") && Catch::Contains("x.count"));
  REQUIRE(f.tensors().size() == 2);
  at::Tensor w = f.tensor("w", at::kFloat);
  // ne = {3, 2}: two rows of three in torch order
  CHECK(w.sizes().vec() == std::vector<int64_t>{2, 3});
  CHECK(at::equal(w, at::tensor({1.f, 2.f, 3.f, 4.f, 5.f, 6.f}).reshape({2, 3})));
  CHECK(at::equal(f.tensor("v", at::kBFloat16), at::tensor({-1.f, 0.5f}).to(at::kBFloat16)));
  CHECK_THROWS_WITH(f.tensor("nope", at::kFloat),
                    Catch::Contains("no such tensor") && Catch::Contains("'nope'"));
}

TEST_CASE("gguf: hand-computed Q8_0 and Q4_0 blocks", "[io][gguf]") {
  test::TempDir dir;
  GgufBuilder b;
  // Q8_0: d = 0.5 (fp16 0x3800), q = -16..15
  std::string q8("\x00\x38", 2);
  for (int i = 0; i < 32; ++i) q8.push_back(static_cast<char>(i - 16));
  // Q4_0: d = 2.0 (fp16 0x4000), byte j = (j) | (15 - j) << 4
  std::string q4("\x00\x40", 2);
  for (int j = 0; j < 16; ++j) q4.push_back(static_cast<char>(j | ((15 - j) << 4)));
  b.add_tensor("q8", {32}, 8, q8);
  b.add_tensor("q4", {32}, 2, q4);
  fs::path p = dir / "q.gguf";
  write_bytes(p, b.bytes());
  io::GgufFile f(p);
  at::Tensor a = f.tensor("q8", at::kFloat), c = f.tensor("q4", at::kFloat);
  for (int i = 0; i < 32; ++i) CHECK(a[i].item<float>() == 0.5f * (i - 16));
  for (int j = 0; j < 16; ++j) {
    CHECK(c[j].item<float>() == 2.0f * (j - 8));
    CHECK(c[j + 16].item<float>() == 2.0f * (15 - j - 8));
  }
}

TEST_CASE("gguf: bad input is a FormatError naming file and tensor", "[io][gguf]") {
  test::TempDir dir;
  GgufBuilder good;
  good.add_string("general.architecture", "llama");
  good.add_tensor("w", {4}, 0, floats({1, 2, 3, 4}));
  const std::string ok = good.bytes();

  SECTION("bad magic") {
    GgufBuilder b = good;
    b.magic = "GGUX";
    CHECK_THAT(open_error(dir, b.bytes()),
               Catch::Contains("bad magic") && Catch::Contains("bad.gguf"));
    CHECK_THAT(open_error(dir, "GG"), Catch::Contains("bad magic"));
  }
  SECTION("bad version") {
    GgufBuilder b = good;
    b.version = 1;
    CHECK_THAT(open_error(dir, b.bytes()), Catch::Contains("unsupported GGUF version 1"));
    b.version = 4;
    CHECK_THAT(open_error(dir, b.bytes()), Catch::Contains("unsupported GGUF version 4"));
  }
  SECTION("truncated file") {
    for (std::size_t n : {std::size_t{6}, std::size_t{20}, std::size_t{30}, std::size_t{60}})
      CHECK_THAT(open_error(dir, ok.substr(0, n)), Catch::Contains("truncated file"));
    CHECK_THAT(open_error(dir, ok.substr(0, ok.size() - 1)),
               Catch::Contains("past the end of the file") && Catch::Contains("tensor 'w'"));
  }
  SECTION("tensor past EOF") {
    GgufBuilder b;
    b.add_tensor("w", {4}, 0, floats({1, 2, 3, 4}), 64);
    CHECK_THAT(open_error(dir, b.bytes()),
               Catch::Contains("runs past the end of the file") && Catch::Contains("tensor 'w'"));
  }
  SECTION("two tensors sharing one data range") {
    // b's 16 bytes start at a's offset 0: both would read the same floats.
    GgufBuilder b;
    b.add_tensor("a", {4}, 0, floats({1, 2, 3, 4}));
    b.add_tensor("b", {4}, 0, floats({5, 6, 7, 8}), 0);
    CHECK_THAT(open_error(dir, b.bytes()),
               Catch::Contains("overlaps the data of tensor 'a'") && Catch::Contains("tensor 'b'"));
    // A partial overlap is refused as well: a holds 16 floats at [0, 64), b's 16 bytes start at 32.
    GgufBuilder c;
    c.add_tensor("a", {16}, 0, std::string(64, '\0'));
    c.add_tensor("b", {4}, 0, floats({5, 6, 7, 8}), 32);
    CHECK_THAT(open_error(dir, c.bytes()), Catch::Contains("overlaps the data of tensor 'a'"));
  }
  SECTION("a FIFO is refused before it is opened, never waited on") {
    const fs::path fifo = dir / "x.gguf";
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    CHECK_THROWS_WITH(io::GgufFile(fifo),
                      Catch::Contains("not a regular file") && Catch::Contains("x.gguf"));
  }
  SECTION("unknown ggml type") {
    GgufBuilder b;
    b.add_tensor("w", {4}, 99, floats({1, 2, 3, 4}));
    CHECK_THAT(open_error(dir, b.bytes()),
               Catch::Contains("unknown ggml type 99") && Catch::Contains("tensor 'w'"));
  }
  SECTION("unsupported quantization type") {
    GgufBuilder b;
    b.add_tensor("w", {256}, 10, std::string(84, '\0'));  // Q2_K
    fs::path p = dir / "q2k.gguf";
    write_bytes(p, b.bytes());
    io::GgufFile f(p);
    CHECK_THROWS_WITH(f.tensor("w", at::kFloat), Catch::Contains("unsupported ggml type Q2_K") &&
                                                     Catch::Contains("tensor 'w'") &&
                                                     Catch::Contains("q2k.gguf"));
  }
  SECTION("absurd counts") {
    std::string s = ok;
    std::uint64_t huge = 1ULL << 60;
    std::memcpy(s.data() + 8, &huge, 8);
    CHECK_THAT(open_error(dir, s),
               Catch::Contains("tensor count") && Catch::Contains("absurdly large"));
    s = ok;
    std::memcpy(s.data() + 16, &huge, 8);
    CHECK_THAT(open_error(dir, s),
               Catch::Contains("metadata count") && Catch::Contains("absurdly large"));
  }
  SECTION("string length past EOF") {
    GgufBuilder b;
    std::string raw;
    GgufBuilder::put<std::uint64_t>(raw, 1ULL << 40);  // key length
    raw += "abc";
    b.add_raw_kv(raw);
    CHECK_THAT(open_error(dir, b.bytes()),
               Catch::Contains("length") && Catch::Contains("past the end of the file"));
  }
  SECTION("array length past EOF and unknown value types") {
    GgufBuilder b;
    std::string raw;
    GgufBuilder::put_str(raw, "arr");
    GgufBuilder::put<std::uint32_t>(raw, 9);
    GgufBuilder::put<std::uint32_t>(raw, 4);
    GgufBuilder::put<std::uint64_t>(raw, 1ULL << 50);
    b.add_raw_kv(raw);
    CHECK_THAT(open_error(dir, b.bytes()),
               Catch::Contains("array length") && Catch::Contains("key 'arr'"));
    GgufBuilder c;
    std::string raw2;
    GgufBuilder::put_str(raw2, "k");
    GgufBuilder::put<std::uint32_t>(raw2, 13);
    c.add_raw_kv(raw2);
    CHECK_THAT(open_error(dir, c.bytes()),
               Catch::Contains("unknown metadata value type 13") && Catch::Contains("key 'k'"));
  }
  SECTION("dims overflow, too many dims, partial blocks") {
    GgufBuilder b;
    b.add_tensor("w", {1ULL << 32, 1ULL << 32}, 0, "");
    CHECK_THAT(open_error(dir, b.bytes()),
               Catch::Contains("overflow") && Catch::Contains("tensor 'w'"));
    GgufBuilder c;
    c.add_tensor("w", {1, 1, 1, 1, 1}, 0, floats({1}));
    CHECK_THAT(open_error(dir, c.bytes()),
               Catch::Contains("dimensions") && Catch::Contains("tensor 'w'"));
    GgufBuilder d;
    d.add_tensor("w", {33}, 8, std::string(68, '\0'));
    CHECK_THAT(open_error(dir, d.bytes()),
               Catch::Contains("not a multiple") && Catch::Contains("Q8_0"));
  }
  SECTION("misaligned offset, bad alignment, duplicate names") {
    GgufBuilder b;
    b.add_tensor("w", {1}, 0, floats({1}), 4);
    CHECK_THAT(open_error(dir, b.bytes()), Catch::Contains("not a multiple of the alignment"));
    GgufBuilder c;
    c.add_u32("general.alignment", 24);
    CHECK_THAT(open_error(dir, c.bytes()),
               Catch::Contains("power of two") && Catch::Contains("general.alignment"));
    GgufBuilder d;
    d.add_tensor("w", {1}, 0, floats({1}));
    d.add_tensor("w", {1}, 0, floats({1}));
    CHECK_THAT(open_error(dir, d.bytes()),
               Catch::Contains("duplicate tensor name") && Catch::Contains("'w'"));
    GgufBuilder e;
    e.add_u32("k", 1);
    e.add_u32("k", 2);
    CHECK_THAT(open_error(dir, e.bytes()),
               Catch::Contains("duplicate metadata key") && Catch::Contains("'k'"));
  }
  SECTION("the good file is good") { CHECK(open_error(dir, ok).empty()); }
}

TEST_CASE("gguf: checkpoint loading rejects unknown architectures and names", "[io][gguf]") {
  test::TempDir dir;
  GgufBuilder b;
  b.add_string("general.architecture", "mamba");
  fs::path p = dir / "m.gguf";
  write_bytes(p, b.bytes());
  CHECK_THROWS_WITH(model::gguf_load_checkpoint(p, at::kFloat),
                    Catch::Contains("unknown architecture 'mamba'") && Catch::Contains("m.gguf"));
  CHECK(model::gguf_to_hf_name("blk.12.attn_output.weight") ==
        std::string("model.layers.12.self_attn.o_proj.weight"));
  CHECK(model::gguf_to_hf_name("blk.0.ffn_norm.weight") ==
        std::string("model.layers.0.post_attention_layernorm.weight"));
  CHECK(model::gguf_to_hf_name("output.weight") == std::string("lm_head.weight"));
  CHECK_FALSE(model::gguf_to_hf_name("blk.0.attn_qkv.weight").has_value());
}
