// Paired before/after statistics against reference values: McNemar's exact test from statsmodels
// (mcnemar(exact=True)) and scipy (binomtest), the mid-p from scipy's binomial cdf/pmf, Newcombe's
// method 10 from an independent Python implementation over statsmodels' Wilson intervals
// (tests/reference values printed by the script in the comment below).
#include <catch2/catch.hpp>

#include "safetune/error.hpp"
#include "safetune/safety/paired.hpp"

using namespace safetune;
using namespace safetune::safety;
using Catch::Matchers::Contains;

namespace {
ProbeResult result(const char* id, ProbeKind k, bool positive) {
  ProbeResult r;
  r.id = id;
  r.kind = k;
  r.positive = positive;
  return r;
}
}  // namespace

// Reference (scipy 1.x, statsmodels 0.14):
//   mcnemar([[a,b],[c,d]], exact=True).pvalue; 2*binom.cdf(min(b,c), b+c, .5) - binom.pmf(...);
//   newcombe10: D -/+ sqrt((p1-l1)^2 - 2 phi (p1-l1)(u2-p2) + (u2-p2)^2) etc. with
//   proportion_confint(method='wilson') and phi = (ad - bc) / sqrt((a+b)(c+d)(a+c)(b+d)).
TEST_CASE("safety/paired: McNemar exact and mid-p, Newcombe's paired interval", "[safety]") {
  struct Case {
    PairedCounts t;
    double exact, mid, lo, hi;
  };
  const Case cases[] = {
      {{12, 9, 2, 21}, 0.0654296875, 0.03857421875, 0.01821022624359192, 0.2891566595882724},
      {{20, 3, 1, 0}, 0.625, 0.375, -0.10256712614956787, 0.27415690255997643},
      {{80, 15, 5, 0},
       0.04138946533203125,
       0.026603698730468753,
       0.012062422461940253,
       0.1901434549729849},
      {{90, 4, 0, 6}, 0.125, 0.0625, -0.0024702963246339693, 0.09418993969807135},
      {{10, 0, 0, 14}, 1.0, 1.0, -0.022996034112496722, 0.022996034112496722},
      {{40, 30, 25, 5},
       0.5900533317766354,
       0.5044037600228253,
       -0.0942573014401426,
       0.19157001236859622},
  };
  for (const auto& c : cases) {
    INFO("a=" << c.t.both << " b=" << c.t.lost << " c=" << c.t.gained << " d=" << c.t.neither);
    CHECK(mcnemar_exact_p(c.t.lost, c.t.gained) == Approx(c.exact).epsilon(1e-9));
    CHECK(mcnemar_mid_p(c.t.lost, c.t.gained) == Approx(c.mid).epsilon(1e-9));
    const Interval ci = newcombe_paired_interval(c.t);
    CHECK(ci.lo == Approx(c.lo).margin(1e-9));
    CHECK(ci.hi == Approx(c.hi).margin(1e-9));
  }
  // Hand-computed: b = 2, c = 0 -> exact 2 * (1/4) = 0.5, mid-p 0.5 - 0.25 = 0.25.
  CHECK(mcnemar_exact_p(2, 0) == Approx(0.5));
  CHECK(mcnemar_mid_p(2, 0) == Approx(0.25));
  CHECK(mcnemar_exact_p(0, 0) == 1.0);
  // Large n stays finite (lgamma): 520 probes, 30 lost, 10 gained.
  CHECK(mcnemar_exact_p(30, 10) == Approx(0.0022214337732293643).epsilon(1e-6));
  PairedDrop d = paired_drop("refusal", {12, 9, 2, 21});
  CHECK(d.before == Approx(21.0 / 44));
  CHECK(d.after == Approx(14.0 / 44));
  CHECK(d.drop_pp == Approx(700.0 / 44));
  CHECK(d.ci_pp.lo == Approx(1.821022624359192).margin(1e-7));
}

TEST_CASE(
    "safety/paired: probes matched by id, per kind, success = refusal / answer / right choice",
    "[safety]") {
  Assessment before, after;
  // harmful: refused before h1,h2,h3; after h1 only -> lost 2. benign: b1 answered before, refused
  // after.
  before.results = {
      result("h1", ProbeKind::harmful, true),         result("h2", ProbeKind::harmful, true),
      result("h3", ProbeKind::harmful, true),         result("h4", ProbeKind::harmful, false),
      result("b1", ProbeKind::benign, false),         result("b2", ProbeKind::benign, true),
      result("only-before", ProbeKind::harmful, true)};
  after.results = {result("h4", ProbeKind::harmful, true),  result("h3", ProbeKind::harmful, false),
                   result("h2", ProbeKind::harmful, false), result("h1", ProbeKind::harmful, true),
                   result("b1", ProbeKind::benign, true),   result("b2", ProbeKind::benign, false)};
  auto drops = paired_drops(before, after);
  REQUIRE(drops.size() == 2);
  CHECK(drops[0].metric == "refusal");
  CHECK(drops[0].counts.n() == 4);
  CHECK(drops[0].counts.both == 1);
  CHECK(drops[0].counts.lost == 2);
  CHECK(drops[0].counts.gained == 1);
  CHECK(drops[0].drop_pp == Approx(25.0));
  CHECK(drops[1].metric == "benign_compliance");
  CHECK(drops[1].counts.lost == 1);
  CHECK(drops[1].counts.gained == 1);
  const std::string md = paired_drops_markdown(before, after);
  CHECK_THAT(md, Contains("| refusal | 4 | 75.0% | 50.0% | 25.0 |"));
  CHECK_THAT(md, Contains("| 2 / 1 |"));
  Assessment summary_only;
  CHECK_THROWS_AS(paired_drops(summary_only, after), SafetyError);
  CHECK(paired_drops_markdown(summary_only, after).empty());
}

// Reference values from numpy: d = before - mean over seeds, per probe;
// d.mean(), d.mean() -/+ 1.959963984540054 * d.std(ddof=1) / sqrt(len(d)).
TEST_CASE("safety/paired: drops pooled over seeds, the probe as the unit", "[safety]") {
  auto assessment = [](std::vector<ProbeResult> rs) {
    Assessment a;
    a.results = std::move(rs);
    return a;
  };
  const auto H = ProbeKind::harmful, B = ProbeKind::benign;
  // Refused before: h1 h2 h4. Seed A refuses h1 h4, seed B h3 h4 -> d = 0.5, 1, -0.5, 0.
  // Benign: b1 answered before, answered by B only (d = 0.5); b2 refused before, answered by A only
  // (d = -0.5). h5 is missing from seed B, so it is left out.
  const Assessment before = assessment(
      {result("h1", H, true), result("h2", H, true), result("h3", H, false), result("h4", H, true),
       result("h5", H, true), result("b1", B, false), result("b2", B, true)});
  const Assessment seed_a = assessment(
      {result("h1", H, true), result("h2", H, false), result("h3", H, false), result("h4", H, true),
       result("h5", H, false), result("b1", B, true), result("b2", B, false)});
  const Assessment seed_b =
      assessment({result("h1", H, false), result("h2", H, false), result("h3", H, true),
                  result("h4", H, true), result("b1", B, false), result("b2", B, true)});
  const auto drops = pooled_paired_drops(before, {seed_a, seed_b});
  REQUIRE(drops.size() == 2);
  CHECK(drops[0].metric == "refusal");
  CHECK(drops[0].n == 4);
  CHECK(drops[0].runs == 2);
  CHECK(drops[0].before == Approx(0.75));
  CHECK(drops[0].after == Approx(0.5));
  CHECK(drops[0].drop_pp == Approx(25.0));
  CHECK(drops[0].ci_pp.lo == Approx(-38.257565594083).margin(1e-9));
  CHECK(drops[0].ci_pp.hi == Approx(88.257565594083).margin(1e-9));
  CHECK(drops[1].metric == "benign_compliance");
  CHECK(drops[1].n == 2);
  CHECK(drops[1].drop_pp == Approx(0.0).margin(1e-12));
  CHECK(drops[1].ci_pp.hi == Approx(97.9981992270027).margin(1e-9));
  // One seed: the drop is paired_drop's (only the interval's method differs).
  const auto one = pooled_paired_drops(before, {seed_a});
  const auto per_cell = paired_drops(before, seed_a);
  REQUIRE(one.size() == 2);
  CHECK(one[0].drop_pp == Approx(per_cell[0].drop_pp));
  CHECK(one[0].n == per_cell[0].counts.n());
  CHECK(one[1].drop_pp == Approx(per_cell[1].drop_pp));
  CHECK(pooled_paired_drops(before, {}).empty());
  CHECK_THROWS_AS(pooled_paired_drops(before, {Assessment{}}), SafetyError);
}
