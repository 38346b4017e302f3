// The comparison's Pareto plot (hand-written SVG): task metric against refusal retention.
#include <algorithm>
#include <cmath>

#include "compare_internal.hpp"
#include "util/svg.hpp"

namespace safetune::recipes {
using namespace compare_detail;

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

}  // namespace safetune::recipes
