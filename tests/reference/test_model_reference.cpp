// The model core against transformers: logits, KV-cache decoding, greedy generation, export, CLI.
#include <torch/torch.h>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>

#include "safetune/io/safetensors.hpp"
#include "safetune/model/causal_lm.hpp"
#include "safetune/model/export.hpp"
#include "safetune/model/generate.hpp"
#include "support.hpp"

using namespace safetune;
namespace fs = std::filesystem;

namespace {

const char* kModels[] = {"llama_mha", "llama_gqa_llama3", "llama_tied_headdim", "qwen2_gqa7",
                         "qwen2_untied"};

fs::path model_fixture() { return test::fixture_dir() / "model"; }

std::map<std::string, at::Tensor> load_ref(const std::string& name) {
  std::map<std::string, at::Tensor> m;
  for (auto& [k, t] : io::safetensors_load(model_fixture() / (name + "_ref.safetensors")))
    m[k] = t.clone();
  return m;
}

double max_abs(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

std::vector<std::int64_t> row(const at::Tensor& t, std::int64_t r, std::int64_t from = 0) {
  auto x = t[r].slice(0, from).contiguous().to(at::kLong);
  return {x.data_ptr<std::int64_t>(), x.data_ptr<std::int64_t>() + x.numel()};
}

model::GenerateOptions greedy32() {
  model::GenerateOptions o;
  o.max_new_tokens = 32;
  o.stop_tokens = std::vector<std::int64_t>{};  // the fixtures generate without a stop token
  o.pad_token_id = 0;
  return o;
}

std::string shell_quote(const std::string& s) {
  std::string r = "'";
  for (char c : s) r += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return r + "'";
}

}  // namespace

TEST_CASE("model: logits equal transformers' (fp32, CPU)", "[reference][model]") {
  torch::NoGradGuard ng;
  for (const char* name : kModels) {
    DYNAMIC_SECTION(name) {
      auto ref = load_ref(name);
      auto m = model::load(model_fixture() / name);
      auto logits = m->forward(ref["ids"]);
      REQUIRE(logits.sizes() == ref["logits"].sizes());
      double err = max_abs(logits, ref["logits"]);
      std::printf("[model parity] %-20s single prompt max abs logits error %.3g\n", name, err);
      CHECK(err <= 1e-4);

      // Left-padded batch: compare the real-token positions only (padding rows are arbitrary).
      auto bl = m->forward(ref["batch_ids"], ref["batch_mask"]);
      auto keep = ref["batch_mask"].to(at::kBool).unsqueeze(-1).expand_as(bl);
      double berr = max_abs(bl.masked_select(keep), ref["batch_logits"].masked_select(keep));
      std::printf("[model parity] %-20s padded batch  max abs logits error %.3g\n", name, berr);
      CHECK(berr <= 1e-4);
      CHECK(at::isfinite(bl).all().item<bool>());
    }
  }
}

TEST_CASE("model: KV-cache decoding gives transformers' full-sequence logits",
          "[reference][model]") {
  torch::NoGradGuard ng;
  for (const char* name : {"llama_gqa_llama3", "qwen2_gqa7"}) {
    DYNAMIC_SECTION(name) {
      auto ref = load_ref(name);
      auto m = model::load(model_fixture() / name);
      auto ids = ref["ids"];
      const auto T = ids.size(1);
      auto cache = m->make_cache();
      std::vector<at::Tensor> parts{m->forward(ids.narrow(1, 0, 5), {}, {}, &cache)};
      // one chunk of 3 (a multi-token step on a non-empty cache), then single tokens
      parts.push_back(m->forward(ids.narrow(1, 5, 3), {}, {}, &cache));
      for (std::int64_t t = 8; t < T; ++t)
        parts.push_back(m->forward(ids.narrow(1, t, 1), {}, {}, &cache));
      CHECK(cache.seq_len() == T);
      CHECK(max_abs(at::cat(parts, 1), ref["logits"]) <= 1e-4);

      // Padded batch through the cache: prefix then one token per step, mask growing.
      auto bids = ref["batch_ids"], bmask = ref["batch_mask"];
      auto bcache = m->make_cache();
      std::vector<at::Tensor> bparts{
          m->forward(bids.narrow(1, 0, 9), bmask.narrow(1, 0, 9), {}, &bcache)};
      for (std::int64_t t = 9; t < T; ++t)
        bparts.push_back(m->forward(bids.narrow(1, t, 1), bmask.narrow(1, 0, t + 1), {}, &bcache));
      auto bl = at::cat(bparts, 1);
      auto keep = bmask.to(at::kBool).unsqueeze(-1).expand_as(bl);
      CHECK(max_abs(bl.masked_select(keep), ref["batch_logits"].masked_select(keep)) <= 1e-4);
    }
  }
}

TEST_CASE("model: greedy generation equals transformers' generate(do_sample=False)",
          "[reference][model]") {
  for (const char* name : kModels) {
    DYNAMIC_SECTION(name) {
      auto ref = load_ref(name);
      auto m = model::load(model_fixture() / name);
      const auto T = ref["ids"].size(1);
      auto single = model::generate(*m, ref["ids"], {}, greedy32());
      CHECK(row(single.sequences, 0) == row(ref["greedy"], 0));
      CHECK(single.new_tokens[0] == row(ref["greedy"], 0, T));

      auto short_run = model::generate(*m, ref["greedy_short"].narrow(1, 0, 7), {}, greedy32());
      CHECK(row(short_run.sequences, 0) == row(ref["greedy_short"], 0));

      // Left-padded batch: equals transformers' batched output and each prompt run alone.
      auto batch = model::generate(*m, ref["batch_ids"], ref["batch_mask"], greedy32());
      CHECK(row(batch.sequences, 0) == row(ref["batch_greedy"], 0));
      CHECK(row(batch.sequences, 1) == row(ref["batch_greedy"], 1));
      CHECK(batch.new_tokens[0] == single.new_tokens[0]);
      CHECK(batch.new_tokens[1] == short_run.new_tokens[0]);

      // The same batch built from ragged prompts by the convenience overload.
      auto ragged = model::generate(
          *m, {row(ref["ids"], 0), row(ref["greedy_short"].narrow(1, 0, 7), 0)}, greedy32());
      CHECK(row(ragged.sequences, 1) == row(ref["batch_greedy"], 1));

      auto rep_opts = greedy32();
      rep_opts.repetition_penalty = 1.3;
      auto rep = model::generate(*m, ref["ids"], {}, rep_opts);
      CHECK(row(rep.sequences, 0) == row(ref["greedy_rep"], 0));
    }
  }
}

TEST_CASE("model: stop tokens end a row and pad it like transformers", "[reference][model]") {
  auto ref = load_ref("llama_mha");
  auto m = model::load(model_fixture() / "llama_mha");
  const auto T = ref["ids"].size(1);
  auto expected = row(ref["greedy"], 0, T);
  // Stop at the token transformers produced 6th; everything up to its first occurrence is kept.
  std::int64_t stop = expected[5];
  size_t first = std::find(expected.begin(), expected.end(), stop) - expected.begin();
  auto opts = greedy32();
  opts.stop_tokens = std::vector<std::int64_t>{stop};
  opts.pad_token_id = 0;
  auto batch = model::generate(*m, ref["batch_ids"], ref["batch_mask"], opts);
  REQUIRE(batch.new_tokens[0].size() == first + 1);
  CHECK(std::equal(batch.new_tokens[0].begin(), batch.new_tokens[0].end(), expected.begin()));
  // Row 0 is padded with 0 after its stop token while row 1 runs on (unless it stopped too).
  auto seq0 = row(batch.sequences, 0, T);
  for (size_t i = first + 1; i < seq0.size(); ++i) CHECK(seq0[i] == 0);
}

TEST_CASE("model: bf16 and fp16 stay close to transformers' fp32 logits", "[reference][model]") {
  torch::NoGradGuard ng;
  auto ref = load_ref("llama_gqa_llama3");
  auto scale = ref["logits"].abs().max().item<double>();
  for (auto dtype : {at::kBFloat16, at::kHalf}) {
    auto m = model::load(model_fixture() / "llama_gqa_llama3", dtype);
    CHECK(m->dtype() == dtype);
    auto logits = m->forward(ref["ids"]);
    CHECK(logits.scalar_type() == dtype);
    double rel = max_abs(logits.to(at::kFloat), ref["logits"]) / scale;
    std::printf("[model parity] %s max abs error relative to max |logit|: %.3g\n",
                c10::toString(dtype), rel);
    CHECK(rel < 0.05);
  }
}

TEST_CASE("model: exported directory loads in transformers with the same logits",
          "[reference][model]") {
  torch::NoGradGuard ng;
  for (const char* name : {"llama_gqa_llama3", "qwen2_gqa7"}) {
    DYNAMIC_SECTION(name) {
      test::TempDir dir;
      auto m = model::load(model_fixture() / name);
      model::ExportOptions opts;
      opts.max_shard_bytes = 64 * 1024;  // forces several shards for these ~0.3 MB models
      model::export_hf(*m, dir.path() / "out", opts);
      CHECK(fs::exists(dir.path() / "out" / "model.safetensors.index.json"));
      CHECK(fs::exists(dir.path() / "out" / "model-00001-of-00005.safetensors") ==
            fs::exists(dir.path() / "out" / "model-00005-of-00005.safetensors"));
      std::string cmd =
          shell_quote(test::python().string()) + " " +
          shell_quote((test::source_dir() / "tests/reference/fixtures_model.py").string()) +
          " check-export " + shell_quote((dir.path() / "out").string()) + " " +
          shell_quote((model_fixture() / (std::string(name) + "_ref.safetensors")).string());
      int rc = std::system(cmd.c_str());
      CHECK(rc == 0);

      // And it loads back here with identical weights.
      auto again = model::load(dir.path() / "out");
      CHECK(again->config().rope_scaling.type == m->config().rope_scaling.type);
      auto a = m->state_dict_hf(), b = again->state_dict_hf();
      REQUIRE(a.size() == b.size());
      for (size_t i = 0; i < a.size(); ++i) {
        CHECK(a[i].first == b[i].first);
        CHECK(at::equal(a[i].second, b[i].second));
      }

      // Re-exporting as one file replaces the shards instead of leaving them beside it.
      model::export_hf(*m, dir.path() / "out");
      CHECK(fs::exists(dir.path() / "out" / "model.safetensors"));
      CHECK_FALSE(fs::exists(dir.path() / "out" / "model.safetensors.index.json"));
      CHECK_FALSE(fs::exists(dir.path() / "out" / "model-00001-of-00005.safetensors"));
      CHECK(at::equal(model::load(dir.path() / "out")->forward(load_ref(name)["ids"]),
                      m->forward(load_ref(name)["ids"])));
    }
  }
}

TEST_CASE("cli: inspect and forward on a transformers model", "[reference][model][cli]") {
  const std::string name = "llama_tied_headdim";
  auto dir = model_fixture() / name;
  std::ifstream info_in(model_fixture() / (name + "_info.json"));
  auto info = nlohmann::json::parse(info_in);

  auto r = test::run_cli({"inspect", dir.string()});
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.out, Catch::Matchers::Contains("architecture: llama"));
  CHECK_THAT(r.out, Catch::Matchers::Contains(
                        "parameters: " + std::to_string(info["num_parameters"].get<long long>())));
  // The table row of one tensor: name, dtype, shape (head_dim 24 x 4 heads = 96 rows).
  bool found = false;
  std::istringstream lines(r.out);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("model.layers.1.self_attn.q_proj.weight ", 0) != 0) continue;
    found = true;
    CHECK_THAT(line, Catch::Matchers::Contains("Float"));
    CHECK_THAT(line, Catch::Matchers::EndsWith("[96, 64]"));
  }
  CHECK(found);

  auto ref = load_ref(name);
  auto ids = row(ref["ids"], 0);
  std::string ids_text;
  for (auto id : ids) ids_text += (ids_text.empty() ? "" : ",") + std::to_string(id);
  test::TempDir tmp;
  auto f = test::run_cli(
      {"forward", dir.string(), "--ids", ids_text, "--out", (tmp / "logits.safetensors").string()});
  REQUIRE(f.exit_code == 0);
  auto last = ref["logits"][0][ids.size() - 1];
  auto top = last.argmax().item<std::int64_t>();
  CHECK_THAT(f.out, Catch::Matchers::Contains("  1  id " + std::to_string(top) + "  logit"));
  std::map<std::string, at::Tensor> saved;
  for (auto& [k, t] : io::safetensors_load(tmp / "logits.safetensors")) saved[k] = t;
  REQUIRE(saved.count("logits"));
  CHECK(max_abs(saved["logits"], ref["logits"]) <= 1e-4);
  CHECK(at::equal(saved["input_ids"], ref["ids"]));

  auto bad = test::run_cli({"forward", dir.string(), "--ids", "1,x"});
  CHECK(bad.exit_code == 2);
  auto oov = test::run_cli({"forward", dir.string(), "--ids", "1,99999"});
  CHECK(oov.exit_code == 1);
  CHECK_THAT(oov.err, Catch::Matchers::Contains("outside the vocabulary"));
}
