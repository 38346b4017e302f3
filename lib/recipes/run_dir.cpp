// Run directories (resolve, lock, refuse to overwrite) and the pre-flight check of a run's inputs.
#include "safetune/recipes/run_dir.hpp"

#include <set>
#include <vector>

#include "safetune/data/dataset.hpp"
#include "safetune/error.hpp"
#include "safetune/log.hpp"
#include "safetune/lora/model_adapters.hpp"
#include "safetune/recipes/two_stage.hpp"
#include "safetune/safety/benchmarks.hpp"
#include "safetune/safety/probes.hpp"
#include "safetune/safety/registry.hpp"

namespace safetune::recipes {
namespace fs = std::filesystem;

namespace {

bool inside(const fs::path& p, const fs::path& dir) {
  std::error_code ec;
  const fs::path c = fs::weakly_canonical(p, ec);
  if (ec) return false;
  const fs::path rel = c.lexically_relative(dir);
  return !rel.empty() && *rel.begin() != "..";
}

// What in `dir` belongs to `registry`: the registry file itself, or a release's adapter or
// assessment.
std::string registry_holding(const fs::path& dir, const fs::path& registry) {
  if (registry.empty()) return {};
  std::error_code ec;
  if (!fs::exists(registry, ec)) return {};
  if (inside(registry, dir)) return "the release registry " + registry.string();
  const auto reg = safety::ReleaseRegistry::open(registry);
  for (const auto& r : reg.releases()) {
    for (const auto& a : r.adapters)
      if (inside(reg.resolve(a.path), dir)) return "release '" + r.id + "' of " + registry.string();
    if (!r.assessment.empty() && inside(reg.resolve(r.assessment), dir))
      return "release '" + r.id + "' of " + registry.string();
  }
  return {};
}

void parse_all(const data::DatasetSection& d, const std::string& key) {
  if (d.path.empty()) throw ConfigError("dataset has no path", key + ".path");
  data::ExampleFile f(d);
  for (std::size_t i = 0; i < f.size(); ++i) (void)f.get(i);  // DataError names file:line
}

void parse_all(const data::DataSection& s, const std::string& key, std::set<std::string>& seen) {
  for (std::size_t i = 0; i < s.datasets.items.size(); ++i) {
    const auto& d = s.datasets.items[i];
    if (!seen.insert(d.path + "\n" + d.format + "\n" + d.on_invalid_utf8).second) continue;
    parse_all(d, key + ".datasets." + std::to_string(i));
  }
}

}  // namespace

RunDir open_run_dir(const fs::path& requested, const RunDirOptions& o) {
  if (requested.empty())
    throw ConfigError("no output directory", "run.output_dir", "set run.output_dir");
  std::error_code ec;
  fs::create_directories(requested, ec);
  if (ec) throw IoError("cannot create the run directory: " + ec.message(), requested.string());
  RunDir rd;
  rd.path = fs::canonical(requested, ec);
  if (ec) throw IoError("cannot resolve the run directory: " + ec.message(), requested.string());
  rd.lock = io::DirectoryLock(rd.path);
  // Logged once the directory is accepted (a refusal is one error line naming the resolved path).
  auto log_accepted = [&] {
    log_info("run directory: " + rd.path.string() +
             (rd.path == fs::absolute(requested).lexically_normal()
                  ? ""
                  : " (run.output_dir " + requested.string() + ")"));
  };

  std::vector<fs::path> entries;
  for (const auto& e : fs::directory_iterator(rd.path))
    if (e.path().filename() != io::DirectoryLock::kFileName) entries.push_back(e.path().filename());
  auto refuse = [&](const std::string& what, const std::string& hint) {
    if (rd.lock.created_file()) rd.lock.release_and_remove();  // leave a foreign folder as it was
    throw ConfigError(what, rd.path.string(), hint);
  };
  if (entries.empty()) {
    log_accepted();
    return rd;
  }
  if (rd.lock.created_file())
    refuse("run.output_dir is not empty and holds no safetune run; nothing in it is overwritten",
           "choose an empty or new run.output_dir");
  if (const std::string held = registry_holding(rd.path, o.registry); !held.empty())
    refuse("run.output_dir holds " + held + "; a released run is never resumed into or overwritten",
           "choose a new run.output_dir");
  if (o.resume) {
    log_accepted();
    return rd;
  }
  // A run that failed before producing anything (a wrong model path, say) left only its config.
  if (entries.size() == 1 && entries[0] == "config.yaml") {
    log_accepted();
    return rd;
  }
  if (!o.overwrite)
    refuse("run.output_dir already holds a run",
           "continue it with --resume, replace it with --overwrite, "
           "or choose another run.output_dir");
  log_warn("--overwrite: removing the previous run in " + rd.path.string());
  for (const auto& e : fs::directory_iterator(rd.path))
    if (e.path().filename() != io::DirectoryLock::kFileName) fs::remove_all(e.path());
  log_accepted();
  return rd;
}

void validate_run_inputs(const TwoStageConfig& cfg) {
  if (cfg.run.output_dir.empty())
    throw ConfigError("no output directory", "run.output_dir", "set run.output_dir");
  std::set<std::string> seen;
  if (cfg.stage1.enabled) parse_all(cfg.stage1.data, "stage1.data", seen);
  if (cfg.stage2.enabled) {
    parse_all(cfg.stage2.data, "stage2.data", seen);
    // Regularizers read anchor batches (stage2.anchor, else stage 1's data) or replay stage 1's
    // data.
    if (!cfg.stage2.anchor.datasets.items.empty())
      parse_all(cfg.stage2.anchor, "stage2.anchor", seen);
    if (!cfg.stage2.regularizers.items.empty()) parse_all(cfg.stage1.data, "stage1.data", seen);
    if (!cfg.stage2.task_eval.empty()) {
      data::DatasetSection d;
      d.path = cfg.stage2.task_eval;
      data::ExampleFile f(d);
      for (std::size_t i = 0; i < f.size(); ++i) {
        auto ex = f.get(i);
        if (ex.messages.empty() || ex.messages.back().role != "assistant")
          throw DataError("task_eval examples must end with the assistant's reference answer",
                          cfg.stage2.task_eval + ":" + std::to_string(ex.line));
      }
    }
    if (!cfg.stage1.enabled && !cfg.stage2.safety_adapter.empty())
      (void)lora::ModelAdapters::read_info(cfg.stage2.safety_adapter);
  }
  if (cfg.safety.assess) {
    const auto suite = safety::load_suite_spec(cfg.safety.suite);
    if (cfg.stage2.enabled && cfg.safety.guard.every_n_steps > 0) {
      const fs::path subset = cfg.safety.guard.subset.empty()
                                  ? fs::path(cfg.safety.suite) / "guard_subset.txt"
                                  : fs::path(cfg.safety.guard.subset);
      (void)safety::select_probes(suite, safety::load_id_list(subset), "guard");
    }
  }
}

}  // namespace safetune::recipes
