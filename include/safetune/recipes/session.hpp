// A model ready to use: weights, tokenizer, chat template and its adapters, opened from one path —
// the unit the CLI commands, the safety assessment and the trainers work on.
#pragma once
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "safetune/lora/model_adapters.hpp"
#include "safetune/model/causal_lm.hpp"
#include "safetune/model/generate.hpp"
#include "safetune/safety/scoring.hpp"
#include "safetune/tokenizer/chat_template.hpp"
#include "safetune/tokenizer/tokenizer.hpp"

namespace safetune::recipes {

struct SessionOptions {
  std::string dtype = "float32";  // float32 | bfloat16 | float16
  std::string device = "cpu";     // cpu | cuda | cuda:N
  std::string tokenizer;          // tokenizer.json / .model; default: the model's own
  std::string chat_template;      // name; default: what the model's metadata names
};

// The text side of a model without its weights: tokenizer and chat template, chosen as a Session
// chooses them (explicit options first, then the model's own metadata). For tools that only
// tokenize, such as `safetune data stats`.
struct TextSide {
  std::unique_ptr<tokenizer::Tokenizer> tokenizer;
  std::unique_ptr<tokenizer::ChatTemplate> chat_template;
};
TextSide load_text_side(const std::filesystem::path& model_path,
                        const SessionOptions& options = {});

class Session {
 public:
  // MODEL is a .gguf file or a Hugging Face directory (config.json, safetensors, tokenizer.json).
  Session(const std::filesystem::path& model_path, const SessionOptions& options = {});

  model::CausalLM& model() { return *model_; }
  const tokenizer::Tokenizer& tokenizer() const { return *tokenizer_; }
  const tokenizer::ChatTemplate& chat_template() const { return *template_; }
  lora::ModelAdapters& adapters() { return *adapters_; }
  const std::filesystem::path& path() const { return path_; }

  // Loads PEFT adapter directories (comma-separated list accepted by the CLI) as frozen adapters,
  // then checks the inference policy (give a task adapter and its safety adapter in one call).
  void load_adapters(const std::vector<std::filesystem::path>& dirs);
  // Refuses (AdapterError / PolicyError) while a required adapter is disabled or an applied adapter
  // lacks an adapter it depends on, unless allow_policy_override (then logged once and recorded in
  // adapters().policy_log()). chat() and SessionScorer call it before every use.
  void check_inference_policy();
  // Prompt ids for a conversation, ending with the assistant header.
  std::vector<std::int64_t> prompt_ids(const std::vector<tokenizer::ChatMessage>& messages) const;
  // Greedy (or sampled) replies for a batch of conversations (after check_inference_policy).
  std::vector<std::string> chat(
      const std::vector<std::vector<tokenizer::ChatMessage>>& conversations,
      const model::GenerateOptions& options);
  // SHA-256 of the base weights (hex), computed once.
  const std::string& weights_sha256();
  bool allow_policy_override = false;

 private:
  std::filesystem::path path_;
  std::shared_ptr<model::CausalLM> model_;
  std::unique_ptr<tokenizer::Tokenizer> tokenizer_;
  std::unique_ptr<tokenizer::ChatTemplate> template_;
  std::unique_ptr<lora::ModelAdapters> adapters_;
  std::string weights_sha_;
};

c10::ScalarType parse_dtype(const std::string& name);
c10::Device parse_device(const std::string& name);
std::vector<std::filesystem::path> split_paths(const std::string& comma_separated);

// The safety assessment's view of a Session: batched greedy chat and choice log-likelihoods.
class SessionScorer : public safety::ScoringModel {
 public:
  explicit SessionScorer(Session& session) : s_(session) {}
  std::vector<std::string> generate(const std::vector<std::vector<safety::Message>>& conversations,
                                    int max_new_tokens) override;
  std::vector<double> choice_logprobs(const std::vector<safety::Message>& conversation,
                                      const std::vector<std::string>& choices) override;
  std::string identity() const override;

 private:
  Session& s_;
};

}  // namespace safetune::recipes
