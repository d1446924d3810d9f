// The packed f32 GEMM (tensor/gemm.h) against a plain triple loop in double, checked against the
// rounding-error bound of a float dot product: |fl(sum) - sum| <= gamma_K * sum |a b|, with
// gamma_K = K u / (1 - K u) and u = 2^-24 (Higham, "Accuracy and Stability of Numerical
// Algorithms", 3.1). So the check cannot fail by bad luck, and a wrong term, lost column or stale
// block fails it by orders of magnitude. (Against Eigen's product, the simple version the kernel
// replaces: tests/test_matmul_dispatch.cpp.)
// Sizes straddle the kernel's register tile (this build's rows x cols), the depth blocking and the
// panel blocking, in all four transpose cases, with and without accumulate.
// This file needs only the kernel, so `make test-gemm-isa` also builds it for other vector widths
// (AVX2, plain x86-64) than the one this machine's build uses.
#include <omp.h>

#include <cmath>
#include <random>
#include <vector>

#include "tensor/gemm.h"
#include "tensor/parallel.h"
#include "tests/helpers.h"

using namespace lolcats;

namespace {

struct Operands {
  int M, N, K;
  bool ta, tb, acc;
  std::vector<float> a, b, c0;  // as stored: A (M,K) or (K,M); B (K,N) or (N,K); C's initial values
};

Operands make(int M, int N, int K, bool ta, bool tb, bool acc, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd;
  Operands o{M, N, K, ta, tb, acc, std::vector<float>(size_t(M) * K), std::vector<float>(size_t(K) * N),
             std::vector<float>(size_t(M) * N)};
  for (auto* v : {&o.a, &o.b, &o.c0})
    for (float& x : *v) x = nd(rng);
  return o;
}

float A_at(const Operands& o, int i, int k) { return o.ta ? o.a[size_t(k) * o.M + i] : o.a[size_t(i) * o.K + k]; }
float B_at(const Operands& o, int k, int j) { return o.tb ? o.b[size_t(j) * o.K + k] : o.b[size_t(k) * o.N + j]; }

std::vector<float> run_packed(const Operands& o) {
  std::vector<float> c = o.c0;
  gemm_packed(c.data(), o.a.data(), o.b.data(), o.M, o.N, o.K, transpose_of(o.ta, o.tb), accumulate_if(o.acc));
  return c;
}

// Every element against the double loop, within the float rounding bound; returns the worst
// error as a fraction of its bound (<= 1 passes).
double worst_vs_bound(const Operands& o, const std::vector<float>& c) {
  const double u = std::ldexp(1.0, -24), gamma = (o.K + 1) * u / (1 - (o.K + 1) * u);
  double worst = 0;
  for (int i = 0; i < o.M; i++)
    for (int j = 0; j < o.N; j++) {
      double sum = o.acc ? o.c0[size_t(i) * o.N + j] : 0.0, mag = std::fabs(sum);
      for (int k = 0; k < o.K; k++) {
        const double p = double(A_at(o, i, k)) * B_at(o, k, j);
        sum += p;
        mag += std::fabs(p);
      }
      const double err = std::fabs(c[size_t(i) * o.N + j] - sum), bound = gamma * mag + 1e-30;
      worst = std::max(worst, err / bound);
    }
  return worst;
}

}  // namespace

TEST_CASE("gemm: packed kernel within float rounding of the exact product, at every edge", "[ops][gemm]") {
  const int R = gemm_kernel_rows(), C = gemm_kernel_cols();
  uint32_t seed = 1;
  // rows: one, a partial tile, exact tiles, one past; cols likewise around the panel width;
  // depth: one, odd, and past the depth block (384), so that blocks of k accumulate into C.
  for (int M : {1, R - 1, R, 3 * R + 1, 64})
    for (int N : {1, C - 1, C, 2 * C + 3})
      for (int K : {1, 7, 385, 800})
        for (int flags = 0; flags < 8; flags++) {
          Operands o = make(M, N, K, flags & 1, flags & 2, flags & 4, seed++);
          INFO("M " << M << " N " << N << " K " << K << " ta " << o.ta << " tb " << o.tb << " acc " << o.acc);
          CHECK(worst_vs_bound(o, run_packed(o)) <= 1.0);
        }
}

TEST_CASE("gemm: several panel blocks per thread, and K = 0", "[ops][gemm]") {
  // K = 800 is two depth blocks of 400. A panel block fills half the L2 the system reports, at most
  // 2 MiB (4 MiB believed), so it spans at most 512 Ki floats / 400 = 1,310 columns; N = 3,000 needs
  // several blocks on any host with one or two threads splitting the columns (more threads would
  // give each too few). M = 17 keeps it quick and has a partial row tile.
  const int saved = num_threads();
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    for (int flags = 0; flags < 8; flags++) {
      Operands o = make(17, 3000, 800, flags & 1, flags & 2, flags & 4, 100 + flags);
      INFO("threads " << threads << " ta " << o.ta << " tb " << o.tb << " acc " << o.acc);
      CHECK(worst_vs_bound(o, run_packed(o)) <= 1.0);
    }
  }
  set_num_threads(saved);
  for (bool acc : {false, true}) {
    Operands o = make(9, 50, 1, false, true, acc, 7);
    o.K = 0;  // C = 0, or C unchanged
    std::vector<float> c = run_packed(o);
    for (size_t i = 0; i < c.size(); i++) CHECK(c[i] == (acc ? o.c0[i] : 0.f));
  }
}

TEST_CASE("gemm: the result does not depend on the thread count (bitwise)", "[ops][gemm]") {
  // Threads split C, never k, so every element is summed in the same order by whichever thread.
  const int saved = num_threads();
  for (int flags = 0; flags < 4; flags++) {
    Operands o = make(131, 517, 450, flags & 1, flags & 2, false, 300 + flags);
    std::vector<std::vector<float>> results;
    for (int t : {1, 2, 3, 5}) {
      set_num_threads(t);
      results.push_back(run_packed(o));
    }
    for (size_t r = 1; r < results.size(); r++) CHECK(results[r] == results[0]);
  }
  set_num_threads(saved);
}
