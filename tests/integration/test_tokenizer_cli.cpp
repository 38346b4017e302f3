// `safetune tokenize`: ids for text and chat lines, decoding, and one-line errors with file:line.
#include <algorithm>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "support.hpp"
#include "tokenizer/bpe.hpp"

using namespace safetune;
using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;

namespace {
// Ids 0..255 are the bytes, 256 = "ab", 257/258 the ChatML specials.
std::string write_tiny_tokenizer(const test::TempDir& dir) {
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) vocab[tokenizer::byte_to_unicode(static_cast<uint8_t>(b))] = b;
  vocab["ab"] = 256;
  vocab["<|im_start|>"] = 257;
  vocab["<|im_end|>"] = 258;
  nlohmann::json j = {
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", {"a b"}}}},
      {"added_tokens",
       {{{"id", 257}, {"content", "<|im_start|>"}, {"special", true}},
        {{"id", 258}, {"content", "<|im_end|>"}, {"special", true}}}},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
      {"decoder", {{"type", "ByteLevel"}}}};
  auto p = dir / "tokenizer.json";
  test::write_text(p, j.dump());
  return p.string();
}
}  // namespace

TEST_CASE("tokenize prints ids per line and decodes them back", "[tokenizer][cli]") {
  test::TempDir dir;
  auto tok = write_tiny_tokenizer(dir);
  test::write_text(dir / "in.txt", "ab a\n<|im_end|>b\n");
  auto r = test::run_cli({"tokenize", "--tokenizer", tok, (dir / "in.txt").string()});
  REQUIRE(r.exit_code == 0);
  CHECK(r.out == "256 32 97\n258 98\n");
  test::write_text(dir / "ids.txt", "256 32 97\n258 98\n");
  r = test::run_cli({"tokenize", "--tokenizer", tok, "--decode", (dir / "ids.txt").string()});
  REQUIRE(r.exit_code == 0);
  CHECK(r.out == "ab a\n<|im_end|>b\n");
  r = test::run_cli(
      {"tokenize", "--tokenizer", tok, "--decode", "--no-special", (dir / "ids.txt").string()});
  CHECK(r.out == "ab a\nb\n");
}

TEST_CASE("tokenize --chat renders ChatML and marks the trained tokens", "[tokenizer][cli]") {
  test::TempDir dir;
  auto tok = write_tiny_tokenizer(dir);
  test::write_text(
      dir / "chat.jsonl",
      R"({"messages":[{"role":"user","content":"ab"},{"role":"assistant","content":"a"}]})"
      "\n");
  auto r = test::run_cli({"tokenize", "--tokenizer", tok, "--chat", "chatml", "--mask",
                          (dir / "chat.jsonl").string()});
  REQUIRE(r.exit_code == 0);
  // <|im_start|> user \n ab <|im_end|> \n <|im_start|> assistant \n a <|im_end|> \n
  CHECK(r.out ==
        "257 117 115 101 114 10 256 258 10 257 97 115 115 105 115 116 97 110 116 10 97 258 10"
        "\t00000000000000000000110\n");
}

TEST_CASE("tokenize --chat auto takes the template from tokenizer_config.json",
          "[tokenizer][cli]") {
  test::TempDir dir;
  auto tok = write_tiny_tokenizer(dir);
  nlohmann::json cfg = {
      {"chat_template",
       "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
       "{{ '<|im_start|>system\nBe kind.<|im_end|>\n' }}{% endif %}"
       "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
       "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"}};
  test::write_text(dir / "tokenizer_config.json", cfg.dump());
  test::write_text(dir / "chat.jsonl", R"([{"role":"user","content":"b"}])"
                                       "\n");
  auto r = test::run_cli(
      {"tokenize", "--tokenizer", tok, "--chat", "auto", (dir / "chat.jsonl").string()});
  REQUIRE(r.exit_code == 0);
  // <|im_start|> system \n Be Ġkind . <|im_end|> \n <|im_start|> user \n b <|im_end|> \n
  CHECK(r.out ==
        "257 115 121 115 116 101 109 10 66 101 32 107 105 110 100 46 258 10 257 117 115 101 114 10 "
        "98 258 10\n");
}

TEST_CASE("tokenize errors are one line with file:line", "[tokenizer][cli]") {
  test::TempDir dir;
  auto tok = write_tiny_tokenizer(dir);
  test::write_text(dir / "bad.jsonl", R"({"messages":[]})"
                                      "\n{oops\n");
  auto r = test::run_cli(
      {"tokenize", "--tokenizer", tok, "--chat", "chatml", (dir / "bad.jsonl").string()});
  CHECK(r.exit_code == 1);
  CHECK(r.err == "error: " + (dir / "bad.jsonl").string() + ":2: not valid JSON\n");

  test::write_text(dir / "roles.jsonl", R"({"messages":[{"role":"robot","content":"x"}]})"
                                        "\n");
  r = test::run_cli(
      {"tokenize", "--tokenizer", tok, "--chat", "chatml", (dir / "roles.jsonl").string()});
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.err,
             StartsWith("error: " + (dir / "roles.jsonl").string() + ":1: unknown role 'robot'"));

  test::write_text(dir / "utf8.txt", std::string("fine\nab\xC3(\n"));
  r = test::run_cli({"tokenize", "--tokenizer", tok, (dir / "utf8.txt").string()});
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.err,
             StartsWith("error: " + (dir / "utf8.txt").string() + ":2: invalid UTF-8 at byte 2"));
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  r = test::run_cli(
      {"tokenize", "--tokenizer", tok, "--replace-invalid", (dir / "utf8.txt").string()});
  CHECK(r.exit_code == 0);

  test::write_text(dir / "ids.txt", "12 x3\n");
  r = test::run_cli({"tokenize", "--tokenizer", tok, "--decode", (dir / "ids.txt").string()});
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.err, Contains("not a token id: 'x3'"));

  r = test::run_cli({"tokenize", "--tokenizer", (dir / "missing.json").string()});
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.err, Contains("tokenizer not found"));
}
