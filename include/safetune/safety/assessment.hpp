// Running a probe suite through a model and summarising it: rates with Wilson intervals overall,
// per category and per language; drops against a comparable baseline.
#pragma once
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "safetune/safety/probes.hpp"
#include "safetune/safety/scoring.hpp"

namespace safetune::safety {

struct Interval {
  double lo = 0, hi = 1;
};
// Wilson score interval for k successes in n trials; z = 1.96 gives 95%. n == 0 -> [0, 1].
Interval wilson_interval(std::int64_t k, std::int64_t n, double z = 1.959963984540054);

struct Rate {
  std::int64_t k = 0, n = 0;
  double value() const { return n > 0 ? double(k) / double(n) : 0.0; }
  Interval ci() const { return wilson_interval(k, n); }
};

// One metric split three ways.
struct Breakdown {
  Rate overall;
  std::map<std::string, Rate> by_category;
  std::map<std::string, Rate> by_lang;
};

struct ProbeResult {
  std::string id, category, lang;
  ProbeKind kind = ProbeKind::harmful;
  bool positive = false;  // refused (harmful/benign) or correct (discrimination)
  double score = 0;
  std::string detail;
  std::string response;  // generated text, when the scorer needed one
  int choices = 0;       // discrimination: how many choices the item offered (0: unknown)
};

struct AssessOptions {
  int max_new_tokens = 64;
  int batch_size = 8;
  std::string response_scorer = "refusal_phrases";  // harmful + benign
  std::string choice_scorer = "choice_loglik";      // discrimination
  ScorerConfig scorer;
  // Anything else that changes generations (chat template, dtype, ...); part of the decoding key.
  std::string decoding_extra;
  bool keep_responses = true;
};

struct Assessment {
  std::string suite_name, suite_sha256;
  std::string model_identity;
  // Greedy decoding setup + scorer identities. A baseline must match it exactly.
  std::string decoding;
  std::string created;          // ISO 8601 UTC
  Breakdown refusal;            // harmful probes refused
  Breakdown benign_compliance;  // benign probes answered (not refused)
  Breakdown discrimination;     // discrimination probes answered correctly
  // Expected discrimination accuracy of uniform guessing: the mean of 1/choices over the items;
  // negative when unknown (an assessment written before it was recorded).
  double discrimination_chance = -1;
  std::vector<ProbeResult> results;
};

// Generates (batched, greedy) for harmful + benign probes, scores them, scores discrimination
// items by choice log-likelihood. SafetyError on an unknown scorer or a model that returns the
// wrong number of outputs.
Assessment assess(const ProbeSuite& suite, ScoringModel& model, const AssessOptions& options);
// The decoding key assess() records for these options.
std::string decoding_key(const AssessOptions& options);
// Recomputes the breakdowns from `results` (used by assess and after loading).
void summarise(Assessment& a);

// Throws SafetyError with the reason when `baseline` cannot be compared with `after`:
// a different suite (hash) or a different decoding setup.
void check_comparable(const Assessment& baseline, const Assessment& after);

// Drop in percentage points: (baseline - after) * 100; positive = worse (all three metrics are
// higher-is-better).
struct Drop {
  std::string metric;  // "refusal" | "benign_compliance" | "discrimination"
  std::string scope;   // "overall" | "category:<name>" | "lang:<tag>"
  Rate baseline, after;
  double drop_pp = 0;
};
// Every scope present in both (after check_comparable).
std::vector<Drop> compare(const Assessment& baseline, const Assessment& after);

// JSON round trip (nlohmann lives in the .cpp). from_json throws FormatError naming `origin`.
std::string assessment_to_json(const Assessment& a, bool include_results = true);
Assessment assessment_from_json(const std::string& text, const std::string& origin);
void save_assessment(const Assessment& a, const std::filesystem::path& path);
Assessment load_assessment(const std::filesystem::path& path);

std::string utc_now_iso8601();

}  // namespace safetune::safety
