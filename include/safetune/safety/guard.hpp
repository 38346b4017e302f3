// The in-training guard: every N steps, probe a fixed subset, gate it against the baseline and
// decide what the trainer does on a breach (stop, roll back to the last passing checkpoint, or
// boost the regularizer weight). The trainer owns checkpoints and weights; the guard only decides.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "safetune/config.hpp"
#include "safetune/safety/assessment.hpp"
#include "safetune/safety/gates.hpp"

namespace safetune::safety {

// YAML section `safety.guard` (wired into the root Config by integration).
struct GuardSection : ConfigSection {
  std::int64_t every_n_steps = 0;  // 0 disables the guard
  std::string action = "stop";     // stop | rollback | boost
  double boost_factor = 2.0;
  std::int64_t max_boosts = 3;  // breaches after this many boosts stop the run
  bool continue_after_rollback = true;
  std::string subset;  // id list; empty = the bundled data/probes/guard_subset.txt
  void describe(ConfigVisitor& v) override;
};

struct GuardEvent {
  std::int64_t step = 0;
  std::string metric;
  double value = 0, threshold = 0;
  std::string action;  // stop | rollback | boost | none
  std::string detail;
};

struct Series;  // report.hpp

enum class GuardAction { none, stop, rollback, boost };
const char* to_string(GuardAction a);

struct GuardDecision {
  GuardAction action = GuardAction::none;
  bool breached = false;
  bool continue_training = true;
  std::optional<std::int64_t> rollback_to_step;  // for rollback
  double weight_multiplier = 1.0;                // for boost: multiply the regularizer weight
  GuardEvent event;                              // filled on a breach
  Assessment assessment;
  GateVerdict verdict;
};

class SafetyGuard {
 public:
  // `subset` is probed at every check; `baseline` must come from the same subset and options
  // (else every check breaches with the reason); set_baseline() measures it instead.
  SafetyGuard(GuardSection config, SafetyGates gates, ProbeSuite subset, AssessOptions options,
              std::optional<Assessment> baseline = std::nullopt);
  void set_baseline(ScoringModel& model);
  // How the subset is assessed; default safety::assess. Data-parallel runs pass one that shards the
  // probes over the ranks and gathers the results.
  using Assessor =
      std::function<Assessment(const ProbeSuite&, ScoringModel&, const AssessOptions&)>;
  void set_assessor(Assessor assessor) { assessor_ = std::move(assessor); }
  const std::optional<Assessment>& baseline() const { return baseline_; }
  bool enabled() const { return config_.every_n_steps > 0; }
  bool due(std::int64_t step) const;
  GuardDecision check(std::int64_t step, ScoringModel& model);
  // The trainer saved a checkpoint at `step`. It becomes a rollback target when the latest check
  // (if any) passed; a checkpoint before the first check is the tuned-from state and counts.
  void checkpoint_saved(std::int64_t step);
  std::optional<std::int64_t> last_passing_checkpoint() const;
  const std::vector<GuardEvent>& events() const { return events_; }
  // Safety metrics per checked step, for the report's line chart.
  std::vector<Series> series() const;

 private:
  Assessment run_assessment(ScoringModel& model) const {
    return assessor_ ? assessor_(subset_, model, options_) : assess(subset_, model, options_);
  }
  Assessor assessor_;
  GuardSection config_;
  SafetyGates gates_;
  ProbeSuite subset_;
  AssessOptions options_;
  std::optional<Assessment> baseline_;
  std::vector<GuardEvent> events_;
  std::vector<std::int64_t> passing_checkpoints_;
  std::optional<bool> last_check_passed_;
  std::int64_t boosts_ = 0;
  struct Point {
    std::int64_t step;
    double refusal, benign, discrimination;
  };
  std::vector<Point> points_;
};

}  // namespace safetune::safety
