// Tokenizer behaviour checked against hand-computed values: byte mapping, merges, added tokens,
// UTF-8 handling, streaming decode, chat templates and loss masks.
#include <catch2/catch.hpp>
#include <random>

#include "safetune/error.hpp"
#include "safetune/tokenizer/chat_template.hpp"
#include "safetune/tokenizer/tokenizer.hpp"
#include "support.hpp"
#include "tokenizer/bpe.hpp"

using namespace safetune;
using namespace safetune::tokenizer;
using Catch::Matchers::Contains;

namespace {
// 256 byte tokens (ids 0..255 = byte values), then merged tokens and specials.
BpeSpec tiny_spec() {
  BpeSpec s;
  for (int b = 0; b < 256; ++b) s.tokens.push_back(byte_to_unicode(static_cast<uint8_t>(b)));
  s.token_types.assign(256, 1);
  auto add = [&](const std::string& t, int type = 1) {
    s.tokens.push_back(t);
    s.token_types.push_back(type);
  };
  add("ab");   // 256
  add("abc");  // 257
  add("\xC4\xA0"
      "ab");               // 258  "Ġab" = " ab"
  add("bc");               // 259
  add("<|im_start|>", 3);  // 260
  add("<|im_end|>", 3);    // 261
  add("<x>", 4);           // 262 user-defined (not special)
  s.merges = {"a b", "ab c", "\xC4\xA0 ab", "b c"};
  s.pre = "gpt-2";
  s.bos_id = 260;
  s.eos_id = 261;
  return s;
}
}  // namespace

TEST_CASE("GPT-2 byte mapping matches the published table", "[tokenizer]") {
  CHECK(byte_to_unicode('a') == "a");
  CHECK(byte_to_unicode(' ') == "\xC4\xA0");   // U+0120 'Ġ'
  CHECK(byte_to_unicode('\n') == "\xC4\x8A");  // U+010A 'Ċ'
  CHECK(byte_to_unicode(0) == "\xC4\x80");     // U+0100
  CHECK(byte_to_unicode(0xAD) == "\xC5\x83");  // soft hyphen is remapped: U+0143
  std::string bytes;
  REQUIRE(unicode_to_bytes("\xC4\xA0hi\xC4\x8A", bytes));
  CHECK(bytes == " hi\n");
  CHECK_FALSE(unicode_to_bytes("\xE4\xB8\xAD", bytes));  // '中' is outside the byte alphabet
}

TEST_CASE("merges apply by rank, lowest first", "[tokenizer]") {
  auto tok = bpe_from_spec(tiny_spec());
  CHECK(tok->encode("abc", false) == std::vector<TokenId>{257});
  // " abc" is one piece: "a b" (rank 0) first, then (ab,c) rank 1 beats (Ġ,ab) rank 2, and no
  // merge joins Ġ with abc.
  CHECK(tok->encode(" abc", false) == std::vector<TokenId>{' ', 257});
  CHECK(tok->encode(" ab", false) == std::vector<TokenId>{258});
  CHECK(tok->encode("xbc", false) == std::vector<TokenId>{'x', 259});
  CHECK(tok->decode({' ', 257, 259}) == " abcbc");
}

TEST_CASE("added tokens are split out before pre-tokenization", "[tokenizer]") {
  auto tok = bpe_from_spec(tiny_spec());
  CHECK(tok->encode("<|im_start|>ab<x>c", false) == std::vector<TokenId>{260, 256, 262, 'c'});
  EncodeOptions opt;
  opt.add_special = false;
  opt.parse_special = false;  // control tokens stay text; user-defined ones are still matched
  auto ids = tok->encode("<|im_start|><x>", opt);
  CHECK(ids.front() == '<');
  CHECK(ids.back() == 262);
  CHECK(tok->is_special(260));
  CHECK_FALSE(tok->is_special(262));
  CHECK(tok->decode({260, 256, 261}, true) == "ab");
  CHECK(tok->decode({260, 256, 262}, false) == "<|im_start|>ab<x>");
  CHECK(tok->token_to_id("<|im_end|>") == 261);
  CHECK(tok->token_to_id("\xC4\xA0"
                         "ab") == 258);
  CHECK(tok->id_to_token(258) ==
        "\xC4\xA0"
        "ab");
}

TEST_CASE("lstrip/rstrip of added tokens widen the match over whitespace", "[tokenizer]") {
  std::string j = R"({"model":{"type":"BPE","vocab":{"a":0,"Ġ":1,"<m>":2},"merges":[]},
    "added_tokens":[{"id":2,"content":"<m>","special":true,"lstrip":true,"rstrip":true}],
    "pre_tokenizer":{"type":"ByteLevel","add_prefix_space":false,"use_regex":true},
    "decoder":{"type":"ByteLevel"}})";
  auto tok = bpe_from_tokenizer_json(j);
  CHECK(tok->encode("a  <m>  a", false) == std::vector<TokenId>{0, 2, 0});
  CHECK(tok->encode("a <m>", false) == std::vector<TokenId>{0, 2});
}

TEST_CASE("invalid UTF-8 is an error by default and U+FFFD on request", "[tokenizer]") {
  auto tok = bpe_from_spec(tiny_spec());
  CHECK_THROWS_WITH(tok->encode(std::string("ab\xC3", 3), false),
                    Contains("invalid UTF-8 at byte 2"));
  CHECK_THROWS_AS(tok->encode("\xED\xA0\x80", false), TokenizerError);  // a surrogate
  CHECK_THROWS_AS(tok->encode("\xC0\xAF", false), TokenizerError);      // overlong '/'
  EncodeOptions opt;
  opt.add_special = false;
  opt.invalid_utf8 = InvalidUtf8::replace;
  auto ids = tok->encode(
      "a\xFF"
      "b",
      opt);
  CHECK(tok->decode(ids) ==
        "a\xEF\xBF\xBD"
        "b");
  CHECK(utf8_repair("\xE2\x82") == "\xEF\xBF\xBD");  // a truncated sequence is one replacement
  CHECK(utf8_repair("\xF0\x28\x8C\x28") == "\xEF\xBF\xBD(\xEF\xBF\xBD(");
}

TEST_CASE("stream decoder holds back partial characters", "[tokenizer]") {
  auto tok = bpe_from_spec(tiny_spec());
  StreamDecoder sd(*tok);
  // "é" = C3 A9, "中" = E4 B8 AD, each byte its own token.
  CHECK(sd.push('a') == "a");
  CHECK(sd.push(0xC3) == "");
  CHECK(sd.push(0xA9) == "\xC3\xA9");
  CHECK(sd.push(0xE4) == "");
  CHECK(sd.push(0xB8) == "");
  CHECK(sd.push(0xAD) == "\xE4\xB8\xAD");
  CHECK(sd.push(0xFF) == "\xEF\xBF\xBD");  // can never become valid: replaced at once
  CHECK(sd.push(0xE4) == "");
  CHECK(sd.push('x') == "\xEF\xBF\xBDx");  // interrupted sequence
  CHECK(sd.push(0xF0) == "");
  CHECK(sd.flush() == "\xEF\xBF\xBD");
  StreamDecoder skip(*tok, true);
  CHECK(skip.push(260) == "");
  CHECK(skip.push(256) == "ab");
}

TEST_CASE("text cut inside a character ends on a whole character, not U+FFFD", "[tokenizer]") {
  auto tok = bpe_from_spec(tiny_spec());
  // "é" = C3 A9, "中" = E4 B8 AD, each byte its own token.
  CHECK(decode_whole_characters(*tok, {'a', 0xE4, 0xB8}) == "a");
  CHECK(decode_whole_characters(*tok, {'a', 0xC3}) == "a");
  CHECK(decode_whole_characters(*tok, {'a', 0xE4, 0xB8, 0xAD}) == "a\xE4\xB8\xAD");
  CHECK(decode_whole_characters(*tok, {0xFF, 'a'}) ==
        "\xEF\xBF\xBD"
        "a");  // invalid, not cut: replaced
  CHECK(decode_whole_characters(*tok, {0xE4, 'x', 0xE4}) == "\xEF\xBF\xBDx");
  CHECK(decode_whole_characters(*tok, {260, 'a', 0xC3}, true) == "a");
  CHECK(decode_whole_characters(*tok, {}) == "");

  // SmolLM2's byte-level BPE splits Chinese characters across tokens: every cut of a Chinese
  // answer decodes to the longest whole-character prefix, where decode() would end in U+FFFD.
  const auto path = test::safetune_home() / "models" / "tiny-llama" / "tokenizer.json";
  REQUIRE(std::filesystem::exists(path));
  auto smol = load_tokenizer(path);
  const std::string text = "抱歉，我无法提供这方面的帮助。今天天气很好，我们去公园散步吧。";
  auto ids = smol->encode(text, false);
  REQUIRE(smol->decode(ids) == text);
  int split_cuts = 0;
  for (size_t n = 1; n <= ids.size(); ++n) {
    std::vector<TokenId> head(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(n));
    const std::string plain = smol->decode(head), whole = decode_whole_characters(*smol, head);
    if (plain.find("\xEF\xBF\xBD") != std::string::npos) ++split_cuts;
    INFO("cut after " << n << " tokens: " << whole);
    CHECK(whole.find("\xEF\xBF\xBD") == std::string::npos);
    CHECK(text.compare(0, whole.size(), whole) == 0);  // a prefix of the answer
    CHECK(utf8_valid_prefix(whole) == whole.size());
    // Nothing whole is lost: the next character would not fit in the bytes the tokens carry.
    std::string bytes;
    for (auto id : head) bytes += smol->token_bytes(id);
    CHECK(bytes.size() - whole.size() <= 3);
  }
  CHECK(split_cuts > 0);  // the tokenizer does split characters, so the check above has teeth
}

TEST_CASE("encode_spans gives each token its input bytes", "[tokenizer]") {
  auto tok = bpe_from_spec(tiny_spec());
  auto spans = tok->encode_spans("<|im_start|> abc", {});
  REQUIRE(spans.size() == 3);
  CHECK(spans[0].begin == 0);
  CHECK(spans[0].end == 12);
  CHECK(spans[1].begin == 12);
  CHECK(spans[1].end == 13);
  CHECK(spans[2].begin == 13);
  CHECK(spans[2].end == 16);
}

TEST_CASE("pretokenizer_for knows the GGUF pre values", "[tokenizer]") {
  for (std::string p : {"default", "gpt-2", "smollm", "llama-bpe", "qwen2", "deepseek-r1-qwen",
                        "deepseek-llm", "deepseek-v3"})
    CHECK_FALSE(pretokenizer_for(p).empty());
  CHECK_THROWS_WITH(pretokenizer_for("klingon"), Contains("unknown pre-tokenizer"));
  // Every regex compiles (the deepseek-llm classes hold literal non-ASCII ranges).
  auto spec = tiny_spec();
  for (std::string p : {"smollm", "llama-bpe", "qwen2", "deepseek-llm", "deepseek-v3"}) {
    spec.pre = p;
    CHECK_NOTHROW(bpe_from_spec(spec)->encode("Hello 12345 世界\n\n  x", false));
  }
}

TEST_CASE("malformed tokenizer.json is a one-line error", "[tokenizer]") {
  CHECK_THROWS_AS(bpe_from_tokenizer_json("{not json"), FormatError);
  CHECK_THROWS_AS(bpe_from_tokenizer_json(R"({"model":{"type":"BPE"}})"), FormatError);
  CHECK_THROWS_WITH(bpe_from_tokenizer_json(R"({"model":{"type":"Unigram","vocab":[]}})"),
                    Contains("not byte-level BPE"));
  CHECK_THROWS_WITH(
      bpe_from_tokenizer_json(R"({"model":{"type":"BPE","vocab":{"a":0},"merges":["a q"]}})"),
      Contains("missing from the vocabulary"));
  CHECK_THROWS_WITH(
      bpe_from_tokenizer_json(R"({"model":{"type":"BPE","vocab":{"a":-4},"merges":[]}})"),
      Contains("out of range"));
  CHECK_THROWS_WITH(bpe_from_tokenizer_json(R"({"model":{"type":"BPE","vocab":{},"merges":[]},
      "pre_tokenizer":{"type":"Split","pattern":{"Regex":"(unclosed"},"behavior":"Isolated"}})"),
                    Contains("bad pre-tokenizer regex"));
  CHECK_THROWS_AS(load_tokenizer("/nonexistent/tokenizer.json"), IoError);
}

TEST_CASE("chat templates: roles, alternation and detection", "[tokenizer][chat]") {
  std::vector<ChatMessage> bad{{"robot", "hi"}};
  CHECK_THROWS_WITH(ChatTemplate::by_name("chatml").render(bad, false),
                    Contains("unknown role 'robot'"));
  std::vector<ChatMessage> two_users{{"user", "a"}, {"user", "b"}};
  CHECK_THROWS_WITH(ChatTemplate::by_name("llama2").render(two_users, false),
                    Contains("must alternate"));
  CHECK_THROWS_WITH(ChatTemplate::by_name("nope"), Contains("unknown chat template"));
  CHECK_THROWS_WITH(ChatTemplate::from_jinja("{% for m in messages %}"),
                    Contains("does not parse"));
  // Hand-written expectation for the plain ChatML layout.
  std::vector<ChatMessage> conv{{"user", "Hi"}, {"assistant", "Hello!"}};
  CHECK(ChatTemplate::by_name("chatml").render(conv, true) ==
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>"
        "assistant\n");
  CHECK(strip_unicode_space("\xE3\x80\x80 x y\n\xC2\xA0") == "x y");
}

TEST_CASE("loss mask covers exactly assistant content and its end-of-turn token",
          "[tokenizer][chat]") {
  auto tok = bpe_from_spec(tiny_spec());
  std::vector<ChatMessage> conv{{"system", "sys"},
                                {"user", "abc ab"},
                                {"assistant", "abc bc"},
                                {"user", "x"},
                                {"assistant", " ab"}};
  auto chat = ChatTemplate::by_name("chatml").render_segments(conv, false);
  auto spans = tok->encode_spans(chat.text, {});
  auto mask = loss_mask(spans, chat);
  REQUIRE(mask.size() == spans.size());
  std::vector<TokenId> learned;
  for (size_t i = 0; i < spans.size(); ++i)
    if (mask[i]) learned.push_back(spans[i].id);
  // Hand-computed: both assistant turns, each closed by <|im_end|> (id 261), nothing else.
  CHECK(tok->decode(learned) == "abc bc<|im_end|> ab<|im_end|>");
  size_t ends = 0;
  for (auto id : learned) ends += id == 261;
  CHECK(ends == 2);
}

namespace {
// The text a mask learns, segment by segment.
std::vector<std::string> learnt(const RenderedChat& chat) {
  std::vector<std::string> out;
  size_t at = 0;
  for (const auto& seg : chat.segments) {
    CHECK(seg.begin == at);  // segments cover the text without gaps
    at = seg.end;
    if (seg.loss) out.push_back(chat.text.substr(seg.begin, seg.end - seg.begin));
  }
  CHECK(at == chat.text.size());
  return out;
}
const char* const kTagTemplate =
    "{{ bos_token }}{% for m in messages %}<{{ m.role }}>{{ m.content | trim }}</{{ m.role }}>\n{% "
    "endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}";
}  // namespace

TEST_CASE("Jinja templates run as written, with the special tokens as variables",
          "[tokenizer][chat]") {
  auto t = ChatTemplate::from_jinja(kTagTemplate, {{"bos_token", "<s>"}});
  CHECK(t.format() == ChatTemplate::Format::jinja);
  std::vector<ChatMessage> conv{{"system", "Be brief."},
                                {"user", " 2+2? "},
                                {"assistant", "4 "},
                                {"user", "and 3+3?"},
                                {"assistant", "6"}};
  // Hand-written: what the template says, trim applied, bos first.
  CHECK(t.render(conv, false) ==
        "<s><system>Be brief.</system>\n<user>2+2?</user>\n<assistant>4</assistant>\n<user>and "
        "3+3?</user>\n"
        "<assistant>6</assistant>\n");
  CHECK(t.render({{"user", "hi"}}, true) == "<s><user>hi</user>\n<assistant>");
  // Each assistant turn learns its content and the end-of-turn text, not the newline after it.
  CHECK(learnt(t.render_segments(conv, false)) ==
        std::vector<std::string>{"4</assistant>", "6</assistant>"});
  CHECK(t.end_of_turn() == "</assistant>");
  CHECK(t.bos_text() == "<s>");
  // An empty reply still learns to end the turn.
  CHECK(learnt(t.render_segments({{"user", "x"}, {"assistant", ""}}, false)) ==
        std::vector<std::string>{"</assistant>"});
}

TEST_CASE("Jinja templates: errors name the template's complaint", "[tokenizer][chat]") {
  auto strict = ChatTemplate::from_jinja(
      "{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('System role not "
      "supported') }}"
      "{% endif %}{{ m.content }}{% endfor %}");
  CHECK_THROWS_AS(strict.render({{"system", "s"}}, false), TokenizerError);
  CHECK_THROWS_WITH(strict.render({{"system", "s"}}, false), Contains("System role not supported"));
  CHECK_THROWS_WITH(ChatTemplate::from_jinja("{{ messages[0]['content'] "),
                    Contains("does not parse"));
  CHECK_THROWS_WITH(strict.render({{"robot", "x"}}, false), Contains("unknown role 'robot'"));
  // A template cannot exhaust memory through range(); ordinary uses still work.
  auto huge = ChatTemplate::from_jinja("{% for i in range(1000000000000) %}x{% endfor %}");
  CHECK_THROWS_WITH(huge.render({{"user", "u"}}, false), Contains("range() of more than"));
  CHECK(ChatTemplate::from_jinja(
            "{% for i in range(1, 7, 2) %}{{ i }}{% endfor %}{{ range(3) | length }}")
            .render({{"user", "u"}}, false) == "1353");
}

TEST_CASE("Jinja templates that rewrite earlier turns still mask the replies",
          "[tokenizer][chat]") {
  // Like Qwen3 or R1: only the last reply keeps its reasoning, so renders are not prefixes.
  auto t = ChatTemplate::from_jinja(
      "{% for m in messages %}{% if m.role == 'assistant' %}{% set c = m.content %}"
      "{% if not loop.last %}{% set c = c.split('</think>')[-1] %}{% endif %}"
      "<a>{{ c }}<end>\n{% else %}<u>{{ m.content }}<end>\n{% endif %}{% endfor %}");
  std::vector<ChatMessage> conv{{"user", "q1"},
                                {"assistant", "<think>r1</think>a1"},
                                {"user", "q2"},
                                {"assistant", "<think>r2</think>a2"}};
  auto chat = t.render_segments(conv, false);
  CHECK(chat.text == "<u>q1<end>\n<a>a1<end>\n<u>q2<end>\n<a><think>r2</think>a2<end>\n");
  CHECK(t.end_of_turn() == "<end>");
  CHECK(learnt(chat) == std::vector<std::string>{"a1<end>", "<think>r2</think>a2<end>"});
}

TEST_CASE("a model directory's chat template and special tokens", "[tokenizer][chat]") {
  test::TempDir tmp;
  const auto& dir = tmp.path();
  CHECK_FALSE(chat_template_from_dir(dir).has_value());
  test::write_text(dir / "tokenizer_config.json",
                   R"({"bos_token": {"__type": "AddedToken", "content": "<B>"},
      "eos_token": "<E>", "chat_template": [{"name": "tool_use", "template": "tools"},
      {"name": "default", "template": "{{ bos_token }}{{ messages[0].content }}{{ eos_token }}"}]})");
  auto t = chat_template_from_dir(dir);
  REQUIRE(t.has_value());
  CHECK(t->render({{"user", "hi"}}, false) == "<B>hi<E>");
  // transformers v5 keeps the template in chat_template.jinja; the special tokens stay in the
  // config.
  test::write_text(dir / "chat_template.jinja", "[{{ messages[0].content }}]{{ eos_token }}");
  CHECK(chat_template_from_dir(dir)->render({{"user", "hi"}}, false) == "[hi]<E>");
  std::filesystem::remove(dir / "chat_template.jinja");
  test::write_text(dir / "tokenizer_config.json",
                   R"({"chat_template": [{"name": "tool_use", "template": "x"}]})");
  CHECK_THROWS_WITH(chat_template_from_dir(dir), Contains("no {\"name\": \"default\"} entry"));
  test::write_text(dir / "tokenizer_config.json", R"({"chat_template": 7})");
  CHECK_THROWS_AS(chat_template_from_dir(dir), FormatError);
  test::write_text(dir / "tokenizer_config.json", "{not json");
  CHECK_THROWS_WITH(chat_template_from_dir(dir), Contains("tokenizer_config.json"));
}

TEST_CASE("random bytes never crash: replacement round-trips, streaming equals decode",
          "[tokenizer]") {
  auto tok = bpe_from_spec(tiny_spec());
  std::mt19937 rng(1234);
  EncodeOptions opt;
  opt.add_special = false;
  opt.invalid_utf8 = InvalidUtf8::replace;
  for (int iter = 0; iter < 300; ++iter) {
    std::string s(rng() % 40, '\0');
    for (auto& c : s) c = static_cast<char>(rng() % 4 == 0 ? 'a' + rng() % 3 : rng() % 256);
    auto ids = tok->encode(s, opt);
    REQUIRE(tok->decode(ids) == utf8_repair(s));
    std::vector<TokenId> any;  // arbitrary ids, including out-of-range ones
    for (int k = 0; k < 20; ++k) any.push_back(static_cast<TokenId>(rng() % 300) - 10);
    StreamDecoder sd(*tok);
    std::string streamed;
    for (auto id : any) streamed += sd.push(id);
    streamed += sd.flush();
    CHECK(streamed == tok->decode(any));
  }
}
