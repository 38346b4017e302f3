// `safetune data stats CONFIG`: what the trainer would see in each dataset of a config — examples,
// tokens, tokens that carry loss, truncated examples — without loading the model's weights.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "safetune/data/dataset.hpp"
#include "safetune/recipes/compare.hpp"
#include "safetune/recipes/session.hpp"
#include "safetune/recipes/two_stage.hpp"

namespace safetune::cli {

void register_data_commands(CLI::App& app, Action& action) {
  struct Args {
    std::string file;
    std::vector<std::string> overrides;
    bool json = false;
  };
  auto a = std::make_shared<Args>();
  auto* data = app.add_subcommand("data", "inspect training data");
  data->require_subcommand(1);
  auto* stats = data->add_subcommand(
      "stats", "examples, tokens, loss-carrying share and truncation per dataset");
  stats->add_option("config", a->file, "training config (as for `safetune train`)")->required();
  stats->add_option("overrides", a->overrides, "key.path=value overrides");
  stats->add_flag("--json", a->json, "print JSON instead of a table");
  stats->callback([&action, a] {
    action = [a] {
      // A compare config is a training config plus a compare section, so loading the compare
      // schema accepts both kinds (the section is optional and not used here).
      recipes::CompareConfig cfg;
      config_load(cfg, a->file, a->overrides);
      recipes::SessionOptions so;
      so.tokenizer = cfg.model.tokenizer;
      so.chat_template = cfg.model.chat_template;
      auto text = recipes::load_text_side(cfg.model.path, so);
      const std::pair<const char*, const data::DataSection*> sections[] = {
          {"stage1.data", &cfg.stage1.data},
          {"stage2.data", &cfg.stage2.data},
          {"stage2.anchor", &cfg.stage2.anchor}};
      nlohmann::json out = nlohmann::json::array();
      if (!a->json)
        std::printf("%-14s %-28s %9s %11s %11s %7s %10s\n", "section", "dataset", "examples",
                    "tokens", "supervised", "loss %", "truncated");
      for (const auto& [key, section] : sections) {
        if (section->datasets.items.empty()) continue;
        data::DataLoader loader(*section, *text.tokenizer, *text.chat_template);
        for (const auto& s : loader.stats()) {
          const double share =
              s.tokens ? static_cast<double>(s.supervised_tokens) / static_cast<double>(s.tokens)
                       : 0;
          if (a->json) {
            out.push_back({{"section", key},
                           {"dataset", s.name},
                           {"examples", s.examples},
                           {"tokens", s.tokens},
                           {"supervised_tokens", s.supervised_tokens},
                           {"loss_share", share},
                           {"masked_share", s.tokens ? 1 - share : 0.0},
                           {"truncated", s.truncated},
                           {"max_length", section->max_length}});
          } else {
            std::printf("%-14s %-28s %9lld %11lld %11lld %6.1f%% %10lld\n", key, s.name.c_str(),
                        static_cast<long long>(s.examples), static_cast<long long>(s.tokens),
                        static_cast<long long>(s.supervised_tokens), 100 * share,
                        static_cast<long long>(s.truncated));
          }
        }
      }
      if (a->json) std::printf("%s\n", out.dump(2).c_str());
      return 0;
    };
  });
}

}  // namespace safetune::cli
