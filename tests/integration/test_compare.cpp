// `safetune compare` on the tiny model: the reduced matrix runs, the table (MD + CSV) agrees with
// a recomputation from the per-cell files, the SVG is XML (checked by Python's parser), a rerun
// skips finished cells, and damaged results or bad keys give clear errors.
#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "safetune/error.hpp"
#include "safetune/io/atomic_file.hpp"
#include "safetune/recipes/compare.hpp"
#include "support.hpp"

using namespace safetune;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

recipes::CompareConfig tiny_compare(const fs::path& out, std::vector<std::string> extra = {}) {
  recipes::CompareConfig cfg;
  std::vector<std::string> o{"run.output_dir=" + out.string()};
  o.insert(o.end(), extra.begin(), extra.end());
  fs::current_path(test::source_dir());  // data paths are relative to the repository root
  config_load(cfg, test::source_dir() / "configs" / "tiny_compare.yaml", o);
  return cfg;
}

std::vector<std::string> split_csv_line(const std::string& line) {
  std::vector<std::string> out;
  std::string cur;
  bool quoted = false;
  for (char c : line) {
    if (c == '"') quoted = !quoted;
    else if (c == ',' && !quoted) out.push_back(cur), cur.clear();
    else cur += c;
  }
  out.push_back(cur);
  return out;
}

// Counts positives of one probe kind in an assessment file's per-probe results.
std::pair<int, int> count_kind(const fs::path& assessment, const std::string& kind) {
  auto j = json::parse(io::read_file(assessment));
  int k = 0, n = 0;
  for (const auto& r : j["results"])
    if (r["kind"] == kind) ++n, k += r["positive"].get<bool>() ? 1 : 0;
  return {k, n};
}

// Hand-computed mean and sample standard deviation.
std::pair<double, double> mean_sd(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m += x;
  m /= double(v.size());
  double ss = 0;
  for (double x : v) ss += (x - m) * (x - m);
  return {m, v.size() > 1 ? std::sqrt(ss / double(v.size() - 1)) : 0.0};
}

bool same(double a, double b) { return (std::isnan(a) && std::isnan(b)) || std::abs(a - b) < 2e-6; }

double csv_number(const std::string& s) { return s == "nan" ? std::nan("") : std::stod(s); }

}  // namespace

TEST_CASE(
    "compare: the tiny matrix runs, its table matches the cells, reruns skip, damage is an error",
    "[recipe][compare]") {
  test::TempDir dir;
  const fs::path out = dir / "cmp";
  auto cfg = tiny_compare(out);
  auto r = recipes::run_compare(cfg);
  CHECK(r.cells_run == 4);
  CHECK(r.cells_skipped == 0);
  CHECK_FALSE(r.stage1_reused);
  for (const char* f :
       {"compare.md", "compare.csv", "pareto.svg", "config.yaml", "stage1/result.json",
        "stage1/adapters/safety/adapter_model.safetensors", "stage1/assessments/aligned.json"})
    CHECK(fs::exists(out / f));

  // Independent recomputation: counts from the assessments' per-probe results, metrics by hand.
  const auto aligned = count_kind(out / "stage1" / "assessments" / "aligned.json", "harmful");
  REQUIRE(aligned.second == 2);
  const double aligned_refusal = double(aligned.first) / aligned.second;
  std::map<std::string, std::map<std::string, std::vector<double>>> by_variant;
  int cells = 0;
  for (const auto& e : fs::directory_iterator(out / "cells")) {
    ++cells;
    auto j = json::parse(io::read_file(e.path() / "result.json"));
    const auto tuned = e.path() / "assessments" / "tuned.json";
    const auto harmful = count_kind(tuned, "harmful"), benign = count_kind(tuned, "benign"),
               disc = count_kind(tuned, "discrimination");
    CHECK(j["refusal"]["k"] == harmful.first);
    CHECK(j["refusal"]["n"] == harmful.second);
    auto& m = by_variant[j["variant"].get<std::string>()];
    m["task_metric"].push_back(j["task_metric"].get<double>());
    m["refusal_retention"].push_back(
        aligned_refusal > 0 ? (double(harmful.first) / harmful.second) / aligned_refusal
                            : std::nan(""));
    // benign probes are "positive" when refused; compliance is the rest.
    m["over_refusal"].push_back(double(benign.first) / benign.second);
    m["discrimination"].push_back(double(disc.first) / disc.second);
    m["train_seconds"].push_back(j["train_seconds"].get<double>());
    CHECK(j["task_metric"].get<double>() >= 0);
    CHECK(j["config_sha256"].get<std::string>().size() == 64);
  }
  CHECK(cells == 4);
  REQUIRE(by_variant.size() == 2);

  std::istringstream csv(io::read_file(out / "compare.csv"));
  std::string line;
  std::getline(csv, line);
  const auto header = split_csv_line(line);
  int rows = 0;
  const std::string md = io::read_file(out / "compare.md");
  while (std::getline(csv, line)) {
    ++rows;
    auto f = split_csv_line(line);
    REQUIRE(f.size() == header.size());
    std::map<std::string, std::string> row;
    for (std::size_t i = 0; i < f.size(); ++i) row[header[i]] = f[i];
    INFO(line);
    REQUIRE(by_variant.count(row["variant"]));
    const auto& m = by_variant[row["variant"]];
    CHECK(row["seeds"] == "2");
    for (const char* metric :
         {"task_metric", "refusal_retention", "over_refusal", "discrimination", "train_seconds"}) {
      INFO(metric);
      auto [mean, sd] = mean_sd(m.at(metric));
      CHECK(same(csv_number(row[std::string(metric) + "_mean"]), mean));
      CHECK(same(csv_number(row[std::string(metric) + "_std"]), sd));
    }
    // The Markdown shows the same task metric, in percent.
    auto [tm, ts] = mean_sd(m.at("task_metric"));
    char cell[64];
    std::snprintf(cell, sizeof cell, "%.1f ± %.1f", 100 * tm, 100 * ts);
    CHECK(md.find("| " + row["variant"] + " |") != std::string::npos);
    CHECK(md.find(cell) != std::string::npos);
  }
  CHECK(rows == 2);

  // The drops pooled over seeds, recomputed per harmful probe: aligned minus the mean of the seeds.
  auto refused = [](const fs::path& file) {
    std::map<std::string, double> m;
    const json j = json::parse(io::read_file(file));
    for (const auto& x : j["results"])
      if (x["kind"] == "harmful") m[x["id"]] = x["positive"].get<bool>() ? 1.0 : 0.0;
    return m;
  };
  const auto before = refused(out / "stage1" / "assessments" / "aligned.json");
  CHECK(md.find("## Paired drops, pooled over seeds") != std::string::npos);
  for (const char* variant : {"none", "l2_delta"}) {
    std::map<std::string, double> mean_after;
    for (const char* seed : {"0", "1"})
      for (const auto& [id, v] : refused(out / "cells" / (std::string(variant) + "_seed-" + seed) /
                                         "assessments" / "tuned.json"))
        mean_after[id] += v / 2;
    double drop = 0;
    for (const auto& [id, v] : before) drop += v - mean_after.at(id);
    drop = 100 * drop / double(before.size());
    char want[96];
    std::snprintf(want, sizeof want, "| %s | 2 | %zu | ", variant, before.size());
    char drop_text[32];
    std::snprintf(drop_text, sizeof drop_text, " | %+.1f [", drop);
    INFO(variant << " pooled drop " << drop);
    const auto at = md.find(want, md.find("## Paired drops, pooled over seeds"));
    REQUIRE(at != std::string::npos);
    CHECK(md.substr(at, md.find('\n', at) - at).find(drop_text) != std::string::npos);
  }

  // The plot is well-formed XML with one marker per variant in the plot and one in the legend.
  const fs::path count_file = dir / "circles.txt";
  const std::string cmd =
      test::python().string() +
      " -c \"import sys,xml.etree.ElementTree as E; r=E.parse(sys.argv[1]).getroot(); "
      "print(r.tag, len([c for c in r.iter('{http://www.w3.org/2000/svg}circle') "
      "if c.get('r')=='5']))\" " +
      (out / "pareto.svg").string() + " > " + count_file.string() + " 2>&1";
  REQUIRE(std::system(cmd.c_str()) == 0);
  // Points are drawn only where both coordinates exist (retention is undefined if the aligned
  // model refused nothing); legend markers always.
  const int plotted = aligned_refusal > 0 ? 2 : 0;
  CHECK(io::read_file(count_file) ==
        "{http://www.w3.org/2000/svg}svg " + std::to_string(2 + plotted) + "\n");

  // A rerun skips every finished cell and leaves the results untouched.
  std::map<fs::path, fs::file_time_type> mtimes;
  for (const auto& e : fs::directory_iterator(out / "cells"))
    mtimes[e.path()] = fs::last_write_time(e.path() / "result.json");
  auto again = recipes::run_compare(tiny_compare(out));
  CHECK(again.cells_run == 0);
  CHECK(again.cells_skipped == 4);
  CHECK(again.stage1_reused);
  for (const auto& [p, t] : mtimes) CHECK(fs::last_write_time(p / "result.json") == t);
  CHECK(io::read_file(out / "compare.csv") == csv.str());

  // A damaged result is an error naming the file, before any work, and is left as it was.
  const fs::path damaged = out / "cells" / "l2_delta_seed-1" / "result.json";
  REQUIRE(fs::exists(damaged));
  test::write_text(damaged, "{\"format\": \"safetune.compare.cell/1\", \"cell\": ");
  try {
    recipes::run_compare(tiny_compare(out));
    FAIL("expected an error");
  } catch (const FormatError& e) {
    CHECK_THAT(e.what(),
               Catch::Contains("damaged cell result") && Catch::Contains(damaged.string()));
  }
  auto cli =
      test::run_cli({"compare", (test::source_dir() / "configs" / "tiny_compare.yaml").string(),
                     "run.output_dir=" + out.string()});
  CHECK(cli.exit_code == 1);
  CHECK_THAT(cli.err, Catch::Contains("error: ") && Catch::Contains(damaged.string()));
  CHECK(io::read_file(damaged) == "{\"format\": \"safetune.compare.cell/1\", \"cell\": ");
}

TEST_CASE("compare: the harmful-fine-tuning grid runs each task mix, with paired counts per cell",
          "[recipe][compare]") {
  test::TempDir dir;
  const fs::path out = dir / "grid";
  auto cfg = tiny_compare(out, {"compare.seeds=[0]", "compare.variants=[{name: none}]"});
  auto dataset = [](const std::string& path, double weight, const std::string& format = "auto") {
    data::DatasetSection d;
    d.path = path;
    d.weight = weight;
    d.format = format;
    return d;
  };
  recipes::CompareTaskMix benign, harmful;
  benign.label = "benign";
  benign.datasets.items = {dataset("data/train/task_extraction.jsonl", 1)};
  harmful.label = "harmful-30";
  // AdvBench's published goal/target pairs as harmful-compliance task examples (a small file in
  // AdvBench's layout here).
  harmful.datasets.items = {dataset("data/train/task_extraction.jsonl", 0.7),
                            dataset("tests/data/safety/advbench_small.csv", 0.3, "goal_target")};
  cfg.compare.task_mixes.items = {benign, harmful};
  auto r = recipes::run_compare(cfg);
  REQUIRE(r.cells.size() == 2);
  CHECK(r.cells[0].cell == "benign_none_seed-0");
  CHECK(r.cells[1].cell == "harmful-30_none_seed-0");
  REQUIRE(r.rows.size() == 2);
  CHECK(r.rows[1].task_mix == "harmful-30");
  CHECK(r.rows[1].harmful_n == 2);
  // Each cell trained on its own mix: its resolved config names the AdvBench file or not.
  auto config_of = [&](const std::string& cell) {
    return io::read_file(out / "cells" / cell / "config.yaml");
  };
  CHECK(config_of("harmful-30_none_seed-0").find("advbench_small.csv") != std::string::npos);
  CHECK(config_of("benign_none_seed-0").find("advbench_small.csv") == std::string::npos);
  CHECK(config_of("benign_none_seed-0").find("identity_shift") == std::string::npos);
  // Paired counts, recomputed from the per-probe results of the aligned model and the cell.
  auto outcomes = [](const fs::path& file, const std::string& kind) {
    std::map<std::string, bool> m;
    const json j = json::parse(io::read_file(file));
    for (const auto& x : j["results"])
      if (x["kind"] == kind)
        m[x["id"]] = kind == "benign" ? !x["positive"].get<bool>() : x["positive"].get<bool>();
    return m;
  };
  for (const auto& c : r.cells) {
    for (auto [kind, counts] :
         {std::pair{"harmful", c.refusal_paired}, {"benign", c.benign_paired}}) {
      auto before = outcomes(out / "stage1" / "assessments" / "aligned.json", kind);
      auto after = outcomes(out / "cells" / c.cell / "assessments" / "tuned.json", kind);
      std::int64_t lost = 0, gained = 0, n = 0;
      for (const auto& [id, ok] : after) {
        ++n;
        lost += before.at(id) && !ok;
        gained += !before.at(id) && ok;
      }
      CHECK(counts.n() == n);
      CHECK(counts.lost == lost);
      CHECK(counts.gained == gained);
    }
    auto j = json::parse(io::read_file(out / "cells" / c.cell / "result.json"));
    CHECK(recipes::read_cell_result(out / "cells" / c.cell / "result.json").refusal_paired.n() ==
          c.refusal_paired.n());
    CHECK(j["task_mix"] == c.task_mix);
  }
  const std::string md = io::read_file(out / "compare.md");
  CHECK(md.find("| harmful-30 / none |") != std::string::npos);
  CHECK(md.find("## Paired drops per cell") != std::string::npos);
  CHECK(md.find("| harmful-30_none_seed-0 | 2 |") != std::string::npos);
  // A bad mix is a clear error.
  auto bad = cfg;
  bad.compare.task_mixes.items[1].label = "benign";
  CHECK_THROWS_WITH(recipes::run_compare(bad),
                    Catch::Contains("duplicate task mix label 'benign'"));
}

TEST_CASE("compare: bad compare keys and values are clear errors", "[compare]") {
  const auto cfg_path = (test::source_dir() / "configs" / "tiny_compare.yaml").string();
  auto err = [&](std::vector<std::string> overrides) {
    std::vector<std::string> args{"compare", cfg_path, "run.output_dir=/nonexistent/never-written"};
    args.insert(args.end(), overrides.begin(), overrides.end());
    auto r = test::run_cli(args);
    CHECK(r.exit_code == 1);
    return r.err;
  };
  CHECK_THAT(err({"compare.seed=[1]"}),
             Catch::Contains("compare.seed") && Catch::Contains("did you mean 'compare.seeds'"));
  CHECK_THAT(err({"compare.seeds=[one]"}),
             Catch::Contains("compare.seeds.0") && Catch::Contains("non-negative integer"));
  CHECK_THAT(err({"compare.lambdas=[0.1, big]"}), Catch::Contains("compare.lambdas.1"));
  CHECK_THAT(
      err({"compare.variants.0.name=kl_anchr"}),
      Catch::Contains("compare.variants.0.name") && Catch::Contains("did you mean 'kl_anchor'"));
  CHECK_THAT(err({"compare.variants.1.lamda=2"}), Catch::Contains("compare.variants.1.lamda"));
  CHECK_THAT(err({"compare.variants=[]"}),
             Catch::Contains("compare.variants") && Catch::Contains("at least one variant"));
  CHECK_THAT(err({"compare.variants.1.label=none"}),
             Catch::Contains("duplicate variant label 'none'"));
  CHECK_THAT(err({"safety.assess=false"}), Catch::Contains("safety.assess"));
  CHECK_FALSE(fs::exists("/nonexistent/never-written"));

  // The reference of the compare section is generated from the schema (docs/compare-config.md).
  CHECK(recipes::compare_reference_markdown() ==
        io::read_file(test::source_dir() / "docs" / "compare-config.md"));
}

TEST_CASE("compare: mean/std, Pareto front and CSV quoting on hand-made cells", "[compare]") {
  auto cell = [](std::string variant, double task, double retention, std::int64_t seed) {
    recipes::CellResult c;
    c.variant = variant;
    c.regularizer = variant == "plain" ? "none" : "kl_anchor";
    c.safety_mode = "separate";
    c.lambda = 1;
    c.seed = seed;
    c.task_metric = task;
    c.refusal_retention = retention;
    return c;
  };
  // plain: task (0.9, 0.7) retention (0.5, 0.7); "kl, anchored": task 0.7, 0.7 retention 0.9, 0.9;
  // "weak": dominated by kl on both axes.
  auto rows = recipes::summarise_cells(
      {cell("plain", 0.9, 0.5, 0), cell("kl, anchored", 0.7, 0.9, 0), cell("weak", 0.5, 0.4, 0),
       cell("plain", 0.7, 0.7, 1), cell("kl, anchored", 0.7, 0.9, 1), cell("weak", 0.5, 0.5, 1)});
  REQUIRE(rows.size() == 3);
  CHECK(rows[0].task_metric.mean == Approx(0.8));
  CHECK(rows[0].task_metric.std == Approx(std::sqrt(0.02)));  // ((0.1)^2 + (0.1)^2) / (2 - 1)
  CHECK(rows[0].refusal_retention.mean == Approx(0.6));
  CHECK(rows[1].task_metric.std == Approx(0.0));
  CHECK(rows[0].pareto);  // highest task metric
  CHECK(rows[1].pareto);  // highest retention
  CHECK_FALSE(rows[2].pareto);
  auto csv = recipes::compare_table_csv(rows);
  CHECK(csv.find("\n\"kl, anchored\",kl_anchor,1,separate,2,") != std::string::npos);
  auto svg = recipes::pareto_svg(rows, "a <title> & more");
  CHECK(svg.find("a &lt;title&gt; &amp; more") != std::string::npos);
  CHECK(svg.find("<polyline") != std::string::npos);
}
