// A GGUF model's tokenizer outside the library: `tokenize --tokenizer MODEL.gguf`, one-line errors
// for files no loader reads, and `merge` of a GGUF writing Hugging Face tokenizer files that
// transformers and safetune load with the same ids.
#include <torch/torch.h>
#include <catch2/catch.hpp>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "safetune/io/atomic_file.hpp"
#include "safetune/io/safetensors.hpp"
#include "support.hpp"

using namespace safetune;
namespace fs = std::filesystem;
using json = nlohmann::json;
using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;

namespace {
fs::path fix() { return test::fixture_dir() / "tokenizer"; }

// Corpus lines without line breaks (the CLI reads one example a line) and their reference ids
// from HF tokenizers with SmolLM2's published split (digits one by one, then GPT-2's).
struct Lines {
  std::vector<std::string> text;
  std::vector<std::string> ids;  // "1 2 3"
};
Lines smollm2_lines(size_t count) {
  json corpus = json::parse(io::read_file(fix() / "corpus.json"));
  json ref = json::parse(io::read_file(fix() / "smollm2" / "ids_digits.json"))["plain"];
  Lines out;
  for (size_t i = 0; i < corpus.size() && out.text.size() < count; ++i) {
    auto line = corpus[i].get<std::string>();
    if (line.find_first_of("\r\n") != std::string::npos) continue;
    std::string ids;
    for (const auto& id : ref[i]) ids += (ids.empty() ? "" : " ") + std::to_string(id.get<int>());
    out.text.push_back(line);
    out.ids.push_back(ids);
  }
  return out;
}

std::vector<std::string> split_lines(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

fs::path write_lines(const fs::path& p, const std::vector<std::string>& lines) {
  std::string s;
  for (const auto& l : lines) s += l + "\n";
  test::write_text(p, s);
  return p;
}

void check_ids(const test::RunResult& r, const Lines& want, const std::string& what) {
  INFO(what << ": " << r.err);
  REQUIRE(r.exit_code == 0);
  auto got = split_lines(r.out);
  REQUIRE(got.size() == want.ids.size());
  size_t mismatch = 0;
  for (size_t i = 0; i < got.size(); ++i)
    if (got[i] != want.ids[i] && mismatch++ < 3)
      UNSCOPED_INFO(want.text[i] << "\n want " << want.ids[i] << "\n got  " << got[i]);
  CHECK(mismatch == 0);
}

// A PEFT LoRA adapter on SmolLM2-135M's q_proj (30 layers, width 576), small random factors.
void write_smollm2_adapter(const fs::path& dir) {
  fs::create_directories(dir);
  test::write_text(dir / "adapter_config.json",
                   R"({"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 2, "lora_alpha": 4,
                      "lora_dropout": 0.0, "bias": "none", "target_modules": ["q_proj"]})");
  torch::manual_seed(7);
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (int layer = 0; layer < 30; ++layer) {
    std::string prefix =
        "base_model.model.model.layers." + std::to_string(layer) + ".self_attn.q_proj.";
    tensors.push_back({prefix + "lora_A.weight", torch::randn({2, 576}) * 0.01});
    tensors.push_back({prefix + "lora_B.weight", torch::randn({576, 2}) * 0.01});
  }
  io::safetensors_save(dir / "adapter_model.safetensors", tensors);
}
}  // namespace

TEST_CASE("tokenize --tokenizer MODEL.gguf gives the ids of SmolLM2's published split",
          "[cli][reference][tokenizer]") {
  test::TempDir tmp;
  auto lines = smollm2_lines(300);
  REQUIRE(lines.text.size() == 300);
  auto in = write_lines(tmp / "lines.txt", lines.text);
  check_ids(test::run_cli({"tokenize", "--tokenizer", test::smollm2_gguf().string(), "--no-special",
                           in.string()}),
            lines, "tokenize --tokenizer gguf");
}

TEST_CASE("tokenize --tokenizer with a file no loader reads: one line naming the formats",
          "[cli][tokenizer]") {
  test::TempDir tmp;
  test::write_text(tmp / "notes.txt", "these are notes, not a tokenizer\n");
  test::write_text(tmp / "in.txt", "hello\n");
  for (const fs::path& bad : {tmp / "notes.txt", tmp.path()}) {
    auto r = test::run_cli({"tokenize", "--tokenizer", bad.string(), (tmp / "in.txt").string()});
    INFO(r.err);
    CHECK(r.exit_code == 1);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    CHECK_THAT(r.err,
               StartsWith("error: ") && Contains("supported: tokenizer.json") && Contains(".gguf"));
  }
}

TEST_CASE("merge of a GGUF model writes tokenizer files that transformers and safetune read alike",
          "[cli][reference][model]") {
  test::TempDir tmp;
  write_smollm2_adapter(tmp / "adapter");
  const fs::path merged = tmp / "merged";
  auto m =
      test::run_cli({"merge", test::smollm2_gguf().string(), "--adapters",
                     (tmp / "adapter").string(), "--out", merged.string(), "--dtype", "bfloat16"});
  INFO(m.err);
  REQUIRE(m.exit_code == 0);
  CHECK_THAT(m.out, Contains("tokenizer.json") && Contains("tokenizer_config.json"));

  auto lines = smollm2_lines(120);
  lines.text.push_back("# \U0001FA76 grey heart, 1234 apples");
  auto in = write_lines(tmp / "lines.txt", lines.text);
  test::write_text(
      tmp / "chat.jsonl",
      R"({"messages":[{"role":"user","content":"What is 12+30?"},{"role":"assistant","content":"42."}]})"
      "\n");
  // Reference: transformers' AutoTokenizer on the merged directory as is; the chat template must be
  // the GGUF's, read with the gguf package.
  auto py = test::run_python(R"(
import json, sys
from gguf import GGUFReader
from transformers import AutoTokenizer
merged, gguf, lines, chat, out = sys.argv[1:6]
tok = AutoTokenizer.from_pretrained(merged)
field = GGUFReader(gguf).fields["tokenizer.chat_template"]
assert tok.chat_template == bytes(field.parts[field.data[0]]).decode(), "chat template differs from the GGUF's"
texts = open(lines, encoding="utf-8").read().split("\n")[:-1]
messages = json.loads(open(chat, encoding="utf-8").readline())["messages"]
rendered = tok.apply_chat_template(messages, tokenize=False)
json.dump({"plain": [tok(t, add_special_tokens=False)["input_ids"] for t in texts],
           "special": [tok(t)["input_ids"] for t in texts],
           "chat": tok(rendered, add_special_tokens=False)["input_ids"]}, open(out, "w"))
)",
                             {merged.string(), test::smollm2_gguf().string(), in.string(),
                              (tmp / "chat.jsonl").string(), (tmp / "hf.json").string()});
  INFO(py.out << py.err);
  REQUIRE(py.exit_code == 0);
  json hf = json::parse(io::read_file(tmp / "hf.json"));
  Lines plain = lines, special = lines;
  plain.ids.clear();
  special.ids.clear();
  auto join = [](const json& ids) {
    std::string s;
    for (const auto& id : ids) s += (s.empty() ? "" : " ") + std::to_string(id.get<int>());
    return s;
  };
  for (size_t i = 0; i < lines.text.size(); ++i) {
    plain.ids.push_back(join(hf["plain"][i]));
    special.ids.push_back(join(hf["special"][i]));
    // transformers agrees with tokenizers' reference for the published split (the fixture).
    if (i < lines.ids.size()) CHECK(plain.ids[i] == lines.ids[i]);
  }
  check_ids(
      test::run_cli({"tokenize", "--tokenizer", merged.string(), "--no-special", in.string()}),
      plain, "tokenize --tokenizer merged dir");
  check_ids(test::run_cli({"tokenize", "--tokenizer", merged.string(), in.string()}), special,
            "tokenize --tokenizer merged dir, with specials");
  check_ids(test::run_cli({"tokenize", "--tokenizer", test::smollm2_gguf().string(), "--no-special",
                           in.string()}),
            plain, "tokenize --tokenizer gguf");
  // safetune takes the chat template from the merged directory by itself, as transformers does.
  auto chat = test::run_cli({"tokenize", "--tokenizer", merged.string(), "--chat", "auto",
                             (tmp / "chat.jsonl").string()});
  INFO(chat.err);
  REQUIRE(chat.exit_code == 0);
  CHECK(chat.out == join(hf["chat"]) + "\n");
  // And from the GGUF itself, with the template in its metadata.
  chat = test::run_cli({"tokenize", "--tokenizer", test::smollm2_gguf().string(), "--chat", "auto",
                        (tmp / "chat.jsonl").string()});
  REQUIRE(chat.exit_code == 0);
  CHECK(chat.out == join(hf["chat"]) + "\n");
}
