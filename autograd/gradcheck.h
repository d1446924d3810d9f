// Gradient check by central differences, in double precision.
//
// For an op y = f(x_1, ..., x_k) and a fixed random projection r (same size as y), the scalar
//   L(x) = sum_i r_i y_i(x)
// has dL/dx = J^T r, which is exactly what a backward kernel computes when handed dy = r. We check
//   dL/dx_j  ~=  (L(x + e_j h) - L(x - e_j h)) / (2h)         (error O(h^2))
// for every element of every input marked differentiable. A random r matters: with r = 1 (a plain
// sum) the gradients of softmax and normalisation outputs are identically zero and the check proves
// nothing. Run the double-precision instantiation of the kernels here (they are templates), so the
// finite difference is accurate to ~1e-9 and the tolerance can be tight.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace lolcats {

using Buffers = std::vector<std::vector<double>>;

// forward(inputs) -> y.   backward(inputs, dy) -> one gradient per input (empty = not checked).
using ForwardFn = std::function<std::vector<double>(const Buffers&)>;
using BackwardFn = std::function<Buffers(const Buffers&, const std::vector<double>&)>;

struct GradCheckResult {
  bool ok = true;
  double max_abs_err = 0, max_rel_err = 0;
  int64_t checked = 0;
  std::string report;  // the worst elements, for the failure message
};

// Tolerance per element: |analytic - numeric| <= atol + rtol * |numeric|.
GradCheckResult gradcheck(const ForwardFn& forward, const BackwardFn& backward, Buffers inputs,
                          uint64_t seed = 0, double h = 1e-6, double atol = 1e-7,
                          double rtol = 1e-6);

// Deterministic test data: n draws from N(0, scale^2) (splitmix64 + Box-Muller).
std::vector<double> random_normal(int64_t n, uint64_t seed, double scale = 1.0);

}  // namespace lolcats
