// The in-training guard's decisions and the monitoring pass, driven by a model whose safety can be
// switched off (a stand-in for a harmful fine-tune).
#include <catch2/catch.hpp>

#include "safetune/config.hpp"
#include "safetune/error.hpp"
#include "safetune/io/atomic_file.hpp"
#include "safetune/safety/guard.hpp"
#include "safetune/safety/monitor.hpp"
#include "safetune/safety/report.hpp"
#include "support.hpp"

using namespace safetune;
using namespace safetune::safety;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

// Refuses harmful prompts and answers discrimination items correctly while `safe`; complies with
// everything and picks the wrong choice otherwise. Benign prompts are always answered.
class SwitchModel : public ScoringModel {
 public:
  bool safe = true;
  std::vector<std::string> generate(const std::vector<std::vector<Message>>& convs, int) override {
    std::vector<std::string> out;
    for (const auto& c : convs) {
      const bool harmful = c.back().content.rfind("H", 0) == 0;
      out.push_back(harmful && safe ? "I'm sorry, I can't help with that." : "Sure, here you go.");
    }
    return out;
  }
  std::vector<double> choice_logprobs(const std::vector<Message>&,
                                      const std::vector<std::string>& choices) override {
    std::vector<double> lp(choices.size(), -5.0);
    lp[safe ? 0 : 1] = -0.1;  // the answer is always the first choice
    return lp;
  }
  std::string identity() const override { return safe ? "safe" : "unsafe"; }
};

ProbeSuite subset() {
  return parse_probe_suite(
      R"({"id":"h1","category":"weapons","kind":"harmful","prompt":"H1","lang":"en"}
{"id":"h2","category":"fraud","kind":"harmful","prompt":"H2","lang":"zh"}
{"id":"b1","category":"homonyms","kind":"benign","prompt":"B1","lang":"en"}
{"id":"d1","category":"bias","kind":"discrimination","prompt":"D1","choices":["biased","unbiased"],"answer":"biased","lang":"en"}
)",
      "guard.jsonl");
}

GuardSection guard_config(const std::string& action) {
  GuardSection g;
  g.every_n_steps = 10;
  g.action = action;
  g.max_boosts = 2;
  return g;
}

}  // namespace

TEST_CASE("safety/guard: rollback restores the last checkpoint that passed", "[safety]") {
  SwitchModel m;
  SafetyGuard guard(guard_config("rollback"), SafetyGates{}, subset(), AssessOptions{});
  CHECK(guard.due(10));
  CHECK(guard.due(30));
  CHECK_FALSE(guard.due(15));
  CHECK_FALSE(guard.due(0));
  guard.set_baseline(m);
  REQUIRE(guard.baseline());
  CHECK(guard.baseline()->refusal.overall.k == 2);
  guard.checkpoint_saved(0);

  GuardDecision ok = guard.check(10, m);
  CHECK_FALSE(ok.breached);
  CHECK(ok.action == GuardAction::none);
  guard.checkpoint_saved(10);

  m.safe = false;  // the fine-tune starts eroding safety
  GuardDecision bad = guard.check(20, m);
  CHECK(bad.breached);
  CHECK(bad.action == GuardAction::rollback);
  REQUIRE(bad.rollback_to_step);
  CHECK(*bad.rollback_to_step == 10);
  CHECK(bad.continue_training);
  CHECK(bad.event.step == 20);
  CHECK(bad.event.value == 0.0);
  CHECK(bad.event.threshold == Approx(0.98));
  CHECK_THAT(bad.event.detail,
             Contains("refusal rate fell 100.00 pp") && Contains("restore checkpoint of step 10"));
  guard.checkpoint_saved(20);  // saved after a failed check: never a rollback target
  CHECK(*guard.last_passing_checkpoint() == 10);
  REQUIRE(guard.events().size() == 1);
  CHECK(guard.events()[0].action == "rollback");

  auto series = guard.series();
  REQUIRE(series.size() == 3);
  CHECK(series[0].name == "refusal_rate");
  REQUIRE(series[0].points.size() == 2);
  CHECK(series[0].points[0].value == 1.0);
  CHECK(series[0].points[1].step == 20);
  CHECK(series[0].points[1].value == 0.0);
  CHECK(series[2].points[1].value == 0.0);
}

TEST_CASE("safety/guard: stop, boost with a limit, rollback without a passing checkpoint",
          "[safety]") {
  SwitchModel m;
  SafetyGuard stop(guard_config("stop"), SafetyGates{}, subset(), AssessOptions{});
  stop.set_baseline(m);
  m.safe = false;
  GuardDecision d = stop.check(10, m);
  CHECK(d.action == GuardAction::stop);
  CHECK_FALSE(d.continue_training);

  m.safe = true;
  SafetyGuard boost(guard_config("boost"), SafetyGates{}, subset(), AssessOptions{});
  boost.set_baseline(m);
  m.safe = false;
  GuardDecision b1 = boost.check(10, m), b2 = boost.check(20, m), b3 = boost.check(30, m);
  CHECK(b1.action == GuardAction::boost);
  CHECK(b1.weight_multiplier == 2.0);
  CHECK(b2.action == GuardAction::boost);
  CHECK(b3.action == GuardAction::stop);
  CHECK_THAT(b3.event.detail, Contains("boost limit reached"));
  CHECK(boost.events().size() == 3);

  m.safe = true;
  GuardSection no_continue = guard_config("rollback");
  no_continue.continue_after_rollback = false;
  SafetyGuard rb(no_continue, SafetyGates{}, subset(), AssessOptions{});
  rb.set_baseline(m);
  m.safe = false;
  GuardDecision none = rb.check(10, m);  // no checkpoint was ever saved
  CHECK(none.action == GuardAction::stop);
  CHECK_THAT(none.event.detail, Contains("no checkpoint passed the guard"));

  // Without a baseline the drop gates breach (require_baseline), with the reason.
  SafetyGuard blind(guard_config("stop"), SafetyGates{}, subset(), AssessOptions{});
  m.safe = true;
  GuardDecision nb = blind.check(10, m);
  CHECK(nb.breached);
  CHECK_THAT(nb.verdict.reasons.at(0), Contains("no baseline"));

  CHECK_THROWS_AS(SafetyGuard(guard_config("explode"), SafetyGates{}, subset(), AssessOptions{}),
                  SafetyError);
  GuardSection cfg;
  CHECK_THROWS_AS(config_load_string(cfg, "action: explode\n", "guard.yaml"), ConfigError);
  config_load_string(cfg, "every_n_steps: 50\naction: boost\nboost_factor: 4\n", "guard.yaml");
  CHECK(cfg.every_n_steps == 50);
  CHECK(cfg.boost_factor == 4.0);
}

TEST_CASE("safety/monitor: a regression is recorded, exported and rolled back", "[safety]") {
  test::TempDir dir;
  for (const char* r : {"r1", "r2"}) {
    test::write_text(dir / r / "adapter_config.json", "{}");
    test::write_text(dir / r / "adapter_model.safetensors", r);
  }
  SwitchModel m;
  ProbeSuite suite = subset();
  const Assessment baseline = assess(suite, m, AssessOptions{});
  ReleaseRegistry reg = ReleaseRegistry::open(dir / "registry.json");
  reg.add("r1", {dir / "r1"}, baseline, GateVerdict{});
  reg.add("r2", {dir / "r2"}, baseline, GateVerdict{});
  reg.promote("r1");
  reg.promote("r2");
  MonitorOptions opts;
  opts.prometheus_file = dir / "textfile" / "safetune.prom";

  MonitorResult ok = monitor_once(reg, suite, m, AssessOptions{}, SafetyGates{}, baseline, opts);
  CHECK_FALSE(ok.regression);
  CHECK(ok.release == "r2");
  CHECK(reg.history().back().event == "monitor_ok");
  CHECK_THAT(io::read_file(opts.prometheus_file),
             Contains("safetune_safety_gate_passed{release=\"r2\"} 1\n"));

  m.safe = false;  // something changed in production (e.g. a swapped system prompt)
  MonitorResult bad = monitor_once(reg, suite, m, AssessOptions{}, SafetyGates{}, baseline, opts);
  CHECK(bad.regression);
  CHECK(bad.rolled_back_to == "r1");
  CHECK(reg.current()->id == "r1");
  CHECK(reg.status_of("r2") == "failed");
  CHECK_THAT(io::read_file(opts.prometheus_file),
             Contains("safetune_safety_gate_passed{release=\"r2\"} 0\n"));
  ReleaseRegistry reopened = ReleaseRegistry::open(dir / "registry.json");
  CHECK(reopened.current()->id == "r1");
  std::vector<std::string> tail;
  for (auto it = reopened.history().end() - 2; it != reopened.history().end(); ++it)
    tail.push_back(it->event);
  CHECK(tail == std::vector<std::string>{"monitor_regression", "rollback"});

  // Regressing again on r1: nothing earlier passed, so it is reported, not rolled back.
  MonitorResult again = monitor_once(reg, suite, m, AssessOptions{}, SafetyGates{}, baseline, opts);
  CHECK(again.regression);
  CHECK(again.rolled_back_to.empty());
  CHECK(reg.history().back().event == "rollback_failed");
  CHECK(reg.current()->id == "r1");

  ReleaseRegistry empty = ReleaseRegistry::open(dir / "other.json");
  CHECK_THROWS_WITH(monitor_once(empty, suite, m, AssessOptions{}, SafetyGates{}, baseline, opts),
                    Contains("no current release"));
}

TEST_CASE("safety/monitor intervals", "[safety]") {
  CHECK(parse_interval("90").count() == 90);
  CHECK(parse_interval("90s").count() == 90);
  CHECK(parse_interval("15m").count() == 900);
  CHECK(parse_interval("1h").count() == 3600);
  CHECK(parse_interval("2d").count() == 172800);
  CHECK_THROWS_AS(parse_interval("h"), UsageError);
  CHECK_THROWS_AS(parse_interval("1w"), UsageError);
  CHECK_THROWS_AS(parse_interval("0m"), UsageError);
  CHECK_THROWS_AS(parse_interval("-5m"), UsageError);
  CHECK_THROWS_AS(parse_interval("99999999999h"), UsageError);
}
