// The assess recipe and the assessment steps the other recipes share (options,
// sharded assessment, the report's core).
#include "safetune/recipes/assess.hpp"

#include "safetune/error.hpp"
#include "safetune/lora/adapter_stack.hpp"
#include "safetune/safety/benchmarks.hpp"

namespace safetune::recipes {
namespace fs = std::filesystem;

safety::AssessOptions assess_options(Session& session, std::int64_t max_new_tokens,
                                     std::int64_t batch_size, const std::string& dtype,
                                     const safety::HttpJudgeSection& judge) {
  safety::AssessOptions o;
  o.max_new_tokens = static_cast<int>(max_new_tokens);
  o.batch_size = static_cast<int>(batch_size);
  o.decoding_extra = "template:" + session.chat_template().name() + " dtype:" + dtype;
  if (!judge.endpoint.empty())
    o.response_scorer = safety::use_http_judge(judge);  // keyword scoring otherwise
  return o;
}

safety::Assessment assess_sharded(const safety::ProbeSuite& suite, safety::ScoringModel& scorer,
                                  const safety::AssessOptions& opt, dist::Context& group) {
  const int world = group.world_size(), rank = group.rank();
  if (!group.distributed() || world <= 1) return safety::assess(suite, scorer, opt);
  safety::ProbeSuite part = suite;
  part.probes.clear();
  for (std::size_t i = static_cast<std::size_t>(rank); i < suite.probes.size();
       i += static_cast<std::size_t>(world))
    part.probes.push_back(suite.probes[i]);
  const std::string mine = part.probes.empty()
                               ? std::string()
                               : safety::assessment_to_json(safety::assess(part, scorer, opt));
  safety::Assessment full;
  full.results.resize(suite.probes.size());
  for (int q = 0; q < world; ++q) {
    std::string bytes = q == rank ? mine : std::string();
    group.broadcast_bytes(bytes, q);
    if (bytes.empty()) continue;
    auto a = safety::assessment_from_json(bytes, "assessment from rank " + std::to_string(q));
    if (full.decoding.empty()) {
      full.model_identity = a.model_identity;
      full.decoding = a.decoding;
      full.created = a.created;
    }
    for (std::size_t k = 0; k < a.results.size(); ++k)
      full.results[static_cast<std::size_t>(q) + k * static_cast<std::size_t>(world)] =
          a.results[k];
  }
  full.suite_name = suite.name;
  full.suite_sha256 = suite.sha256();
  safety::summarise(full);
  return full;
}

safety::ReportInputs report_inputs(Session& session, const std::string& title,
                                   const std::optional<safety::Assessment>& reference,
                                   const std::optional<safety::Assessment>& after,
                                   const safety::SafetyGates& gates,
                                   const safety::GateVerdict& verdict) {
  safety::ReportInputs in;
  in.title = title;
  in.model_path = session.path().string();
  in.model_sha256 = session.weights_sha256();
  in.model_identity = SessionScorer(session).identity();
  in.baseline = reference;
  in.after = after;
  in.gates = gates;
  in.verdict = verdict;
  for (const auto& o : session.adapters().policy_log().entries())
    in.policy_overrides.push_back(lora::describe(o));
  return in;
}

AssessResult assess_model(Session& session, const safety::ProbeSuite& suite,
                          const AssessConfig& cfg) {
  SessionScorer scorer(session);
  AssessResult r;
  r.assessment = safety::assess(
      suite, scorer,
      assess_options(session, cfg.max_new_tokens, cfg.batch_size, cfg.dtype, cfg.judge));
  safety::save_assessment(r.assessment, cfg.out / "assessment.json");
  if (!cfg.baseline.empty()) r.baseline = safety::load_assessment(cfg.baseline);
  r.verdict = safety::evaluate_gates(cfg.gates, r.assessment, r.baseline ? &*r.baseline : nullptr);

  auto in =
      report_inputs(session, "Safety assessment", r.baseline, r.assessment, cfg.gates, r.verdict);
  auto& adapters = session.adapters();
  for (const auto& name : adapters.names())
    in.adapters.push_back(
        {name, lora::role_name(adapters.stacks(name).front()->get(name).spec.role), {}, {}});
  safety::write_safety_report(cfg.out / "report", in);
  return r;
}

}  // namespace safetune::recipes
