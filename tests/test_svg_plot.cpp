// The report charts of ./linearize (apps/svg_plot.h): round ticks that enclose the data, decades on
// log axes, gridlines and a legend outside the plot area. The PNG renderings were looked at; this
// checks the rules that make them readable.
#include <cmath>

#include "apps/svg_plot.h"
#include "autograd/gradcheck.h"
#include "tests/helpers.h"

using namespace lolcats;

namespace {

// v = m x 10^k with m in {1, 2, 5} (up to rounding).
bool round_value(double v) {
  if (v == 0) return true;
  double k = std::floor(std::log10(std::fabs(v)) + 1e-9), m = std::fabs(v) / std::pow(10.0, k);
  return std::fabs(m - 1) < 1e-6 || std::fabs(m - 2) < 1e-6 || std::fabs(m - 5) < 1e-6;
}

std::string read_file(const std::string& path) {
  std::string out;
  std::FILE* f = std::fopen(path.c_str(), "rb");
  REQUIRE(f);
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) out.append(buf, n);
  std::fclose(f);
  return out;
}

}  // namespace

TEST_CASE("charts: linear ticks are round multiples of a 1-2-5 step and enclose the data", "[plot]") {
  CHECK(linear_axis(1, 75, true).ticks == std::vector<double>{0, 20, 40, 60, 80});
  CHECK(linear_axis(0, 29, true).ticks == std::vector<double>{0, 5, 10, 15, 20, 25, 30});
  CHECK(linear_axis(0, 1, true).ticks == std::vector<double>{0, 1});  // two layers: no 0.2
  std::vector<double> r = random_normal(400, 3);
  for (size_t i = 0; i + 1 < r.size(); i += 2) {  // spans from 1e-6 to 1e6, offsets up to a few spans
    double span = std::pow(10.0, std::max(-6.0, std::min(6.0, 2 * r[i]))), lo = r[i + 1] * 3 * span,
           hi = lo + span;
    Axis a = linear_axis(lo, hi, false);
    INFO("data [" << lo << ", " << hi << "]");
    REQUIRE(a.ticks.size() >= 3);
    CHECK(a.ticks.size() <= 12);
    const double step = a.ticks[1] - a.ticks[0];
    CHECK(round_value(step));
    for (double t : a.ticks) CHECK(std::fabs(t / step - std::round(t / step)) < 1e-6);  // multiples of it
    CHECK(a.lo <= lo);
    CHECK(a.hi >= hi);
  }
}

TEST_CASE("charts: log ticks are decades, with 2 and 5 when the axis spans two decades or fewer", "[plot]") {
  Axis wide = log_axis(0.0087, 0.131);
  CHECK(wide.ticks == std::vector<double>{0.001, 0.01, 0.1, 1});
  CHECK(wide.lo == -3);
  CHECK(wide.hi == 0);
  Axis narrow = log_axis(1.5, 40);
  CHECK(narrow.ticks.size() == 7);  // 1 2 5 10 20 50 100
  for (double t : narrow.ticks) CHECK(round_value(t));
  CHECK(tick_label(0.001, wide) == "0.001");
  CHECK(tick_label(0.25, linear_axis(0, 1, false)) == "0.2");  // step 0.2: one decimal
}

TEST_CASE("charts: the SVG has gridlines, round tick labels and the legend above the plot", "[plot]") {
  const std::string path = "build/test_tmp_chart.svg";
  Series train{"train loss", {}, {}}, val{"validation loss", {5, 10}, {2.0, 1.5}, true};
  for (int i = 1; i <= 10; i++) train.x.push_back(i), train.y.push_back(3.0 / i);
  write_svg_chart(path, "t", "step", "loss", {train, val}, false);
  const std::string svg = read_file(path);
  CHECK(svg.find("stroke=\"#e6e6e6\"") != std::string::npos);
  CHECK(svg.find(">0.5</text>") != std::string::npos);  // y ticks 0.0, 0.5, ..., 3.0
  CHECK(svg.find(">10</text>") != std::string::npos);  // x ticks 0, 2, ..., 10
  // Every legend entry sits above the plot area's top edge (y = 62), every data point below it.
  size_t at = svg.find("<text x=\"98\"");
  REQUIRE(at != std::string::npos);
  CHECK(svg.find("y=\"50\"", at) == at + 13);
  std::remove(path.c_str());
}

TEST_CASE("charts: a legend too wide for one row wraps, and the plot area moves below it", "[plot]") {
  const std::string path = "build/test_tmp_chart_legend.svg";
  std::vector<Series> series;
  for (const char* name : {"softmax f32", "LoLCATs f32", "softmax bf16", "LoLCATs bf16", "transformers f32",
                           "transformers bf16"})
    series.push_back(Series{name, {512, 2048}, {10, 20}});
  write_svg_chart(path, "t", "context", "ms", series, false);
  const std::string svg = read_file(path);
  std::remove(path.c_str());
  // The frame of the plot area is the rect with stroke="black"; its y is the plot's top edge.
  size_t frame = svg.find("fill=\"none\" stroke=\"black\"");
  REQUIRE(frame != std::string::npos);
  size_t ry = svg.rfind(" y=\"", frame);
  const double top = std::stod(svg.substr(ry + 4));
  CHECK(top > 62);  // moved down for a second legend row
  // Every legend label lies within the width and above the plot area; every entry is present.
  int labels = 0;
  for (size_t at = 0; (at = svg.find("<text x=\"", at)) != std::string::npos; at++) {
    const double x = std::stod(svg.substr(at + 9));
    const size_t yq = svg.find("y=\"", at);
    const double y = std::stod(svg.substr(yq + 3));
    const size_t open = svg.find('>', at), close = svg.find("</text>", open);
    const std::string text = svg.substr(open + 1, close - open - 1);
    for (const Series& s : series)
      if (text == s.name) {
        labels++;
        CHECK(y < top);
        CHECK(x + 7.0 * double(text.size()) <= 640 - 24 + 1e-9);
      }
  }
  CHECK(labels == 6);
}
