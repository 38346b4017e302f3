// Stage 2's task metric: exact match of the generated JSON answer against the reference.
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "safetune/error.hpp"
#include "safetune/recipes/two_stage_steps.hpp"

namespace safetune::recipes {

// Exact match of the generated JSON object against the reference answer.
// Data-parallel runs split the examples round-robin over the ranks and sum the counts.
double task_metric(Session& s, const std::string& path, std::int64_t limit,
                   std::int64_t max_new_tokens, dist::Context& group) {
  data::DatasetSection d;
  d.path = path;
  d.max_examples = limit;
  data::ExampleFile file(d);
  std::vector<std::vector<tokenizer::ChatMessage>> prompts;
  std::vector<std::string> answers;
  const auto world = static_cast<std::size_t>(group.distributed() ? group.world_size() : 1);
  const auto rank = static_cast<std::size_t>(group.distributed() ? group.rank() : 0);
  for (std::size_t i = rank; i < file.size(); i += world) {
    auto ex = file.get(i);
    if (ex.messages.empty() || ex.messages.back().role != "assistant")
      throw DataError("task_eval examples must end with the assistant's reference answer", path);
    answers.push_back(ex.messages.back().content);
    ex.messages.pop_back();
    prompts.push_back(ex.messages);
  }
  model::GenerateOptions opt;
  opt.max_new_tokens = max_new_tokens;
  std::int64_t correct = 0;
  const std::size_t batch = 8;
  for (std::size_t i = 0; i < prompts.size(); i += batch) {
    std::vector<std::vector<tokenizer::ChatMessage>> chunk(
        prompts.begin() + i, prompts.begin() + std::min(prompts.size(), i + batch));
    auto replies = s.chat(chunk, opt);
    for (std::size_t k = 0; k < replies.size(); ++k) {
      auto want = nlohmann::json::parse(answers[i + k], nullptr, false);
      auto got = nlohmann::json::parse(replies[k], nullptr, false);
      correct += (!want.is_discarded() && !got.is_discarded() && want == got) ? 1 : 0;
    }
  }
  std::vector<at::Tensor> counts{
      torch::tensor({static_cast<double>(correct), static_cast<double>(prompts.size())},
                    torch::kFloat)};  // exact below 2^24
  group.all_reduce_sum(counts);
  const double total = counts[0][1].item<double>();
  return total > 0 ? counts[0][0].item<double>() / total : 0.0;
}

double measure_task_metric(TwoStageRun& run) {
  const auto& s2 = run.config().stage2;
  if (s2.task_eval.empty()) return -1;
  run.session().model().eval();
  run.session().adapters().train(false);
  return task_metric(run.session(), s2.task_eval, s2.task_eval_limit, s2.task_eval_max_new_tokens,
                     *run.group());
}

}  // namespace safetune::recipes
