// A small SVG heatmap (beside the line charts of apps/svg_plot.h), for ./eval's passkey grid: a
// table of values in [0, 1], one coloured cell each, from red (0) through yellow (0.5) to green
// (1), with its value written in it (in %), the row and column labels, axis titles and a colour
// bar. A missing value (NaN) is a grey cell marked "-". Text is XML-escaped (titles hold paths), and
// the picture widens to its longest line (about 7 px a character at 12 px, 8.5 at 15 px).
#pragma once
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "data/safetensors.h"
#include "tensor/check.h"

namespace lolcats {

struct Heatmap {
  std::string title, subtitle, xlabel, ylabel;
  std::vector<std::string> columns, rows;   // labels: columns left to right, rows top to bottom
  std::vector<std::vector<double>> values;  // (rows, columns), in [0, 1]
};

inline std::string xml_escape(const std::string& s) {
  std::string r;
  for (char c : s) {
    if (c == '&') r += "&amp;";
    else if (c == '<') r += "&lt;";
    else if (c == '>') r += "&gt;";
    else if (c == '"') r += "&quot;";
    else r += c;
  }
  return r;
}

// Red (0) -> yellow (0.5) -> green (1), light enough for black text.
inline std::string heat_color(double v) {
  const double lo[3] = {230, 124, 115}, mid[3] = {255, 214, 102}, hi[3] = {87, 187, 138};
  v = std::min(1.0, std::max(0.0, v));
  const double* a = v < 0.5 ? lo : mid;
  const double* b = v < 0.5 ? mid : hi;
  const double t = v < 0.5 ? 2 * v : 2 * v - 1;
  int c[3];
  for (int k = 0; k < 3; k++) c[k] = int(std::lround(a[k] + t * (b[k] - a[k])));
  return strfmt("#%02x%02x%02x", c[0], c[1], c[2]);
}

inline std::string svg_heatmap(const Heatmap& h) {
  const size_t R = h.rows.size(), C = h.columns.size();
  ENSURE(h.values.size() == R, "heatmap: %zu rows of values for %zu row labels", h.values.size(), R);
  for (const std::vector<double>& row : h.values)
    ENSURE(row.size() == C, "heatmap: a row of %zu values for %zu columns", row.size(), C);
  const double cw = 84, ch = 26, L = 96, bar = 60;  // cell size, left margin, colour bar room
  const double T = h.subtitle.empty() ? 44 : 62;      // the grid's top
  const double grid_w = cw * double(C), grid_h = ch * double(R), bh = std::max(grid_h, 100.0);
  // The x label centred under the grid, or further right when it is wider than the grid.
  const double xl_half = 3.5 * double(h.xlabel.size()), xl = std::max(L + grid_w / 2, xl_half + 24);
  const double W = std::max({L + grid_w + bar + 16, 8.5 * double(h.title.size()) + 24,
                             7.0 * double(h.subtitle.size()) + 24, xl + xl_half + 12});
  const double H = T + std::max(grid_h + 50, bh + 12);
  std::string s = strfmt("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%g\" height=\"%g\" "
                         "font-family=\"sans-serif\" font-size=\"12\">\n", W, H);
  s += strfmt("<rect width=\"%g\" height=\"%g\" fill=\"white\"/>\n", W, H);
  s += strfmt("<text x=\"%g\" y=\"22\" font-size=\"15\" text-anchor=\"middle\">%s</text>\n", W / 2,
              xml_escape(h.title).c_str());
  if (!h.subtitle.empty())
    s += strfmt("<text x=\"%g\" y=\"42\" text-anchor=\"middle\">%s</text>\n", W / 2, xml_escape(h.subtitle).c_str());
  for (size_t r = 0; r < R; r++) {
    const double y = T + ch * double(r);
    s += strfmt("<text x=\"%g\" y=\"%g\" text-anchor=\"end\">%s</text>\n", L - 8, y + ch / 2 + 4,
                xml_escape(h.rows[r]).c_str());
    for (size_t c = 0; c < C; c++) {
      const double v = h.values[r][c], x = L + cw * double(c);
      const bool known = std::isfinite(v);
      s += strfmt("<rect class=\"cell\" x=\"%g\" y=\"%g\" width=\"%g\" height=\"%g\" fill=\"%s\" stroke=\"white\"/>\n", x,
                  y, cw, ch, known ? heat_color(v).c_str() : "#dddddd");
      s += strfmt("<text x=\"%g\" y=\"%g\" text-anchor=\"middle\">%s</text>\n", x + cw / 2, y + ch / 2 + 4,
                  known ? strfmt("%.0f", 100 * v).c_str() : "-");
    }
  }
  const double bottom = T + ch * double(R);
  for (size_t c = 0; c < C; c++)
    s += strfmt("<text x=\"%g\" y=\"%g\" text-anchor=\"middle\">%s</text>\n", L + cw * (double(c) + 0.5), bottom + 18,
                xml_escape(h.columns[c]).c_str());
  s += strfmt("<text x=\"%g\" y=\"%g\" text-anchor=\"middle\">%s</text>\n", xl, bottom + 40,
              xml_escape(h.xlabel).c_str());
  const double mid = T + ch * double(R) / 2;
  s += strfmt("<text x=\"16\" y=\"%g\" text-anchor=\"middle\" transform=\"rotate(-90 16 %g)\">%s</text>\n", mid, mid,
              xml_escape(h.ylabel).c_str());
  // The colour bar: 100 % at the top, 0 % at the bottom, ticks every 25 %.
  const double bx = L + grid_w + 16;
  const int steps = 20;
  for (int i = 0; i < steps; i++)
    s += strfmt("<rect x=\"%g\" y=\"%.1f\" width=\"14\" height=\"%.1f\" fill=\"%s\"/>\n", bx, T + bh * i / steps,
                bh / steps + 0.5, heat_color(1.0 - (i + 0.5) / steps).c_str());
  for (int p = 0; p <= 100; p += 25)
    s += strfmt("<text x=\"%g\" y=\"%.1f\">%d%%</text>\n", bx + 18, T + bh * (100 - p) / 100 + 4, p);
  s += "</svg>\n";
  return s;
}

inline void write_svg_heatmap(const std::string& path, const Heatmap& h) { write_file_atomic(path, svg_heatmap(h)); }

}  // namespace lolcats
