// Mutated real chat templates (files we did not write) end in output or a TokenizerError, never a
// crash.
#include <catch2/catch.hpp>
#include <random>

#include "../fuzz/mutate.hpp"
#include "safetune/error.hpp"
#include "safetune/io/atomic_file.hpp"
#include "safetune/tokenizer/chat_template.hpp"
#include "support.hpp"

using namespace safetune;
using namespace safetune::tokenizer;

TEST_CASE("mutated chat templates never crash the Jinja engine", "[tokenizer][chat][fuzz]") {
  const auto dir = test::safetune_home() / "third_party" / "llama-jinja-0.3.36" / "templates";
  const std::vector<ChatMessage> conv{{"system", "Be brief."},
                                      {"user", "Hi {{ 7*7 }} {% raw %}"},
                                      {"assistant", "<think>x</think>Hello"},
                                      {"user", "again"}};
  std::mt19937_64 rng(20261130);
  size_t rendered = 0, refused = 0;
  for (const char* name :
       {"Qwen-Qwen2.5-7B-Instruct", "meta-llama-Llama-3.1-8B-Instruct",
        "deepseek-ai-DeepSeek-R1-Distill-Llama-8B", "Qwen-Qwen3-0.6B", "google-gemma-2-2b-it"}) {
    const std::string seed = io::read_file(dir / (std::string(name) + ".jinja"));
    for (int i = 0; i < 1000; ++i) {
      std::string src = fuzz::mutate(seed, rng);
      try {
        auto t = ChatTemplate::from_jinja(src, {{"bos_token", "<s>"}, {"eos_token", "</s>"}});
        t.render_segments(conv, i % 2 == 0);
        ++rendered;
      } catch (const TokenizerError&) {
        ++refused;
      }
    }
  }
  UNSCOPED_INFO("rendered " << rendered << ", refused " << refused);
  CHECK(rendered + refused == 5000);
  CHECK(refused > 0);
}
