// Releases after training: `safetune monitor` (probe the current release, gate it against its
// release-time assessment, roll back on regression), `safetune rollback` and `safetune releases`.
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "commands.hpp"
#include "safetune/error.hpp"
#include "safetune/recipes/two_stage.hpp"
#include "safetune/safety/registry.hpp"

namespace safetune::cli {
namespace {

volatile std::sig_atomic_t g_stop = 0;
extern "C" void on_stop_signal(int) { g_stop = 1; }

// The registry comes from --registry, else from the config's safety.release.registry.
std::string registry_path(const std::string& config, const std::vector<std::string>& overrides,
                          const std::string& registry) {
  if (!registry.empty()) return registry;
  if (config.empty()) throw UsageError("give a CONFIG or --registry PATH", "registry");
  recipes::TwoStageConfig cfg;
  config_load(cfg, config, overrides);
  if (cfg.safety.release.registry.empty())
    throw ConfigError("no release registry configured", config + ": safety.release.registry");
  return cfg.safety.release.registry;
}

// `releases` and `rollback` read an existing registry: a mistyped path is an error, not an empty
// list.
safety::ReleaseRegistry open_existing(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec))
    throw IoError("no such release registry", path,
                  "give the registry `safetune train` wrote (safety.release.registry)");
  return safety::ReleaseRegistry::open(path);
}

void print_pass(const safety::MonitorResult& r) {
  const auto& a = r.assessment;
  std::printf("release %s: %s\n", r.release.c_str(), r.regression ? "REGRESSION" : "ok");
  if (a.refusal.overall.n + a.benign_compliance.overall.n + a.discrimination.overall.n > 0)
    std::printf(
        "  refusal %.1f%% (n=%lld)  benign compliance %.1f%% (n=%lld)  discrimination %.1f%% "
        "(n=%lld)\n",
        100 * a.refusal.overall.value(), static_cast<long long>(a.refusal.overall.n),
        100 * a.benign_compliance.overall.value(),
        static_cast<long long>(a.benign_compliance.overall.n),
        100 * a.discrimination.overall.value(), static_cast<long long>(a.discrimination.overall.n));
  for (const auto& reason : r.verdict.reasons) std::printf("  %s\n", reason.c_str());
  if (!r.rolled_back_to.empty())
    std::printf("rolled back: current release is now %s\n", r.rolled_back_to.c_str());
  else if (r.regression)
    std::printf("no rollback (no earlier passing release, or rollback disabled)\n");
  std::fflush(stdout);
}

}  // namespace

void register_release_commands(CLI::App& app, Action& action) {
  struct MonitorArgs {
    std::string file, interval;
    std::vector<std::string> overrides;
    bool once = false;
  };
  auto m = std::make_shared<MonitorArgs>();
  auto* mon = app.add_subcommand(
      "monitor", "probe the current release; exit 3 on a safety regression (after rolling back)");
  mon->add_option("config", m->file,
                  "the training config (model, safety.suite, safety.gates, safety.release)")
      ->required();
  mon->add_option("overrides", m->overrides, "key.path=value overrides");
  auto* once = mon->add_flag("--once", m->once, "one pass, then exit (the default)");
  mon->add_option("--interval", m->interval,
                  "probe every interval (90s, 15m, 1h, 1d) until SIGINT/SIGTERM")
      ->excludes(once);
  mon->callback([&action, m] {
    action = [m] {
      recipes::TwoStageConfig cfg;
      config_load(cfg, m->file, m->overrides);
      if (m->interval.empty()) {
        auto r = recipes::monitor_release(cfg);
        print_pass(r);
        return r.regression ? 3 : 0;
      }
      const auto every = safety::parse_interval(m->interval);
      std::signal(SIGINT, on_stop_signal);
      std::signal(SIGTERM, on_stop_signal);
      while (!g_stop) {
        auto r = recipes::monitor_release(cfg);
        print_pass(r);
        if (r.regression) return 3;
        const auto until = std::chrono::steady_clock::now() + every;
        while (!g_stop && std::chrono::steady_clock::now() < until)
          std::this_thread::sleep_for(std::chrono::milliseconds(200));
      }
      return 0;
    };
  });

  struct RegistryArgs {
    std::string file, registry, reason = "manual rollback";
    std::vector<std::string> overrides;
  };
  auto rb = std::make_shared<RegistryArgs>();
  auto* roll =
      app.add_subcommand("rollback", "re-point the current release to the last one that passed");
  roll->add_option("config", rb->file, "training config naming safety.release.registry");
  roll->add_option("overrides", rb->overrides, "key.path=value overrides");
  roll->add_option("--registry", rb->registry, "release registry JSON (instead of a config)");
  roll->add_option("--reason", rb->reason, "recorded in the registry history")
      ->capture_default_str();
  roll->callback([&action, rb] {
    action = [rb] {
      auto reg = open_existing(registry_path(rb->file, rb->overrides, rb->registry));
      const safety::Release* cur = reg.current();
      const std::string from = cur ? cur->id : "(none)";
      const std::string to = reg.rollback(rb->reason);
      std::printf("current release: %s -> %s\n", from.c_str(), to.c_str());
      return 0;
    };
  });

  auto ls = std::make_shared<RegistryArgs>();
  auto* list = app.add_subcommand(
      "releases", "list the releases of a registry with their status and safety summary");
  list->add_option("config", ls->file, "training config naming safety.release.registry");
  list->add_option("overrides", ls->overrides, "key.path=value overrides");
  list->add_option("--registry", ls->registry, "release registry JSON (instead of a config)");
  list->callback([&action, ls] {
    action = [ls] {
      auto reg = open_existing(registry_path(ls->file, ls->overrides, ls->registry));
      std::printf("%-36s %-8s %-21s %8s %8s %8s\n", "release", "status", "created", "refusal",
                  "benign", "discr.");
      for (const auto& r : reg.releases()) {
        auto get = [&](const char* k) {
          auto it = r.summary.find(k);
          return it == r.summary.end() ? 0.0 : 100 * it->second;
        };
        std::printf("%-36s %-8s %-21s %7.1f%% %7.1f%% %7.1f%%\n", r.id.c_str(),
                    reg.status_of(r.id).c_str(), r.created.c_str(), get("refusal_rate"),
                    get("benign_compliance"), get("discrimination_accuracy"));
        for (const auto& why : r.reasons) std::printf("    %s\n", why.c_str());
      }
      return 0;
    };
  });
}

}  // namespace safetune::cli
