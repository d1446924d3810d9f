// A small SVG line chart for the run reports of ./linearize: a few named series of (x, y) points.
//   axes    ticks at round values (1, 2 or 5 x 10^k), the axis widened to the ticks that enclose
//           the data; a log y axis (when asked for and the data spans at least a factor 10) has
//           its ticks at decades, with 2 and 5 between them when it spans two decades or fewer
//   grid    light lines at every tick, under the data
//   legend  between the title and the plot area (in rows as needed), so it never covers data
// No dependencies; the file is written atomically like every other output.
#pragma once
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "data/safetensors.h"
#include "tensor/check.h"

namespace lolcats {

struct Series {
  std::string name;
  std::vector<double> x, y;
  bool dots = false;  // points instead of a line (sparse series, e.g. validation)
};

// An axis: its ends (in plotted units: log10 of the value on a log axis) and labelled ticks.
struct Axis {
  double lo = 0, hi = 1;
  bool log = false;
  std::vector<double> ticks;  // values (not logs)
};

// Ticks at multiples of a round step (1, 2 or 5 x 10^k) giving nearest `target` intervals over
// [lo, hi]; the axis then runs from the tick at or below lo to the tick at or above hi.
// `integer`: the values are counts (layers, steps), so the step is at least 1.
inline Axis linear_axis(double lo, double hi, bool integer, int target = 5) {
  if (!(hi > lo)) lo -= 0.5, hi += 0.5;  // one value: a unit interval around it
  const double raw = (hi - lo) / target, mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag, best = INFINITY;
  for (double m : {1.0, 2.0, 5.0, 10.0}) {  // the step whose interval count is nearest the target
    double miss = std::fabs((hi - lo) / (m * mag) - target);
    if (miss < best) best = miss, step = m * mag;
  }
  if (integer) step = std::max(step, 1.0);
  Axis a;
  a.lo = std::floor(lo / step + 1e-9) * step;
  a.hi = std::ceil(hi / step - 1e-9) * step;
  const int n = int(std::lround((a.hi - a.lo) / step));
  for (int i = 0; i <= n; i++) a.ticks.push_back(a.lo + i * step);  // no drift from repeated sums
  return a;
}

// Decades enclosing [lo, hi] (both > 0), with 2 and 5 x 10^k as well when they are few.
inline Axis log_axis(double lo, double hi) {
  Axis a;
  a.log = true;
  a.lo = std::floor(std::log10(lo) + 1e-9);
  a.hi = std::max(std::ceil(std::log10(hi) - 1e-9), a.lo + 1);
  const bool fine = a.hi - a.lo <= 2;
  for (double k = a.lo; k <= a.hi; k++)
    for (double m : {1.0, 2.0, 5.0})
      if ((m == 1.0 || fine) && k + std::log10(m) <= a.hi + 1e-9) a.ticks.push_back(m * std::pow(10.0, k));
  return a;
}

// A tick label with just the digits its step needs: 0.02, 1.5, 300, 1e+06.
inline std::string tick_label(double v, const Axis& a) {
  if (a.log || std::fabs(v) >= 1e5) return strfmt("%g", v);
  double step = a.ticks.size() > 1 ? a.ticks[1] - a.ticks[0] : 1.0;
  int decimals = std::max(0, int(std::ceil(-std::log10(step) - 1e-9)));
  return strfmt("%.*f", decimals, v);
}

inline void write_svg_chart(const std::string& path, const std::string& title, const std::string& xlabel,
                            const std::string& ylabel, const std::vector<Series>& series, bool log_y = false) {
  const double W = 640, H = 420, L = 74, R = 24, B = 52;  // plot area: [L, W-R] x [Tp, H-B]
  // Legend entries left to right above the plot area, wrapping to another row (which moves the
  // plot area down) when the width is used up: (x, row) of each.
  std::vector<std::pair<double, int>> spot;
  {
    double lx = L;
    int row = 0;
    for (const Series& se : series) {
      const double w = 24 + 7.0 * double(se.name.size()) + 24;  // about 7 px per character at 12 px
      if (lx > L && lx + w - 24 > W - R) lx = L, row++;
      spot.push_back({lx, row});
      lx += w;
    }
  }
  const double Tp = 62 + 18.0 * (spot.empty() ? 0 : spot.back().second);
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  bool integer_x = true;
  for (const Series& s : series)
    for (size_t i = 0; i < s.x.size(); i++) {
      if (!std::isfinite(s.y[i]) || (log_y && s.y[i] <= 0)) continue;
      x0 = std::min(x0, s.x[i]), x1 = std::max(x1, s.x[i]);
      y0 = std::min(y0, s.y[i]), y1 = std::max(y1, s.y[i]);
      integer_x = integer_x && s.x[i] == std::floor(s.x[i]);
    }
  if (!(x0 <= x1)) x0 = 0, x1 = 1, y0 = 1, y1 = 2;  // no data: an empty frame
  Axis ax = linear_axis(x0, x1, integer_x);
  // A log axis over less than a factor 10 would show no decade: such data is plotted linearly.
  const bool use_log = log_y && y1 / y0 >= 10;
  Axis ay = use_log ? log_axis(y0, y1) : linear_axis(y0, y1, false);
  auto tv = [&](double y) { return use_log ? std::log10(y) : y; };
  // Axis ends sit `pad` pixels inside the frame, so points at the ends are not cut by it.
  const double pad = 8;
  auto px = [&](double x) { return L + pad + (x - ax.lo) / (ax.hi - ax.lo) * (W - L - R - 2 * pad); };
  auto py = [&](double y) { return H - B - pad - (tv(y) - ay.lo) / (ay.hi - ay.lo) * (H - Tp - B - 2 * pad); };

  const char* colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"};
  std::string s = strfmt("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%g\" height=\"%g\" "
                         "font-family=\"sans-serif\" font-size=\"12\">\n", W, H);
  s += strfmt("<rect width=\"%g\" height=\"%g\" fill=\"white\"/>\n", W, H);
  s += strfmt("<text x=\"%g\" y=\"22\" font-size=\"15\" text-anchor=\"middle\">%s</text>\n", W / 2, title.c_str());
  // Grid and tick labels first, so the data is drawn over them.
  for (double t : ax.ticks) {
    s += strfmt("<line x1=\"%.1f\" y1=\"%g\" x2=\"%.1f\" y2=\"%g\" stroke=\"#e6e6e6\"/>\n", px(t), Tp, px(t), H - B);
    s += strfmt("<text x=\"%.1f\" y=\"%g\" text-anchor=\"middle\">%s</text>\n", px(t), H - B + 18,
                tick_label(t, ax).c_str());
  }
  for (double t : ay.ticks) {
    s += strfmt("<line x1=\"%g\" y1=\"%.1f\" x2=\"%g\" y2=\"%.1f\" stroke=\"#e6e6e6\"/>\n", L, py(t), W - R, py(t));
    s += strfmt("<text x=\"%g\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n", L - 6, py(t) + 4,
                tick_label(t, ay).c_str());
  }
  s += strfmt("<rect x=\"%g\" y=\"%g\" width=\"%g\" height=\"%g\" fill=\"none\" stroke=\"black\"/>\n", L, Tp,
              W - L - R, H - Tp - B);
  s += strfmt("<text x=\"%g\" y=\"%g\" text-anchor=\"middle\">%s</text>\n", (L + W - R) / 2, H - 12, xlabel.c_str());
  s += strfmt("<text x=\"16\" y=\"%g\" text-anchor=\"middle\" transform=\"rotate(-90 16 %g)\">%s%s</text>\n",
              (Tp + H - B) / 2, (Tp + H - B) / 2, ylabel.c_str(), use_log ? " (log scale)" : "");
  for (size_t k = 0; k < series.size(); k++) {  // the legend
    const char* c = colors[k % 6];
    const double lx = spot[k].first, ly = 46 + 18.0 * spot[k].second;
    if (series[k].dots)
      s += strfmt("<circle cx=\"%g\" cy=\"%g\" r=\"3.5\" fill=\"%s\"/>\n", lx + 9, ly, c);
    else
      s += strfmt("<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" stroke=\"%s\" stroke-width=\"2\"/>\n", lx, ly,
                  lx + 18, ly, c);
    s += strfmt("<text x=\"%g\" y=\"%g\">%s</text>\n", lx + 24, ly + 4, series[k].name.c_str());
  }
  for (size_t k = 0; k < series.size(); k++) {
    const Series& se = series[k];
    const char* c = colors[k % 6];
    auto shown = [&](size_t i) { return std::isfinite(se.y[i]) && !(log_y && se.y[i] <= 0); };
    if (se.dots) {
      for (size_t i = 0; i < se.x.size(); i++)
        if (shown(i))
          s += strfmt("<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"%s\"/>\n", px(se.x[i]), py(se.y[i]), c);
    } else {
      s += strfmt("<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" points=\"", c);
      for (size_t i = 0; i < se.x.size(); i++)
        if (shown(i)) s += strfmt("%.1f,%.1f ", px(se.x[i]), py(se.y[i]));
      s += "\"/>\n";
    }
  }
  s += "</svg>\n";
  write_file_atomic(path, s);
}

}  // namespace lolcats
