// The two-stage recipe as a short program: load a YAML config, run stage 1 and stage 2, print the
// gate verdict. Copy it and change what you need (data, regularizers, what happens on a breach).
//   two_stage_trainer configs/tiny_two_stage.yaml [key.path=value ...]
#include <safetune/recipes/two_stage.hpp>
#include <safetune/safetune.hpp>

#include <cstdio>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s CONFIG [key.path=value ...]\n", argv[0]);
    return 2;
  }
  try {
    safetune::log_setup(safetune::LogLevel::info);
    safetune::recipes::TwoStageConfig cfg;
    safetune::config_load(cfg, argv[1], std::vector<std::string>(argv + 2, argv + argc));
    auto result = safetune::recipes::run_two_stage(cfg, safetune::config_dump(cfg));
    // Ctrl-C / SIGTERM: the checkpoint is saved and nothing was released; say so, exit like a shell.
    if (result.interrupted_signal) {
      std::fprintf(stderr, "interrupted during %s at step %lld: checkpoint saved, nothing released (resume: RunOptions::resume)\n",
                   result.interrupted_stage.c_str(), static_cast<long long>(result.interrupted_step));
      return 128 + result.interrupted_signal;
    }
    if (result.tuned.assessment) {
      const auto& r = result.tuned.assessment->refusal.overall;
      std::printf("refusal on harmful probes after stage 2: %.1f%% (n=%lld)\n", 100 * r.value(),
                  static_cast<long long>(r.n));
    }
    std::printf("gates: %s; outputs in %s\n", result.verdict.passed ? "passed" : "BREACHED",
                result.out_dir.c_str());
    return result.verdict.passed ? 0 : 3;
  } catch (const safetune::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
