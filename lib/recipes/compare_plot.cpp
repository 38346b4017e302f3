// The comparison's Pareto plot (hand-written SVG): task metric against refusal retention.
#include <algorithm>
#include <cmath>

#include "compare_internal.hpp"
#include "util/svg.hpp"

namespace safetune::recipes {
using namespace compare_detail;

namespace {

bool plotted(const CompareRow& r) {
  return std::isfinite(r.refusal_retention.mean) && std::isfinite(r.task_metric.mean);
}

// The plot area and its data ranges: x is refusal retention, y the task metric, both padded
// around mean ± std of every plotted row.
struct Axes {
  static constexpr double W = 760, H = 480, left = 70, right = 230, top = 50, bottom = 60;
  static constexpr double pw = W - left - right, ph = H - top - bottom;
  double x0 = 1e300, x1 = -1e300, y0 = 1e300, y1 = -1e300;

  explicit Axes(const std::vector<CompareRow>& rows) {
    bool any = false;
    for (const auto& r : rows) {
      if (!plotted(r)) continue;
      any = true;
      x0 = std::min(x0, r.refusal_retention.mean - r.refusal_retention.std);
      x1 = std::max(x1, r.refusal_retention.mean + r.refusal_retention.std);
      y0 = std::min(y0, r.task_metric.mean - r.task_metric.std);
      y1 = std::max(y1, r.task_metric.mean + r.task_metric.std);
    }
    if (!any) x0 = 0, x1 = 1, y0 = 0, y1 = 1;
    pad(x0, x1);
    pad(y0, y1);
    y1 = std::min(y1, 1.0);
    if (y1 <= y0) y1 = y0 + 0.1;
  }
  static void pad(double& lo, double& hi) {
    double span = hi - lo;
    if (span < 0.05) {
      lo -= 0.05;
      hi += 0.05;
      span = hi - lo;
    }
    lo -= 0.08 * span;
    hi += 0.08 * span;
    lo = std::max(lo, 0.0);
  }
  double sx(double x) const { return left + (x - x0) / (x1 - x0) * pw; }
  double sy(double y) const { return top + ph - (y - y0) / (y1 - y0) * ph; }
};

const char* color_of(std::size_t i) {
  static const char* palette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                  "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
  return palette[i % 10];
}

// Background, title, grid with tick labels, frame and axis titles.
std::string frame(const Axes& a, const std::string& title) {
  const double left = Axes::left, top = Axes::top, pw = Axes::pw, ph = Axes::ph;
  std::string s;
  s += "<rect x=\"0\" y=\"0\" width=\"" + fmt("%.0f", Axes::W) + "\" height=\"" +
       fmt("%.0f", Axes::H) + "\" fill=\"white\"/>\n";
  s += "<text x=\"" + fmt("%.1f", left) + "\" y=\"24\" font-size=\"15\">" + svg::escape(title) +
       "</text>\n";
  for (int i = 0; i <= 5; ++i) {
    const double xv = a.x0 + (a.x1 - a.x0) * i / 5, yv = a.y0 + (a.y1 - a.y0) * i / 5;
    s += "<line x1=\"" + fmt("%.1f", a.sx(xv)) + "\" y1=\"" + fmt("%.1f", top) + "\" x2=\"" +
         fmt("%.1f", a.sx(xv)) + "\" y2=\"" + fmt("%.1f", top + ph) + "\" stroke=\"#e5e5e5\"/>\n";
    s += "<line x1=\"" + fmt("%.1f", left) + "\" y1=\"" + fmt("%.1f", a.sy(yv)) + "\" x2=\"" +
         fmt("%.1f", left + pw) + "\" y2=\"" + fmt("%.1f", a.sy(yv)) + "\" stroke=\"#e5e5e5\"/>\n";
    s += "<text x=\"" + fmt("%.1f", a.sx(xv)) + "\" y=\"" + fmt("%.1f", top + ph + 16) +
         "\" text-anchor=\"middle\">" + fmt("%.0f%%", 100 * xv) + "</text>\n";
    s += "<text x=\"" + fmt("%.1f", left - 6) + "\" y=\"" + fmt("%.1f", a.sy(yv) + 4) +
         "\" text-anchor=\"end\">" + fmt("%.0f%%", 100 * yv) + "</text>\n";
  }
  s += "<rect x=\"" + fmt("%.1f", left) + "\" y=\"" + fmt("%.1f", top) + "\" width=\"" +
       fmt("%.1f", pw) + "\" height=\"" + fmt("%.1f", ph) + "\" fill=\"none\" stroke=\"#333\"/>\n";
  s +=
      "<text x=\"" + fmt("%.1f", left + pw / 2) + "\" y=\"" + fmt("%.1f", Axes::H - 18) +
      "\" text-anchor=\"middle\">refusal retention (refusal rate after stage 2 / aligned)</text>\n";
  s += "<text transform=\"translate(18 " + fmt("%.1f", top + ph / 2) +
       ") rotate(-90)\" text-anchor=\"middle\">task metric (exact match)</text>\n";
  return s;
}

// The Pareto front as a dashed line, left to right.
std::string front_line(const Axes& a, const std::vector<CompareRow>& rows) {
  std::vector<const CompareRow*> front;
  for (const auto& r : rows)
    if (plotted(r) && r.pareto) front.push_back(&r);
  std::sort(front.begin(), front.end(),
            [](auto* x, auto* y) { return x->refusal_retention.mean < y->refusal_retention.mean; });
  if (front.size() < 2) return "";
  std::string poly;
  for (auto* r : front)
    poly += fmt("%.1f", a.sx(r->refusal_retention.mean)) + "," +
            fmt("%.1f", a.sy(r->task_metric.mean)) + " ";
  return "<polyline points=\"" + poly +
         "\" fill=\"none\" stroke=\"#444\" stroke-dasharray=\"5,4\"/>\n";
}

// One row: its point, error bars of one standard deviation each way, a ring when on the front.
std::string point(const Axes& a, const CompareRow& r, const char* color) {
  const double cx = a.sx(r.refusal_retention.mean), cy = a.sy(r.task_metric.mean);
  const double xl = a.sx(r.refusal_retention.mean - r.refusal_retention.std),
               xr = a.sx(r.refusal_retention.mean + r.refusal_retention.std);
  const double yt = a.sy(r.task_metric.mean + r.task_metric.std),
               yb = a.sy(r.task_metric.mean - r.task_metric.std);
  std::string s;
  s += "<g stroke=\"" + std::string(color) + "\"><title>" + svg::escape(row_name(r)) + "</title>";
  s += "<line x1=\"" + fmt("%.1f", xl) + "\" y1=\"" + fmt("%.1f", cy) + "\" x2=\"" +
       fmt("%.1f", xr) + "\" y2=\"" + fmt("%.1f", cy) + "\"/>";
  s += "<line x1=\"" + fmt("%.1f", cx) + "\" y1=\"" + fmt("%.1f", yt) + "\" x2=\"" +
       fmt("%.1f", cx) + "\" y2=\"" + fmt("%.1f", yb) + "\"/>";
  if (r.pareto)
    s += "<circle cx=\"" + fmt("%.1f", cx) + "\" cy=\"" + fmt("%.1f", cy) +
         "\" r=\"9\" fill=\"none\" stroke-width=\"2\"/>";
  s += "<circle cx=\"" + fmt("%.1f", cx) + "\" cy=\"" + fmt("%.1f", cy) + "\" r=\"5\" fill=\"" +
       std::string(color) + "\"/>";
  s += "</g>\n";
  return s;
}

// Every row's colour and name (plotted or not), then what the marks mean.
std::string legend(const std::vector<CompareRow>& rows) {
  const double lx = Axes::left + Axes::pw + 18;
  double ly = Axes::top + 8;
  std::string s;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    s += "<circle cx=\"" + fmt("%.1f", lx) + "\" cy=\"" + fmt("%.1f", ly) + "\" r=\"5\" fill=\"" +
         color_of(i) + "\"/>";
    s += "<text x=\"" + fmt("%.1f", lx + 10) + "\" y=\"" + fmt("%.1f", ly + 4) + "\">" +
         svg::escape(row_name(rows[i])) + (rows[i].pareto ? " (Pareto)" : "") + "</text>\n";
    ly += 18;
  }
  s += "<text x=\"" + fmt("%.1f", lx) + "\" y=\"" + fmt("%.1f", ly + 10) +
       "\" fill=\"#444\">ringed + dashed: Pareto front</text>\n";
  s += "<text x=\"" + fmt("%.1f", lx) + "\" y=\"" + fmt("%.1f", ly + 26) +
       "\" fill=\"#444\">bars: ± 1 std over seeds</text>\n";
  return s;
}

}  // namespace

std::string pareto_svg(const std::vector<CompareRow>& rows, const std::string& title) {
  const Axes axes(rows);
  std::string s = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  s += svg::open(fmt("%.0f", Axes::W), fmt("%.0f", Axes::H),
                 {{"font-family", "sans-serif"}, {"font-size", "12"}});
  s += frame(axes, title);
  s += front_line(axes, rows);
  for (std::size_t i = 0; i < rows.size(); ++i)
    if (plotted(rows[i])) s += point(axes, rows[i], color_of(i));
  s += legend(rows);
  s += svg::close();
  return s;
}

}  // namespace safetune::recipes
