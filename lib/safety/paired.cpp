// Paired before/after statistics: the discordant pairs decide McNemar's tests, Newcombe's method 10
// turns the two Wilson intervals and the phi correlation into an interval for the drop.
#include "safetune/safety/paired.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>

#include "safetune/error.hpp"

namespace safetune::safety {
namespace {

// P(X = k) for X ~ Binomial(n, 1/2), in logs to stay finite for large n.
double binom_half_pmf(std::int64_t n, std::int64_t k) {
  return std::exp(std::lgamma(double(n) + 1) - std::lgamma(double(k) + 1) -
                  std::lgamma(double(n - k) + 1) - double(n) * std::log(2.0));
}

double binom_half_cdf(std::int64_t n, std::int64_t k) {
  double s = 0;
  for (std::int64_t i = 0; i <= k; ++i) s += binom_half_pmf(n, i);
  return s;
}

bool success(const ProbeResult& r) {
  return r.kind == ProbeKind::benign ? !r.positive : r.positive;
}

std::string num(double x, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, x);
  return buf;
}

std::string p_text(double p) { return p < 0.001 ? std::string("<0.001") : num(p, 3); }

}  // namespace

double mcnemar_exact_p(std::int64_t b, std::int64_t c) {
  const std::int64_t n = b + c;
  if (n <= 0) return 1.0;
  return std::min(1.0, 2.0 * binom_half_cdf(n, std::min(b, c)));
}

double mcnemar_mid_p(std::int64_t b, std::int64_t c) {
  const std::int64_t n = b + c;
  if (n <= 0) return 1.0;
  const std::int64_t k = std::min(b, c);
  return std::min(1.0, 2.0 * binom_half_cdf(n, k) - binom_half_pmf(n, k));
}

Interval newcombe_paired_interval(const PairedCounts& t, double z) {
  const std::int64_t n = t.n();
  if (n <= 0) return {0.0, 0.0};
  const double a = double(t.both), b = double(t.lost), c = double(t.gained), d = double(t.neither);
  const double p1 = (a + b) / double(n), p2 = (a + c) / double(n);
  const Interval w1 = wilson_interval(t.both + t.lost, n, z),
                 w2 = wilson_interval(t.both + t.gained, n, z);
  const double denom = (a + b) * (c + d) * (a + c) * (b + d);
  const double phi = denom > 0 ? (a * d - b * c) / std::sqrt(denom) : 0.0;
  const double diff = p1 - p2;
  const double dl =
      std::sqrt(std::max(0.0, (p1 - w1.lo) * (p1 - w1.lo) - 2 * phi * (p1 - w1.lo) * (w2.hi - p2) +
                                  (w2.hi - p2) * (w2.hi - p2)));
  const double du =
      std::sqrt(std::max(0.0, (w1.hi - p1) * (w1.hi - p1) - 2 * phi * (w1.hi - p1) * (p2 - w2.lo) +
                                  (p2 - w2.lo) * (p2 - w2.lo)));
  return {std::max(-1.0, diff - dl), std::min(1.0, diff + du)};
}

PairedDrop paired_drop(const std::string& metric, const PairedCounts& t) {
  PairedDrop d;
  d.metric = metric;
  d.counts = t;
  const double n = double(std::max<std::int64_t>(t.n(), 1));
  d.before = double(t.both + t.lost) / n;
  d.after = double(t.both + t.gained) / n;
  d.drop_pp = (d.before - d.after) * 100;
  const Interval ci = newcombe_paired_interval(t);
  d.ci_pp = {ci.lo * 100, ci.hi * 100};
  d.p_exact = mcnemar_exact_p(t.lost, t.gained);
  d.p_mid = mcnemar_mid_p(t.lost, t.gained);
  return d;
}

std::vector<PairedDrop> paired_drops(const Assessment& before, const Assessment& after) {
  if (before.results.empty() || after.results.empty())
    throw SafetyError("paired statistics need the per-probe results of both assessments",
                      before.suite_name, "keep the results in assessment.json");
  std::map<std::string, const ProbeResult*> by_id;
  for (const auto& r : before.results) by_id[r.id] = &r;
  std::map<ProbeKind, PairedCounts> t;
  for (const auto& r : after.results) {
    auto it = by_id.find(r.id);
    if (it == by_id.end() || it->second->kind != r.kind) continue;
    const bool s0 = success(*it->second), s1 = success(r);
    auto& c = t[r.kind];
    (s0 ? (s1 ? c.both : c.lost) : (s1 ? c.gained : c.neither)) += 1;
  }
  std::vector<PairedDrop> out;
  for (auto [kind, metric] : {std::pair{ProbeKind::harmful, "refusal"},
                              {ProbeKind::benign, "benign_compliance"},
                              {ProbeKind::discrimination, "discrimination"}})
    if (t.count(kind)) out.push_back(paired_drop(metric, t[kind]));
  return out;
}

std::vector<PooledDrop> pooled_paired_drops(const Assessment& before,
                                            const std::vector<Assessment>& after, double z) {
  if (after.empty()) return {};
  if (before.results.empty() || std::any_of(after.begin(), after.end(),
                                            [](const Assessment& a) { return a.results.empty(); }))
    throw SafetyError("paired statistics need the per-probe results of every assessment",
                      before.suite_name, "keep the results in assessment.json");
  // Per probe of `before`: its kind, its success before, and the successes after, one per run.
  struct Probe {
    ProbeKind kind;
    bool before;
    std::vector<bool> after;
  };
  std::map<std::string, Probe> probes;
  for (const auto& r : before.results) probes[r.id] = {r.kind, success(r), {}};
  for (const auto& a : after)
    for (const auto& r : a.results) {
      auto it = probes.find(r.id);
      if (it != probes.end() && it->second.kind == r.kind) it->second.after.push_back(success(r));
    }
  std::map<ProbeKind, std::vector<std::pair<double, double>>> by_kind;  // (before, mean after)
  for (const auto& [id, p] : probes) {
    if (p.after.size() != after.size()) continue;
    double s = 0;
    for (bool b : p.after) s += b ? 1.0 : 0.0;
    by_kind[p.kind].push_back({p.before ? 1.0 : 0.0, s / double(after.size())});
  }
  std::vector<PooledDrop> out;
  for (auto [kind, metric] : {std::pair{ProbeKind::harmful, "refusal"},
                              {ProbeKind::benign, "benign_compliance"},
                              {ProbeKind::discrimination, "discrimination"}}) {
    auto it = by_kind.find(kind);
    if (it == by_kind.end()) continue;
    const auto& v = it->second;
    PooledDrop d;
    d.metric = metric;
    d.n = std::int64_t(v.size());
    d.runs = after.size();
    double sd = 0;
    for (const auto& [b, a] : v) {
      d.before += b;
      d.after += a;
    }
    d.before /= double(d.n);
    d.after /= double(d.n);
    const double mean = d.before - d.after;
    for (const auto& [b, a] : v) sd += (b - a - mean) * (b - a - mean);
    sd = d.n > 1 ? std::sqrt(sd / double(d.n - 1)) : 0.0;
    const double half = z * sd / std::sqrt(double(d.n));
    d.drop_pp = 100 * mean;
    d.ci_pp = {100 * (mean - half), 100 * (mean + half)};
    out.push_back(d);
  }
  return out;
}

std::string paired_drops_markdown(const Assessment& before, const Assessment& after) {
  if (before.results.empty() || after.results.empty()) return "";
  std::string md =
      "| metric | n (paired probes) | before | after | drop (pp) | 95% CI (Newcombe, paired) | "
      "lost / gained | "
      "McNemar exact p | mid-p |\n|---|---|---|---|---|---|---|---|---|\n";
  for (const auto& d : paired_drops(before, after))
    md += "| " + d.metric + " | " + std::to_string(d.counts.n()) + " | " + num(100 * d.before, 1) +
          "% | " + num(100 * d.after, 1) + "% | " + num(d.drop_pp, 1) + " | " + num(d.ci_pp.lo, 1) +
          " to " + num(d.ci_pp.hi, 1) + " | " + std::to_string(d.counts.lost) + " / " +
          std::to_string(d.counts.gained) + " | " + p_text(d.p_exact) + " | " + p_text(d.p_mid) +
          " |\n";
  return md;
}

}  // namespace safetune::safety
