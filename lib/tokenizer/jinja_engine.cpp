// Chat templates through llama.cpp's Jinja engine (lexer -> parser -> runtime), which follows
// transformers' settings (trim_blocks, lstrip_blocks) and marks text that came from inputs.
#include "tokenizer/jinja_engine.hpp"

#include <jinja/lexer.h>
#include <jinja/parser.h>
#include <jinja/runtime.h>
#include <jinja/value.h>

#include "safetune/error.hpp"

namespace safetune::tokenizer::detail {

namespace {
// The engine's messages carry the template source around the failing spot on later lines.
std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

// A runtime error reads "\n---\nWhile executing <node> at <line:col> in source:\n<excerpt>\nError:
// <what>"; keep what went wrong (raise_exception's own words) and where.
std::string runtime_message(const std::string& what) {
  size_t e = what.rfind("\nError: ");
  if (e == std::string::npos) return first_line(what);
  std::string msg = first_line(what.substr(e + 8));
  const std::string raised = "Jinja Exception: ";
  if (msg.rfind(raised, 0) == 0) msg = msg.substr(raised.size());
  size_t w = what.find("While executing ");
  if (w != std::string::npos) {
    std::string at = first_line(what.substr(w + 16));
    size_t in = at.find(" in source:");
    msg += " (" + (in == std::string::npos ? at : at.substr(0, in)) + ")";
  }
  return msg;
}

// range() materialises its list, so range(10**12) would exhaust memory: a template from a model
// file gets a range() that refuses more numbers than any chat template needs.
constexpr std::int64_t kMaxRange = 1 << 20;
jinja::value bounded_range(const jinja::func_args& args) {
  static const jinja::func_handler builtin = jinja::global_builtins().at("range");
  std::vector<std::int64_t> v;
  for (size_t i = 0; i < args.count() && i < 3; ++i) {
    auto a = args.get_pos(i);
    if (!jinja::is_val<jinja::value_int>(a)) return builtin(args);  // its own error message
    v.push_back(a->as_int());
  }
  std::int64_t start = v.size() > 1 ? v[0] : 0, stop = v.size() > 1 ? v[1] : (v.empty() ? 0 : v[0]);
  std::int64_t step = v.size() > 2 ? v[2] : 1;
  long double n = step == 0 ? 0 : (static_cast<long double>(stop) - start) / step;
  if (n > kMaxRange)
    throw jinja::raised_exception("range() of more than " + std::to_string(kMaxRange) + " numbers");
  return builtin(args);
}

jinja::value string_value(const std::string& s, bool mark) {
  auto v = jinja::mk_val<jinja::value_string>(s);
  if (mark) v->mark_input();
  return v;
}
}  // namespace

struct JinjaProgram::Impl {
  std::string source;
  jinja::program program;
};

JinjaProgram::JinjaProgram(const std::string& source) {
  auto impl = std::make_shared<Impl>();
  impl->source = source;
  try {
    jinja::lexer lexer;
    impl->program = jinja::parse_from_tokens(lexer.tokenize(source));
  } catch (const std::exception& e) {
    throw TokenizerError(
        "chat template does not parse: " + first_line(e.what()), "chat_template",
        "the Jinja source in tokenizer_config.json, chat_template.jinja or the GGUF");
  }
  impl_ = std::move(impl);
}

std::vector<JinjaPart> JinjaProgram::render(
    const std::vector<ChatMessage>& messages, bool add_generation_prompt,
    const std::map<std::string, std::string>& variables) const {
  jinja::context ctx(impl_->source);
  auto list = jinja::mk_val<jinja::value_array>();
  for (const auto& m : messages) {
    auto obj = jinja::mk_val<jinja::value_object>();
    obj->insert("role", string_value(m.role, false));
    obj->insert("content", string_value(m.content, m.role == "assistant"));
    list->push_back(obj);
  }
  ctx.set_val("messages", list);
  ctx.set_val("add_generation_prompt", jinja::mk_val<jinja::value_bool>(add_generation_prompt));
  for (const auto& [k, v] : variables) ctx.set_val(k, string_value(v, false));
  ctx.set_val("range", jinja::mk_val<jinja::value_func>("range", bounded_range));
  std::vector<JinjaPart> out;
  try {
    jinja::runtime runtime(ctx);
    auto parts = jinja::runtime::gather_string_parts(runtime.execute(impl_->program));
    for (const auto& p : parts->val_str.parts) {
      if (p.val.empty()) continue;
      if (!out.empty() && out.back().marked == p.is_input) out.back().text += p.val;
      else out.push_back({p.val, p.is_input});
    }
  } catch (const std::exception& e) {
    throw TokenizerError("chat template: " + runtime_message(e.what()), "messages",
                         "the model's own template rejected this conversation");
  }
  return out;
}

}  // namespace safetune::tokenizer::detail
