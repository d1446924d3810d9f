// matmul_forward's f32 dispatch (tensor/matmul.cpp): products it sends to the packed kernel
// (tensor/gemm.h) against the same products by Eigen, the simple version the kernel replaces.
#include <cmath>
#include <random>
#include <vector>

#include "tensor/gemm.h"
#include "tensor/matmul.h"
#include "tests/helpers.h"

using namespace lolcats;

namespace {
std::vector<float> normal(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd;
  std::vector<float> v(n);
  for (float& x : v) x = nd(rng);
  return v;
}
}  // namespace

TEST_CASE("gemm: packed kernel against Eigen's product, through matmul_forward's dispatch", "[ops][gemm]") {
  // Sizes the dispatch sends to the packed kernel on a SIMD build (>= 64 rows, >= one panel of
  // columns): the same product computed by Eigen must agree to float rounding of K terms.
  const int M = 200, N = 300, K = 500;
  CHECK(use_packed_gemm(M, N) == gemm_simd_target());
  CHECK_FALSE(use_packed_gemm(M, gemm_kernel_cols() - 1));  // mostly padding: Eigen's
  for (int flags = 0; flags < 4; flags++) {
    const bool ta = flags & 1, tb = flags & 2;
    std::vector<float> a = normal(size_t(M) * K, 200 + flags), b = normal(size_t(K) * N, 300 + flags);
    std::vector<float> c(size_t(M) * N), want(c.size());
    matmul_forward(c.data(), a.data(), b.data(), 1, M, N, K, transpose_of(ta, tb));
    matmul_eigen(want.data(), a.data(), b.data(), M, N, K, transpose_of(ta, tb));
    double worst = 0, scale = 0;
    for (size_t i = 0; i < c.size(); i++) {
      worst = std::max(worst, double(std::fabs(c[i] - want[i])));
      scale = std::max(scale, double(std::fabs(want[i])));
    }
    INFO("ta " << ta << " tb " << tb << " max |diff| " << worst << " of max |C| " << scale);
    CHECK(worst <= 1e-5 * scale);  // K = 500 float terms: ~sqrt(K) u relative in practice, 1e-5 is 170 u
  }
}

