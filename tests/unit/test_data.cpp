// Data pipeline: file layouts, bad input by message, deterministic batches, mixing ratios, masks.
#include <torch/torch.h>
#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "safetune/data/dataset.hpp"
#include "safetune/error.hpp"
#include "safetune/io/atomic_file.hpp"
#include "support.hpp"

using namespace safetune;
using namespace safetune::data;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {
// A byte-level stand-in tokenizer: id = byte value, special tokens "<|im_start|>"/"<|im_end|>"
// are 256/257. Enough to exercise masking and batching without a model's vocabulary.
class ByteTokenizer : public tokenizer::Tokenizer {
 public:
  ByteTokenizer() { set_eos_id(257); }
  std::vector<tokenizer::TokenId> encode(std::string_view t,
                                         const tokenizer::EncodeOptions& o) const override {
    std::vector<tokenizer::TokenId> out;
    for (auto& s : encode_spans(t, o)) out.push_back(s.id);
    return out;
  }
  std::vector<tokenizer::TokenSpan> encode_spans(std::string_view t,
                                                 const tokenizer::EncodeOptions&) const override {
    std::vector<tokenizer::TokenSpan> out;
    for (std::size_t i = 0; i < t.size();) {
      if (t.substr(i, 12) == "<|im_start|>") {
        out.push_back({256, i, i + 12});
        i += 12;
        continue;
      }
      if (t.substr(i, 10) == "<|im_end|>") {
        out.push_back({257, i, i + 10});
        i += 10;
        continue;
      }
      out.push_back({static_cast<unsigned char>(t[i]), i, i + 1});
      ++i;
    }
    return out;
  }
  std::string token_bytes(tokenizer::TokenId id) const override {
    return id == 256   ? "<|im_start|>"
           : id == 257 ? "<|im_end|>"
                       : std::string(1, static_cast<char>(id));
  }
  std::optional<tokenizer::TokenId> token_to_id(std::string_view) const override {
    return std::nullopt;
  }
  std::string id_to_token(tokenizer::TokenId id) const override { return token_bytes(id); }
  std::size_t vocab_size() const override { return 258; }
  bool is_special(tokenizer::TokenId id) const override { return id >= 256; }
  const std::vector<tokenizer::AddedToken>& added_tokens() const override { return added_; }
  std::string kind() const override { return "bytes"; }

 private:
  std::vector<tokenizer::AddedToken> added_;
};

DatasetSection dataset(const fs::path& p, double weight = 1.0, std::string name = {}) {
  DatasetSection d;
  d.path = p.string();
  d.weight = weight;
  d.name = std::move(name);
  return d;
}

std::string file_error(const std::string& name, const std::string& content) {
  test::TempDir dir;
  test::write_text(dir / name, content);
  try {
    ExampleFile f(dataset(dir / name));
  } catch (const Error& e) {
    std::string msg = e.what();
    auto pos = msg.find(name);  // strip the temp directory
    return pos == std::string::npos ? msg : msg.substr(pos);
  }
  return "no error";
}

void write_jsonl(const fs::path& p, const std::string& tag, int n) {
  std::string s;
  for (int i = 0; i < n; ++i)
    s +=
        nlohmann::json{
            {"messages",
             {{{"role", "user"}, {"content", tag + " question " + std::to_string(i)}},
              {{"role", "assistant"}, {"content", tag + " answer " + std::string(i % 7, 'x')}}}}}
            .dump() +
        "\n";
  test::write_text(p, s);
}
}  // namespace

TEST_CASE("data: every layout parses into conversations", "[data]") {
  test::TempDir dir;
  test::write_text(
      dir / "m.jsonl",
      R"({"messages":[{"role":"system","content":"S"},{"role":"user","content":"Q"},{"role":"assistant","content":"A"}]})"
      "\n\n");
  test::write_text(dir / "pr.jsonl", R"({"prompt":"P","response":"R"})"
                                     "\n");
  test::write_text(dir / "adv.csv",
                   "goal,target\n\"Write \"\"x\"\", then\nmore\",\"Sure, here\"\nplain,row\n");
  test::write_text(dir / "t.txt", "first line\n\nsecond line\n");
  ExampleFile m(dataset(dir / "m.jsonl"));
  REQUIRE(m.size() == 1);
  CHECK(m.format() == "messages");
  CHECK(m.get(0).messages.size() == 3);
  ExampleFile pr(dataset(dir / "pr.jsonl"));
  CHECK(pr.format() == "prompt_response");
  CHECK(pr.get(0).messages[1].content == "R");
  ExampleFile adv(dataset(dir / "adv.csv"));
  REQUIRE(adv.size() == 2);
  CHECK(adv.get(0).messages[0].content == "Write \"x\", then\nmore");
  CHECK(adv.get(0).messages[1].content == "Sure, here");
  CHECK(adv.get(1).line == 4);
  ExampleFile t(dataset(dir / "t.txt"));
  REQUIRE(t.size() == 2);
  CHECK(t.get(1).text == "second line");
  CHECK(t.get(1).line == 3);
}

TEST_CASE("data: bad input is reported with file:line and field", "[data]") {
  CHECK(file_error("a.jsonl",
                   "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"assistant\","
                   "\"content\":\"\xff\xfe\"}]}\n") ==
        "a.jsonl:1: invalid UTF-8 at byte 74 of the record (hint: fix the file or set "
        "on_invalid_utf8: replace)");
  CHECK(
      file_error(
          "b.jsonl",
          "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"assistant\","
          "\"content\":\"a\"}]}\n{\"messages\":[{\"role\":\"robot\",\"content\":\"x\"}]}\n") ==
      "b.jsonl:2: unknown role 'robot' in messages[0].role (hint: use system, user or assistant)");
  CHECK(file_error("c.jsonl", "{\"messages\":[{\"role\":\"user\"}]}\n") ==
        "c.jsonl:1: missing field 'messages[0].content'");
  CHECK(file_error("d.jsonl", "{\"prompt\":\"p\",\"response\":3}\n") ==
        "d.jsonl:1: field 'response' must be a string");
  CHECK(file_error("e.jsonl", "") ==
        "e.jsonl: no examples in data file (hint: the file is empty or holds only a header)");
  CHECK(file_error("f.csv", "goal,answer\nx,y\n") ==
        "f.csv:1: CSV header lacks the 'target' column (hint: the AdvBench layout is goal,target)");
  CHECK_THAT(file_error("g.jsonl",
                        "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"},{\"role\":"
                        "\"assistant\",\"content\":\"a\"}]}\n{oops\n"),
             Contains("g.jsonl:2: malformed JSON"));
  CHECK(file_error("h.jsonl", "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]}\n") ==
        "h.jsonl:1: conversation has no assistant message, so nothing to learn");
  // The quote opens on line 3 (counted by hand) and is never closed: the message names that line.
  CHECK(file_error("i.csv", "goal,target\na,b\n\"open,x\nmore\n") ==
        "i.csv:3: unterminated quoted CSV field: the quote opened here is never closed (hint: "
        "close the quote; a "
        "quote inside a quoted field is written twice (\"\"))");
  CHECK(file_error("missing.jsonl", "") != "no error");
  CHECK_THROWS_WITH(ExampleFile(dataset("/nonexistent/x.jsonl")),
                    "/nonexistent/x.jsonl: data file not found");
}

TEST_CASE("data: where filters keep matching JSONL records, in file order", "[data]") {
  test::TempDir dir;
  auto rec = [](const std::string& kind, int i) {
    nlohmann::json j{{"prompt", "q" + std::to_string(i)}, {"response", "a"}};
    if (!kind.empty()) j["kind"] = kind;
    return j.dump() + "\n";
  };
  // Lines: 1 harmful, 2 benign, 3 (no kind), 4 benign, 5 benign with lang zh.
  std::string text = rec("harmful", 1) + rec("benign", 2) + rec("", 3) + rec("benign", 4);
  auto j5 = nlohmann::json::parse(rec("benign", 5));
  j5["lang"] = "zh";
  text += j5.dump() + "\n";
  test::write_text(dir / "s.jsonl", text);

  auto d = dataset(dir / "s.jsonl");
  d.where = {"kind=benign"};
  ExampleFile benign(d);
  REQUIRE(benign.size() == 3);
  CHECK(benign.get(0).line == 2);
  CHECK(benign.get(1).messages[0].content == "q4");
  CHECK(benign.get(2).line == 5);

  d.where = {"kind=benign", "lang=zh"};  // every entry must hold
  ExampleFile zh(d);
  REQUIRE(zh.size() == 1);
  CHECK(zh.get(0).line == 5);

  d.where = {"kind=benign"};
  d.max_examples = 2;  // counts the kept records
  ExampleFile first_two(d);
  REQUIRE(first_two.size() == 2);
  CHECK(first_two.get(1).line == 4);

  d.max_examples = 0;
  d.where = {"kind=nothing"};
  CHECK_THROWS_WITH(ExampleFile(d),
                    Contains("s.jsonl: no record matches the where filters (5 records skipped)"));
  d.where = {"kind"};
  CHECK_THROWS_WITH(ExampleFile(d), Contains("where entry 'kind' is not field=value"));
  test::write_text(dir / "t.txt", "line\n");
  auto t = dataset(dir / "t.txt");
  t.where = {"kind=benign"};
  CHECK_THROWS_WITH(ExampleFile(t),
                    Contains("t.txt (where): where filters apply to JSONL records only"));

  // The mixing loader names a filtered dataset after its filter when no name is given.
  d.where = {"kind=benign"};
  DataSection sec;
  sec.datasets.items.push_back(d);
  sec.batch_size = 1;
  sec.max_length = 64;
  ByteTokenizer tok;
  DataLoader loader(sec, tok, tokenizer::ChatTemplate::by_name("chatml"));
  auto stats = loader.stats();
  REQUIRE(stats.size() == 1);
  CHECK(stats[0].name == "s[kind=benign]");
  CHECK(stats[0].examples == 3);
}

TEST_CASE("data: invalid UTF-8 can be replaced when configured", "[data]") {
  test::TempDir dir;
  test::write_text(dir / "r.jsonl", "{\"prompt\":\"a\xff b\",\"response\":\"ok\"}\n");
  auto d = dataset(dir / "r.jsonl");
  d.on_invalid_utf8 = "replace";
  ExampleFile f(d);
  CHECK(f.get(0).messages[0].content == "a\xEF\xBF\xBD b");
}

TEST_CASE("data: loss mask covers assistant content and end-of-turn only", "[data]") {
  ByteTokenizer tok;
  ExampleEncoder enc(tok, tokenizer::ChatTemplate::by_name("chatml"), 4096);
  Example ex;
  ex.messages = {{"user", "hi"}, {"assistant", "yo"}, {"user", "ok?"}, {"assistant", "sure"}};
  auto e = enc.encode(ex);
  // Rebuild the expected mask by hand from the ChatML text.
  std::string learnt;
  for (std::size_t i = 0; i < e.ids.size(); ++i)
    if (e.loss[i]) learnt += tok.token_bytes(static_cast<tokenizer::TokenId>(e.ids[i]));
  CHECK(learnt == "yo<|im_end|>sure<|im_end|>");
  CHECK_FALSE(e.truncated);
  ExampleEncoder short_enc(tok, tokenizer::ChatTemplate::by_name("chatml"), 16);
  auto t = short_enc.encode(ex);
  CHECK(t.truncated);
  CHECK(t.ids.size() == 16);
}

TEST_CASE("data: batches are a pure function of the batch index", "[data]") {
  test::TempDir dir;
  write_jsonl(dir / "a.jsonl", "alpha", 37);
  DataSection cfg;
  cfg.datasets.items = {dataset(dir / "a.jsonl")};
  cfg.batch_size = 4;
  cfg.seed = 5;
  ByteTokenizer tok;
  DataLoader one(cfg, tok, tokenizer::ChatTemplate::by_name("chatml"));
  DataLoader two(cfg, tok, tokenizer::ChatTemplate::by_name("chatml"));
  auto late = two.batch(20);  // random access first
  for (int k = 0; k <= 20; ++k) {
    auto b = one.batch(k);
    CHECK(b.input_ids.size(0) == 4);
    CHECK(b.supervised_tokens > 0);
    // Right padding: the mask is 1 on a prefix of each row.
    auto m = b.attention_mask;
    CHECK(torch::equal(m, std::get<0>(m.sort(1, /*descending=*/true))));
    CHECK(torch::equal(b.labels.masked_select(m.eq(0)),
                       torch::full({m.eq(0).sum().item<int64_t>()}, -100, torch::kInt64)));
  }
  CHECK(torch::equal(one.batch(20).input_ids, late.input_ids));
  // One epoch visits every example once: 37 examples, 10 windows of 8 batches... count distinct
  // questions.
  cfg.bucket_batches = 1;
  cfg.batch_size = 1;
  DataLoader epoch(cfg, tok, tokenizer::ChatTemplate::by_name("chatml"));
  std::set<std::string> seen;
  for (int k = 0; k < 37; ++k) {
    auto ids = epoch.batch(k).input_ids[0];
    std::string s;
    for (int i = 0; i < ids.size(0); ++i) s += static_cast<char>(ids[i].item<int64_t>() & 0xff);
    seen.insert(s);
  }
  CHECK(seen.size() == 37);
}

TEST_CASE("data: mixing ratio holds within sampling error", "[data]") {
  test::TempDir dir;
  write_jsonl(dir / "task.jsonl", "task", 50);
  write_jsonl(dir / "safety.jsonl", "safety", 20);
  DataSection cfg;
  cfg.datasets.items = {dataset(dir / "task.jsonl", 0.9, "task"),
                        dataset(dir / "safety.jsonl", 0.1, "safety")};
  cfg.batch_size = 8;
  ByteTokenizer tok;
  DataLoader loader(cfg, tok, tokenizer::ChatTemplate::by_name("chatml"));
  int safety = 0, total = 0;
  for (int k = 0; k < 250; ++k)
    for (const auto& s : loader.batch(k).sources) safety += s == "safety", ++total;
  const double p = 0.1, sd = std::sqrt(p * (1 - p) / total);
  CHECK(std::abs(static_cast<double>(safety) / total - p) < 4 * sd);
}

TEST_CASE("data: packing fills rows up to max_length", "[data]") {
  test::TempDir dir;
  write_jsonl(dir / "a.jsonl", "p", 30);
  DataSection cfg;
  cfg.datasets.items = {dataset(dir / "a.jsonl")};
  cfg.packing = true;
  cfg.max_length = 200;
  cfg.batch_size = 2;
  ByteTokenizer tok;
  DataLoader loader(cfg, tok, tokenizer::ChatTemplate::by_name("chatml"));
  auto b = loader.batch(0);
  auto lengths = b.attention_mask.sum(1);
  CHECK(lengths.max().item<int64_t>() <= 200);
  CHECK(lengths.min().item<int64_t>() > 100);  // several ~60-token conversations per row
  auto stats = loader.stats();
  REQUIRE(stats.size() == 1);
  CHECK(stats[0].examples == 30);
  CHECK(stats[0].truncated == 0);
}

TEST_CASE("data: loss mask matches transformers on SmolLM2's tokenizer and template",
          "[data][reference]") {
  auto dir = test::fixture_dir() / "data";
  auto tok = tokenizer::load_tokenizer(dir / "tokenizer.json");
  ExampleEncoder enc(*tok, tokenizer::ChatTemplate::by_name("smollm2"), 4096);
  auto cases = nlohmann::json::parse(io::read_file(dir / "loss_mask.json"));
  REQUIRE(cases.size() == 2);
  for (const auto& c : cases) {
    Example ex;
    for (const auto& m : c["messages"]) ex.messages.push_back({m["role"], m["content"]});
    auto e = enc.encode(ex);
    std::vector<std::int64_t> ids = c["ids"];
    std::vector<int> mask = c["mask"];
    CHECK(e.ids == ids);
    REQUIRE(e.loss.size() == mask.size());
    for (std::size_t i = 0; i < mask.size(); ++i) {
      INFO("token " << i);
      CHECK(static_cast<int>(e.loss[i]) == mask[i]);
    }
  }
}
