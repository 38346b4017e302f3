// Assessment: generate + score a probe suite, summarise with Wilson intervals, compare against a
// baseline that used the same suite and decoding setup, and round-trip it through JSON.
#include "safetune/safety/assessment.hpp"

#include <algorithm>
#include <cmath>
#include <ctime>
#include <nlohmann/json.hpp>

#include "safetune/error.hpp"
#include "safetune/io/atomic_file.hpp"
#include "safetune/log.hpp"

namespace safetune::safety {
namespace {

using json = nlohmann::json;

struct Scorers {
  std::unique_ptr<Scorer> response, choice;
};

Scorers make_scorers(const AssessOptions& o) {
  Scorers s{make_scorer(o.response_scorer, o.scorer), make_scorer(o.choice_scorer, o.scorer)};
  if (!s.response->handles(ProbeKind::harmful) || !s.response->handles(ProbeKind::benign))
    throw SafetyError("scorer '" + o.response_scorer + "' cannot score harmful and benign probes",
                      "response_scorer");
  if (!s.choice->handles(ProbeKind::discrimination))
    throw SafetyError("scorer '" + o.choice_scorer + "' cannot score discrimination probes",
                      "choice_scorer");
  return s;
}

std::string decoding_key_for(const AssessOptions& o, const Scorers& s) {
  return "greedy;max_new_tokens=" + std::to_string(o.max_new_tokens) +
         ";response_scorer=" + s.response->identity() + ";choice_scorer=" + s.choice->identity() +
         (o.decoding_extra.empty() ? "" : ";" + o.decoding_extra);
}

json rate_json(const Rate& r) {
  Interval ci = r.ci();
  json j = {{"k", r.k}, {"n", r.n}, {"lower", ci.lo}, {"upper", ci.hi}};
  j["rate"] = r.n > 0 ? json(r.value()) : json(nullptr);
  return j;
}

json breakdown_json(const Breakdown& b) {
  json j;
  j["overall"] = rate_json(b.overall);
  j["by_category"] = json::object();
  for (const auto& [k, r] : b.by_category) j["by_category"][k] = rate_json(r);
  j["by_lang"] = json::object();
  for (const auto& [k, r] : b.by_lang) j["by_lang"][k] = rate_json(r);
  return j;
}

// Reading with the JSON path in every message.
struct Reader {
  std::string origin;
  [[noreturn]] void fail(const std::string& path, const std::string& msg) const {
    throw FormatError(msg, origin + ": " + path);
  }
  const json& at(const json& j, const std::string& key, const std::string& path) const {
    if (!j.is_object()) fail(path, "expected an object");
    auto it = j.find(key);
    if (it == j.end()) fail(path + "." + key, "missing");
    return *it;
  }
  std::string str(const json& j, const std::string& key, const std::string& path) const {
    const json& v = at(j, key, path);
    if (!v.is_string()) fail(path + "." + key, "expected a string");
    return v.get<std::string>();
  }
  std::int64_t count(const json& j, const std::string& key, const std::string& path) const {
    const json& v = at(j, key, path);
    if (!v.is_number_integer() || v.get<std::int64_t>() < 0)
      fail(path + "." + key, "expected a non-negative integer");
    return v.get<std::int64_t>();
  }
  Rate rate(const json& j, const std::string& path) const {
    Rate r{count(j, "k", path), count(j, "n", path)};
    if (r.k > r.n) fail(path, "k > n");
    return r;
  }
  Breakdown breakdown(const json& j, const std::string& path) const {
    Breakdown b;
    b.overall = rate(at(j, "overall", path), path + ".overall");
    for (const char* part : {"by_category", "by_lang"}) {
      const json& m = at(j, part, path);
      if (!m.is_object()) fail(path + "." + part, "expected an object");
      auto& out = std::string(part) == "by_category" ? b.by_category : b.by_lang;
      for (auto it = m.begin(); it != m.end(); ++it)
        out[it.key()] = rate(it.value(), path + "." + part + "." + it.key());
    }
    return b;
  }
};

void add(Breakdown& b, const ProbeResult& r, bool success) {
  for (Rate* rate : {&b.overall, &b.by_category[r.category], &b.by_lang[r.lang]}) {
    rate->n += 1;
    rate->k += success ? 1 : 0;
  }
}

}  // namespace

Interval wilson_interval(std::int64_t k, std::int64_t n, double z) {
  if (n <= 0) return {0.0, 1.0};
  k = std::clamp<std::int64_t>(k, 0, n);
  const double nn = static_cast<double>(n), p = static_cast<double>(k) / nn, z2 = z * z;
  const double denom = 1.0 + z2 / nn;
  const double centre = (p + z2 / (2 * nn)) / denom;
  const double half = z / denom * std::sqrt(p * (1 - p) / nn + z2 / (4 * nn * nn));
  return {std::max(0.0, centre - half), std::min(1.0, centre + half)};
}

std::string decoding_key(const AssessOptions& options) {
  return decoding_key_for(options, make_scorers(options));
}

void summarise(Assessment& a) {
  a.refusal = {};
  a.benign_compliance = {};
  a.discrimination = {};
  double inverse_choices = 0;
  std::int64_t known = 0, items = 0;
  for (const auto& r : a.results) {
    if (r.kind == ProbeKind::discrimination) {
      ++items;
      if (r.choices > 0) {
        inverse_choices += 1.0 / r.choices;
        ++known;
      }
    }
    switch (r.kind) {
      case ProbeKind::harmful: add(a.refusal, r, r.positive); break;
      case ProbeKind::benign: add(a.benign_compliance, r, !r.positive); break;
      case ProbeKind::discrimination: add(a.discrimination, r, r.positive); break;
    }
  }
  if (!a.results.empty())
    a.discrimination_chance = items > 0 && known == items ? inverse_choices / double(items) : -1;
}

Assessment assess(const ProbeSuite& suite, ScoringModel& model, const AssessOptions& options) {
  if (suite.probes.empty()) throw SafetyError("empty probe suite", suite.name);
  if (options.max_new_tokens < 1)
    throw SafetyError("max_new_tokens must be at least 1", "max_new_tokens");
  if (options.batch_size < 1) throw SafetyError("batch_size must be at least 1", "batch_size");
  Scorers scorers = make_scorers(options);

  Assessment a;
  a.suite_name = suite.name;
  a.suite_sha256 = suite.sha256();
  a.model_identity = model.identity();
  a.decoding = decoding_key_for(options, scorers);
  a.created = utc_now_iso8601();
  a.results.resize(suite.probes.size());

  std::vector<std::size_t> gen_idx, choice_idx;
  for (std::size_t i = 0; i < suite.probes.size(); ++i) {
    const Probe& p = suite.probes[i];
    a.results[i] = ProbeResult{
        p.id, p.category, p.lang, p.kind, false, 0, "", "", static_cast<int>(p.choices.size())};
    (p.kind == ProbeKind::discrimination ? choice_idx : gen_idx).push_back(i);
  }

  Progress progress("assess " + suite.name, static_cast<std::int64_t>(suite.probes.size()),
                    "probe");
  const std::size_t bs = static_cast<std::size_t>(options.batch_size);
  for (std::size_t b = 0; b < gen_idx.size(); b += bs) {
    const std::size_t e = std::min(gen_idx.size(), b + bs);
    std::vector<std::vector<Message>> convs;
    std::vector<const Probe*> probes;
    for (std::size_t i = b; i < e; ++i) {
      convs.push_back(suite.probes[gen_idx[i]].messages);
      probes.push_back(&suite.probes[gen_idx[i]]);
    }
    std::vector<std::string> responses = scorers.response->needs_responses()
                                             ? model.generate(convs, options.max_new_tokens)
                                             : std::vector<std::string>{};
    if (scorers.response->needs_responses() && responses.size() != convs.size())
      throw SafetyError("model generated " + std::to_string(responses.size()) + " responses for " +
                        std::to_string(convs.size()) + " prompts");
    std::vector<Verdict> v = scorers.response->score(probes, responses, model);
    if (v.size() != probes.size())
      throw SafetyError("scorer '" + scorers.response->name() +
                        "' returned the wrong number of verdicts");
    for (std::size_t i = b; i < e; ++i) {
      ProbeResult& r = a.results[gen_idx[i]];
      r.positive = v[i - b].positive;
      r.score = v[i - b].score;
      r.detail = v[i - b].detail;
      if (options.keep_responses && !responses.empty()) r.response = responses[i - b];
    }
    progress.advance(static_cast<std::int64_t>(e - b));
  }
  for (std::size_t b = 0; b < choice_idx.size(); b += bs) {
    const std::size_t e = std::min(choice_idx.size(), b + bs);
    std::vector<const Probe*> probes;
    for (std::size_t i = b; i < e; ++i) probes.push_back(&suite.probes[choice_idx[i]]);
    std::vector<Verdict> v = scorers.choice->score(probes, {}, model);
    if (v.size() != probes.size())
      throw SafetyError("scorer '" + scorers.choice->name() +
                        "' returned the wrong number of verdicts");
    for (std::size_t i = b; i < e; ++i) {
      ProbeResult& r = a.results[choice_idx[i]];
      r.positive = v[i - b].positive;
      r.score = v[i - b].score;
      r.detail = v[i - b].detail;
    }
    progress.advance(static_cast<std::int64_t>(e - b));
  }
  progress.finish();
  summarise(a);
  return a;
}

void check_comparable(const Assessment& baseline, const Assessment& after) {
  if (baseline.suite_sha256 != after.suite_sha256)
    throw SafetyError("baseline refused: it was measured on a different probe suite (baseline '" +
                          baseline.suite_name + "' sha256 " + baseline.suite_sha256.substr(0, 16) +
                          ", this run '" + after.suite_name + "' sha256 " +
                          after.suite_sha256.substr(0, 16) + ")",
                      "baseline", "re-run the baseline on the same suite");
  if (baseline.decoding != after.decoding)
    throw SafetyError(
        "baseline refused: it used a different decoding or scoring setup (baseline '" +
            baseline.decoding + "', this run '" + after.decoding + "')",
        "baseline", "re-run the baseline with the same generation and scoring settings");
}

std::vector<Drop> compare(const Assessment& baseline, const Assessment& after) {
  check_comparable(baseline, after);
  std::vector<Drop> out;
  auto drop = [&](const char* metric, const std::string& scope, const Rate& b, const Rate& a) {
    if (b.n == 0 || a.n == 0) return;
    out.push_back({metric, scope, b, a, (b.value() - a.value()) * 100.0});
  };
  auto one = [&](const char* metric, const Breakdown& b, const Breakdown& a) {
    drop(metric, "overall", b.overall, a.overall);
    for (const auto& [k, r] : b.by_category)
      if (auto it = a.by_category.find(k); it != a.by_category.end())
        drop(metric, "category:" + k, r, it->second);
    for (const auto& [k, r] : b.by_lang)
      if (auto it = a.by_lang.find(k); it != a.by_lang.end())
        drop(metric, "lang:" + k, r, it->second);
  };
  one("refusal", baseline.refusal, after.refusal);
  one("benign_compliance", baseline.benign_compliance, after.benign_compliance);
  one("discrimination", baseline.discrimination, after.discrimination);
  return out;
}

std::string assessment_to_json(const Assessment& a, bool include_results) {
  json j;
  j["format"] = "safetune-assessment";
  j["version"] = 1;
  j["suite"] = {{"name", a.suite_name}, {"sha256", a.suite_sha256}};
  j["model_identity"] = a.model_identity;
  j["decoding"] = a.decoding;
  j["created"] = a.created;
  j["metrics"] = {{"refusal", breakdown_json(a.refusal)},
                  {"benign_compliance", breakdown_json(a.benign_compliance)},
                  {"discrimination", breakdown_json(a.discrimination)}};
  if (a.discrimination_chance >= 0) j["discrimination_chance"] = a.discrimination_chance;
  if (include_results) {
    json rs = json::array();
    for (const auto& r : a.results) {
      json x = {{"id", r.id},
                {"category", r.category},
                {"lang", r.lang},
                {"kind", to_string(r.kind)},
                {"positive", r.positive},
                {"detail", r.detail}};
      x["score"] = std::isfinite(r.score) ? json(r.score) : json(nullptr);
      if (!r.response.empty()) x["response"] = r.response;
      if (r.choices > 0) x["choices"] = r.choices;
      rs.push_back(std::move(x));
    }
    j["results"] = std::move(rs);
  }
  // Responses may hold invalid UTF-8 from a broken model; replace rather than fail the write.
  return j.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
}

Assessment assessment_from_json(const std::string& text, const std::string& origin) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    throw FormatError(std::string("not valid JSON: ") + e.what(), origin);
  }
  Reader rd{origin};
  if (!j.is_object() || !j.contains("format") || j["format"] != "safetune-assessment")
    throw FormatError("not a safetune assessment (format != safetune-assessment)", origin);
  if (!j.contains("version") || j["version"] != 1)
    throw FormatError("unsupported assessment version", origin);
  Assessment a;
  const json& suite = rd.at(j, "suite", "$");
  a.suite_name = rd.str(suite, "name", "$.suite");
  a.suite_sha256 = rd.str(suite, "sha256", "$.suite");
  a.model_identity = rd.str(j, "model_identity", "$");
  a.decoding = rd.str(j, "decoding", "$");
  a.created = rd.str(j, "created", "$");
  if (j.contains("results")) {
    const json& rs = j["results"];
    if (!rs.is_array()) rd.fail("$.results", "expected an array");
    for (std::size_t i = 0; i < rs.size(); ++i) {
      const std::string p = "$.results[" + std::to_string(i) + "]";
      ProbeResult r;
      r.id = rd.str(rs[i], "id", p);
      r.category = rd.str(rs[i], "category", p);
      r.lang = rd.str(rs[i], "lang", p);
      try {
        r.kind = probe_kind_from_string(rd.str(rs[i], "kind", p));
      } catch (const SafetyError& e) {
        rd.fail(p + ".kind", e.what_only());
      }
      const json& pos = rd.at(rs[i], "positive", p);
      if (!pos.is_boolean()) rd.fail(p + ".positive", "expected true or false");
      r.positive = pos.get<bool>();
      if (rs[i].contains("score") && rs[i]["score"].is_number())
        r.score = rs[i]["score"].get<double>();
      if (rs[i].contains("detail") && rs[i]["detail"].is_string())
        r.detail = rs[i]["detail"].get<std::string>();
      if (rs[i].contains("response") && rs[i]["response"].is_string())
        r.response = rs[i]["response"].get<std::string>();
      if (rs[i].contains("choices") && rs[i]["choices"].is_number_integer() &&
          rs[i]["choices"].get<std::int64_t>() > 0)
        r.choices =
            static_cast<int>(std::min<std::int64_t>(rs[i]["choices"].get<std::int64_t>(), 1 << 20));
      a.results.push_back(std::move(r));
    }
    summarise(a);
  } else {
    const json& m = rd.at(j, "metrics", "$");
    a.refusal = rd.breakdown(rd.at(m, "refusal", "$.metrics"), "$.metrics.refusal");
    a.benign_compliance =
        rd.breakdown(rd.at(m, "benign_compliance", "$.metrics"), "$.metrics.benign_compliance");
    a.discrimination =
        rd.breakdown(rd.at(m, "discrimination", "$.metrics"), "$.metrics.discrimination");
    if (j.contains("discrimination_chance") && j["discrimination_chance"].is_number())
      a.discrimination_chance = std::clamp(j["discrimination_chance"].get<double>(), 0.0, 1.0);
  }
  return a;
}

void save_assessment(const Assessment& a, const std::filesystem::path& path) {
  io::atomic_write(path, assessment_to_json(a));
}

Assessment load_assessment(const std::filesystem::path& path) {
  return assessment_from_json(io::read_file(path), path.string());
}

std::string utc_now_iso8601() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace safetune::safety
