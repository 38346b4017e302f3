// The report's charts as hand-written SVG: grouped bars with intervals, lines over steps.
#include <algorithm>
#include <string>
#include <vector>

#include "safetune/safety/probes.hpp"
#include "safetune/safety/report.hpp"
#include "safety/report_format.hpp"
#include "util/svg.hpp"

namespace safetune::safety {
namespace {
using report_format::num;

const char* kPalette[] = {"#7a8ca3", "#d9822b", "#3a9d5d", "#b04a5a", "#6b5ca5", "#2d7fb8"};

// The start of every report chart: the root element, its title, a white background, the heading.
std::string chart_head(int width, int height, int left, const std::string& title) {
  using std::to_string;
  std::string s = svg::open(to_string(width), to_string(height),
                            {{"font-family", "sans-serif"}, {"font-size", "11"}, {"role", "img"}});
  s += svg::element("title", {}, svg::escape(title)) + "\n";
  s += svg::element("rect", {{"width", "100%"}, {"height", "100%"}, {"fill", "#ffffff"}}) + "\n";
  s += svg::element(
           "text",
           {{"x", to_string(left)}, {"y", "20"}, {"font-size", "14"}, {"font-weight", "bold"}},
           svg::escape(title)) +
       "\n";
  return s;
}

}  // namespace

std::string svg_grouped_bars(const std::string& title, const std::vector<std::string>& series_names,
                             const std::vector<BarGroup>& groups) {
  // Labels are rotated -35 degrees: long ones need room below the axis and, for the first group,
  // to the left of it (about 5.5 px per character at 11 px sans-serif).
  std::size_t longest = 0;
  for (const auto& g : groups) longest = std::max(longest, utf8_length(g.label));
  const int label_px = static_cast<int>(std::min<std::size_t>(longest, 40) * 55 / 10);
  const int bar_w = 18, gap = 22, right = 16, top = 48, plot_h = 200;
  const int left = std::clamp(label_px * 82 / 100 - 20, 52, 220);
  const int bottom = std::clamp(label_px * 57 / 100 + 30, 60, 160);
  const int n_series = std::max<int>(1, static_cast<int>(series_names.size()));
  const int group_w = n_series * bar_w + gap;
  const int width = std::max(420, left + right + static_cast<int>(groups.size()) * group_w);
  const int height = top + plot_h + bottom;
  auto y_of = [&](double v) { return top + plot_h * (1.0 - std::clamp(v, 0.0, 1.0)); };
  using std::to_string;
  std::string s = chart_head(width, height, left, title);
  for (int t = 0; t <= 4; ++t) {
    double v = t / 4.0, y = y_of(v);
    s += svg::element("line", {{"x1", to_string(left)},
                               {"x2", to_string(width - right)},
                               {"y1", num(y)},
                               {"y2", num(y)},
                               {"stroke", "#dddddd"}}) +
         "\n";
    s += svg::element("text",
                      {{"x", to_string(left - 6)}, {"y", num(y + 4)}, {"text-anchor", "end"}},
                      to_string(t * 25) + "%") +
         "\n";
  }
  for (std::size_t i = 0; i < series_names.size(); ++i) {
    int x = left + static_cast<int>(i) * 110;
    s += svg::element("rect", {{"x", to_string(x)},
                               {"y", "30"},
                               {"width", "10"},
                               {"height", "10"},
                               {"fill", kPalette[i % 6]}}) +
         "\n";
    s += svg::element("text", {{"x", to_string(x + 14)}, {"y", "39"}},
                      svg::escape(series_names[i])) +
         "\n";
  }
  for (std::size_t g = 0; g < groups.size(); ++g) {
    const BarGroup& grp = groups[g];
    const int gx = left + static_cast<int>(g) * group_w + gap / 2;
    for (std::size_t k = 0; k < grp.values.size() && k < static_cast<std::size_t>(n_series); ++k) {
      if (k >= grp.n.size() || grp.n[k] == 0) continue;
      const double x = gx + static_cast<double>(k) * bar_w;
      const double v = grp.values[k], y = y_of(v);
      const std::string tip = grp.label + " / " + (k < series_names.size() ? series_names[k] : "") +
                              ": " + num(v * 100) + "% (n=" + to_string(grp.n[k]) + ", 95% CI " +
                              num(grp.lo[k] * 100) + "-" + num(grp.hi[k] * 100) + "%)";
      const double cx = x + (bar_w - 3) / 2.0, ylo = y_of(k < grp.lo.size() ? grp.lo[k] : v),
                   yhi = y_of(k < grp.hi.size() ? grp.hi[k] : v);
      auto stroke = [](double x1, double x2, double y1, double y2) {
        return svg::element("line", {{"x1", num(x1)},
                                     {"x2", num(x2)},
                                     {"y1", num(y1)},
                                     {"y2", num(y2)},
                                     {"stroke", "#222222"}});
      };
      s += svg::element("g", {},
                        svg::element("title", {}, svg::escape(tip)) +
                            svg::element("rect", {{"x", num(x)},
                                                  {"y", num(y)},
                                                  {"width", to_string(bar_w - 3)},
                                                  {"height", num(top + plot_h - y)},
                                                  {"fill", kPalette[k % 6]}}) +
                            stroke(cx, cx, ylo, yhi) + stroke(cx - 4, cx + 4, ylo, ylo) +
                            stroke(cx - 4, cx + 4, yhi, yhi)) +
           "\n";
    }
    const double lx = gx + n_series * bar_w / 2.0, ly = top + plot_h + 12;
    s += svg::element("text",
                      {{"x", num(lx)},
                       {"y", num(ly)},
                       {"text-anchor", "end"},
                       {"transform", "rotate(-35 " + num(lx) + " " + num(ly) + ")"}},
                      svg::escape(grp.label)) +
         "\n";
  }
  s += svg::element("line", {{"x1", to_string(left)},
                             {"x2", to_string(width - right)},
                             {"y1", to_string(top + plot_h)},
                             {"y2", to_string(top + plot_h)},
                             {"stroke", "#444444"}}) +
       "\n";
  return s + svg::close();
}

std::string svg_line_chart(const std::string& title, const std::vector<Series>& series,
                           const std::string& x_label, const std::string& y_label) {
  const int width = 640, height = 320, left = 60, right = 20, top = 48, bottom = 48;
  const int pw = width - left - right, ph = height - top - bottom;
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  for (const auto& s : series)
    for (const auto& p : s.points)
      if (std::isfinite(p.step) && std::isfinite(p.value)) {
        x0 = std::min(x0, p.step);
        x1 = std::max(x1, p.step);
        y0 = std::min(y0, p.value);
        y1 = std::max(y1, p.value);
      }
  if (!std::isfinite(x0)) {
    x0 = 0;
    x1 = 1;
    y0 = 0;
    y1 = 1;
  }
  if (y0 >= 0 && y1 <= 1) {
    y0 = 0;
    y1 = 1;
  }  // rates: keep the full 0-1 scale so drops look their size
  if (x1 - x0 < 1e-12) {
    x0 -= 0.5;
    x1 += 0.5;
  }
  if (y1 - y0 < 1e-12) {
    y0 -= 0.5;
    y1 += 0.5;
  }
  auto X = [&](double x) { return left + pw * (x - x0) / (x1 - x0); };
  auto Y = [&](double y) { return top + ph * (1.0 - (y - y0) / (y1 - y0)); };
  using std::to_string;
  std::string s = chart_head(width, height, left, title);
  for (int t = 0; t <= 4; ++t) {
    double yv = y0 + (y1 - y0) * t / 4.0, xv = x0 + (x1 - x0) * t / 4.0;
    s += svg::element("line", {{"x1", to_string(left)},
                               {"x2", to_string(left + pw)},
                               {"y1", num(Y(yv))},
                               {"y2", num(Y(yv))},
                               {"stroke", "#dddddd"}}) +
         "\n";
    s += svg::element("text",
                      {{"x", to_string(left - 6)}, {"y", num(Y(yv) + 4)}, {"text-anchor", "end"}},
                      num(yv, 2)) +
         "\n";
    s +=
        svg::element(
            "text", {{"x", num(X(xv))}, {"y", to_string(top + ph + 16)}, {"text-anchor", "middle"}},
            num(xv, 0)) +
        "\n";
  }
  s += svg::element("text",
                    {{"x", to_string(left + pw / 2)},
                     {"y", to_string(height - 8)},
                     {"text-anchor", "middle"}},
                    svg::escape(x_label)) +
       "\n";
  s += svg::element("text",
                    {{"x", "14"},
                     {"y", to_string(top + ph / 2)},
                     {"text-anchor", "middle"},
                     {"transform", "rotate(-90 14 " + to_string(top + ph / 2) + ")"}},
                    svg::escape(y_label)) +
       "\n";
  for (std::size_t i = 0; i < series.size(); ++i) {
    const char* colour = kPalette[(i + 1) % 6];
    std::string pts;
    for (const auto& p : series[i].points)
      if (std::isfinite(p.step) && std::isfinite(p.value))
        pts += num(X(p.step)) + "," + num(Y(p.value)) + " ";
    s += svg::element(
             "polyline",
             {{"fill", "none"}, {"stroke", colour}, {"stroke-width", "2"}, {"points", pts}}) +
         "\n";
    for (const auto& p : series[i].points)
      if (std::isfinite(p.step) && std::isfinite(p.value))
        s += svg::element(
                 "circle",
                 {{"cx", num(X(p.step))}, {"cy", num(Y(p.value))}, {"r", "3"}, {"fill", colour}},
                 svg::element("title", {},
                              svg::escape(series[i].name + " @ " + num(p.step, 0) + ": " +
                                          num(p.value, 4)))) +
             "\n";
    int lx = left + static_cast<int>(i) * 160;
    s += svg::element(
        "rect",
        {{"x", to_string(lx)}, {"y", "30"}, {"width", "10"}, {"height", "10"}, {"fill", colour}});
    s += svg::element("text", {{"x", to_string(lx + 14)}, {"y", "39"}},
                      svg::escape(series[i].name)) +
         "\n";
  }
  return s + svg::close();
}

}  // namespace safetune::safety
