// The assess recipe (a model's safety against a probe suite, gated against a baseline, reported),
// and the pieces of it the other recipes share: assessment options,
// the data-parallel assessment and the report's core.
#pragma once
#include <filesystem>
#include <optional>
#include <string>

#include "safetune/dist/context.hpp"
#include "safetune/recipes/session.hpp"
#include "safetune/safety/assessment.hpp"
#include "safetune/safety/gates.hpp"
#include "safetune/safety/http_judge.hpp"
#include "safetune/safety/probes.hpp"
#include "safetune/safety/report.hpp"

namespace safetune::recipes {

// Greedy decoding for probes, recorded with the session's chat template and the model's dtype
// (assessments made with different decoding are not compared); refusals judged by the HTTP judge
// when one is configured, by the refusal phrases otherwise.
safety::AssessOptions assess_options(Session& session, std::int64_t max_new_tokens,
                                     std::int64_t batch_size, const std::string& dtype,
                                     const safety::HttpJudgeSection& judge = {});

// Probes split round-robin over the ranks, each rank scoring its share; the per-probe results are
// exchanged so that every rank holds the whole assessment in suite order, as one process would.
safety::Assessment assess_sharded(const safety::ProbeSuite& suite, safety::ScoringModel& scorer,
                                  const safety::AssessOptions& options, dist::Context& group);

// The core every report has: the session's model (path, weights hash, identity), the assessment
// against its reference, the gates and their verdict, and the inference-policy overrides in
// effect. Callers add what they know besides (adapters, data, regularizers, guard events).
safety::ReportInputs report_inputs(Session& session, const std::string& title,
                                   const std::optional<safety::Assessment>& reference,
                                   const std::optional<safety::Assessment>& after,
                                   const safety::SafetyGates& gates,
                                   const safety::GateVerdict& verdict);

struct AssessConfig {
  std::int64_t max_new_tokens = 64, batch_size = 8;
  std::string dtype = "float32";   // the session's, recorded with the decoding
  std::filesystem::path baseline;  // assessment.json to gate against; empty: none
  safety::HttpJudgeSection judge;  // endpoint empty: the refusal phrases
  safety::SafetyGates gates;
  std::filesystem::path out = "runs/assess";  // assessment.json and report/
};

struct AssessResult {
  safety::Assessment assessment;
  std::optional<safety::Assessment> baseline;
  safety::GateVerdict verdict;
};

// Assesses the session's model (with its adapters) on `suite`, writes out/assessment.json, gates it
// against the baseline and writes out/report.
AssessResult assess_model(Session& session, const safety::ProbeSuite& suite,
                          const AssessConfig& cfg);

}  // namespace safetune::recipes
