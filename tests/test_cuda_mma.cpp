// The warp-level matrix primitives of cuda/mma.cuh against oracles outside the emulator: mma.sync
// against a scalar double product at every one of the 16 x 8 output positions, ldmatrix against
// the PTX ISA's definition of every lane's registers, cp.async against the copy it stands for and
// the stale bytes a missing wait leaves, and a 32 x 32 x 32 GEMM built from all three against a
// CPU product. Every test runs under each thread order of the emulator (forward, reversed,
// shuffled); values are distinct random numbers, so a fragment-position mistake changes an element.
#ifdef LOLCATS_CUDA
#include <cmath>
#include <cstring>
#include <random>

#include "tests/cuda_helpers.h"
#include "tests/mma_kernels.h"

using namespace lolcats_test;

namespace {

float from_bits(uint32_t u) {
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}
uint32_t to_bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return u;
}

// Random bf16 values in [-1, 1), as bit patterns (an f32 cut to its top 16 bits is a bf16 value).
std::vector<uint16_t> random_bf16(size_t n, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<uint16_t> v(n);
  for (auto& h : v) h = uint16_t(to_bits(u(rng)) >> 16);
  return v;
}
float bf16_value(uint16_t h) { return from_bits(uint32_t(h) << 16); }
// Random f32 values in [-1, 1) that are exact tf32 values (low 13 mantissa bits zero).
std::vector<float> random_tf32(size_t n, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<float> v(n);
  for (auto& x : v) x = from_bits(to_bits(u(rng)) & 0xffffe000u);
  return v;
}
std::vector<float> random_f32(size_t n, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<float> v(n);
  for (auto& x : v) x = u(rng);
  return v;
}

// D = A * B + C (M x K, K x N, M x N, row-major) in double, and for each element the sum of the
// magnitudes of its terms, which bounds the error of any order of f32 additions.
void reference(int M, int N, int K, const std::vector<double>& A, const std::vector<double>& B,
               const std::vector<float>& C, std::vector<double>& D, std::vector<double>& mag) {
  D.assign(size_t(M * N), 0.0);
  mag.assign(size_t(M * N), 0.0);
  for (int i = 0; i < M; i++)
    for (int j = 0; j < N; j++) {
      double s = C.empty() ? 0.0 : C[size_t(i * N + j)], m = std::fabs(s);
      for (int k = 0; k < K; k++) {
        double p = A[size_t(i * K + k)] * B[size_t(k * N + j)];
        s += p;
        m += std::fabs(p);
      }
      D[size_t(i * N + j)] = s;
      mag[size_t(i * N + j)] = m;
    }
}

// Each product of bf16 or tf32 inputs is exact in f32, so the only rounding is in the K additions
// (plus C's): whatever order and f32 rounding the tensor core uses, each addition errs by at most
// one ulp of a partial sum, |partial| <= mag, so |D - exact| <= (K + 1) * 2^-23 * mag (one ulp
// rather than half, to cover truncating adders). The emulator (double sum, one rounding) is far
// inside this; a misplaced fragment element is off by about the size of a term, far outside it.
void check_product(const std::vector<float>& got, const std::vector<double>& want,
                   const std::vector<double>& mag, int K) {
  int bad = 0;
  for (size_t i = 0; i < got.size(); i++) {
    double tol = (K + 1) * std::ldexp(1.0, -23) * mag[i];
    if (!(std::fabs(double(got[i]) - want[i]) <= tol)) {
      if (bad < 5) UNSCOPED_INFO("D[" << i / 8 << "][" << i % 8 << "] = " << got[i] << ", want " << want[i]);
      bad++;
    }
  }
  CHECK(bad == 0);
}

}  // namespace

TEST_CASE("cuda mma m16n8k16 bf16: every output position against a scalar product", "[cuda][mma]") {
  SKIP_WITHOUT_CUDA();
  std::mt19937 rng(7);
  auto A = random_bf16(16 * 16, rng), B = random_bf16(16 * 8, rng);
  auto C = random_f32(16 * 8, rng);
  std::vector<double> a(A.size()), b(B.size()), want, mag;
  for (size_t i = 0; i < A.size(); i++) a[i] = bf16_value(A[i]);
  for (size_t i = 0; i < B.size(); i++) b[i] = bf16_value(B[i]);
  reference(16, 8, 16, a, b, C, want, mag);
  for_each_thread_order([&] { check_product(mma_test::run_mma_bf16(A, B, C), want, mag, 16); });

  // Small integers: every partial sum is exact in f32, so any order gives the exact answer.
  std::uniform_int_distribution<int> small(-8, 8);
  for (auto& h : A) h = uint16_t(to_bits(float(small(rng))) >> 16);
  for (auto& h : B) h = uint16_t(to_bits(float(small(rng))) >> 16);
  for (auto& x : C) x = float(small(rng));
  for (size_t i = 0; i < A.size(); i++) a[i] = bf16_value(A[i]);
  for (size_t i = 0; i < B.size(); i++) b[i] = bf16_value(B[i]);
  reference(16, 8, 16, a, b, C, want, mag);
  for_each_thread_order([&] {
    auto D = mma_test::run_mma_bf16(A, B, C);
    for (size_t i = 0; i < D.size(); i++) CHECK(double(D[i]) == want[i]);
  });
}

TEST_CASE("cuda mma m16n8k8 tf32: every output position against a scalar product", "[cuda][mma]") {
  SKIP_WITHOUT_CUDA();
  std::mt19937 rng(11);
  auto A = random_tf32(16 * 8, rng), B = random_tf32(8 * 8, rng);
  auto C = random_f32(16 * 8, rng);
  std::vector<double> a(A.begin(), A.end()), b(B.begin(), B.end()), want, mag;
  reference(16, 8, 8, a, b, C, want, mag);
  for_each_thread_order([&] { check_product(mma_test::run_mma_tf32(A, B, C), want, mag, 8); });
}

#ifdef LOLCATS_CUDA_EMU
// What the emulator does with operands that are not tf32 values: it drops their low 13 mantissa
// bits (round toward zero). The ISA leaves those bits to the hardware; kernels round with
// cvt.rna.tf32.f32 first and must not depend on this.
TEST_CASE("emulator: mma tf32 reads only the top 19 bits of each operand", "[cuda][mma][emu]") {
  std::mt19937 rng(12);
  auto A = random_f32(16 * 8, rng), B = random_f32(8 * 8, rng);  // full f32 mantissas
  std::vector<float> C(16 * 8, 0.f);
  std::vector<double> a(A.size()), b(B.size()), want, mag;
  for (size_t i = 0; i < A.size(); i++) a[i] = from_bits(to_bits(A[i]) & 0xffffe000u);
  for (size_t i = 0; i < B.size(); i++) b[i] = from_bits(to_bits(B[i]) & 0xffffe000u);
  reference(16, 8, 8, a, b, C, want, mag);
  auto D = mma_test::run_mma_tf32(A, B, C);
  // The truncated products are exact and the emulator sums them in double: within half an ulp.
  for (size_t i = 0; i < D.size(); i++) CHECK(std::fabs(double(D[i]) - want[i]) <= std::ldexp(std::fabs(want[i]), -24));
}
#endif

TEST_CASE("cuda ldmatrix x1/x2/x4, plain and .trans: every lane's registers per the PTX ISA", "[cuda][mma]") {
  SKIP_WITHOUT_CUDA();
  std::mt19937 rng(3);
  std::vector<uint16_t> smem(64 * 8);
  for (size_t i = 0; i < smem.size(); i++) smem[i] = uint16_t(0x1000 + i);  // distinct
  std::vector<int> rows(64);
  for (int i = 0; i < 64; i++) rows[size_t(i)] = i;
  std::shuffle(rows.begin(), rows.end(), rng);
  rows.resize(32);  // lane l points at row rows[l]: distinct rows in no particular order
  for (int num : {1, 2, 4})
    for (bool trans : {false, true}) {
      INFO("x" << num << (trans ? ".trans" : ""));
      for_each_thread_order([&] {
        auto r = mma_test::run_ldmatrix(num, trans, smem, rows);
        int bad = 0;
        for (int l = 0; l < 32; l++)
          for (int m = 0; m < num; m++) {
            // Matrix m's row i is at the address lane 8m + i gave; lane l receives (row l/4,
            // columns 2(l%4), 2(l%4)+1), or with .trans (rows 2(l%4), 2(l%4)+1, column l/4).
            auto elem = [&](int row, int col) { return uint32_t(smem[size_t(rows[size_t(8 * m + row)] * 8 + col)]); };
            int g = l / 4, t = l % 4;
            uint32_t want = trans ? elem(2 * t, g) | elem(2 * t + 1, g) << 16
                                  : elem(g, 2 * t) | elem(g, 2 * t + 1) << 16;
            uint32_t got = r[size_t(l * num + m)];
            if (got != want) {
              if (bad < 5) UNSCOPED_INFO("lane " << l << " r" << m << ": got 0x" << std::hex << got << " want 0x" << want << std::dec);
              bad++;
            }
          }
        CHECK(bad == 0);
      });
    }
}

TEST_CASE("cuda cp.async with commit/wait_group: the copies land by the wait that covers them", "[cuda][mma]") {
  SKIP_WITHOUT_CUDA();
  std::mt19937 rng(5);
  auto src = random_f32(32 * 16, rng);
  const uint32_t poison = 0xffffffffu;  // the emulator's shared memory before anything lands
  auto check = [&](int wait) {
    INFO("cp.async.wait_group " << wait);
    auto got = mma_test::run_cp_async(src, wait);
    // groups: floats 0-7, 8-11, 12-15; wait_group n completes all but the n most recent
    int landed = wait == 0 ? 16 : wait == 1 ? 12 : wait == 2 ? 8 : 0;
    int bad = 0;
    for (int t = 0; t < 32; t++)
      for (int i = 0; i < 16; i++) {
        uint32_t g = got[size_t(16 * t + i)];
        if (i < landed) bad += g != to_bits(src[size_t(16 * t + i)]);
#ifdef LOLCATS_CUDA_EMU
        else bad += g != poison;  // on a GPU the bytes may or may not have landed yet
#endif
      }
    CHECK(bad == 0);
  };
  for_each_thread_order([&] {
    for (int wait : {0, 1, 2}) check(wait);
#ifdef LOLCATS_CUDA_EMU
    check(3);   // all three groups may be pending: nothing has landed
    check(-1);  // no wait at all: the kernel reads the poison
#endif
  });
}

TEST_CASE("cuda tensor-core GEMM 32x32x32 bf16 from cp.async + ldmatrix + mma, against the CPU", "[cuda][mma][sanitize]") {
  SKIP_WITHOUT_CUDA();
  std::mt19937 rng(9);
  auto A = random_bf16(32 * 32, rng), B = random_bf16(32 * 32, rng);
  std::vector<double> a(A.size()), b(B.size()), want, mag;
  for (size_t i = 0; i < A.size(); i++) a[i] = bf16_value(A[i]);
  for (size_t i = 0; i < B.size(); i++) b[i] = bf16_value(B[i]);
  reference(32, 32, 32, a, b, {}, want, mag);
  // Two mma calls per output (k = 0-15 onto zero, then 16-31 onto the first's result): 32 f32
  // additions in all, each within one ulp of a partial sum no larger than mag, which the bound for
  // K = 32 covers.
  for_each_thread_order([&] { check_product(mma_test::run_gemm_32(A, B), want, mag, 32); });
}

#ifdef LOLCATS_CUDA_EMU
TEST_CASE("emulator: mma and ldmatrix need the whole converged warp, aligned rows", "[cuda][mma][emu]") {
  using mma_test::Faulty;
  using Catch::Contains;
  CHECK_THROWS_WITH(mma_test::run_faulty(Faulty::mma_half_warp),
                    Contains("different collectives") && Contains("mma.sync.m16n8k16.bf16") &&
                        Contains("__syncwarp"));
  CHECK_THROWS_WITH(mma_test::run_faulty(Faulty::mma_short_block), Contains("needs all 32 lanes"));
  CHECK_THROWS_WITH(mma_test::run_faulty(Faulty::ldmatrix_mixed_forms),
                    Contains("ldmatrix.m8n8.x1.b16") && Contains("ldmatrix.m8n8.x1.trans.b16"));
  CHECK_THROWS_WITH(mma_test::run_faulty(Faulty::ldmatrix_unaligned),
                    Contains("lane 3") && Contains("not 16-byte aligned"));
}
#endif

#endif  // LOLCATS_CUDA
