// A small SVG line chart for the run reports of ./linearize: a few named series of (x, y) points,
// axes with 5 ticks each, a legend. Optional log scale on y. No dependencies; the file is written
// atomically like every other output.
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

inline void write_svg_chart(const std::string& path, const std::string& title, const std::string& xlabel,
                            const std::string& ylabel, const std::vector<Series>& series, bool log_y = false) {
  const double W = 640, H = 400, L = 70, R = 20, Tp = 40, B = 50;
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  auto ty = [&](double y) { return log_y ? std::log10(std::max(y, 1e-12)) : y; };
  for (const Series& s : series)
    for (size_t i = 0; i < s.x.size(); i++) {
      if (!std::isfinite(s.y[i])) continue;
      x0 = std::min(x0, s.x[i]), x1 = std::max(x1, s.x[i]);
      y0 = std::min(y0, ty(s.y[i])), y1 = std::max(y1, ty(s.y[i]));
    }
  if (!(x0 <= x1)) x0 = 0, x1 = 1, y0 = 0, y1 = 1;  // no data: an empty frame
  if (x1 == x0) x1 = x0 + 1;
  if (y1 == y0) y1 = y0 + 1;
  auto px = [&](double x) { return L + (x - x0) / (x1 - x0) * (W - L - R); };
  auto py = [&](double y) { return H - B - (ty(y) - y0) / (y1 - y0) * (H - Tp - B); };
  const char* colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"};
  std::string s = strfmt("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%g\" height=\"%g\" "
                         "font-family=\"sans-serif\" font-size=\"12\">\n", W, H);
  s += strfmt("<rect width=\"%g\" height=\"%g\" fill=\"white\"/>\n", W, H);
  s += strfmt("<text x=\"%g\" y=\"22\" font-size=\"15\" text-anchor=\"middle\">%s</text>\n", W / 2, title.c_str());
  s += strfmt("<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" stroke=\"black\"/>\n", L, H - B, W - R, H - B);
  s += strfmt("<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" stroke=\"black\"/>\n", L, Tp, L, H - B);
  for (int i = 0; i <= 4; i++) {
    double xv = x0 + (x1 - x0) * i / 4, yv = y0 + (y1 - y0) * i / 4;
    double ylab = log_y ? std::pow(10.0, yv) : yv;
    s += strfmt("<text x=\"%g\" y=\"%g\" text-anchor=\"middle\">%.4g</text>\n", px(xv), H - B + 18, xv);
    s += strfmt("<text x=\"%g\" y=\"%g\" text-anchor=\"end\">%.4g</text>\n", L - 6,
                H - B - (yv - y0) / (y1 - y0) * (H - Tp - B) + 4, ylab);
  }
  s += strfmt("<text x=\"%g\" y=\"%g\" text-anchor=\"middle\">%s</text>\n", (L + W - R) / 2, H - 10, xlabel.c_str());
  s += strfmt("<text x=\"16\" y=\"%g\" text-anchor=\"middle\" transform=\"rotate(-90 16 %g)\">%s%s</text>\n",
              (Tp + H - B) / 2, (Tp + H - B) / 2, ylabel.c_str(), log_y ? " (log)" : "");
  for (size_t k = 0; k < series.size(); k++) {
    const Series& se = series[k];
    const char* c = colors[k % 5];
    if (se.dots) {
      for (size_t i = 0; i < se.x.size(); i++)
        if (std::isfinite(se.y[i]))
          s += strfmt("<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"%s\"/>\n", px(se.x[i]), py(se.y[i]), c);
    } else {
      s += strfmt("<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" points=\"", c);
      for (size_t i = 0; i < se.x.size(); i++)
        if (std::isfinite(se.y[i])) s += strfmt("%.1f,%.1f ", px(se.x[i]), py(se.y[i]));
      s += "\"/>\n";
    }
    s += strfmt("<rect x=\"%g\" y=\"%g\" width=\"12\" height=\"12\" fill=\"%s\"/>\n", W - R - 170, Tp + 4 + 18 * k, c);
    s += strfmt("<text x=\"%g\" y=\"%g\">%s</text>\n", W - R - 152, Tp + 15 + 18 * k, se.name.c_str());
  }
  s += "</svg>\n";
  write_file_atomic(path, s);
}

}  // namespace lolcats
