// The comparison's numbers: result.json of each cell (with its paired counts against the aligned
// model), and the per-row summaries over seeds (mean and sample standard deviation, Pareto front).
#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "compare_internal.hpp"
#include "safetune/error.hpp"
#include "safetune/io/atomic_file.hpp"

namespace safetune::recipes {
namespace fs = std::filesystem;
using nlohmann::json;
using namespace compare_detail;

namespace {
json number_or_null(double x) { return std::isfinite(x) ? json(x) : json(nullptr); }
}  // namespace

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
  if (!c.task_mix.empty()) j["task_mix"] = c.task_mix;
  auto paired = [](const safety::PairedCounts& t) {
    return json{{"both", t.both}, {"lost", t.lost}, {"gained", t.gained}, {"neither", t.neither}};
  };
  j["paired"] = {{"refusal", paired(c.refusal_paired)},
                 {"benign_compliance", paired(c.benign_paired)}};
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
  if (j.value("format", "") != "safetune.compare.cell/1")
    throw damaged("missing or unknown 'format'");
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
    c.task_mix = j.value("task_mix", "");
    if (j.contains("paired")) {  // absent in results written before paired counts were kept
      auto paired = [&](const char* k) {
        const json& t = j.at("paired").at(k);
        return safety::PairedCounts{
            t.at("both").get<std::int64_t>(), t.at("lost").get<std::int64_t>(),
            t.at("gained").get<std::int64_t>(), t.at("neither").get<std::int64_t>()};
      };
      c.refusal_paired = paired("refusal");
      c.benign_paired = paired("benign_compliance");
    }
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
    auto it =
        std::find_if(rows.begin(), rows.end(), [&](const CompareRow& r) { return in_row(r, c); });
    if (it == rows.end()) {
      CompareRow r;
      r.task_mix = c.task_mix;
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
      if (!in_row(r, c)) continue;
      r.harmful_n = std::max(r.harmful_n, c.refusal_n);
      r.benign_n = std::max(r.benign_n, c.benign_n);
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
      return o.task_mix == r.task_mix && std::isfinite(ox) && std::isfinite(oy) && ox >= x &&
             oy >= y && (ox > x || oy > y);
    });
  }
  return rows;
}

}  // namespace safetune::recipes
