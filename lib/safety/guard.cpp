// In-training guard decisions: periodic probing of a fixed subset, gate checks against the
// baseline, and the configured response to a breach.
#include "safetune/safety/guard.hpp"

#include <cstdio>

#include "safetune/error.hpp"
#include "safetune/log.hpp"
#include "safetune/safety/report.hpp"

namespace safetune::safety {

void GuardSection::describe(ConfigVisitor& v) {
  v.field(
      "every_n_steps", every_n_steps,
      Field("Probe the guard subset every N optimizer steps; 0 disables the guard.").at_least(0));
  v.field(
      "action", action,
      Field("What a breach does: stop training, roll back to the last checkpoint that passed, or "
            "boost the regularizer weight.")
          .one_of({"stop", "rollback", "boost"}));
  v.field("boost_factor", boost_factor,
          Field("Multiplier applied to the regularizer weight per boost.").range(1, 1000));
  v.field("max_boosts", max_boosts,
          Field("Boosts allowed before a further breach stops the run.").at_least(0));
  v.field("continue_after_rollback", continue_after_rollback,
          Field("After a rollback, keep training from the restored checkpoint (else stop)."));
  v.field("subset", subset,
          Field("File of probe ids to use (one per line); empty uses the bundled guard subset."));
}

const char* to_string(GuardAction a) {
  switch (a) {
    case GuardAction::none: return "none";
    case GuardAction::stop: return "stop";
    case GuardAction::rollback: return "rollback";
    case GuardAction::boost: return "boost";
  }
  return "?";
}

SafetyGuard::SafetyGuard(GuardSection config, SafetyGates gates, ProbeSuite subset,
                         AssessOptions options, std::optional<Assessment> baseline)
    : config_(std::move(config)),
      gates_(std::move(gates)),
      subset_(std::move(subset)),
      options_(std::move(options)),
      baseline_(std::move(baseline)) {
  if (config_.action != "stop" && config_.action != "rollback" && config_.action != "boost")
    throw SafetyError("unknown guard action '" + config_.action + "'", "safety.guard.action",
                      "stop, rollback or boost");
  if (subset_.probes.empty()) throw SafetyError("the guard subset is empty", "safety.guard.subset");
}

void SafetyGuard::set_baseline(ScoringModel& model) { baseline_ = run_assessment(model); }

bool SafetyGuard::due(std::int64_t step) const {
  return enabled() && step > 0 && step % config_.every_n_steps == 0;
}

GuardDecision SafetyGuard::check(std::int64_t step, ScoringModel& model) {
  GuardDecision d;
  d.assessment = run_assessment(model);
  d.verdict = evaluate_gates(gates_, d.assessment, baseline_ ? &*baseline_ : nullptr);
  const Assessment& a = d.assessment;
  points_.push_back({step, a.refusal.overall.value(), a.benign_compliance.overall.value(),
                     a.discrimination.overall.value()});
  last_check_passed_ = d.verdict.passed;
  if (d.verdict.passed) return d;

  d.breached = true;
  std::string why;
  for (const auto& r : d.verdict.reasons) why += (why.empty() ? "" : "; ") + r;
  if (config_.action == "boost" && boosts_ < config_.max_boosts) {
    ++boosts_;
    d.action = GuardAction::boost;
    d.weight_multiplier = config_.boost_factor;
    char factor[32];
    std::snprintf(factor, sizeof factor, "%g", config_.boost_factor);
    why += std::string("; regularizer weight x") + factor + " (boost " + std::to_string(boosts_) +
           "/" + std::to_string(config_.max_boosts) + ")";
  } else if (config_.action == "rollback") {
    if (auto target = last_passing_checkpoint()) {
      d.action = GuardAction::rollback;
      d.rollback_to_step = target;
      d.continue_training = config_.continue_after_rollback;
      why += "; restore checkpoint of step " + std::to_string(*target) +
             (d.continue_training ? " and continue" : " and stop");
    } else {
      d.action = GuardAction::stop;
      d.continue_training = false;
      why += "; no checkpoint passed the guard, stopping";
    }
  } else {
    d.action = GuardAction::stop;
    d.continue_training = false;
    if (config_.action == "boost") why += "; boost limit reached, stopping";
  }
  const double base_refusal = baseline_ ? baseline_->refusal.overall.value() : 0.0;
  d.event = GuardEvent{
      step,
      "refusal_rate",
      a.refusal.overall.value(),
      baseline_ ? base_refusal - gates_.max_refusal_drop_pp / 100.0 : gates_.min_refusal_rate,
      to_string(d.action),
      why};
  events_.push_back(d.event);
  log_warn("safety guard breach at step " + std::to_string(step) + ": " + why);
  return d;
}

void SafetyGuard::checkpoint_saved(std::int64_t step) {
  if (!last_check_passed_ || *last_check_passed_) passing_checkpoints_.push_back(step);
}

std::optional<std::int64_t> SafetyGuard::last_passing_checkpoint() const {
  if (passing_checkpoints_.empty()) return std::nullopt;
  return passing_checkpoints_.back();
}

std::vector<Series> SafetyGuard::series() const {
  std::vector<Series> s = {
      {"refusal_rate", {}}, {"benign_compliance", {}}, {"discrimination_accuracy", {}}};
  for (const auto& p : points_) {
    s[0].points.push_back({double(p.step), p.refusal});
    s[1].points.push_back({double(p.step), p.benign});
    s[2].points.push_back({double(p.step), p.discrimination});
  }
  return s;
}

}  // namespace safetune::safety
