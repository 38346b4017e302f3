// safetensors validation and save/load behaviour, against hand-built files with known bytes.
#include <ATen/ATen.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <fstream>
#include <limits>

#include "io/safetensors_header.hpp"  // internal: the parsed header
#include "safetune/error.hpp"
#include "safetune/io/atomic_file.hpp"
#include "safetune/io/finite.hpp"
#include "safetune/io/safetensors.hpp"
#include "support.hpp"

namespace fs = std::filesystem;
using namespace safetune;

namespace {
// An 8-byte little-endian header length, the JSON header, then `data`.
std::string file_image(const std::string& header, const std::string& data,
                       std::uint64_t len_override = ~0ULL) {
  std::uint64_t len = len_override == ~0ULL ? header.size() : len_override;
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((len >> (8 * i)) & 0xff);
  return out + header + data;
}

void write_bytes(const fs::path& p, const std::string& bytes) {
  std::ofstream o(p, std::ios::binary);
  o.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Loads `bytes` from a file and returns the FormatError message ("" when it loads).
std::string load_error(const test::TempDir& dir, const std::string& bytes) {
  fs::path p = dir / "bad.safetensors";
  write_bytes(p, bytes);
  try {
    io::safetensors_load(p);
  } catch (const FormatError& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST_CASE("safetensors: hand-built file loads with exact bytes and file-order names",
          "[io][safetensors]") {
  test::TempDir dir;
  // two F32 values then one I16 (-2), little-endian
  std::string data;
  float f[2] = {1.5f, -2.25f};
  data.append(reinterpret_cast<const char*>(f), 8);
  data.append("\xfe\xff", 2);
  std::string header =
      R"({"b":{"dtype":"I16","shape":[1],"data_offsets":[8,10]},)"
      R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"__metadata__":{"k":"v"}})";
  fs::path p = dir / "x.safetensors";
  write_bytes(p, file_image(header, data));
  auto tensors = io::safetensors_load(p);
  REQUIRE(tensors.size() == 2);
  CHECK(tensors[0].first == "a");
  CHECK(tensors[1].first == "b");
  CHECK(tensors[0].second.scalar_type() == at::kFloat);
  CHECK(tensors[0].second[0].item<float>() == 1.5f);
  CHECK(tensors[0].second[1].item<float>() == -2.25f);
  CHECK(tensors[1].second.scalar_type() == at::kShort);
  CHECK(tensors[1].second[0].item<int16_t>() == -2);
  auto h = io::safetensors_read_header(p);
  CHECK(h.metadata.at("k") == "v");
  REQUIRE(h.tensors.size() == 2);
  CHECK(h.tensors[1].name == "b");
  CHECK(h.tensors[1].shape == std::vector<int64_t>{1});
  CHECK(h.tensors[1].begin == 8);
  CHECK(h.tensors[1].end == 10);
}

TEST_CASE("safetensors: loaded tensors view the mapping and outlive nothing", "[io][safetensors]") {
  test::TempDir dir;
  fs::path p = dir / "w.safetensors";
  at::Tensor w = at::arange(16, at::kFloat).reshape({4, 4});
  io::safetensors_save(p, {{"w", w}});
  at::Tensor loaded;
  {
    auto t = io::safetensors_load(p);
    loaded = t.at(0).second;
  }
  fs::remove(p);  // the mapping must survive the file's removal and the vector's destruction
  CHECK(at::equal(loaded, w));
  // copy-on-write mapping: writing to the view is allowed and does not crash
  loaded.add_(1);
  CHECK(loaded[0][0].item<float>() == 1.0f);
}

TEST_CASE("safetensors: save writes the reference layout", "[io][safetensors]") {
  test::TempDir dir;
  fs::path p = dir / "s.safetensors";
  io::safetensors_save(
      p, {{"x", at::tensor({1.0f, 2.0f})}, {"m", at::tensor({1, 0, 1}, at::kByte).to(at::kBool)}},
      {{"format", "pt"}});
  std::string bytes = io::read_file(p);
  std::uint64_t len = 0;
  std::memcpy(&len, bytes.data(), 8);
  CHECK(len % 8 == 0);  // padded header, as the reference writer does
  CHECK(bytes.size() == 8 + len + 8 + 3);
  std::string header = bytes.substr(8, len);
  CHECK(header.find(R"("x":{"data_offsets":[0,8],"dtype":"F32","shape":[2]})") !=
        std::string::npos);
  CHECK(header.find(R"("m":{"data_offsets":[8,11],"dtype":"BOOL","shape":[3]})") !=
        std::string::npos);
  CHECK(header.find(R"("__metadata__":{"format":"pt"})") != std::string::npos);
  float x[2];
  std::memcpy(x, bytes.data() + 8 + len, 8);
  CHECK(x[0] == 1.0f);
  CHECK(x[1] == 2.0f);
  CHECK(bytes.substr(8 + len + 8) == std::string("\x01\x00\x01", 3));
}

TEST_CASE("safetensors: save rejects duplicate names and unsupported dtypes", "[io][safetensors]") {
  test::TempDir dir;
  CHECK_THROWS_WITH(
      io::safetensors_save(dir / "d.safetensors", {{"a", at::ones({1})}, {"a", at::ones({1})}}),
      Catch::Contains("duplicate tensor name") && Catch::Contains("'a'"));
  CHECK_THROWS_WITH(
      io::safetensors_save(dir / "c.safetensors", {{"z", at::ones({1}, at::kComplexFloat)}}),
      Catch::Contains("no safetensors equivalent") && Catch::Contains("'z'"));
  CHECK_FALSE(fs::exists(dir / "d.safetensors"));
}

TEST_CASE("safetensors: every malformed header is a FormatError naming file and tensor",
          "[io][safetensors]") {
  test::TempDir dir;
  const std::string ok8(8, '\0');
  auto entry = [](const std::string& name, const std::string& dtype, const std::string& shape,
                  const std::string& offs) {
    return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape +
           ",\"data_offsets\":" + offs + "}";
  };
  SECTION("shorter than 8 bytes") {
    CHECK_THAT(load_error(dir, "abc"), Catch::Contains("shorter than the 8-byte header") &&
                                           Catch::Contains("bad.safetensors"));
  }
  SECTION("header length past end of file") {
    CHECK_THAT(load_error(dir, file_image("{}", "", 50)),
               Catch::Contains("past the end of the file"));
  }
  SECTION("header size limit") {
    CHECK_THAT(load_error(dir, file_image("{}", "", 100'000'001)),
               Catch::Contains("100 MB header size limit"));
  }
  SECTION("malformed JSON") {
    CHECK_THAT(load_error(dir, file_image("{\"a\":", "")),
               Catch::Contains("malformed JSON header"));
    CHECK_THAT(load_error(dir, file_image(std::string(20, '[') + std::string(20, ']'), "")),
               Catch::Contains("malformed JSON header"));
  }
  SECTION("JSON not an object") {
    CHECK_THAT(load_error(dir, file_image("[1,2]", "")), Catch::Contains("not an object"));
  }
  SECTION("unknown dtype") {
    CHECK_THAT(load_error(dir, file_image("{" + entry("w", "F7", "[2]", "[0,8]") + "}", ok8)),
               Catch::Contains("unknown dtype 'F7'") && Catch::Contains("tensor 'w'"));
  }
  SECTION("shape x dtype size != byte range") {
    CHECK_THAT(load_error(dir, file_image("{" + entry("w", "F32", "[3]", "[0,8]") + "}", ok8)),
               Catch::Contains("does not match the byte range") && Catch::Contains("tensor 'w'"));
  }
  SECTION("range outside the data buffer") {
    CHECK_THAT(load_error(dir, file_image("{" + entry("w", "F32", "[4]", "[0,16]") + "}", ok8)),
               Catch::Contains("outside the data buffer") && Catch::Contains("tensor 'w'"));
  }
  SECTION("end before begin") {
    CHECK_THAT(load_error(dir, file_image("{" + entry("w", "U8", "[0]", "[8,4]") + "}", ok8)),
               Catch::Contains("before begin") && Catch::Contains("tensor 'w'"));
  }
  SECTION("overlapping ranges") {
    CHECK_THAT(load_error(dir, file_image("{" + entry("a", "F32", "[2]", "[0,8]") + "," +
                                              entry("b", "F32", "[1]", "[4,8]") + "}",
                                          ok8)),
               Catch::Contains("overlaps tensor 'a'") && Catch::Contains("tensor 'b'"));
  }
  SECTION("gaps are allowed") {
    CHECK(load_error(dir, file_image("{" + entry("a", "F32", "[1]", "[4,8]") + "}", ok8)).empty());
  }
  SECTION("duplicate names") {
    CHECK_THAT(load_error(dir, file_image("{" + entry("a", "U8", "[4]", "[0,4]") + "," +
                                              entry("a", "U8", "[4]", "[4,8]") + "}",
                                          ok8)),
               Catch::Contains("duplicate tensor name") && Catch::Contains("tensor 'a'"));
  }
  SECTION("negative dims") {
    CHECK_THAT(load_error(dir, file_image("{" + entry("w", "U8", "[-2]", "[0,2]") + "}", ok8)),
               Catch::Contains("negative dimension") && Catch::Contains("tensor 'w'"));
  }
  SECTION("shape product overflow") {
    CHECK_THAT(
        load_error(
            dir,
            file_image("{" + entry("w", "F32", "[4294967296,4294967296]", "[0,8]") + "}", ok8)),
        Catch::Contains("does not match the byte range"));
  }
  SECTION("entry with missing fields or wrong types") {
    CHECK_THAT(load_error(dir, file_image(R"({"w":{"shape":[1],"data_offsets":[0,1]}})", ok8)),
               Catch::Contains("dtype") && Catch::Contains("tensor 'w'"));
    CHECK_THAT(
        load_error(dir, file_image(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0]}})", ok8)),
        Catch::Contains("data_offsets"));
    CHECK_THAT(
        load_error(dir,
                   file_image(R"({"w":{"dtype":"U8","shape":[1.5],"data_offsets":[0,1]}})", ok8)),
        Catch::Contains("shape entry"));
    CHECK_THAT(load_error(dir, file_image(R"({"__metadata__":{"a":1}})", ok8)),
               Catch::Contains("__metadata__"));
  }
}

TEST_CASE("safetensors: sharded index errors name the index and tensor", "[io][safetensors]") {
  test::TempDir dir;
  io::safetensors_save(dir / "s1.safetensors", {{"a", at::ones({2})}});
  SECTION("missing shard") {
    test::write_text(dir / "model.safetensors.index.json",
                     R"({"weight_map":{"a":"s1.safetensors","b":"nope.safetensors"}})");
    CHECK_THROWS_WITH(
        io::safetensors_load(dir.path()),
        Catch::Contains("missing shard 'nope.safetensors'") && Catch::Contains("tensor 'b'"));
  }
  SECTION("tensor missing from its shard") {
    test::write_text(dir / "model.safetensors.index.json",
                     R"({"weight_map":{"a":"s1.safetensors","c":"s1.safetensors"}})");
    CHECK_THROWS_WITH(
        io::safetensors_load(dir / "model.safetensors.index.json"),
        Catch::Contains("missing from shard 's1.safetensors'") && Catch::Contains("tensor 'c'"));
  }
  SECTION("shard outside the directory") {
    test::write_text(dir / "model.safetensors.index.json",
                     R"({"weight_map":{"a":"../s1.safetensors"}})");
    CHECK_THROWS_AS(io::safetensors_load(dir.path()), FormatError);
  }
  SECTION("malformed index") {
    test::write_text(dir / "model.safetensors.index.json", R"({"weight_map":[1]})");
    CHECK_THROWS_WITH(io::safetensors_load(dir.path()), Catch::Contains("weight_map"));
  }
  SECTION("valid index") {
    io::safetensors_save(dir / "s2.safetensors", {{"b", at::full({3}, 2.0)}});
    test::write_text(dir / "model.safetensors.index.json",
                     R"({"metadata":{},"weight_map":{"a":"s1.safetensors","b":"s2.safetensors"}})");
    auto t = io::safetensors_load(dir.path());
    REQUIRE(t.size() == 2);
    CHECK(t[0].first == "a");
    CHECK(t[1].first == "b");
    CHECK(at::equal(t[1].second, at::full({3}, 2.0)));
  }
}

TEST_CASE("non-finite weights are refused naming file, tensor and count", "[io][safetensors]") {
  const float nan = std::numeric_limits<float>::quiet_NaN(),
              inf = std::numeric_limits<float>::infinity();
  std::vector<std::pair<std::string, at::Tensor>> tensors{
      {"ok", at::tensor({1.0f, 2.0f})},
      {"ids", at::tensor({std::int64_t{1}, std::int64_t{2}})},  // integers are never checked
      {"bad", at::tensor({1.0f, nan, -inf, 4.0f, nan, 6.0f})}};
  CHECK_THROWS_WITH(io::require_finite(tensors, "m.safetensors"),
                    "m.safetensors: bad: tensor has 3 of 6 values that are NaN or infinite (hint: "
                    "the file is damaged, "
                    "or was saved from a diverged run)");
  tensors.pop_back();
  CHECK_NOTHROW(io::require_finite(tensors, "m.safetensors"));
  // bf16 too (the dtype of real checkpoints).
  tensors.push_back({"half", at::tensor({1.0f, inf}).to(at::kBFloat16)});
  CHECK_THROWS_WITH(io::require_finite(tensors, "m"), Catch::Contains("half: tensor has 1 of 2"));
}
