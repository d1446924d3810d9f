#include "autograd/gradcheck.h"

#include <cmath>

#include "tensor/check.h"

namespace lolcats {

std::vector<double> random_normal(int64_t n, uint64_t seed, double scale) {
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  auto next = [&]() {  // splitmix64 -> uniform in (0, 1)
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return (double((z ^ (z >> 31)) >> 11) + 0.5) / 9007199254740992.0;
  };
  std::vector<double> out(n);
  for (int64_t i = 0; i < n; i++)
    out[i] = scale * std::sqrt(-2.0 * std::log(next())) * std::cos(6.283185307179586 * next());
  return out;
}

static double project(const std::vector<double>& y, const std::vector<double>& r) {
  double s = 0;
  for (size_t i = 0; i < y.size(); i++) s += y[i] * r[i];
  return s;
}

GradCheckResult gradcheck(const ForwardFn& forward, const BackwardFn& backward, Buffers inputs,
                          uint64_t seed, double h, double atol, double rtol) {
  std::vector<double> y = forward(inputs);
  std::vector<double> r = random_normal(int64_t(y.size()), seed + 17);
  Buffers analytic = backward(inputs, r);
  ENSURE(analytic.size() == inputs.size(), "gradcheck: backward returned %zu gradients for %zu inputs",
        analytic.size(), inputs.size());
  GradCheckResult res;
  int reported = 0;
  for (size_t k = 0; k < inputs.size(); k++) {
    if (analytic[k].empty()) continue;
    ENSURE(analytic[k].size() == inputs[k].size(), "gradcheck: gradient %zu has %zu values, input %zu",
          k, analytic[k].size(), inputs[k].size());
    for (size_t j = 0; j < inputs[k].size(); j++) {
      double x0 = inputs[k][j];
      inputs[k][j] = x0 + h;
      double lp = project(forward(inputs), r);
      inputs[k][j] = x0 - h;
      double lm = project(forward(inputs), r);
      inputs[k][j] = x0;
      double numeric = (lp - lm) / (2 * h), err = std::fabs(analytic[k][j] - numeric);
      res.checked++;
      res.max_abs_err = std::max(res.max_abs_err, err);
      res.max_rel_err = std::max(res.max_rel_err, err / (std::fabs(numeric) + 1e-300));
      if (err > atol + rtol * std::fabs(numeric)) {
        res.ok = false;
        if (reported++ < 8)
          res.report += strfmt("  input %zu[%zu]: analytic %.12g numeric %.12g (|diff| %.3g)\n", k, j,
                               analytic[k][j], numeric, err);
      }
    }
  }
  res.report = strfmt("%lld gradient entries checked, max abs err %.3g, max rel err %.3g\n",
                      (long long)res.checked, res.max_abs_err, res.max_rel_err) + res.report;
  return res;
}

}  // namespace lolcats
