// GGUF against the gguf package: its writer's files, its own dequantization, and the real SmolLM2.
#include <ATen/ATen.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <nlohmann/json.hpp>

#include "safetune/error.hpp"
#include "safetune/io/atomic_file.hpp"
#include "safetune/io/gguf.hpp"
#include "safetune/io/safetensors.hpp"
#include "safetune/model/causal_lm.hpp"
#include "safetune/model/config.hpp"
#include "safetune/model/gguf.hpp"
#include "support.hpp"

namespace fs = std::filesystem;
using namespace safetune;
using json = nlohmann::json;

namespace {
fs::path gguf_dir() { return test::fixture_dir() / "io" / "gguf"; }

at::Tensor read_f32(const std::string& file, const std::vector<int64_t>& shape) {
  std::string bytes = io::read_file(gguf_dir() / file);
  at::Tensor t = at::empty(shape, at::kFloat);
  REQUIRE(static_cast<std::size_t>(t.nbytes()) == bytes.size());
  std::memcpy(t.data_ptr(), bytes.data(), bytes.size());
  return t;
}

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

std::map<std::string, at::Tensor> as_map(std::vector<std::pair<std::string, at::Tensor>> v) {
  std::map<std::string, at::Tensor> m;
  for (auto& [k, t] : v) m.emplace(k, t);
  return m;
}
}  // namespace

TEST_CASE("gguf reference: every supported type equals gguf.quants.dequantize",
          "[reference][io][gguf]") {
  io::GgufFile f(gguf_dir() / "types.gguf");
  json manifest = json::parse(io::read_file(gguf_dir() / "types.json"));
  REQUIRE(manifest.size() == 11);
  for (auto it = manifest.begin(); it != manifest.end(); ++it) {
    const std::string name = it.key();
    INFO(name << " (" << it.value()["type"].get<std::string>() << ")");
    at::Tensor want = read_f32(it.value()["file"], it.value()["shape"].get<std::vector<int64_t>>());
    at::Tensor got = f.tensor(name, at::kFloat);
    REQUIRE(got.sizes() == want.sizes());
    const double err = max_abs_diff(got, want);
    CHECK(err <= 1e-6);
    CHECK(at::equal(got, want));  // the arithmetic follows gguf-py's order, so it is exact
    // other target dtypes are the float32 result rounded once
    CHECK(at::equal(f.tensor(name, at::kBFloat16), want.to(at::kBFloat16)));
    CHECK(at::equal(f.tensor(name, at::kHalf), want.to(at::kHalf)));
  }
  CHECK_THROWS_WITH(f.tensor("t_q2_k", at::kFloat), Catch::Contains("unsupported ggml type Q2_K") &&
                                                        Catch::Contains("tensor 't_q2_k'"));
}

TEST_CASE("gguf reference: metadata of every value type round-trips", "[reference][io][gguf]") {
  io::GgufFile f(gguf_dir() / "metadata.gguf");
  json expect = json::parse(io::read_file(gguf_dir() / "metadata.json"));
  for (auto it = expect.begin(); it != expect.end(); ++it) {
    const std::string key = it.key();
    const std::string type = it.value()["type"];
    const json& v = it.value()["value"];
    INFO(key << " " << type);
    const auto& value = f.get(key);
    CHECK(type == [&] {
      std::string n = io::gguf::value_type_name(value.type);
      for (auto& ch : n) ch = static_cast<char>(std::toupper(ch));
      return n;
    }());
    if (type == "STRING") CHECK(f.get_string(key) == v.get<std::string>());
    else if (type == "BOOL") CHECK(f.get_bool(key) == v.get<bool>());
    else if (type == "FLOAT32" || type == "FLOAT64") CHECK(f.get_float(key) == v.get<double>());
    else if (type == "UINT64") CHECK(value.u == v.get<std::uint64_t>());
    else CHECK(f.get_int(key) == v.get<std::int64_t>());
  }
  CHECK(f.get_strings("t.strs") == std::vector<std::string>{"a", "bb", "", "\xc3\xbc"});
  CHECK(f.get_ints("t.ints") == std::vector<std::int64_t>{1, -2, 3});
  CHECK(f.get("t.ints").elem_type == io::gguf::ValueType::INT32);
  CHECK(f.get("t.u64s").array.at(1).u == (1ULL << 63) + 5);
  CHECK(f.get_ints("t.i16s") == std::vector<std::int64_t>{-7, 7});
  CHECK(f.get_floats("t.floats") == std::vector<double>{0.25, -1.5});
  CHECK(f.get_floats("t.f64s") == std::vector<double>{0.1, 1e300});
  CHECK(f.get_ints("t.bools") == std::vector<std::int64_t>{1, 0, 1});
  const auto& nested = f.get("t.nested");
  REQUIRE(nested.array.size() == 3);
  CHECK(nested.elem_type == io::gguf::ValueType::ARRAY);
  CHECK(nested.array[2].array.size() == 3);
  CHECK(nested.array[2].array[2].i == 6);
  CHECK(f.get("t.nested_str").array[0].array[1].s == "y");
  CHECK(f.alignment() == 64);
  CHECK(f.get_string("general.architecture") == "qwen2");
  CHECK(at::equal(f.tensor("t", at::kFloat), at::arange(10, at::kFloat)));
  CHECK_THROWS_WITH(f.get_strings("t.ints"),
                    Catch::Contains("array of strings") && Catch::Contains("t.ints"));
}

TEST_CASE("gguf reference: tiny llama and qwen2 checkpoints recover the HF tensors exactly",
          "[reference][io][gguf]") {
  json configs = json::parse(io::read_file(gguf_dir() / "models.json"));
  for (const std::string arch : {"llama", "qwen2"}) {
    INFO(arch);
    const json& s = configs[arch];
    model::Checkpoint ck = model::gguf_load_checkpoint(gguf_dir() / (arch + ".gguf"), at::kFloat);
    const auto& c = ck.config;
    CHECK(c.architecture == arch);
    CHECK(c.num_hidden_layers == s["layers"].get<int64_t>());
    CHECK(c.hidden_size == s["hidden"].get<int64_t>());
    CHECK(c.intermediate_size == s["ffn"].get<int64_t>());
    CHECK(c.num_attention_heads == s["heads"].get<int64_t>());
    CHECK(c.num_key_value_heads == s["kv"].get<int64_t>());
    CHECK(c.head_dim == s["head_dim"].get<int64_t>());
    CHECK(c.vocab_size == s["vocab"].get<int64_t>());
    CHECK(c.tie_word_embeddings == s["tied"].get<bool>());
    CHECK(c.rope_theta == s["rope_theta"].get<double>());
    CHECK(c.rms_norm_eps == s["rms_eps"].get<double>());
    CHECK(c.max_position_embeddings == 256);
    CHECK(c.qkv_bias == (arch == "qwen2"));
    CHECK(c.bos_token_id == 3);
    CHECK(c.eos_token_ids == std::vector<std::int64_t>{4});
    CHECK(c.pad_token_id == 5);
    auto want = as_map(io::safetensors_load(gguf_dir() / (arch + "_hf.safetensors")));
    auto got = as_map(ck.tensors);
    REQUIRE(got.size() == want.size());
    for (const auto& [name, t] : want) {
      INFO(name);
      REQUIRE(got.count(name));
      CHECK(got[name].sizes() == t.sizes());
      CHECK(at::equal(got[name], t));
    }
  }
}

TEST_CASE("gguf reference: the real SmolLM2 Q4_1 model", "[reference][io][gguf][model]") {
  REQUIRE(fs::exists(test::smollm2_gguf()));
  model::Checkpoint ck = model::gguf_load_checkpoint(test::smollm2_gguf(), at::kFloat);
  const auto& c = ck.config;
  CHECK(c.architecture == "llama");
  CHECK(c.num_hidden_layers == 30);
  CHECK(c.hidden_size == 576);
  CHECK(c.intermediate_size == 1536);
  CHECK(c.num_attention_heads == 9);
  CHECK(c.num_key_value_heads == 3);
  CHECK(c.head_dim == 64);
  CHECK(c.vocab_size == 49152);
  CHECK(c.tie_word_embeddings);
  CHECK(c.rope_theta == 100000.0);
  CHECK(c.bos_token_id == 1);
  CHECK(c.eos_token_ids == std::vector<std::int64_t>{2});
  CHECK(ck.tensors.size() == 272);
  auto got = as_map(ck.tensors);
  CHECK(got.at("model.embed_tokens.weight").sizes().vec() == std::vector<int64_t>{49152, 576});
  CHECK_FALSE(got.count("lm_head.weight"));

  json manifest = json::parse(io::read_file(gguf_dir() / "smollm2.json"));
  const std::map<std::string, std::string> hf = {
      {"blk.0.ffn_down.weight", "model.layers.0.mlp.down_proj.weight"},
      {"blk.3.attn_q.weight", "model.layers.3.self_attn.q_proj.weight"},
      {"blk.3.attn_k.weight", "model.layers.3.self_attn.k_proj.weight"},
      {"output_norm.weight", "model.norm.weight"}};
  REQUIRE(manifest.size() == hf.size());
  for (auto it = manifest.begin(); it != manifest.end(); ++it) {
    INFO(it.key());
    at::Tensor want = read_f32(it.value()["file"], it.value()["shape"].get<std::vector<int64_t>>());
    const at::Tensor& t = got.at(hf.at(it.key()));
    REQUIRE(t.sizes() == want.sizes());
    CHECK(max_abs_diff(t, want) <= 1e-6);
    CHECK(at::equal(t, want));
  }
  // metadata the tokenizer will need
  io::GgufFile f(test::smollm2_gguf());
  CHECK(f.get_strings("tokenizer.ggml.tokens").size() == 49152);
  CHECK(f.get_strings("tokenizer.ggml.merges").size() == 48900);
  CHECK(f.get_ints("tokenizer.ggml.token_type").size() == 49152);
  CHECK(f.get_string("tokenizer.ggml.model") == "gpt2");
  CHECK(f.get_string("tokenizer.ggml.pre") == "smollm");
  CHECK(f.get_string("tokenizer.chat_template").find("im_start") != std::string::npos);
}

TEST_CASE("gguf reference: llama3 rope scaling stored as rope_freqs.weight equals transformers",
          "[reference][io][gguf]") {
  auto expected = as_map(io::safetensors_load(gguf_dir() / "llama3_rope_expected.safetensors"));
  model::Checkpoint ck = model::gguf_load_checkpoint(gguf_dir() / "llama3_rope.gguf", at::kFloat);
  REQUIRE(ck.config.rope_freq_factors.size() == 8);
  CHECK(ck.config.rope_freq_factors[0] == 1.0f);
  CHECK(ck.config.rope_freq_factors[7] == 8.0f);
  const at::Tensor ids = expected["ids"].unsqueeze(0);
  model::CausalLM scaled(ck);
  const float err = (scaled.forward(ids)[0] - expected["logits"]).abs().max().item<float>();
  CHECK(err < 1e-4f);
  // The 96 positions reach past the original 32-token context, so dropping the factors must show.
  ck.config.rope_freq_factors.clear();
  model::CausalLM unscaled(ck);
  CHECK((unscaled.forward(ids)[0] - expected["logits"]).abs().max().item<float>() > 1e-2f);
  // A model whose rope has no config.json form refuses to be exported as a Hugging Face directory.
  model::Checkpoint again =
      model::gguf_load_checkpoint(gguf_dir() / "llama3_rope.gguf", at::kFloat);
  CHECK_THROWS_WITH(model::to_hf_json(again.config), Catch::Contains("rope frequency factors"));
}
