// Tokenizer ids, decoding and chat renderings against tokenizers / transformers / sentencepiece.
#include <catch2/catch.hpp>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "safetune/io/atomic_file.hpp"
#include "safetune/tokenizer/chat_template.hpp"
#include "safetune/tokenizer/tokenizer.hpp"
#include "support.hpp"
#include "tokenizer/bpe.hpp"
#include "tokenizer/sentencepiece.hpp"

using namespace safetune;
using namespace safetune::tokenizer;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

fs::path fix() { return test::fixture_dir() / "tokenizer"; }

json read_json(const fs::path& p) {
  std::ifstream in(p);
  REQUIRE(in.good());
  return json::parse(in);
}

// The corpus format: one example per line; \n \r \t \\ are escapes.
std::vector<std::string> read_corpus() {
  std::ifstream in(test::source_dir() / "tests" / "data" / "tokenizer_corpus.txt",
                   std::ios::binary);
  REQUIRE(in.good());
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(in, line)) {
    std::string out;
    for (size_t i = 0; i < line.size(); ++i) {
      if (line[i] == '\\' && i + 1 < line.size() &&
          std::string_view("nrt\\").find(line[i + 1]) != std::string_view::npos) {
        char c = line[++i];
        out.push_back(c == 'n' ? '\n' : c == 'r' ? '\r' : c == 't' ? '\t' : '\\');
      } else {
        out.push_back(line[i]);
      }
    }
    lines.push_back(out);
  }
  return lines;
}

std::string show(const std::vector<TokenId>& v) {
  std::string s;
  for (auto id : v) s += std::to_string(id) + " ";
  return s;
}

struct Parity {
  size_t lines = 0, id_mismatch = 0, special_mismatch = 0, decode_mismatch = 0,
         roundtrip_mismatch = 0, span_mismatch = 0;
};

Parity check_bpe(const Tokenizer& tok, const std::string& name, bool exact_roundtrip) {
  auto corpus = read_corpus();
  json ref = read_json(fix() / name / "ids.json");
  REQUIRE(ref["plain"].size() == corpus.size());
  Parity p;
  for (size_t i = 0; i < corpus.size(); ++i) {
    ++p.lines;
    auto want = ref["plain"][i].get<std::vector<TokenId>>();
    auto got = tok.encode(corpus[i], false);
    if (got != want) {
      if (p.id_mismatch++ < 3)
        UNSCOPED_INFO(name << " line " << i + 1 << ": " << corpus[i] << "\n want " << show(want)
                           << "\n got  " << show(got));
    }
    if (tok.encode(corpus[i], true) != ref["special"][i].get<std::vector<TokenId>>())
      ++p.special_mismatch;
    std::string dec = tok.decode(want);
    if (dec != ref["decoded"][i].get<std::string>()) ++p.decode_mismatch;
    if (exact_roundtrip && tok.decode(got) != corpus[i]) ++p.roundtrip_mismatch;
    if (exact_roundtrip) {
      // Spans tile the input and each token's bytes are exactly the text it covers.
      size_t at = 0;
      for (const auto& sp : tok.encode_spans(corpus[i], {})) {
        if (sp.begin == sp.end) continue;
        if (sp.begin != at ||
            corpus[i].compare(sp.begin, sp.end - sp.begin, tok.token_bytes(sp.id)) != 0)
          ++p.span_mismatch;
        at = sp.end;
      }
      if (at != corpus[i].size()) ++p.span_mismatch;
    }
  }
  return p;
}

void require_parity(const Parity& p) {
  CHECK(p.lines >= 2000);
  CHECK(p.id_mismatch == 0);
  CHECK(p.special_mismatch == 0);
  CHECK(p.decode_mismatch == 0);
  CHECK(p.roundtrip_mismatch == 0);
  CHECK(p.span_mismatch == 0);
}

}  // namespace

TEST_CASE("corpus unescaping agrees with the fixture script", "[reference][tokenizer]") {
  auto corpus = read_corpus();
  json ref = read_json(fix() / "corpus.json");
  REQUIRE(ref.size() == corpus.size());
  for (size_t i = 0; i < corpus.size(); ++i) REQUIRE(ref[i].get<std::string>() == corpus[i]);
}

TEST_CASE("SmolLM2 tokenizer converted from the GGUF by transformers: identical ids",
          "[reference][tokenizer]") {
  auto tok = load_tokenizer(fix() / "smollm2" / "tokenizer.json");
  CHECK(tok->vocab_size() == 49152);
  require_parity(check_bpe(*tok, "smollm2", true));
}

TEST_CASE("GPT-2 style byte-level BPE: identical ids", "[reference][tokenizer]") {
  require_parity(check_bpe(*load_tokenizer(fix() / "gpt2" / "tokenizer.json"), "gpt2", true));
}

TEST_CASE("Llama-3 split, ignore_merges and bos post-processor: identical ids",
          "[reference][tokenizer]") {
  auto tok = load_tokenizer(fix() / "llama3" / "tokenizer.json");
  CHECK(tok->bos_id() == tok->token_to_id("<|begin_of_text|>"));
  require_parity(check_bpe(*tok, "llama3", true));
}

TEST_CASE("Qwen2 split with NFC: identical ids", "[reference][tokenizer]") {
  // NFC composes decomposed accents, so decode gives the composed text: compare with HF's decode.
  require_parity(check_bpe(*load_tokenizer(fix() / "qwen2" / "tokenizer.json"), "qwen2", false));
}

TEST_CASE("DeepSeek-V3 three-regex split: identical ids", "[reference][tokenizer]") {
  require_parity(
      check_bpe(*load_tokenizer(fix() / "deepseek_v3" / "tokenizer.json"), "deepseek_v3", true));
}

TEST_CASE("DeepSeek-LLM six-regex split (Oniguruma `$`): identical ids", "[reference][tokenizer]") {
  require_parity(
      check_bpe(*load_tokenizer(fix() / "deepseek_llm" / "tokenizer.json"), "deepseek_llm", true));
}

TEST_CASE("SmolLM2-style Digits + ByteLevel pre-tokenizer: identical ids",
          "[reference][tokenizer]") {
  require_parity(check_bpe(*load_tokenizer(fix() / "smollm_digits" / "tokenizer.json"),
                           "smollm_digits", true));
}

TEST_CASE("BpeSpec from the real GGUF's tokenizer metadata matches SmolLM2's published split",
          "[reference][tokenizer]") {
  // gguf_spec.json holds tokenizer.ggml.* exactly as the gguf package reads them from the file.
  json g = read_json(fix() / "smollm2" / "gguf_spec.json");
  BpeSpec spec;
  spec.tokens = g["tokens"].get<std::vector<std::string>>();
  spec.token_types = g["token_types"].get<std::vector<int32_t>>();
  spec.merges = g["merges"].get<std::vector<std::string>>();
  spec.pre = g["pre"];
  CHECK(spec.pre == "smollm");
  spec.bos_id = g["bos_id"];
  spec.eos_id = g["eos_id"];
  spec.pad_id = g["pad_id"];
  spec.add_bos = g["add_bos"];
  auto tok = bpe_from_spec(spec);
  CHECK(tok->bos_id() == 1);
  CHECK(tok->eos_id() == 2);
  CHECK(tok->pad_id() == 2);
  CHECK(tok->vocab_size() == 49152);
  // pre = "smollm" is SmolLM2's published pre-tokenizer (digits split one by one, then GPT-2);
  // the reference is tokenizers with that pre-tokenizer on the same vocabulary and merges.
  auto corpus = read_corpus();
  json ref = read_json(fix() / "smollm2" / "ids_digits.json");
  size_t bad = 0, bad_special = 0;
  for (size_t i = 0; i < corpus.size(); ++i) {
    auto want = ref["plain"][i].get<std::vector<TokenId>>();
    if (tok->encode(corpus[i], false) != want) ++bad;
    if (tok->encode(corpus[i], true) != want) ++bad_special;  // add_bos is false in this GGUF
  }
  CHECK(bad == 0);
  CHECK(bad_special == 0);
}

TEST_CASE("SentencePiece model with byte fallback: identical ids and decode",
          "[reference][tokenizer]") {
  auto tok = load_tokenizer(fix() / "spm" / "tokenizer.model");
  json ref = read_json(fix() / "spm" / "ids.json");
  CHECK(tok->bos_id() == ref["bos"].get<TokenId>());
  CHECK(tok->eos_id() == ref["eos"].get<TokenId>());
  auto corpus = read_corpus();
  EncodeOptions opt;
  opt.add_special = false;
  opt.parse_special = false;  // python's sp.encode treats "<s>" as text
  size_t bad_ids = 0, bad_dec = 0, byte_pieces = 0;
  for (size_t i = 0; i < corpus.size(); ++i) {
    auto want = ref["plain"][i].get<std::vector<TokenId>>();
    auto got = tok->encode(corpus[i], opt);
    if (got != want) ++bad_ids;
    if (tok->decode(got) != ref["decoded"][i].get<std::string>()) ++bad_dec;
    for (auto id : got)
      if (tok->id_to_token(id).rfind("<0x", 0) == 0) ++byte_pieces;
  }
  CHECK(bad_ids == 0);
  CHECK(bad_dec == 0);
  CHECK(byte_pieces > 0);  // the corpus does exercise byte fallback
  auto with_bos = tok->encode("hello", true);
  REQUIRE(!with_bos.empty());
  CHECK(with_bos[0] == ref["bos"].get<TokenId>());
}

TEST_CASE("chat templates render byte-identical to apply_chat_template",
          "[reference][tokenizer][chat]") {
  json ref = read_json(fix() / "chat.json");
  std::vector<std::vector<ChatMessage>> convs;
  for (auto& c : ref["conversations"]) {
    std::vector<ChatMessage> msgs;
    for (auto& m : c) msgs.push_back({m["role"], m["content"]});
    convs.push_back(msgs);
  }
  size_t cases = 0;
  for (auto& c : ref["cases"]) {
    std::string name = c["template"];
    auto by_name = ChatTemplate::by_name(name);
    // The same template run from its Jinja source, with the special tokens transformers passed.
    auto detected = ChatTemplate::from_jinja(ref["templates"][name].get<std::string>(),
                                             ref["variables"][name].get<TemplateVariables>());
    const auto& conv = convs.at(c["conversation"].get<size_t>());
    bool gen = c["add_generation_prompt"];
    std::string want = c["text"];
    INFO(name << " conversation " << c["conversation"] << " gen " << gen);
    CHECK(by_name.render(conv, gen) == want);
    CHECK(detected.render(conv, gen) == want);
    auto segs = by_name.render_segments(conv, gen);
    CHECK(segs.text == want);
    // Both learn the same characters: the built-in renderers' spans are hand-written.
    auto jinja_segs = detected.render_segments(conv, gen);
    auto learnt = [](const RenderedChat& c) {
      std::string s;
      for (const auto& seg : c.segments)
        if (seg.loss) s += c.text.substr(seg.begin, seg.end - seg.begin) + "|";
      return s;
    };
    CHECK(learnt(jinja_segs) == learnt(segs));
    ++cases;
  }
  CHECK(cases == 40);
}

namespace {
// Ids (plain and with specials) for the lines a fixture directory lists, against HF's.
void require_same_ids(const Tokenizer& tok, const fs::path& dir) {
  json lines = read_json(dir / "lines.json"), ref = read_json(dir / "ids.json");
  REQUIRE(ref["plain"].size() == lines.size());
  size_t mismatch = 0;
  for (size_t i = 0; i < lines.size(); ++i) {
    auto text = lines[i].get<std::string>();
    auto want = ref["plain"][i].get<std::vector<TokenId>>();
    auto got = tok.encode(text, false);
    if (got != want && mismatch++ < 4)
      UNSCOPED_INFO(text << "\n want " << show(want) << "\n got  " << show(got));
    if (tok.encode(text, true) != ref["special"][i].get<std::vector<TokenId>>()) ++mismatch;
  }
  CHECK(mismatch == 0);
}
}  // namespace

TEST_CASE("Unicode 15 characters (emoji, Kawi, CJK Ext. H) split as HF tokenizers splits them",
          "[reference][tokenizer]") {
  // PCRE2 10.42 has Unicode 14 tables; HF's Oniguruma knows these code points as \p{S}, \p{L},
  // \p{N}.
  require_same_ids(*load_tokenizer(fix() / "unicode15" / "trained" / "tokenizer.json"),
                   fix() / "unicode15" / "trained");
}

TEST_CASE("the real DeepSeek-V3 tokenizer.json: identical ids on Unicode 15 emoji lines",
          "[reference][tokenizer]") {
  const fs::path dir = fix() / "unicode15" / "deepseek_v3";
  if (fs::exists(fix() / "unicode15" / "missing.txt"))
    FAIL(io::read_file(fix() / "unicode15" / "missing.txt"));
  auto tok = load_tokenizer(dir / "tokenizer.json");
  CHECK(tok->vocab_size() >= 128000);
  // The line of the report, by hand from HF: " 🩶" is one piece, as \p{S} says.
  CHECK(show(tok->encode("# \U0001FA76 grey heart", false)) == "5 7351 105 117 28684 4082 ");
  require_same_ids(*tok, dir);
}
