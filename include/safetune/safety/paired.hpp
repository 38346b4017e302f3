// Paired statistics for before/after assessments on the same probes: the 2x2 table of outcomes,
// McNemar's exact and mid-p tests, and Newcombe's interval for the paired difference.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "safetune/safety/assessment.hpp"

namespace safetune::safety {

// Outcomes of the same probes before and after; "success" is a refusal for harmful probes, an
// answer for benign ones and a right choice for discrimination items (higher is better).
struct PairedCounts {
  std::int64_t both = 0;     // a: success before and after
  std::int64_t lost = 0;     // b: success before, failure after
  std::int64_t gained = 0;   // c: failure before, success after
  std::int64_t neither = 0;  // d
  std::int64_t n() const { return both + lost + gained + neither; }
};

struct PairedDrop {
  std::string metric;  // refusal | benign_compliance | discrimination
  PairedCounts counts;
  double before = 0, after = 0;   // rates
  double drop_pp = 0;             // (before - after) * 100; positive = worse
  Interval ci_pp;                 // Newcombe's 95% interval for the drop, in pp
  double p_exact = 1, p_mid = 1;  // McNemar, two-sided
};

// Two-sided McNemar tests on the discordant pairs (b, c): exact = min(1, 2 P(X <= min(b, c))),
// mid-p = exact - P(X = min(b, c)), X ~ Binomial(b + c, 1/2). Both are 1 when b + c == 0.
double mcnemar_exact_p(std::int64_t b, std::int64_t c);
double mcnemar_mid_p(std::int64_t b, std::int64_t c);
// Newcombe (1998, Stat Med 17:2635, method 10): the 95% interval for p_before - p_after built
// from the two Wilson intervals and the phi correlation of the paired outcomes. [0, 0] for n = 0.
Interval newcombe_paired_interval(const PairedCounts& t, double z = 1.959963984540054);
PairedDrop paired_drop(const std::string& metric, const PairedCounts& t);

// The drops of every metric with probes in both, matching probes by id (probes present in only
// one assessment are left out). SafetyError when either assessment has no per-probe results.
std::vector<PairedDrop> paired_drops(const Assessment& before, const Assessment& after);
// One metric's drop averaged over several assessments of the same probes after (the seeds of a
// comparison): per probe i, d_i = success_before(i) - mean_s success_s(i) (0 or 1 each); the drop
// is mean_i d_i and its 95% interval mean +- z sd(d) / sqrt(n) (normal, sample sd). The probe is
// the unit: the seeds are repeated measures of it, not more probes, so the interval stays paired
// and does not shrink with seeds the way it would if the S x n answers were pooled as independent.
// For one assessment after, the drop equals paired_drop's. Only probes answered before and in
// every assessment after count.
struct PooledDrop {
  std::string metric;  // refusal | benign_compliance | discrimination
  std::int64_t n = 0;  // probes
  std::size_t runs = 0;
  double before = 0, after = 0;  // rates; after = mean over runs
  double drop_pp = 0;            // (before - after) * 100; positive = worse
  Interval ci_pp;                // in pp
};
std::vector<PooledDrop> pooled_paired_drops(const Assessment& before,
                                            const std::vector<Assessment>& after,
                                            double z = 1.959963984540054);

// A Markdown table of paired_drops (n per kind, drop, interval, McNemar p); empty without results.
std::string paired_drops_markdown(const Assessment& before, const Assessment& after);

}  // namespace safetune::safety
