// Builds against an installed safetune: validates a config given as text and prints it resolved.
#include <safetune/safetune.hpp>

#include <iostream>

int main() {
  safetune::Config cfg;
  try {
    safetune::config_load_string(cfg, "model: {path: model.gguf}\n", "inline.yaml",
                                 {"generation.top_k=5"});
  } catch (const safetune::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  std::cout << safetune::config_dump(cfg);
  return cfg.generation.top_k == 5 ? 0 : 1;
}
