// Session: open a model with its tokenizer and chat template; chat and scoring on top of it.
#include "safetune/recipes/session.hpp"

#include <torch/torch.h>

#include <regex>

#include "safetune/error.hpp"
#include "safetune/io/gguf.hpp"
#include "safetune/log.hpp"
#include "safetune/tokenizer/discovery.hpp"
#include "safetune/tokenizer/gguf.hpp"

namespace safetune::recipes {
namespace fs = std::filesystem;

c10::ScalarType parse_dtype(const std::string& name) {
  if (name == "float32" || name == "fp32") return torch::kFloat;
  if (name == "bfloat16" || name == "bf16") return torch::kBFloat16;
  if (name == "float16" || name == "fp16") return torch::kHalf;
  throw UsageError("unknown dtype '" + name + "'", "dtype", "float32, bfloat16 or float16");
}

c10::Device parse_device(const std::string& name) {
  static const std::regex re("cpu|cuda(:[0-9]+)?");
  if (!std::regex_match(name, re))
    throw UsageError("unknown device '" + name + "'", "device", "cpu, cuda or cuda:N");
  c10::Device d(name);
  if (d.is_cuda() && !torch::cuda::is_available())
    throw Error("CUDA requested but no CUDA device is visible", "device " + name);
  return d;
}

std::vector<fs::path> split_paths(const std::string& s) {
  std::vector<fs::path> out;
  std::size_t start = 0;
  while (start <= s.size()) {
    auto comma = s.find(',', start);
    std::string part =
        s.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (!part.empty()) out.emplace_back(part);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

TextSide load_text_side(const fs::path& path, const SessionOptions& opt) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw IoError("model not found", path.string());
  TextSide t;
  const bool gguf = path.extension() == ".gguf";
  std::optional<tokenizer::ChatTemplate> tmpl;
  if (!opt.tokenizer.empty()) {
    t.tokenizer = tokenizer::load_tokenizer(opt.tokenizer);
  } else if (gguf) {
    io::GgufFile file(path);
    t.tokenizer = tokenizer::tokenizer_from_gguf(file);
    if (opt.chat_template.empty()) tmpl = tokenizer::chat_template_from_gguf(file);
  } else {
    fs::path dir = fs::is_directory(path) ? path : path.parent_path();
    t.tokenizer = tokenizer::load_tokenizer(dir);
    if (opt.chat_template.empty()) tmpl = tokenizer::shipped_chat_template(dir);
  }
  if (!opt.chat_template.empty()) {
    // A template given in the config runs with the model's special tokens, when it names them.
    tokenizer::TemplateVariables vars;
    if (opt.tokenizer.empty()) {
      try {
        if (auto own = tokenizer::shipped_chat_template(path)) vars = own->variables();
      } catch (const Error&) {
        // The model's own template is broken or malformed: the one given replaces it anyway.
      }
    }
    tmpl = tokenizer::ChatTemplate::from_name_or_jinja(opt.chat_template, vars);
  }
  if (!tmpl)
    throw TokenizerError(
        "the model ships no chat template", path.string(),
        "name a built-in one (chatml, smollm2, qwen2, llama3, deepseek-r1, llama2) or give Jinja "
        "source in model.chat_template");
  t.chat_template = std::make_unique<tokenizer::ChatTemplate>(*tmpl);
  return t;
}

Session::Session(const fs::path& path, const SessionOptions& opt) : path_(path) {
  auto text = load_text_side(path, opt);  // first: it checks that the path exists
  model_ = model::load(path, parse_dtype(opt.dtype), parse_device(opt.device));
  tokenizer_ = std::move(text.tokenizer);
  template_ = std::move(text.chat_template);
  adapters_ = std::make_unique<lora::ModelAdapters>(*model_);
  model_->eval();
}

void Session::load_adapters(const std::vector<fs::path>& dirs) {
  for (const auto& d : dirs) adapters_->load_peft(d);
  check_inference_policy();
}

void Session::check_inference_policy() {
  auto violations = adapters_->inference_violations();
  if (!violations.empty() && !allow_policy_override)
    throw AdapterError("adapter '" + violations.front() + "' is required at inference but disabled",
                       path_.string(), "re-enable it, or pass the explicit policy override");
  if (allow_policy_override && adapters_->policy_override().empty())
    adapters_->set_policy_override("Session::allow_policy_override");
  adapters_->enforce_dependencies();
}

std::vector<std::int64_t> Session::prompt_ids(
    const std::vector<tokenizer::ChatMessage>& messages) const {
  tokenizer::EncodeOptions opt;
  opt.add_special = false;  // the template writes bos where the model wants it
  auto ids = tokenizer_->encode(template_->render(messages, /*add_generation_prompt=*/true), opt);
  return {ids.begin(), ids.end()};
}

std::vector<std::string> Session::chat(
    const std::vector<std::vector<tokenizer::ChatMessage>>& conversations,
    const model::GenerateOptions& options) {
  check_inference_policy();
  std::vector<std::vector<std::int64_t>> prompts;
  for (const auto& c : conversations) prompts.push_back(prompt_ids(c));
  model::GenerateOptions opt = options;
  if (!opt.stop_tokens) {
    std::vector<std::int64_t> stops = model_->config().eos_token_ids;
    if (auto eos = tokenizer_->eos_id()) stops.push_back(*eos);
    // Chat models end their turn with the template's end-of-turn token.
    for (const char* t : {"<|im_end|>", "<|eot_id|>", "<｜end▁of▁sentence｜>", "</s>"})
      if (auto id = tokenizer_->token_to_id(t)) stops.push_back(*id);
    opt.stop_tokens = stops;
  }
  torch::NoGradGuard no_grad;
  auto result = model::generate(*model_, prompts, opt);
  std::vector<std::string> out;
  for (const auto& ids : result.new_tokens) {
    std::vector<tokenizer::TokenId> t(ids.begin(), ids.end());
    out.push_back(tokenizer::decode_whole_characters(
        *tokenizer_, t, /*skip_special=*/true));  // cut by max_new_tokens
  }
  return out;
}

const std::string& Session::weights_sha256() {
  if (weights_sha_.empty()) weights_sha_ = lora::tensors_sha256(model_->state_dict_hf());
  return weights_sha_;
}

namespace {
std::vector<tokenizer::ChatMessage> to_chat(const std::vector<safety::Message>& m) {
  std::vector<tokenizer::ChatMessage> out;
  for (const auto& x : m) out.push_back({x.role, x.content});
  return out;
}
}  // namespace

std::vector<std::string> SessionScorer::generate(
    const std::vector<std::vector<safety::Message>>& conversations, int max_new_tokens) {
  std::vector<std::vector<tokenizer::ChatMessage>> convs;
  for (const auto& c : conversations) convs.push_back(to_chat(c));
  model::GenerateOptions opt;
  opt.max_new_tokens = max_new_tokens;
  return s_.chat(convs, opt);
}

std::vector<double> SessionScorer::choice_logprobs(const std::vector<safety::Message>& conversation,
                                                   const std::vector<std::string>& choices) {
  s_.check_inference_policy();
  auto prompt = s_.prompt_ids(to_chat(conversation));
  tokenizer::EncodeOptions opt;
  opt.add_special = false;
  std::vector<std::vector<std::int64_t>> rows;
  std::size_t longest = 0;
  for (const auto& c : choices) {
    auto ids = s_.tokenizer().encode(c, opt);
    if (ids.empty()) throw SafetyError("a choice encodes to no tokens", "choice '" + c + "'");
    std::vector<std::int64_t> row = prompt;
    row.insert(row.end(), ids.begin(), ids.end());
    longest = std::max(longest, row.size());
    rows.push_back(std::move(row));
  }
  const auto B = static_cast<std::int64_t>(rows.size()), T = static_cast<std::int64_t>(longest);
  auto input = torch::zeros({B, T}, torch::kLong), mask = torch::zeros({B, T}, torch::kLong);
  auto in_acc = input.accessor<std::int64_t, 2>();
  auto mask_acc = mask.accessor<std::int64_t, 2>();
  for (std::int64_t b = 0; b < B; ++b)
    for (std::size_t t = 0; t < rows[b].size(); ++t) {
      in_acc[b][static_cast<std::int64_t>(t)] = rows[b][t];
      mask_acc[b][static_cast<std::int64_t>(t)] = 1;
    }
  torch::NoGradGuard ng;
  auto dev = s_.model().device();
  auto logits = s_.model().forward(input.to(dev), mask.to(dev)).to(torch::kCPU, torch::kDouble);
  auto logp = torch::log_softmax(logits, -1);
  auto lp = logp.accessor<double, 3>();
  std::vector<double> out;
  for (std::int64_t b = 0; b < B; ++b) {
    double sum = 0;
    for (std::size_t t = prompt.size(); t < rows[b].size(); ++t)
      sum += lp[b][static_cast<std::int64_t>(t) - 1][rows[b][t]];
    out.push_back(sum);
  }
  return out;
}

std::string SessionScorer::identity() const {
  auto& s = const_cast<Session&>(s_);
  std::string id = "weights:" + s.weights_sha256().substr(0, 16);
  for (const auto& name : s.adapters().names()) id += " adapter:" + name;
  return id;
}

}  // namespace safetune::recipes
