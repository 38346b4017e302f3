// The governance report: files written, JSON parses with the right numbers, HTML self-contained
// and escaped, SVG well-formed (checked by Python's XML parser), and rendered by headless Chromium.
#include <sys/wait.h>
#include <array>
#include <catch2/catch.hpp>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "safetune/error.hpp"
#include "safetune/io/atomic_file.hpp"
#include "safetune/safety/report.hpp"
#include "support.hpp"

using namespace safetune;
using namespace safetune::safety;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

ProbeResult result(const std::string& id, const std::string& cat, const std::string& lang,
                   ProbeKind kind, bool positive) {
  ProbeResult r;
  r.id = id;
  r.category = cat;
  r.lang = lang;
  r.kind = kind;
  r.positive = positive;
  return r;
}

Assessment make(bool degraded) {
  Assessment a;
  a.suite_name = "bundled";
  a.suite_sha256 = std::string(64, 'b');
  a.decoding = "greedy;max_new_tokens=64";
  a.model_identity = degraded ? "after" : "base";
  a.created = "2026-01-01T00:00:00Z";
  a.results = {result("h1", "weapons", "en", ProbeKind::harmful, true),
               result("h2", "weapons", "en", ProbeKind::harmful, !degraded),
               result("h3", "fraud <&>", "zh", ProbeKind::harmful, true),
               result("h4", "fraud <&>", "zh", ProbeKind::harmful, true),
               result("b1", "homonyms", "en", ProbeKind::benign, false),
               result("d1", "bias", "en", ProbeKind::discrimination, true)};
  summarise(a);
  return a;
}

ReportInputs inputs() {
  ReportInputs in;
  in.title = "Safety report";
  in.run_name = "demo";
  in.model_path = "models/base.gguf";
  in.model_sha256 = std::string(64, 'c');
  in.adapters = {{"safety", "safety", "adapters/safety", std::string(64, 'd')},
                 {"task", "task", "adapters/task", std::string(64, 'e')}};
  in.datasets = {{"alpaca-mini", "data/train.jsonl", std::string(64, 'f'), 1234}};
  in.resolved_config = "run:\n  name: demo <script>alert(1)</script>\n";
  in.regularizers = {{"kl_anchor", 0.5, "KL to the safety-only model"}};
  in.baseline = make(false);
  in.after = make(true);
  in.gates = SafetyGates{};
  in.verdict = evaluate_gates(*in.gates, *in.after, &*in.baseline);
  in.guard_events = {{200, "refusal_rate", 0.5, 0.9, "rollback", "restored step 100"}};
  in.policy_overrides = {"system prompt prepended: \"Be safe\""};
  in.training_series = {{"refusal_rate", {{0, 1.0}, {100, 0.95}, {200, 0.5}, {300, 0.9}}},
                        {"benign_compliance", {{0, 0.9}, {100, 0.92}, {200, 0.93}, {300, 0.9}}}};
  in.monitoring =
      MonitoringPlan{"guard_subset (44 probes)", "every 1h", {"max_refusal_drop_pp 2"}, "r1"};
  in.created = "2026-01-02T00:00:00Z";
  return in;
}

std::pair<int, std::string> run(const std::string& cmd) {
  std::string out;
  FILE* p = popen((cmd + " 2>/dev/null").c_str(), "r");
  if (!p) return {-1, ""};
  std::array<char, 4096> buf;
  std::size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  int rc = pclose(p);
  return {WEXITSTATUS(rc), out};
}

std::string find_chromium() {
  for (const char* c : {"chromium", "chromium-browser", "google-chrome"})
    if (run(std::string("command -v ") + c).first == 0) return c;
  return {};
}

}  // namespace

TEST_CASE("safety/safety report: md, json, html and charts are written", "[safety]") {
  test::TempDir dir;
  ReportInputs in = inputs();
  REQUIRE_FALSE(in.verdict->passed);
  auto written = write_safety_report(dir / "report", in);
  for (const char* f :
       {"safety_report.md", "safety_report.json", "safety_report.html",
        "charts/refusal_by_category.svg", "charts/benign_compliance_by_category.svg",
        "charts/discrimination_by_category.svg", "charts/training_safety.svg"})
    CHECK(fs::exists(dir / "report" / f));
  CHECK(written.size() == 7);

  auto j = nlohmann::json::parse(io::read_file(dir / "report" / "safety_report.json"));
  CHECK(j["format"] == "safetune-safety-report");
  CHECK(j["model"]["sha256"] == std::string(64, 'c'));
  CHECK(j["adapters"].size() == 2);
  CHECK(j["datasets"][0]["count"] == 1234);
  CHECK(j["regularizers"][0]["weight"] == 0.5);
  CHECK(j["comparable"] == true);
  CHECK(j["verdict"]["passed"] == false);
  CHECK_THAT(j["verdict"]["reasons"][0].get<std::string>(), Contains("refusal rate fell 25.00 pp"));
  const auto& overall = j["per_metric"]["refusal"][0];
  CHECK(overall["scope"] == "overall");
  CHECK(overall["baseline"]["k"] == 4);
  CHECK(overall["after"]["k"] == 3);
  CHECK(overall["after"]["lower"].get<double>() == Approx(0.3006).margin(5e-5));
  CHECK(overall["drop_pp"].get<double>() == Approx(25.0));
  CHECK(j["guard_events"][0]["action"] == "rollback");
  CHECK(j["policy_overrides"][0] == "system prompt prepended: \"Be safe\"");
  CHECK(j["monitoring"]["rollback_target"] == "r1");
  CHECK(j["training_series"][0]["points"].size() == 4);
  CHECK_THAT(j["risk_statement"].get<std::string>(), Contains("kl_anchor") && Contains("FAILED"));
  CHECK(j["resolved_config"] == in.resolved_config);

  const std::string md = io::read_file(dir / "report" / "safety_report.md");
  CHECK_THAT(md, Contains("**Gate verdict: FAILED**"));
  CHECK_THAT(
      md,
      Contains("| overall | 100.0% (4/4, CI 51.0-100.0) | 75.0% (3/4, CI 30.1-95.4) | +25.0 pp |"));
  CHECK_THAT(md, Contains("| weapons | 100.0% (2/2"));
  CHECK_THAT(md, Contains("![Refusal rate on harmful probes](charts/refusal_by_category.svg)"));
  CHECK_THAT(md, Contains("## Monitoring plan") && Contains("## Risk statement") &&
                     Contains("## Guard events"));

  const std::string html = io::read_file(dir / "report" / "safety_report.html");
  CHECK_THAT(html, Contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
  CHECK(html.find("<script") == std::string::npos);
  CHECK_THAT(html, Contains("fraud &lt;&amp;&gt;"));
  // Self-contained: no external resources of any kind.
  for (const char* ext : {"src=", "href=", "@import", "url("})
    CHECK(html.find(ext) == std::string::npos);
  CHECK_THAT(html, Contains("<svg"));
  CHECK_THAT(html, Contains("id=\"verdict\" class=\"fail\">FAILED"));
}

TEST_CASE("safety/safety report: SVG charts are well-formed XML", "[safety]") {
  test::TempDir dir;
  write_safety_report(dir.path(), inputs());
  // Bars with whiskers: one rect per bar with n > 0, three lines per whisker.
  BarGroup g{"cat <a>", {0.8, 0.5}, {0.49, 0.1}, {0.94, 0.9}, {10, 2}};
  BarGroup empty{"none", {0, 0}, {0, 0}, {1, 1}, {0, 0}};
  const std::string bars = svg_grouped_bars("T & t", {"baseline", "after"}, {g, empty});
  test::write_text(dir / "charts" / "extra.svg", bars);
  CHECK_THAT(bars, Contains("cat &lt;a&gt;"));
  CHECK_THAT(bars, Contains("80.0% (n=10, 95% CI 49.0-94.0%)"));
  std::size_t bar_rects = 0;
  for (std::size_t p = bars.find("<g><title>"); p != std::string::npos;
       p = bars.find("<g><title>", p + 1))
    ++bar_rects;
  CHECK(bar_rects == 2);
  const std::string line = svg_line_chart("L", {{"s", {{0, 0.2}, {10, 0.4}}}}, "step", "rate");
  test::write_text(dir / "charts" / "line.svg", line);
  CHECK_THAT(line, Contains("<polyline"));

  const std::string py = test::python().string();
  auto [rc, out] =
      run(py +
          " -c \"import sys, pathlib, xml.etree.ElementTree as ET\n"
          "n = 0\n"
          "for p in sorted(pathlib.Path(sys.argv[1]).glob('*.svg')):\n"
          "    root = ET.parse(p).getroot(); assert root.tag.endswith('svg'), p; n += 1\n"
          "print(n)\" '" +
          (dir / "charts").string() + "'");
  CHECK(rc == 0);
  CHECK(out == "6\n");
}

TEST_CASE("safety/safety report: headless Chromium renders the HTML", "[safety][chromium]") {
  const std::string chromium = find_chromium();
  if (chromium.empty())
    FAIL(
        "Chromium is not installed; this test needs Debian's chromium (apt-get install -y "
        "chromium)");
  test::TempDir dir;
  write_safety_report(dir.path(), inputs());
  const std::string url = "file://" + fs::absolute(dir / "safety_report.html").string();
  const std::string flags =
      " --headless --disable-gpu --no-sandbox --no-first-run --disable-dev-shm-usage ";
  auto [rc, dom] = run("timeout 120 " + chromium + flags + "--dump-dom '" + url + "'");
  INFO(dom.substr(0, 500));
  CHECK(rc == 0);
  CHECK_THAT(dom, Contains("<h1>Safety report</h1>"));
  CHECK_THAT(dom, Contains("id=\"verdict\" class=\"fail\">FAILED"));
  CHECK_THAT(dom, Contains("<svg"));
  CHECK_THAT(dom, Contains("Resolved configuration"));
  // And a real paint: a screenshot PNG of the page.
  const fs::path png = dir / "shot.png";
  auto [rc2, out2] =
      run("cd '" + dir.path().string() + "' && timeout 120 " + chromium + flags +
          "--window-size=1200,2400 --screenshot='" + png.string() + "' '" + url + "'");
  CHECK(rc2 == 0);
  REQUIRE(fs::exists(png));
  const std::string bytes = io::read_file(png);
  CHECK(bytes.substr(0, 8) == "\x89PNG\r\n\x1a\n");
  CHECK(bytes.size() > 10000);
}
