// Builds against an installed safetune: loads the two-stage trainer's config from text with an
// override, validates it, and prints it resolved (what `safetune config show` does).
#include <safetune/safetune.hpp>

#include <iostream>

int main() {
  safetune::recipes::TwoStageConfig cfg;
  try {
    safetune::config_load_string(
        cfg, "model: {path: model.gguf}\nstage2:\n  regularizers: [{name: kl_anchor}]\n",
        "inline.yaml", {"stage2.lora.rank=5"});
  } catch (const safetune::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  std::cout << safetune::config_dump(cfg);
  return cfg.stage2.lora.rank == 5 ? 0 : 1;
}
