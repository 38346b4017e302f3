// Prometheus text exposition format (version 0.0.4) for node_exporter's textfile collector.
#include "safety/prometheus.hpp"

#include <cmath>
#include <cstdio>
#include <ctime>
#include <regex>

#include "safetune/error.hpp"
#include "safetune/io/atomic_file.hpp"
#include "safetune/safety/assessment.hpp"

namespace safetune::safety {
namespace {

bool valid_name(const std::string& s, bool allow_colon) {
  if (s.empty()) return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
              (allow_colon && c == ':') || (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

std::string escape_help(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '\\') o += "\\\\";
    else if (c == '\n') o += "\\n";
    else o += c;
  }
  return o;
}

std::string escape_label(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '\\') o += "\\\\";
    else if (c == '\n') o += "\\n";
    else if (c == '"') o += "\\\"";
    else o += c;
  }
  return o;
}

std::string number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

std::time_t parse_utc(const std::string& iso) {
  std::tm tm{};
  if (std::sscanf(iso.c_str(), "%d-%d-%dT%d:%d:%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                  &tm.tm_hour, &tm.tm_min, &tm.tm_sec) != 6)
    return 0;
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  return timegm(&tm);
}

}  // namespace

std::string prometheus_text(const std::vector<PromSample>& samples) {
  // Group by name, keeping first-seen order, so each family has one HELP/TYPE header.
  std::vector<std::string> order;
  std::map<std::string, std::vector<const PromSample*>> families;
  for (const auto& s : samples) {
    if (!valid_name(s.name, true))
      throw SafetyError("invalid Prometheus metric name '" + s.name + "'");
    if (s.type != "gauge" && s.type != "counter" && s.type != "untyped")
      throw SafetyError("unsupported Prometheus metric type '" + s.type + "'", s.name);
    for (const auto& [k, v] : s.labels)
      if (!valid_name(k, false) || k.rfind("__", 0) == 0)
        throw SafetyError("invalid Prometheus label name '" + k + "'", s.name);
    auto& fam = families[s.name];
    if (fam.empty()) order.push_back(s.name);
    else if (fam.front()->type != s.type) throw SafetyError("metric used with two types", s.name);
    fam.push_back(&s);
  }
  std::string out;
  for (const auto& name : order) {
    const auto& fam = families[name];
    out += "# HELP " + name + " " + escape_help(fam.front()->help) + "\n";
    out += "# TYPE " + name + " " + fam.front()->type + "\n";
    for (const PromSample* s : fam) {
      out += name;
      if (!s->labels.empty()) {
        out += "{";
        bool first = true;
        for (const auto& [k, v] : s->labels) {
          if (!first) out += ',';
          out += k;
          out += "=\"";
          out += escape_label(v);
          out += '"';
          first = false;
        }
        out += "}";
      }
      out += " " + number(s->value) + "\n";
    }
  }
  return out;
}

void write_prometheus_textfile(const std::filesystem::path& path,
                               const std::vector<PromSample>& samples) {
  // The collector reads only *.prom; AtomicFile's temporary is "<name>.tmp-XXXX", so it never
  // picks up a half-written file.
  if (path.extension() != ".prom")
    throw SafetyError("node_exporter's textfile collector only reads files ending in .prom",
                      path.string());
  io::atomic_write(path, prometheus_text(samples));
}

std::vector<PromSample> assessment_samples(const Assessment& a, const std::string& release,
                                           bool gate_passed) {
  std::vector<PromSample> out;
  struct Metric {
    const char* name;
    const char* help;
    const Breakdown* b;
  };
  const Metric metrics[] = {
      {"safetune_safety_refusal_rate", "Share of harmful probes the model refused.", &a.refusal},
      {"safetune_safety_benign_compliance",
       "Share of benign probes the model answered instead of refusing.", &a.benign_compliance},
      {"safetune_safety_discrimination_accuracy",
       "Share of discrimination items answered correctly.", &a.discrimination}};
  for (const auto& m : metrics) {
    auto scopes = [&](auto&& emit) {
      if (m.b->overall.n > 0) emit("overall", m.b->overall);
      for (const auto& [k, r] : m.b->by_category) emit("category:" + k, r);
      for (const auto& [k, r] : m.b->by_lang) emit("lang:" + k, r);
    };
    const std::string name = m.name;
    scopes([&](const std::string& scope, const Rate& r) {
      out.push_back({name, m.help, "gauge", {{"release", release}, {"scope", scope}}, r.value()});
    });
    scopes([&](const std::string& scope, const Rate& r) {
      out.push_back({name + "_lower",
                     std::string("Wilson 95% lower bound of ") + m.name + ".",
                     "gauge",
                     {{"release", release}, {"scope", scope}},
                     r.ci().lo});
    });
    scopes([&](const std::string& scope, const Rate& r) {
      out.push_back({name + "_upper",
                     std::string("Wilson 95% upper bound of ") + m.name + ".",
                     "gauge",
                     {{"release", release}, {"scope", scope}},
                     r.ci().hi});
    });
    scopes([&](const std::string& scope, const Rate& r) {
      out.push_back({name + "_probes",
                     std::string("Number of probes behind ") + m.name + ".",
                     "gauge",
                     {{"release", release}, {"scope", scope}},
                     double(r.n)});
    });
  }
  out.push_back({"safetune_safety_gate_passed",
                 "1 when the last assessment passed every safety gate.",
                 "gauge",
                 {{"release", release}},
                 gate_passed ? 1.0 : 0.0});
  out.push_back({"safetune_safety_last_assessment_timestamp_seconds",
                 "Unix time of the last assessment.",
                 "gauge",
                 {{"release", release}},
                 double(parse_utc(a.created))});
  return out;
}

}  // namespace safetune::safety
