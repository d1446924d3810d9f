#include "tensor/gemm.h"

#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif

namespace lolcats {
namespace {

// ---- The vector of the machine the build targets ------------------------------------------------
// kRows x kVecs accumulators, kVecs loads of B and one broadcast of A must fit in the registers.
#if defined(__AVX512F__)
constexpr int kLanes = 16, kRows = 8, kVecs = 3;  // 24 accumulators of 32 zmm registers
using Vec = __m512;
inline Vec vzero() { return _mm512_setzero_ps(); }
inline Vec vload(const float* p) { return _mm512_loadu_ps(p); }
inline void vstore(float* p, Vec v) { _mm512_storeu_ps(p, v); }
inline Vec vbroadcast(const float* p) { return _mm512_set1_ps(*p); }
inline Vec vfma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
inline Vec vadd(Vec a, Vec b) { return _mm512_add_ps(a, b); }
#elif defined(__AVX2__) && defined(__FMA__)
constexpr int kLanes = 8, kRows = 6, kVecs = 2;  // 12 accumulators of 16 ymm registers
using Vec = __m256;
inline Vec vzero() { return _mm256_setzero_ps(); }
inline Vec vload(const float* p) { return _mm256_loadu_ps(p); }
inline void vstore(float* p, Vec v) { _mm256_storeu_ps(p, v); }
inline Vec vbroadcast(const float* p) { return _mm256_broadcast_ss(p); }
inline Vec vfma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
inline Vec vadd(Vec a, Vec b) { return _mm256_add_ps(a, b); }
#else  // any other target: GCC's generic vectors (SSE, NEON, ...); a * b + c
constexpr int kLanes = 4, kRows = 4, kVecs = 2;
typedef float Vec __attribute__((vector_size(16)));
inline Vec vzero() { return Vec{}; }
inline Vec vload(const float* p) { Vec v; std::memcpy(&v, p, sizeof v); return v; }
inline void vstore(float* p, Vec v) { std::memcpy(p, &v, sizeof v); }
inline Vec vbroadcast(const float* p) { return Vec{} + *p; }
inline Vec vfma(Vec a, Vec b, Vec c) { return a * b + c; }
inline Vec vadd(Vec a, Vec b) { return a + b; }
#endif
constexpr int kCols = kLanes * kVecs;  // the width of a packed panel of B

// ---- Blocking ---------------------------------------------------------------------------------------
// k is cut into blocks of at most kMaxDepth (a block of A's rows, kRows x depth, then stays in the L1
// cache while the kernel walks the panels). A thread's panels of one k block fill about half of the
// core's L2 cache (1-2 MiB on AMD Zen 4/5 and Intel Ice Lake or later; 1 MiB assumed where the
// system does not say, at most 4 MiB believed). The panel width changes no result: each element's
// sum runs over the same k blocks in the same order whatever the width.
constexpr int kMaxDepth = 384;

int64_t panel_floats() {
  static const int64_t floats = [] {
    long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
    if (l2 <= 0) l2 = 1 << 20;
    return int64_t(std::min(l2, 4L << 20)) / 2 / int64_t(sizeof(float));
  }();
  return floats;
}

// ---- The micro-kernel -------------------------------------------------------------------------------
// C[0:R, 0:kCols] (+)= A[0:R, 0:depth] @ Bp[0:depth, 0:kCols], with Bp one packed panel (depth rows
// of kCols) and A(i, k) at a[i * K + k], or at a[k * M + i] when A is stored transposed (TA).
// Only `cols` columns are written (fewer than kCols at N's edge: the panel is zero-padded there).
template <int R, bool TA>
void micro_kernel(int depth, const float* a, int64_t lda, const float* bp, float* c, int64_t ldc,
                  bool add, int cols) {
  Vec acc[R][kVecs];
#pragma GCC unroll 8
  for (int r = 0; r < R; r++)
#pragma GCC unroll 4
    for (int v = 0; v < kVecs; v++) acc[r][v] = vzero();

  for (int k = 0; k < depth; k++) {
    Vec bk[kVecs];
#pragma GCC unroll 4
    for (int v = 0; v < kVecs; v++) bk[v] = vload(bp + v * kLanes);
    bp += kCols;
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
      Vec ar = vbroadcast(TA ? a + int64_t(k) * lda + r : a + r * lda + k);
#pragma GCC unroll 4
      for (int v = 0; v < kVecs; v++) acc[r][v] = vfma(ar, bk[v], acc[r][v]);
    }
  }

  if (cols == kCols) {
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
      for (int v = 0; v < kVecs; v++) {
        float* p = c + r * ldc + v * kLanes;
        vstore(p, add ? vadd(vload(p), acc[r][v]) : acc[r][v]);
      }
    return;
  }
  // N's edge: through a buffer, then only the valid columns. (Every loop over acc is unrolled, so
  // that acc lives in registers only; one indexed access would keep a copy of it in memory.)
  alignas(64) float tile[R][kCols];
#pragma GCC unroll 8
  for (int r = 0; r < R; r++)
#pragma GCC unroll 4
    for (int v = 0; v < kVecs; v++) vstore(tile[r] + v * kLanes, acc[r][v]);
  for (int r = 0; r < R; r++)
    for (int j = 0; j < cols; j++) c[r * ldc + j] = add ? c[r * ldc + j] + tile[r][j] : tile[r][j];
}

using Kernel = void (*)(int, const float*, int64_t, const float*, float*, int64_t, bool, int);

// kernels[TA][R - 1]: the kernel for a tile of R rows (fewer than kRows only at M's edge).
template <bool TA, int... R>
constexpr auto kernel_table(std::integer_sequence<int, R...>) {
  return std::array<Kernel, sizeof...(R)>{&micro_kernel<R + 1, TA>...};
}
const std::array<Kernel, kRows> kKernels[2] = {
    kernel_table<false>(std::make_integer_sequence<int, kRows>{}),
    kernel_table<true>(std::make_integer_sequence<int, kRows>{})};

// ---- Packing B -------------------------------------------------------------------------------------
// Copies op(B)[k0 : k0+depth, j0 : j0+width] into panels of kCols columns: panel p holds, for each k
// in turn, the kCols values op(B)[k, j0 + p*kCols ...] (zeros past `width`).
void pack_b(float* bp, const float* b, int64_t ldb, bool tb, int k0, int depth, int j0, int width) {
  for (int p0 = 0; p0 < width; p0 += kCols, bp += int64_t(depth) * kCols) {
    const int cols = std::min(kCols, width - p0);
    if (!tb) {  // B stored (K, N): a row of op(B) is contiguous
      for (int k = 0; k < depth; k++) {
        const float* src = b + int64_t(k0 + k) * ldb + j0 + p0;
        std::copy(src, src + cols, bp + int64_t(k) * kCols);
        std::fill(bp + int64_t(k) * kCols + cols, bp + int64_t(k + 1) * kCols, 0.f);
      }
    } else {  // B stored (N, K): op(B)[k, j] = b[j * ldb + k], a transpose
      // In strips of 64 k: the strip's rows of the panel (64 x kCols) stay in L1 while each stored
      // row fills its column of them; a whole panel's column at once would evict them between rows.
      for (int ks = 0; ks < depth; ks += 64)
        for (int j = 0; j < cols; j++) {
          const float* src = b + int64_t(j0 + p0 + j) * ldb + k0;
          for (int k = ks; k < std::min(depth, ks + 64); k++) bp[int64_t(k) * kCols + j] = src[k];
        }
      for (int k = 0; k < depth; k++) std::fill(bp + int64_t(k) * kCols + cols, bp + int64_t(k + 1) * kCols, 0.f);
    }
  }
}

// Each thread's panel buffer, kept between calls (at most half an L2 cache, plus a panel).
float* panel_buffer(int64_t floats) {
  struct Buffer {
    float* data = nullptr;
    int64_t size = 0;
    ~Buffer() { std::free(data); }
  };
  thread_local Buffer buf;
  if (buf.size < floats) {
    std::free(buf.data);
    buf.data = static_cast<float*>(std::aligned_alloc(64, ((floats * 4 + 63) / 64) * 64));
    if (!buf.data) throw std::bad_alloc();
    buf.size = floats;
  }
  return buf.data;
}

// Splits the tiles of C over `threads` as a grid of tm x tn rectangles, making the largest
// rectangle as small as possible; on a tie, more column splits (each thread then packs B columns
// of its own and no panel is packed twice).
void thread_grid(int64_t row_tiles, int64_t col_tiles, int threads, int& tm, int& tn) {
  tm = tn = 1;
  int64_t best = row_tiles * col_tiles;
  for (int n = 1; n <= threads; n++)
    for (int m = 1; m * n <= threads; m++) {
      int64_t largest = ((row_tiles + m - 1) / m) * ((col_tiles + n - 1) / n);
      if (largest < best || (largest == best && m * n <= tm * tn && n > tn)) best = largest, tm = m, tn = n;
    }
}

}  // namespace

static volatile float g_sink;

// The machine's FMA ceiling with this build's vectors: each thread runs 12 independent chains of
// fused multiply-adds (enough to cover the FMA latency on every current x86 core), nothing else.
double fma_ceiling_gflops(int threads, double seconds) {
  constexpr int kChains = 12;
  constexpr int64_t kSteps = 1 << 20;
  double best = 0;
  for (int rep = 0; rep < 3; rep++) {
    const auto t0 = omp_get_wtime();
    int64_t rounds = 0;
    float sink = 0;
#pragma omp parallel num_threads(threads) reduction(+ : sink)
    {
      Vec acc[kChains];
      const float one = 0.999999f, tiny = 1e-7f;
      const Vec x = vbroadcast(&one), y = vbroadcast(&tiny);
      for (int i = 0; i < kChains; i++) acc[i] = vzero();
      int64_t done = 0;
      do {
        for (int64_t s = 0; s < kSteps; s++)
#pragma GCC unroll 12
          for (int i = 0; i < kChains; i++) acc[i] = vfma(acc[i], x, y);
        done++;
      } while (omp_get_wtime() - t0 < seconds / 3);
      alignas(64) float out[kLanes];
      for (int i = 0; i < kChains; i++) {
        vstore(out, acc[i]);
        sink += out[0];
      }
#pragma omp atomic
      rounds += done;
    }
    const double flop = 2.0 * kLanes * kChains * double(kSteps) * double(rounds);
    best = std::max(best, flop / (omp_get_wtime() - t0) / 1e9);
    g_sink = sink;  // the chains' results are used: the compiler may not drop them
  }
  return best;
}

int gemm_kernel_rows() { return kRows; }
int gemm_kernel_cols() { return kCols; }
bool gemm_simd_target() { return kLanes > 4; }

void gemm_packed(float* c, const float* a, const float* b, int M, int N, int K, Transpose t, Accumulate acc) {
  const bool trans_a = transposes_a(t), trans_b = transposes_b(t), accumulate = acc == Accumulate::yes;
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    if (!accumulate) std::fill(c, c + int64_t(M) * N, 0.f);
    return;
  }
  const int64_t lda = trans_a ? M : K, ldb = trans_b ? K : N;
  const int kblocks = (K + kMaxDepth - 1) / kMaxDepth;
  const int depth_max = (K + kblocks - 1) / kblocks;  // even blocks: K = 576 is 2 x 288, not 384 + 192
  const int panel_width = std::max<int>(kCols, int(panel_floats() / depth_max) / kCols * kCols);

  const int64_t row_tiles = (M + kRows - 1) / kRows, col_tiles = (N + kCols - 1) / kCols;
  int tm, tn;
  thread_grid(row_tiles, col_tiles, omp_in_parallel() ? 1 : omp_get_max_threads(), tm, tn);
  const Kernel* kernels = kKernels[trans_a].data();

  // One rectangle per thread; the loop covers them all even if OpenMP grants fewer threads.
#pragma omp parallel num_threads(tm * tn) if (tm * tn > 1)
  for (int t = omp_get_thread_num(); t < tm * tn; t += omp_get_num_threads()) {
    const int im = t / tn, in = t % tn;
    const int m0 = int(row_tiles * im / tm * kRows), m1 = std::min<int64_t>(M, row_tiles * (im + 1) / tm * kRows);
    const int n0 = int(col_tiles * in / tn * kCols), n1 = std::min<int64_t>(N, col_tiles * (in + 1) / tn * kCols);
    float* bp = panel_buffer(int64_t(depth_max) * std::min(panel_width, n1 - n0 + kCols));

    for (int j0 = n0; j0 < n1; j0 += panel_width) {
      const int width = std::min(panel_width, n1 - j0);
      for (int k0 = 0; k0 < K; k0 += depth_max) {
        const int depth = std::min(depth_max, K - k0);
        pack_b(bp, b, ldb, trans_b, k0, depth, j0, width);
        const bool add = accumulate || k0 > 0;
        for (int i = m0; i < m1; i += kRows) {  // these kRows rows of A stay in L1 across the panels
          const Kernel kernel = kernels[std::min(kRows, m1 - i) - 1];
          const float* ai = trans_a ? a + int64_t(k0) * lda + i : a + int64_t(i) * lda + k0;
          for (int p0 = 0; p0 < width; p0 += kCols)
            kernel(depth, ai, lda, bp + int64_t(p0) * depth, c + int64_t(i) * N + j0 + p0, N, add,
                   std::min(kCols, width - p0));
        }
      }
    }
  }
}

}  // namespace lolcats
