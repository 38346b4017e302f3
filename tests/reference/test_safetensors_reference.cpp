// safetensors files written by the Python `safetensors` package load byte-exact; files this code
// writes load in Python with the values Python expects.
#include <ATen/ATen.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>

#include "io/safetensors_header.hpp"  // internal: the parsed header
#include "safetune/io/atomic_file.hpp"
#include "safetune/io/safetensors.hpp"
#include "support.hpp"

namespace fs = std::filesystem;
using namespace safetune;
using json = nlohmann::json;

namespace {
fs::path st_dir() { return test::fixture_dir() / "io" / "safetensors"; }

const char* torch_name(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "float32";
    case at::kHalf: return "float16";
    case at::kBFloat16: return "bfloat16";
    case at::kDouble: return "float64";
    case at::kLong: return "int64";
    case at::kInt: return "int32";
    case at::kShort: return "int16";
    case at::kChar: return "int8";
    case at::kByte: return "uint8";
    case at::kBool: return "bool";
    default: return "?";
  }
}

// Compares loaded tensors to the manifest's raw bytes, dtypes and shapes (all of them, no extras).
void check_against_manifest(const std::vector<std::pair<std::string, at::Tensor>>& loaded,
                            const std::string& manifest_name) {
  json m = json::parse(io::read_file(st_dir() / manifest_name));
  const json& expected = m["tensors"];
  REQUIRE(loaded.size() == expected.size());
  for (const auto& [name, t] : loaded) {
    INFO("tensor " << name);
    REQUIRE(expected.contains(name));
    const json& e = expected[name];
    CHECK(torch_name(t.scalar_type()) == e["dtype"].get<std::string>());
    CHECK(t.sizes().vec() == e["shape"].get<std::vector<int64_t>>());
    std::string want = io::read_file(st_dir() / e["file"].get<std::string>());
    REQUIRE(static_cast<std::size_t>(t.nbytes()) == want.size());
    at::Tensor c = t.contiguous();
    CHECK(std::memcmp(c.data_ptr(), want.data(), want.size()) == 0);
  }
}

int run_python(const std::string& script) {
  std::string cmd = "\"" + test::python().string() + "\" -c '" + script + "'";
  int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : 128;
}
}  // namespace

TEST_CASE("safetensors reference: torch-written mixed dtypes load byte-exact with metadata",
          "[reference][io]") {
  auto loaded = io::safetensors_load(st_dir() / "mixed.safetensors");
  check_against_manifest(loaded, "mixed.json");
  auto header = io::safetensors_read_header(st_dir() / "mixed.safetensors");
  CHECK(header.metadata.at("format") == "pt");
  CHECK(header.metadata.at("note") == "h\xc3\xa9llo");
}

TEST_CASE("safetensors reference: numpy-written file loads byte-exact", "[reference][io]") {
  check_against_manifest(io::safetensors_load(st_dir() / "numpy.safetensors"), "numpy.json");
}

TEST_CASE("safetensors reference: sharded directory and index file load byte-exact",
          "[reference][io]") {
  check_against_manifest(io::safetensors_load(st_dir() / "sharded"), "sharded.json");
  check_against_manifest(
      io::safetensors_load(st_dir() / "sharded" / "model.safetensors.index.json"), "sharded.json");
}

TEST_CASE("safetensors reference: loading is zero copy (tensors sit at their file offsets)",
          "[reference][io]") {
  auto loaded = io::safetensors_load(st_dir() / "mixed.safetensors");
  auto header = io::safetensors_read_header(st_dir() / "mixed.safetensors");
  REQUIRE(loaded.size() == header.tensors.size());
  const char* base = nullptr;
  for (std::size_t i = 0; i < loaded.size() && !base; ++i)
    if (loaded[i].second.numel() > 0)
      base = static_cast<const char*>(loaded[i].second.data_ptr()) - header.tensors[i].begin;
  REQUIRE(base != nullptr);
  for (std::size_t i = 0; i < loaded.size(); ++i) {
    INFO(loaded[i].first);
    CHECK(loaded[i].first == header.tensors[i].name);
    if (loaded[i].second.numel() == 0) continue;
    // one mapping: every tensor's address is the same base plus its offset in the file
    CHECK(static_cast<const char*>(loaded[i].second.data_ptr()) == base + header.tensors[i].begin);
  }
}

TEST_CASE("safetensors reference: files written by safetensors_save load in Python",
          "[reference][io]") {
  test::TempDir dir;
  fs::path p = dir / "ours.safetensors";
  io::safetensors_save(p,
                       {{"a", at::arange(12, at::kFloat).reshape({3, 4}).div(4)},
                        {"h", at::arange(6, at::kFloat).to(at::kHalf).neg()},
                        {"b", at::arange(5, at::kFloat).to(at::kBFloat16).mul(0.5)},
                        {"i", at::arange(-3, 3, at::kLong)},
                        {"j", at::arange(4, at::kInt).reshape({2, 2})},
                        {"u", at::arange(7, at::kByte)},
                        {"m", at::arange(4, at::kLong).remainder(2).to(at::kBool)},
                        {"t", at::arange(8, at::kFloat).reshape({2, 4}).t()},  // non-contiguous
                        {"e", at::zeros({0, 3})}},
                       {{"format", "pt"}, {"who", "safetune"}});
  std::string script =
      "import torch, sys\n"
      "from safetensors import safe_open\n"
      "from safetensors.torch import load_file\n"
      "p = sys.argv[1] if len(sys.argv) > 1 else \"" +
      p.string() +
      "\"\n"
      "d = load_file(p)\n"
      "exp = {\"a\": torch.arange(12.).reshape(3, 4) / 4, \"h\": -torch.arange(6.).half(),\n"
      "       \"b\": torch.arange(5.).bfloat16() * 0.5, \"i\": torch.arange(-3, 3),\n"
      "       \"j\": torch.arange(4, dtype=torch.int32).reshape(2, 2), \"u\": torch.arange(7, "
      "dtype=torch.uint8),\n"
      "       \"m\": torch.tensor([False, True, False, True]), \"t\": torch.arange(8.).reshape(2, "
      "4).t(),\n"
      "       \"e\": torch.zeros(0, 3)}\n"
      "assert set(d) == set(exp), sorted(d)\n"
      "for k, v in exp.items():\n"
      "    assert d[k].dtype == v.dtype and d[k].shape == v.shape and torch.equal(d[k], v), k\n"
      "with safe_open(p, \"pt\") as f:\n"
      "    assert f.metadata() == {\"format\": \"pt\", \"who\": \"safetune\"}, f.metadata()\n";
  CHECK(run_python(script) == 0);
}

TEST_CASE("safetensors reference: sharded export loads in Python the way transformers reads it",
          "[reference][io]") {
  test::TempDir dir;
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (int i = 0; i < 5; ++i)
    tensors.emplace_back("model.layers." + std::to_string(i) + ".w",
                         at::arange(100, at::kFloat).add(i * 1000));
  tensors.emplace_back("model.norm.weight", at::ones({3}, at::kBFloat16));
  // 400 bytes per layer tensor, 1000-byte shards: 2 + 2 + 1 (+ norm) -> 3 shards
  auto files = io::safetensors_save_sharded(dir.path(), tensors, 1000);
  REQUIRE(files.size() == 4);
  CHECK(files[0].filename() == "model-00001-of-00003.safetensors");
  CHECK(fs::exists(dir / "model.safetensors.index.json"));
  CHECK_FALSE(fs::exists(dir / "model.safetensors"));
  // C++ round trip, in the original order
  auto back = io::safetensors_load(dir.path());
  REQUIRE(back.size() == tensors.size());
  for (std::size_t i = 0; i < back.size(); ++i) {
    CHECK(back[i].first == tensors[i].first);
    CHECK(at::equal(back[i].second, tensors[i].second));
  }
  std::string script =
      "import json, torch\n"
      "from safetensors.torch import load_file\n"
      "d = \"" +
      dir.path().string() +
      "\"\n"
      "idx = json.load(open(d + \"/model.safetensors.index.json\"))\n"
      "assert idx[\"metadata\"][\"total_size\"] == 5 * 400 + 6, idx\n"
      "sd = {}\n"
      "for f in sorted(set(idx[\"weight_map\"].values())):\n"
      "    sd.update(load_file(d + \"/\" + f))\n"
      "assert set(sd) == set(idx[\"weight_map\"]), sorted(sd)\n"
      "for i in range(5):\n"
      "    assert torch.equal(sd[f\"model.layers.{i}.w\"], torch.arange(100.) + i * 1000), i\n"
      "assert torch.equal(sd[\"model.norm.weight\"], torch.ones(3, dtype=torch.bfloat16))\n";
  CHECK(run_python(script) == 0);
  // re-exporting small switches back to one file and drops the index
  io::safetensors_save_sharded(dir.path(), {tensors.back()});
  CHECK(fs::exists(dir / "model.safetensors"));
  CHECK_FALSE(fs::exists(dir / "model.safetensors.index.json"));
  CHECK(io::safetensors_load(dir.path()).size() == 1);
}
