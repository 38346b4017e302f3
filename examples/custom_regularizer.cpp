// Adding your own stage-2 regularizer: implement train::Regularizer, register it under a name, and
// select it from YAML (stage2.regularizers: [{name: b_norm, lambda: 0.01}]). This one penalises
// the squared norm of the task adapter's B factors, a cheap proxy for the size of the update.
//   custom_regularizer configs/tiny_two_stage.yaml stage2.regularizers.0.name=b_norm
#include <torch/torch.h>
#include <safetune/lora/model_adapters.hpp>
#include <safetune/recipes/two_stage.hpp>
#include <safetune/safetune.hpp>

#include <cstdio>

namespace {
class BNorm : public safetune::train::Regularizer {
 public:
  std::string name() const override { return "b_norm"; }
  void setup(safetune::lora::ModelAdapters& adapters, const std::string& task,
             const std::string&) override {
    for (auto* stack : adapters.stacks(task)) factors_.push_back(stack->get(task).B);
  }
  // This term reads only the adapter, not ctx.task_logits: saying so lets the trainer skip the full
  // [batch, seq, vocab] task logits and run lm_head on the supervised positions alone.
  bool needs_task_logits() const override { return false; }
  at::Tensor loss(safetune::train::RegContext&) override {
    at::Tensor total = torch::zeros({}, factors_.front().options());
    for (const auto& B : factors_) total = total + B.pow(2).sum();
    return total;
  }

 private:
  std::vector<at::Tensor> factors_;
};
}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s CONFIG [key.path=value ...]\n", argv[0]);
    return 2;
  }
  // Register before the config is loaded: the schema lists the registered names.
  safetune::train::register_regularizer("b_norm", [](const safetune::train::RegularizerSection&) {
    return std::make_unique<BNorm>();
  });
  try {
    safetune::log_setup(safetune::LogLevel::info);
    safetune::recipes::TwoStageConfig cfg;
    safetune::config_load(cfg, argv[1], std::vector<std::string>(argv + 2, argv + argc));
    auto result = safetune::recipes::run_two_stage(cfg, safetune::config_dump(cfg));
    std::printf("done: %s\n", result.out_dir.c_str());
    return 0;
  } catch (const safetune::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
