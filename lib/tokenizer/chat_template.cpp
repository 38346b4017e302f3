// Chat templates: Jinja sources through the embedded engine, and native renderings of the built-in
// formats (byte-identical to their Jinja originals), each cut into loss segments.
#include "safetune/tokenizer/chat_template.hpp"

#include <algorithm>
#include <optional>

#include "safetune/error.hpp"
#include "tokenizer/jinja_engine.hpp"

namespace safetune::tokenizer {

namespace {
const char* const kQwen2System = "You are a helpful assistant.";
const char* const kSmolSystem =
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face";
const char* const kDsBos =
    "<\xEF\xBD\x9C"
    "begin\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>";
const char* const kDsEos =
    "<\xEF\xBD\x9C"
    "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>";
const char* const kDsUser = "<\xEF\xBD\x9CUser\xEF\xBD\x9C>";
const char* const kDsAssistant =
    "<\xEF\xBD\x9C"
    "Assistant\xEF\xBD\x9C>";

class Builder {
 public:
  RenderedChat out;
  void add(const std::string& text, const std::string& role = {}, bool loss = false) {
    if (text.empty()) return;
    size_t b = out.text.size();
    out.text += text;
    auto& segs = out.segments;
    if (!segs.empty() && segs.back().role == role && segs.back().loss == loss &&
        segs.back().end == b)
      segs.back().end = out.text.size();
    else segs.push_back({b, out.text.size(), role, loss});
  }
};

void check_role(const ChatMessage& m, size_t i) {
  if (m.role != "system" && m.role != "user" && m.role != "assistant")
    throw TokenizerError("unknown role '" + m.role + "' in message " + std::to_string(i),
                         "messages", "roles are system, user and assistant");
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
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
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

namespace {
std::string joined(const std::vector<detail::JinjaPart>& parts) {
  std::string s;
  for (const auto& p : parts) s += p.text;
  return s;
}
size_t rstrip_space(const std::string& s, size_t begin, size_t end) {
  while (end > begin &&
         (s[end - 1] == ' ' || s[end - 1] == '\n' || s[end - 1] == '\t' || s[end - 1] == '\r'))
    --end;
  return end;
}
}  // namespace

ChatTemplate ChatTemplate::from_jinja(const std::string& j, TemplateVariables variables) {
  ChatTemplate t(Format::jinja, "jinja");
  t.source_ = j;
  t.program_ = std::make_shared<const detail::JinjaProgram>(j);
  t.variables_ = std::move(variables);
  // The end of a turn, from a one-turn reply: what follows the reply's content.
  try {
    std::vector<ChatMessage> probe = {{"user", "Hi"}, {"assistant", "Hello"}};
    auto chat = t.render_jinja(probe, false);
    for (const auto& seg : chat.segments)
      if (seg.role == "assistant" && seg.loss) {
        size_t content = chat.text.rfind("Hello", seg.end);
        if (content != std::string::npos && content >= seg.begin && content + 5 <= seg.end)
          t.end_of_turn_ = chat.text.substr(content + 5, seg.end - content - 5);
      }
  } catch (const TokenizerError&) {
    // A template that refuses this conversation still renders others; the fallback just lacks it.
  }
  return t;
}

ChatTemplate ChatTemplate::from_name_or_jinja(const std::string& s, TemplateVariables variables) {
  if (s.find('{') == std::string::npos && s.size() < 64) return by_name(s);
  return from_jinja(s, std::move(variables));
}

std::string ChatTemplate::render_jinja_text(const std::vector<ChatMessage>& msgs, bool gen) const {
  return joined(program_->render(msgs, gen, variables_));
}

RenderedChat ChatTemplate::render_jinja(const std::vector<ChatMessage>& msgs, bool gen) const {
  auto parts = program_->render(msgs, gen, variables_);
  RenderedChat out;
  std::vector<std::pair<size_t, size_t>> marked;  // assistant content, where the engine put it
  for (const auto& p : parts) {
    if (p.marked) marked.emplace_back(out.text.size(), out.text.size() + p.text.size());
    out.text += p.text;
  }
  const std::string& full = out.text;
  const size_t n = msgs.size();
  auto prefix_render = [&](size_t i, bool with_prompt) -> std::optional<std::string> {
    try {
      return render_jinja_text({msgs.begin(), msgs.begin() + static_cast<std::ptrdiff_t>(i)},
                               with_prompt);
    } catch (const TokenizerError&) {
      return std::nullopt;
    }
  };
  // Where message i starts, when the render of messages[0..i-1] is a prefix of the whole render.
  std::vector<std::pair<size_t, size_t>> starts = {{0, 0}};  // (message index, offset)
  for (size_t i = 1; i <= n; ++i) {
    std::optional<std::string> prefix =
        (i == n && !gen) ? std::optional<std::string>(full) : prefix_render(i, false);
    if (prefix && full.starts_with(*prefix) && prefix->size() >= starts.back().second)
      starts.emplace_back(i, prefix->size());
  }
  if (starts.back().first != n) starts.emplace_back(n, full.size());
  auto add = [&out](size_t b, size_t e, const std::string& role, bool loss) {
    if (e > b) out.segments.push_back({b, e, role, loss});
  };
  for (size_t r = 0; r + 1 < starts.size(); ++r) {
    auto [first, b] = starts[r];
    auto [last, e] = starts[r + 1];
    if (last - first == 1 && msgs[first].role != "assistant") {
      add(b, e, msgs[first].role, false);
    } else if (last - first == 1) {
      // One reply: learnt is what the model writes after the generation prompt, up to the end of
      // its turn. Templates without a generation prompt: from where its content starts.
      size_t c0 = std::string::npos, c1 = b;
      auto prompted = prefix_render(first, true);
      if (prompted && prompted->size() > b &&
          prompted->starts_with(std::string_view(full).substr(0, b))) {
        c0 = b;
        while (c0 < e && c0 < prompted->size() && (*prompted)[c0] == full[c0]) ++c0;
      }
      for (const auto& [mb, me] : marked)
        if (mb >= b && me <= e) {
          if (c0 == std::string::npos) c0 = mb;
          c1 = std::max(c1, me);
        }
      if (c0 == std::string::npos) c0 = b;
      size_t end = std::max({c0, c1, rstrip_space(full, b, e)});
      add(b, c0, "assistant", false);
      add(c0, end, "assistant", true);
      add(end, e, "assistant", false);
    } else {
      // Messages whose renders change as the conversation grows (reasoning dropped from earlier
      // replies): each piece of reply content, and the end-of-turn text right after it.
      size_t at = b;
      for (auto [mb, me] : marked) {
        if (mb < b || me > e) continue;
        if (!end_of_turn_.empty() && me + end_of_turn_.size() <= e &&
            full.compare(me, end_of_turn_.size(), end_of_turn_) == 0)
          me += end_of_turn_.size();
        add(at, mb, "", false);
        add(mb, me, "assistant", true);
        at = me;
      }
      add(at, e, "", false);
    }
  }
  add(starts.back().second, full.size(), "", false);
  return out;
}

std::string ChatTemplate::end_of_turn() const {
  switch (format_) {
    case Format::jinja: return end_of_turn_;
    case Format::chatml: return "<|im_end|>";
    case Format::llama3: return "<|eot_id|>";
    case Format::deepseek_r1: return kDsEos;
    case Format::llama2: return "</s>";
  }
  return {};
}

std::string ChatTemplate::bos_text() const {
  switch (format_) {
    case Format::jinja: {
      auto it = variables_.find("bos_token");
      return it == variables_.end() ? std::string() : it->second;
    }
    case Format::chatml: return {};
    case Format::llama3: return "<|begin_of_text|>";
    case Format::deepseek_r1: return kDsBos;
    case Format::llama2: return "<s>";
  }
  return {};
}

std::string ChatTemplate::render(const std::vector<ChatMessage>& m, bool gen) const {
  if (format_ == Format::jinja) {
    for (size_t i = 0; i < m.size(); ++i) check_role(m[i], i);
    return render_jinja_text(m, gen);
  }
  return render_segments(m, gen).text;
}

RenderedChat ChatTemplate::render_segments(const std::vector<ChatMessage>& msgs, bool gen) const {
  for (size_t i = 0; i < msgs.size(); ++i) check_role(msgs[i], i);
  if (format_ == Format::jinja) return render_jinja(msgs, gen);
  Builder b;
  switch (format_) {
    case Format::jinja: break;
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
          throw TokenizerError(
              "Conversation roles must alternate user/assistant/user/assistant/...", "messages",
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
