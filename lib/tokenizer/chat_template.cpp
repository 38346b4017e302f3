// Native renderings of the supported chat templates, byte-identical to their Jinja originals.
#include "safetune/tokenizer/chat_template.hpp"

#include "safetune/error.hpp"

namespace safetune::tokenizer {

namespace {
const char* const kQwen2System = "You are a helpful assistant.";
const char* const kSmolSystem = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";
const char* const kDsBos = "<\xEF\xBD\x9C" "begin\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>";
const char* const kDsEos = "<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>";
const char* const kDsUser = "<\xEF\xBD\x9CUser\xEF\xBD\x9C>";
const char* const kDsAssistant = "<\xEF\xBD\x9C" "Assistant\xEF\xBD\x9C>";

class Builder {
 public:
  RenderedChat out;
  void add(const std::string& text, const std::string& role = {}, bool loss = false) {
    if (text.empty()) return;
    size_t b = out.text.size();
    out.text += text;
    auto& segs = out.segments;
    if (!segs.empty() && segs.back().role == role && segs.back().loss == loss && segs.back().end == b)
      segs.back().end = out.text.size();
    else
      segs.push_back({b, out.text.size(), role, loss});
  }
};

void check_role(const ChatMessage& m, size_t i) {
  if (m.role != "system" && m.role != "user" && m.role != "assistant")
    throw TokenizerError("unknown role '" + m.role + "' in message " + std::to_string(i), "messages",
                         "roles are system, user and assistant");
}

// Decodes one codepoint at s[i] (valid UTF-8 assumed; garbage reads as non-space).
uint32_t codepoint_at(const std::string& s, size_t i, size_t& len) {
  auto c = static_cast<unsigned char>(s[i]);
  len = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
  if (i + len > s.size()) {
    len = 1;
    return 0xFFFD;
  }
  uint32_t cp = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
  for (size_t k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  return cp;
}
bool py_space(uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}
}  // namespace

std::string strip_unicode_space(const std::string& s) {
  size_t b = 0, len = 0;
  while (b < s.size() && py_space(codepoint_at(s, b, len))) b += len;
  size_t e = b;
  for (size_t i = b; i < s.size(); i += len)
    if (!py_space(codepoint_at(s, i, len))) e = i + len;
  return s.substr(b, e - b);
}

ChatTemplate ChatTemplate::by_name(const std::string& name) {
  if (name == "chatml") return {Format::chatml, name};
  if (name == "qwen2" || name == "qwen") return {Format::chatml, "qwen2", kQwen2System};
  if (name == "smollm2" || name == "smollm") return {Format::chatml, "smollm2", kSmolSystem};
  if (name == "llama3" || name == "llama-3") return {Format::llama3, "llama3"};
  if (name == "deepseek-r1" || name == "deepseek_r1") return {Format::deepseek_r1, "deepseek-r1"};
  if (name == "llama2" || name == "llama-2") return {Format::llama2, "llama2"};
  throw TokenizerError("unknown chat template '" + name + "'", "chat_template",
                       "use chatml, qwen2, smollm2, llama3, deepseek-r1 or llama2");
}

ChatTemplate ChatTemplate::from_jinja(const std::string& j) {
  if (j.find(kDsAssistant) != std::string::npos) return by_name("deepseek-r1");
  if (j.find("<|start_header_id|>") != std::string::npos) return by_name("llama3");
  if (j.find("<|im_start|>") != std::string::npos) {
    // A literal default system prompt: <|im_start|>system + newline (raw or escaped) + text.
    std::string marker = "<|im_start|>system";
    size_t p = j.find(marker);
    while (p != std::string::npos) {
      size_t q = p + marker.size();
      if (j.compare(q, 1, "\n") == 0)
        q += 1;
      else if (j.compare(q, 2, "\\n") == 0)
        q += 2;
      else {
        p = j.find(marker, p + 1);
        continue;
      }
      size_t end = j.find("<|im_end|>", q);
      if (end != std::string::npos) {
        std::string sys = j.substr(q, end - q);
        if (!sys.empty() && sys.find_first_of("'\"{}+") == std::string::npos) {
          if (sys == kSmolSystem) return by_name("smollm2");
          if (sys == kQwen2System) return by_name("qwen2");
          return {Format::chatml, "chatml", sys};
        }
      }
      p = j.find(marker, p + 1);
    }
    return by_name("chatml");
  }
  if (j.find("[INST]") != std::string::npos) return by_name("llama2");
  throw TokenizerError("chat template not recognized", "chat_template",
                       "supported: ChatML, Llama-3, DeepSeek-R1, Llama-2; name one with --chat");
}

ChatTemplate ChatTemplate::from_name_or_jinja(const std::string& s) {
  if (s.find('{') == std::string::npos && s.size() < 64) return by_name(s);
  return from_jinja(s);
}

std::string ChatTemplate::end_of_turn() const {
  switch (format_) {
    case Format::chatml: return "<|im_end|>";
    case Format::llama3: return "<|eot_id|>";
    case Format::deepseek_r1: return kDsEos;
    case Format::llama2: return "</s>";
  }
  return {};
}

std::string ChatTemplate::bos_text() const {
  switch (format_) {
    case Format::chatml: return {};
    case Format::llama3: return "<|begin_of_text|>";
    case Format::deepseek_r1: return kDsBos;
    case Format::llama2: return "<s>";
  }
  return {};
}

std::string ChatTemplate::render(const std::vector<ChatMessage>& m, bool gen) const {
  return render_segments(m, gen).text;
}

RenderedChat ChatTemplate::render_segments(const std::vector<ChatMessage>& msgs, bool gen) const {
  for (size_t i = 0; i < msgs.size(); ++i) check_role(msgs[i], i);
  Builder b;
  switch (format_) {
    case Format::chatml: {
      for (size_t i = 0; i < msgs.size(); ++i) {
        const auto& m = msgs[i];
        if (i == 0 && m.role != "system" && !default_system_.empty())
          b.add("<|im_start|>system\n" + default_system_ + "<|im_end|>\n", "system");
        bool a = m.role == "assistant";
        b.add("<|im_start|>" + m.role + "\n", m.role);
        b.add(m.content, m.role, a);
        b.add("<|im_end|>", m.role, a);
        b.add("\n", m.role);
      }
      if (gen) b.add("<|im_start|>assistant\n");
      break;
    }
    case Format::llama3: {
      for (size_t i = 0; i < msgs.size(); ++i) {
        const auto& m = msgs[i];
        bool a = m.role == "assistant";
        if (i == 0) b.add("<|begin_of_text|>");
        b.add("<|start_header_id|>" + m.role + "<|end_header_id|>\n\n", m.role);
        b.add(strip_unicode_space(m.content), m.role, a);
        b.add("<|eot_id|>", m.role, a);
      }
      if (gen) b.add("<|start_header_id|>assistant<|end_header_id|>\n\n");
      break;
    }
    case Format::deepseek_r1: {
      // The last system message becomes the preamble; reasoning before </think> in past
      // assistant turns is dropped (the template keeps only the final answer).
      std::string system;
      for (const auto& m : msgs)
        if (m.role == "system") system = m.content;
      b.add(kDsBos);
      b.add(system, "system");
      for (const auto& m : msgs) {
        if (m.role == "user") {
          b.add(kDsUser, "user");
          b.add(m.content, "user");
        } else if (m.role == "assistant") {
          std::string content = m.content;
          size_t p = content.rfind("</think>");
          if (p != std::string::npos) content = content.substr(p + 8);
          b.add(kDsAssistant, "assistant");
          b.add(content, "assistant", true);
          b.add(kDsEos, "assistant", true);
        }
      }
      if (gen) b.add(std::string(kDsAssistant) + "<think>\n");
      break;
    }
    case Format::llama2: {
      size_t start = 0;
      std::string system;
      bool has_system = !msgs.empty() && msgs[0].role == "system";
      if (has_system) {
        system = msgs[0].content;
        start = 1;
      }
      for (size_t i = start; i < msgs.size(); ++i) {
        const auto& m = msgs[i];
        size_t k = i - start;
        if ((m.role == "user") != (k % 2 == 0))
          throw TokenizerError("Conversation roles must alternate user/assistant/user/assistant/...", "messages",
                               "message " + std::to_string(i) + " has role " + m.role);
        std::string content = m.content;
        if (k == 0 && has_system) content = "<<SYS>>\n" + system + "\n<</SYS>>\n\n" + content;
        if (m.role == "user") {
          b.add("<s>[INST] ", "user");
          b.add(strip_unicode_space(content), "user");
          b.add(" [/INST]", "user");
        } else {
          b.add(" ", "assistant");
          b.add(strip_unicode_space(content), "assistant", true);
          b.add(" </s>", "assistant", true);
        }
      }
      break;  // the Llama-2 template has no generation prompt
    }
  }
  return std::move(b.out);
}

std::vector<uint8_t> loss_mask(const std::vector<TokenSpan>& tokens, const RenderedChat& chat) {
  std::vector<uint8_t> mask(tokens.size(), 0);
  const auto& segs = chat.segments;
  size_t s = 0;
  for (size_t i = 0; i < tokens.size(); ++i) {
    const auto& t = tokens[i];
    if (t.end <= t.begin) continue;  // bos/eos added by the post-processor
    while (s < segs.size() && segs[s].end <= t.begin) ++s;
    for (size_t k = s; k < segs.size() && segs[k].begin < t.end; ++k)
      if (segs[k].loss) {
        mask[i] = 1;
        break;
      }
  }
  return mask;
}

}  // namespace safetune::tokenizer
