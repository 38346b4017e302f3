// The regularizer comparison recipe: stage 1 once, the stage-2 matrix cell by cell (resumable),
// then the table and the Pareto plot. Each cell is an ordinary run_two_stage run.
#include "safetune/recipes/compare.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "safetune/error.hpp"
#include "safetune/io/atomic_file.hpp"
#include "safetune/io/hash.hpp"
#include "safetune/log.hpp"
#include "safetune/safety/assessment.hpp"
#include "safetune/safety/report.hpp"
#include "util/svg.hpp"

namespace safetune::recipes {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

std::optional<std::string> check_integer(const std::string& s) {
  std::int64_t x = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), x);
  if (ec != std::errc() || p != s.data() + s.size() || x < 0) return "expected a non-negative integer, got '" + s + "'";
  return std::nullopt;
}

std::optional<std::string> check_number(const std::string& s) {
  double x = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), x);
  if (ec != std::errc() || p != s.data() + s.size() || !std::isfinite(x) || x < 0)
    return "expected a non-negative number, got '" + s + "'";
  return std::nullopt;
}

double to_number(const std::string& s) {
  double x = 0;
  std::from_chars(s.data(), s.data() + s.size(), x);
  return x;
}

// Regularizers whose lambda changes nothing: a lambda grid runs them once.
bool uses_lambda(const std::string& name) {
  return name != "none" && name != "replay" && name != "gradient_projection";
}

std::string fmt(const char* f, double x) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, x);
  return buf;
}

// A directory-safe cell name.
std::string slug(const std::string& s) {
  std::string out;
  for (char c : s) out += (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.') ? c : '_';
  return out;
}

json number_or_null(double x) { return std::isfinite(x) ? json(x) : json(nullptr); }

// The config text a result is keyed by: the resolved config without where it lives (output
// directory, the safety adapter's path; `extra` keys the adapter by its stage 1 or its content).
std::string config_hash(const TwoStageConfig& cfg, const std::string& extra) {
  TwoStageConfig c = cfg;
  c.run.output_dir = "";
  c.stage2.safety_adapter = "";
  return io::sha256_hex(config_dump(c) + "\n" + extra);
}

std::string variant_label(const CompareVariant& v) { return v.label.empty() ? v.name : v.label; }

}  // namespace

void CompareVariant::describe(ConfigVisitor& v) {
  v.field("label", label, Field("Name of the variant in the table; default: the regularizer's name."));
  v.field("safety_mode", safety_mode,
          Field("separate: safety adapter frozen and active; merged: folded into the weights (the reactive "
                "baseline).").one_of({"separate", "merged"}));
  RegularizerSection::describe(v);
}

void CompareSection::describe(ConfigVisitor& v) {
  v.list("variants", variants,
         Field("Stage-2 variants: a stage2.regularizers entry each (name: none for no regularizer)."));
  v.field("seeds", seeds,
          Field("Seeds; each cell sets run.seed and stage2.data.seed.").check(check_integer, "integers >= 0"));
  v.field("lambdas", lambdas,
          Field("Lambda grid applied to every variant whose regularizer uses lambda; empty: each variant's own.")
              .check(check_number, "numbers >= 0"));
  v.field("output_dir", output_dir, Field("Directory of the comparison; empty: run.output_dir.").path());
}

void CompareConfig::describe(ConfigVisitor& v) {
  TwoStageConfig::describe(v);
  v.section("compare", compare, Field("The stage-2 comparison matrix (safetune compare)."));
}

std::string compare_reference_markdown() {
  struct CompareOnly : ConfigSection {
    CompareSection compare;
    void describe(ConfigVisitor& v) override {
      v.section("compare", compare, Field("The stage-2 comparison matrix (safetune compare)."));
    }
  } proto;
  return config_reference_markdown(proto, "Comparison configuration reference (`compare` section)") +
         "\nEvery other section (run, model, stage1, stage2, safety) is the two-stage trainer's: see "
         "docs/config.md. Each cell replaces stage2.regularizers with its variant's regularizer.\n";
}

MeanStd mean_std(const std::vector<double>& values) {
  MeanStd m;
  m.n = values.size();
  if (values.empty()) return m;
  double sum = 0;
  for (double x : values) sum += x;
  m.mean = sum / static_cast<double>(values.size());
  if (values.size() > 1) {
    double ss = 0;
    for (double x : values) ss += (x - m.mean) * (x - m.mean);
    m.std = std::sqrt(ss / static_cast<double>(values.size() - 1));
  }
  return m;
}

// ---- result.json ----------------------------------------------------------------------------

std::string cell_result_to_json(const CellResult& c) {
  json j;
  j["format"] = "safetune.compare.cell/1";
  j["cell"] = c.cell;
  j["variant"] = c.variant;
  j["regularizer"] = c.regularizer;
  j["safety_mode"] = c.safety_mode;
  j["lambda"] = c.lambda;
  j["lambda_swept"] = c.lambda_swept;
  j["seed"] = c.seed;
  j["config_sha256"] = c.config_sha256;
  j["task_metric"] = number_or_null(c.task_metric);
  j["refusal"] = {{"k", c.refusal_k}, {"n", c.refusal_n}};
  j["benign_compliance"] = {{"k", c.benign_k}, {"n", c.benign_n}};
  j["discrimination_counts"] = {{"k", c.discrimination_k}, {"n", c.discrimination_n}};
  j["aligned_refusal"] = c.aligned_refusal;
  j["refusal_retention"] = number_or_null(c.refusal_retention);
  j["over_refusal"] = c.over_refusal;
  j["discrimination"] = c.discrimination;
  j["train_seconds"] = c.train_seconds;
  j["status"] = c.status;
  return j.dump(2) + "\n";
}

CellResult read_cell_result(const fs::path& path) {
  const std::string text = io::read_file(path);
  auto damaged = [&](const std::string& why) {
    return FormatError("damaged cell result: " + why, path.string(),
                       "delete this cell's directory to run it again");
  };
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) throw damaged("not a JSON object");
  if (j.value("format", "") != "safetune.compare.cell/1") throw damaged("missing or unknown 'format'");
  CellResult c;
  try {
    auto num = [&](const char* k) { return j.at(k).is_null() ? kNaN : j.at(k).get<double>(); };
    c.cell = j.at("cell").get<std::string>();
    c.variant = j.at("variant").get<std::string>();
    c.regularizer = j.at("regularizer").get<std::string>();
    c.safety_mode = j.at("safety_mode").get<std::string>();
    c.lambda = j.at("lambda").get<double>();
    c.lambda_swept = j.at("lambda_swept").get<bool>();
    c.seed = j.at("seed").get<std::int64_t>();
    c.config_sha256 = j.at("config_sha256").get<std::string>();
    c.task_metric = num("task_metric");
    c.refusal_k = j.at("refusal").at("k").get<std::int64_t>();
    c.refusal_n = j.at("refusal").at("n").get<std::int64_t>();
    c.benign_k = j.at("benign_compliance").at("k").get<std::int64_t>();
    c.benign_n = j.at("benign_compliance").at("n").get<std::int64_t>();
    c.discrimination_k = j.at("discrimination_counts").at("k").get<std::int64_t>();
    c.discrimination_n = j.at("discrimination_counts").at("n").get<std::int64_t>();
    c.aligned_refusal = j.at("aligned_refusal").get<double>();
    c.refusal_retention = num("refusal_retention");
    c.over_refusal = j.at("over_refusal").get<double>();
    c.discrimination = j.at("discrimination").get<double>();
    c.train_seconds = j.at("train_seconds").get<double>();
    c.status = j.at("status").get<std::string>();
  } catch (const json::exception& e) {
    throw damaged(e.what());
  }
  if (c.config_sha256.size() != 64) throw damaged("config_sha256 is not a SHA-256");
  return c;
}

// ---- the table --------------------------------------------------------------------------------

std::vector<CompareRow> summarise_cells(const std::vector<CellResult>& cells) {
  std::vector<CompareRow> rows;
  for (const auto& c : cells) {
    auto it = std::find_if(rows.begin(), rows.end(), [&](const CompareRow& r) {
      return r.variant == c.variant && r.lambda == c.lambda;
    });
    if (it == rows.end()) {
      CompareRow r;
      r.variant = c.variant;
      r.regularizer = c.regularizer;
      r.safety_mode = c.safety_mode;
      r.lambda = c.lambda;
      r.lambda_swept = c.lambda_swept;
      rows.push_back(r);
    }
  }
  for (auto& r : rows) {
    std::vector<double> task, retention, over, disc, secs;
    for (const auto& c : cells) {
      if (c.variant != r.variant || c.lambda != r.lambda) continue;
      task.push_back(c.task_metric >= 0 ? c.task_metric : kNaN);
      retention.push_back(c.refusal_retention);
      over.push_back(c.over_refusal);
      disc.push_back(c.discrimination);
      secs.push_back(c.train_seconds);
    }
    r.seeds = task.size();
    r.task_metric = mean_std(task);
    r.refusal_retention = mean_std(retention);
    r.over_refusal = mean_std(over);
    r.discrimination = mean_std(disc);
    r.train_seconds = mean_std(secs);
  }
  // Pareto front over (refusal retention, task metric), both maximised.
  for (auto& r : rows) {
    const double x = r.refusal_retention.mean, y = r.task_metric.mean;
    if (!std::isfinite(x) || !std::isfinite(y)) continue;
    r.pareto = std::none_of(rows.begin(), rows.end(), [&](const CompareRow& o) {
      const double ox = o.refusal_retention.mean, oy = o.task_metric.mean;
      return std::isfinite(ox) && std::isfinite(oy) && ox >= x && oy >= y && (ox > x || oy > y);
    });
  }
  return rows;
}

namespace {
std::string row_name(const CompareRow& r) {
  std::string s = r.variant;
  if (r.lambda_swept) s += " (lambda=" + fmt("%g", r.lambda) + ")";
  return s;
}
std::string pct_pm(const MeanStd& m) {
  if (!std::isfinite(m.mean)) return "n/a";
  return fmt("%.1f", 100 * m.mean) + " ± " + fmt("%.1f", 100 * m.std);
}
}  // namespace

std::string compare_table_markdown(const std::vector<CompareRow>& rows) {
  std::string md =
      "| variant | regularizer | lambda | safety adapter | seeds | task metric (%) | refusal retention (%) | "
      "over-refusal (%) | discrimination (%) | stage-2 time (s) | Pareto |\n"
      "|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (const auto& r : rows) {
    md += "| " + row_name(r) + " | " + r.regularizer + " | " + (uses_lambda(r.regularizer) ? fmt("%g", r.lambda) : "-") +
          " | " + r.safety_mode + " | " + std::to_string(r.seeds) + " | " + pct_pm(r.task_metric) + " | " +
          pct_pm(r.refusal_retention) + " | " + pct_pm(r.over_refusal) + " | " + pct_pm(r.discrimination) + " | " +
          fmt("%.0f", r.train_seconds.mean) + " ± " + fmt("%.0f", r.train_seconds.std) + " | " +
          (r.pareto ? "yes" : "") + " |\n";
  }
  md += "\nMean ± sample standard deviation over seeds. Refusal retention = refusal rate on harmful probes "
        "after stage 2 / the aligned model's; over-refusal = 1 - benign compliance; task metric = exact match on "
        "stage2.task_eval. Pareto: not dominated in (task metric, refusal retention).\n";
  return md;
}

std::string compare_table_csv(const std::vector<CompareRow>& rows) {
  std::string csv =
      "variant,regularizer,lambda,safety_mode,seeds,task_metric_mean,task_metric_std,refusal_retention_mean,"
      "refusal_retention_std,over_refusal_mean,over_refusal_std,discrimination_mean,discrimination_std,"
      "train_seconds_mean,train_seconds_std,pareto\n";
  auto quote = [](const std::string& s) {
    if (s.find_first_of(",\"\n") == std::string::npos) return s;
    std::string q = "\"";
    for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
    return q + "\"";
  };
  auto num = [](double x) { return std::isfinite(x) ? fmt("%.6f", x) : std::string("nan"); };
  for (const auto& r : rows) {
    csv += quote(r.variant) + "," + r.regularizer + "," + fmt("%g", r.lambda) + "," + r.safety_mode + "," +
           std::to_string(r.seeds);
    for (const auto* m : {&r.task_metric, &r.refusal_retention, &r.over_refusal, &r.discrimination, &r.train_seconds})
      csv += "," + num(m->mean) + "," + num(m->std);
    csv += std::string(",") + (r.pareto ? "1" : "0") + "\n";
  }
  return csv;
}

// ---- the plot ---------------------------------------------------------------------------------

std::string pareto_svg(const std::vector<CompareRow>& rows, const std::string& title) {
  const double W = 760, H = 480, left = 70, right = 230, top = 50, bottom = 60;
  const double pw = W - left - right, ph = H - top - bottom;
  std::vector<const CompareRow*> pts;
  for (const auto& r : rows)
    if (std::isfinite(r.refusal_retention.mean) && std::isfinite(r.task_metric.mean)) pts.push_back(&r);
  double x0 = 1e300, x1 = -1e300, y0 = 1e300, y1 = -1e300;
  for (auto* r : pts) {
    x0 = std::min(x0, r->refusal_retention.mean - r->refusal_retention.std);
    x1 = std::max(x1, r->refusal_retention.mean + r->refusal_retention.std);
    y0 = std::min(y0, r->task_metric.mean - r->task_metric.std);
    y1 = std::max(y1, r->task_metric.mean + r->task_metric.std);
  }
  if (pts.empty()) x0 = 0, x1 = 1, y0 = 0, y1 = 1;
  auto pad = [](double& lo, double& hi) {
    double span = hi - lo;
    if (span < 0.05) { lo -= 0.05; hi += 0.05; span = hi - lo; }
    lo -= 0.08 * span;
    hi += 0.08 * span;
    lo = std::max(lo, 0.0);
  };
  pad(x0, x1);
  pad(y0, y1);
  y1 = std::min(y1, 1.0);
  if (y1 <= y0) y1 = y0 + 0.1;
  auto sx = [&](double x) { return left + (x - x0) / (x1 - x0) * pw; };
  auto sy = [&](double y) { return top + ph - (y - y0) / (y1 - y0) * ph; };
  static const char* palette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                  "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
  std::string s;
  s += "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  s += svg::open(fmt("%.0f", W), fmt("%.0f", H), {{"font-family", "sans-serif"}, {"font-size", "12"}});
  s += "<rect x=\"0\" y=\"0\" width=\"" + fmt("%.0f", W) + "\" height=\"" + fmt("%.0f", H) + "\" fill=\"white\"/>\n";
  s += "<text x=\"" + fmt("%.1f", left) + "\" y=\"24\" font-size=\"15\">" + svg::escape(title) + "</text>\n";
  // Grid, ticks and axes.
  for (int i = 0; i <= 5; ++i) {
    const double xv = x0 + (x1 - x0) * i / 5, yv = y0 + (y1 - y0) * i / 5;
    s += "<line x1=\"" + fmt("%.1f", sx(xv)) + "\" y1=\"" + fmt("%.1f", top) + "\" x2=\"" + fmt("%.1f", sx(xv)) +
         "\" y2=\"" + fmt("%.1f", top + ph) + "\" stroke=\"#e5e5e5\"/>\n";
    s += "<line x1=\"" + fmt("%.1f", left) + "\" y1=\"" + fmt("%.1f", sy(yv)) + "\" x2=\"" + fmt("%.1f", left + pw) +
         "\" y2=\"" + fmt("%.1f", sy(yv)) + "\" stroke=\"#e5e5e5\"/>\n";
    s += "<text x=\"" + fmt("%.1f", sx(xv)) + "\" y=\"" + fmt("%.1f", top + ph + 16) + "\" text-anchor=\"middle\">" +
         fmt("%.0f%%", 100 * xv) + "</text>\n";
    s += "<text x=\"" + fmt("%.1f", left - 6) + "\" y=\"" + fmt("%.1f", sy(yv) + 4) + "\" text-anchor=\"end\">" +
         fmt("%.0f%%", 100 * yv) + "</text>\n";
  }
  s += "<rect x=\"" + fmt("%.1f", left) + "\" y=\"" + fmt("%.1f", top) + "\" width=\"" + fmt("%.1f", pw) +
       "\" height=\"" + fmt("%.1f", ph) + "\" fill=\"none\" stroke=\"#333\"/>\n";
  s += "<text x=\"" + fmt("%.1f", left + pw / 2) + "\" y=\"" + fmt("%.1f", H - 18) +
       "\" text-anchor=\"middle\">refusal retention (refusal rate after stage 2 / aligned)</text>\n";
  s += "<text transform=\"translate(18 " + fmt("%.1f", top + ph / 2) +
       ") rotate(-90)\" text-anchor=\"middle\">task metric (exact match)</text>\n";
  // The Pareto front, left to right.
  std::vector<const CompareRow*> front;
  for (auto* r : pts)
    if (r->pareto) front.push_back(r);
  std::sort(front.begin(), front.end(), [](auto* a, auto* b) { return a->refusal_retention.mean < b->refusal_retention.mean; });
  if (front.size() > 1) {
    std::string poly;
    for (auto* r : front) poly += fmt("%.1f", sx(r->refusal_retention.mean)) + "," + fmt("%.1f", sy(r->task_metric.mean)) + " ";
    s += "<polyline points=\"" + poly + "\" fill=\"none\" stroke=\"#444\" stroke-dasharray=\"5,4\"/>\n";
  }
  // Points with error bars (one standard deviation each way).
  std::size_t i = 0;
  for (const auto& r : rows) {
    const char* color = palette[i++ % 10];
    if (!std::isfinite(r.refusal_retention.mean) || !std::isfinite(r.task_metric.mean)) continue;
    const double cx = sx(r.refusal_retention.mean), cy = sy(r.task_metric.mean);
    const double xl = sx(r.refusal_retention.mean - r.refusal_retention.std), xr = sx(r.refusal_retention.mean + r.refusal_retention.std);
    const double yt = sy(r.task_metric.mean + r.task_metric.std), yb = sy(r.task_metric.mean - r.task_metric.std);
    s += "<g stroke=\"" + std::string(color) + "\"><title>" + svg::escape(row_name(r)) + "</title>";
    s += "<line x1=\"" + fmt("%.1f", xl) + "\" y1=\"" + fmt("%.1f", cy) + "\" x2=\"" + fmt("%.1f", xr) + "\" y2=\"" + fmt("%.1f", cy) + "\"/>";
    s += "<line x1=\"" + fmt("%.1f", cx) + "\" y1=\"" + fmt("%.1f", yt) + "\" x2=\"" + fmt("%.1f", cx) + "\" y2=\"" + fmt("%.1f", yb) + "\"/>";
    if (r.pareto)
      s += "<circle cx=\"" + fmt("%.1f", cx) + "\" cy=\"" + fmt("%.1f", cy) + "\" r=\"9\" fill=\"none\" stroke-width=\"2\"/>";
    s += "<circle cx=\"" + fmt("%.1f", cx) + "\" cy=\"" + fmt("%.1f", cy) + "\" r=\"5\" fill=\"" + std::string(color) + "\"/>";
    s += "</g>\n";
  }
  // Legend.
  i = 0;
  double ly = top + 8;
  for (const auto& r : rows) {
    const char* color = palette[i++ % 10];
    const double lx = left + pw + 18;
    s += "<circle cx=\"" + fmt("%.1f", lx) + "\" cy=\"" + fmt("%.1f", ly) + "\" r=\"5\" fill=\"" + color + "\"/>";
    s += "<text x=\"" + fmt("%.1f", lx + 10) + "\" y=\"" + fmt("%.1f", ly + 4) + "\">" + svg::escape(row_name(r)) +
         (r.pareto ? " (Pareto)" : "") + "</text>\n";
    ly += 18;
  }
  s += "<text x=\"" + fmt("%.1f", left + pw + 18) + "\" y=\"" + fmt("%.1f", ly + 10) +
       "\" fill=\"#444\">ringed + dashed: Pareto front</text>\n";
  s += "<text x=\"" + fmt("%.1f", left + pw + 18) + "\" y=\"" + fmt("%.1f", ly + 26) +
       "\" fill=\"#444\">bars: ± 1 std over seeds</text>\n";
  s += svg::close();
  return s;
}

// ---- the recipe -------------------------------------------------------------------------------

namespace {

struct Cell {
  std::string name;
  CompareVariant variant;
  double lambda;
  bool swept;
  std::int64_t seed;
};

std::vector<Cell> plan_cells(const CompareConfig& cfg) {
  const auto& c = cfg.compare;
  if (c.variants.items.empty())
    throw ConfigError("the comparison needs at least one variant", "compare.variants", "add e.g. {name: none}");
  if (c.seeds.empty()) throw ConfigError("the comparison needs at least one seed", "compare.seeds");
  std::set<std::string> labels;
  for (std::size_t i = 0; i < c.variants.items.size(); ++i)
    if (!labels.insert(variant_label(c.variants.items[i])).second)
      throw ConfigError("duplicate variant label '" + variant_label(c.variants.items[i]) + "'",
                        "compare.variants." + std::to_string(i) + ".label", "give each variant its own label");
  std::set<std::string> seeds(c.seeds.begin(), c.seeds.end());
  if (seeds.size() != c.seeds.size()) throw ConfigError("duplicate seeds", "compare.seeds");
  std::vector<Cell> cells;
  // Seed-major: an interrupted run has whole seeds of every variant.
  for (const auto& seed : c.seeds)
    for (const auto& v : c.variants.items) {
      std::vector<std::pair<double, bool>> lambdas;
      if (c.lambdas.empty() || !uses_lambda(v.name)) lambdas.push_back({v.lambda, false});
      else
        for (const auto& l : c.lambdas) lambdas.push_back({to_number(l), true});
      for (auto [lambda, swept] : lambdas) {
        std::string name = slug(variant_label(v));
        if (swept) name += "_lambda-" + slug(fmt("%g", lambda));
        name += "_seed-" + seed;
        cells.push_back({name, v, lambda, swept, static_cast<std::int64_t>(to_number(seed))});
      }
    }
  return cells;
}

// Stage 1's outcome, cached in output_dir/stage1/result.json.
struct Reference {
  std::string config_sha256;
  fs::path safety_adapter;
  std::optional<safety::Assessment> baseline, aligned;
};

Reference reference_stage(const CompareConfig& cfg, const fs::path& out, bool& reused) {
  const fs::path dir = out / "stage1";
  TwoStageConfig s1 = cfg;
  s1.stage2.enabled = false;
  s1.stage2.regularizers.items.clear();
  s1.run.output_dir = dir.string();
  std::string extra;
  if (!cfg.stage1.enabled) {
    if (cfg.stage2.safety_adapter.empty())
      throw ConfigError("with stage1.enabled: false the comparison needs an existing safety adapter",
                        "stage2.safety_adapter");
    // The reference is the given adapter: key the cache by its content.
    io::Sha256 h;
    for (const auto& e : fs::directory_iterator(cfg.stage2.safety_adapter))
      if (e.is_regular_file()) h.update_file(e.path());
    extra = "safety_adapter:" + h.hex();
  }
  Reference ref;
  ref.config_sha256 = config_hash(s1, extra);
  ref.safety_adapter = cfg.stage1.enabled ? dir / "adapters" / "safety" : fs::path(cfg.stage2.safety_adapter);
  const fs::path result = dir / "result.json";
  if (fs::exists(result)) {
    json j = json::parse(io::read_file(result), nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("config_sha256") || !j["config_sha256"].is_string())
      throw FormatError("damaged stage-1 result", result.string(), "delete " + dir.string() + " to run stage 1 again");
    if (j["config_sha256"] == ref.config_sha256) {
      reused = true;
      log_info("stage 1: reusing " + dir.string() + " (same config)");
      ref.baseline = safety::load_assessment(dir / "assessments" / "baseline.json");
      ref.aligned = safety::load_assessment(dir / "assessments" / "aligned.json");
      return ref;
    }
    log_warn("stage 1: config changed since " + result.string() + "; running it again");
  }
  if (fs::exists(dir)) fs::remove_all(dir);
  log_info(cfg.stage1.enabled ? "stage 1: training the safety adapter (the reference)"
                              : "stage 1: assessing the given safety adapter (the reference)");
  auto r = run_two_stage(s1, config_dump(s1));
  throw_if_interrupted(r);  // the CLI exits 130/143; a later `compare` runs stage 1 again
  if (cfg.stage1.enabled && r.aligned.status != train::TrainStatus::completed)
    throw SafetyError("stage 1 did not complete; the comparison needs its safety adapter", dir.string());
  ref.baseline = r.baseline;
  ref.aligned = r.aligned.assessment;
  if (!ref.aligned) throw SafetyError("stage 1 produced no aligned assessment", dir.string());
  json j{{"format", "safetune.compare.stage1/1"},
         {"config_sha256", ref.config_sha256},
         {"safety_adapter", ref.safety_adapter.string()},
         {"seconds", r.aligned.seconds},
         {"aligned_refusal", ref.aligned->refusal.overall.value()},
         {"aligned_benign_compliance", ref.aligned->benign_compliance.overall.value()},
         {"aligned_discrimination", ref.aligned->discrimination.overall.value()}};
  io::atomic_write(result, j.dump(2) + "\n");
  return ref;
}

void write_outputs(const fs::path& out, const CompareConfig& cfg, const Reference& ref,
                   const std::vector<CellResult>& cells, std::vector<CompareRow>& rows, std::size_t planned) {
  rows = summarise_cells(cells);
  std::string md = "# Regularizer comparison: " + cfg.run.name + "\n\n";
  md += std::to_string(cells.size()) + " of " + std::to_string(planned) + " cells finished.\n\n";
  const auto& a = *ref.aligned;
  md += "Reference (aligned model, stage 1): refusal on harmful " + fmt("%.1f%%", 100 * a.refusal.overall.value()) +
        " (n=" + std::to_string(a.refusal.overall.n) + "), benign compliance " +
        fmt("%.1f%%", 100 * a.benign_compliance.overall.value()) + " (n=" + std::to_string(a.benign_compliance.overall.n) +
        "), discrimination " + fmt("%.1f%%", 100 * a.discrimination.overall.value()) +
        " (n=" + std::to_string(a.discrimination.overall.n) + ").\n\n";
  md += compare_table_markdown(rows);
  io::atomic_write(out / "compare.md", md);
  io::atomic_write(out / "compare.csv", compare_table_csv(rows));
  io::atomic_write(out / "pareto.svg", pareto_svg(rows, "Task metric vs safety retention: " + cfg.run.name));
}

}  // namespace

CompareResult run_compare(const CompareConfig& cfg) {
  if (!cfg.safety.assess)
    throw ConfigError("the comparison measures safety: safety.assess must be true", "safety.assess");
  if (!cfg.stage2.enabled) throw ConfigError("the comparison runs stage 2: stage2.enabled must be true", "stage2.enabled");
  const auto cells = plan_cells(cfg);
  CompareResult result;
  const fs::path out = cfg.compare.output_dir.empty() ? fs::path(cfg.run.output_dir) : fs::path(cfg.compare.output_dir);
  result.out_dir = out;
  fs::create_directories(out / "cells");
  {
    CompareConfig c = cfg;
    io::atomic_write(out / "config.yaml", config_dump(c));
  }

  // Damaged results stop the run before any work: they are never silently redone.
  std::vector<std::optional<CellResult>> existing(cells.size());
  for (std::size_t i = 0; i < cells.size(); ++i) {
    const fs::path f = out / "cells" / cells[i].name / "result.json";
    if (fs::exists(f)) existing[i] = read_cell_result(f);
  }

  const Reference ref = reference_stage(cfg, out, result.stage1_reused);
  RunOptions ro;
  ro.baseline = ref.baseline;
  ro.aligned = ref.aligned;
  const double aligned_refusal = ref.aligned->refusal.overall.value();

  double run_seconds = 0;
  for (std::size_t i = 0; i < cells.size(); ++i) {
    const Cell& cell = cells[i];
    const fs::path dir = out / "cells" / cell.name;
    TwoStageConfig c = cfg;
    c.run.name = cfg.run.name + "/" + cell.name;
    c.run.seed = cell.seed;
    c.run.output_dir = dir.string();
    c.stage1.enabled = false;
    c.stage2.safety_adapter = ref.safety_adapter.string();
    c.stage2.safety_mode = cell.variant.safety_mode;
    c.stage2.data.seed = cell.seed;
    train::RegularizerSection reg = cell.variant;
    reg.lambda = cell.lambda;
    c.stage2.regularizers.items.clear();
    if (reg.name != "none") c.stage2.regularizers.items.push_back(reg);
    c.safety.guard.every_n_steps = 0;  // the comparison measures the regularizers alone
    const std::string sha = config_hash(c, "stage1:" + ref.config_sha256);

    if (existing[i] && existing[i]->config_sha256 == sha) {
      log_info("cell " + std::to_string(i + 1) + "/" + std::to_string(cells.size()) + " " + cell.name +
               ": finished earlier, skipped");
      result.cells.push_back(*existing[i]);
      ++result.cells_skipped;
      continue;
    }
    if (existing[i]) log_warn("cell " + cell.name + ": its config changed since it ran; running it again");
    if (fs::exists(dir)) fs::remove_all(dir);  // a partial run, or one with another config

    const std::size_t remaining = cells.size() - i;
    std::string eta = result.cells_run > 0
                          ? ", ETA " + format_duration(run_seconds / static_cast<double>(result.cells_run) *
                                                       static_cast<double>(remaining))
                          : "";
    log_info("cell " + std::to_string(i + 1) + "/" + std::to_string(cells.size()) + " " + cell.name + eta);
    const auto t0 = std::chrono::steady_clock::now();
    auto r = run_two_stage(c, config_dump(c), ro);
    throw_if_interrupted(r);  // finished cells are kept; a later `compare` redoes this one
    if (!r.tuned.assessment) throw SafetyError("cell produced no assessment", dir.string());
    const auto& a = *r.tuned.assessment;
    CellResult cr;
    cr.cell = cell.name;
    cr.variant = variant_label(cell.variant);
    cr.regularizer = cell.variant.name;
    cr.safety_mode = cell.variant.safety_mode;
    cr.lambda = cell.lambda;
    cr.lambda_swept = cell.swept;
    cr.seed = cell.seed;
    cr.config_sha256 = sha;
    cr.task_metric = r.tuned.task_metric;
    cr.refusal_k = a.refusal.overall.k;
    cr.refusal_n = a.refusal.overall.n;
    cr.benign_k = a.benign_compliance.overall.k;
    cr.benign_n = a.benign_compliance.overall.n;
    cr.discrimination_k = a.discrimination.overall.k;
    cr.discrimination_n = a.discrimination.overall.n;
    cr.aligned_refusal = aligned_refusal;
    cr.refusal_retention = aligned_refusal > 0 ? a.refusal.overall.value() / aligned_refusal : kNaN;
    cr.over_refusal = 1.0 - a.benign_compliance.overall.value();
    cr.discrimination = a.discrimination.overall.value();
    cr.train_seconds = r.tuned.seconds;
    cr.status = r.tuned.status == train::TrainStatus::completed   ? "completed"
                : r.tuned.status == train::TrainStatus::interrupted ? "interrupted"
                                                                    : "stopped";
    io::atomic_write(dir / "result.json", cell_result_to_json(cr));
    result.cells.push_back(cr);
    ++result.cells_run;
    run_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    write_outputs(out, cfg, ref, result.cells, result.rows, cells.size());
  }
  write_outputs(out, cfg, ref, result.cells, result.rows, cells.size());
  return result;
}

}  // namespace safetune::recipes
