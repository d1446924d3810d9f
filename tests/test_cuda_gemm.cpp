// gemm() and the matmul twins on the cuda device against the CPU matmul (tensor/matmul.h) in
// double: every transpose combination, strided batches, accumulate, the bias epilogue, and the
// three type combinations (f32; bf16 -> bf16; bf16 -> f32). Under the emulator this checks the
// row-major -> column-major descriptor logic of cuda/gemm.cu against cuBLASLt's rules; on a GPU,
// the library itself.
#ifdef LOLCATS_CUDA  // these tests call the cuda launchers, absent from a CUDA=0 build
#include "cuda/gemm.h"
#ifdef LOLCATS_CUDA_EMU
#include <cublasLt.h>
#endif
#include "tensor/matmul.h"
#include "tests/cuda_helpers.h"

using namespace lolcats;
using namespace lolcats_test;

namespace {

std::vector<double> to_double(const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); }

// The CPU reference: C = op(A) op(B) (+ C0) (+ bias per column), in double.
std::vector<double> reference(const std::vector<float>& a, const std::vector<float>& b,
                              const std::vector<float>& c0, const std::vector<float>& bias,
                              const cuda::GemmShape& g) {
  std::vector<double> c = to_double(c0);
  std::vector<double> da = to_double(a), db = to_double(b);
  matmul_forward(c.data(), da.data(), db.data(), g.batch, g.M, g.N, g.K, transpose_of(g.trans_a, g.trans_b),
                 accumulate_if(g.accumulate));
  if (!bias.empty())
    for (size_t i = 0; i < c.size(); i++) c[i] += bias[i % size_t(g.N)];
  return c;
}

// Inputs in `in` storage, output in `out` storage.
void check_gemm(const cuda::GemmShape& g, bool with_bias, Storage in, Storage out, std::mt19937& rng) {
  size_t na = size_t(g.batch) * g.M * g.K, nb = size_t(g.batch) * g.K * g.N, nc = size_t(g.batch) * g.M * g.N;
  std::vector<float> a = rounded(random_vector(na, rng), in), b = rounded(random_vector(nb, rng), in);
  std::vector<float> c0 = rounded(random_vector(nc, rng), out);
  std::vector<float> bias = with_bias ? rounded(random_vector(size_t(g.N), rng), out) : std::vector<float>();
  DeviceBuffer da(a, in), db(b, in), dc(c0, out);
  std::unique_ptr<DeviceBuffer> dbias;
  if (with_bias) dbias = std::make_unique<DeviceBuffer>(bias, out);
  if (in == Storage::f32) {
    cuda::gemm(dc.f32(), da.f32(), db.f32(), g, with_bias ? dbias->f32() : nullptr);
  } else if (out == Storage::bf16) {
    cuda::gemm(dc.bf16(), da.bf16(), db.bf16(), g, with_bias ? dbias->bf16() : nullptr);
  } else {
    cuda::gemm(dc.f32(), da.bf16(), db.bf16(), g, with_bias ? dbias->f32() : nullptr);
  }
  std::vector<double> want = reference(a, b, g.accumulate ? c0 : std::vector<float>(nc, 0.0f), bias, g);
  // f32 accumulation over K products of O(1) values: error ~ K * 2^-24 * sqrt(K) at worst, far
  // below 1e-4 for K <= 300. A bf16 output adds its rounding, 2^-8 relative (plus the same atol);
  // with C accumulated AND the bias epilogue, cuBLASLt rounds to bf16 before adding the bias (seen
  // on an H200: errors up to 1.3 ulp), so two roundings are allowed there.
  double rtol = out == Storage::bf16 ? (g.accumulate && with_bias ? 2.0 : 1.0) / 256 : 1e-5;
  check_close(dc.download(), want, 1e-4, rtol,
              strfmt("gemm batch %d M %d N %d K %d ta %d tb %d acc %d bias %d in %s out %s", g.batch, g.M,
                     g.N, g.K, int(g.trans_a), int(g.trans_b), int(g.accumulate), int(with_bias),
                     storage_name(in), storage_name(out)));
}

}  // namespace

TEST_CASE("cuda gemm: transposes, batches, accumulate and bias against the CPU matmul", "[cuda][sanitize]") {
  SKIP_WITHOUT_CUDA();
  std::mt19937 rng(7);
  const std::pair<Storage, Storage> types[] = {
      {Storage::f32, Storage::f32}, {Storage::bf16, Storage::bf16}, {Storage::bf16, Storage::f32}};
  for (auto [in, out] : types)
    for (int batch : {1, 3})
      for (bool ta : {false, true})
        for (bool tb : {false, true})
          for (bool acc : {false, true}) {
            check_gemm(cuda::GemmShape{batch, 13, 37, 70, transpose_of(ta, tb), accumulate_if(acc)}, false, in,
                       out, rng);
            if (batch == 1) check_gemm(cuda::GemmShape{1, 5, 33, 17, transpose_of(ta, tb), accumulate_if(acc)},
                                       true, in, out, rng);
          }
  // A long inner dimension and a one-row product (decode).
  check_gemm(cuda::GemmShape{1, 1, 64, 300, Transpose::b}, false, Storage::bf16, Storage::f32, rng);
}

TEST_CASE("cuda matmul_backward: the four transpose cases against the CPU", "[cuda]") {
  SKIP_WITHOUT_CUDA();
  std::mt19937 rng(8);
  const int batch = 2, M = 9, N = 21, K = 14;
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (bool acc : {false, true}) {
        std::vector<float> a = random_vector(size_t(batch * M * K), rng), b = random_vector(size_t(batch * K * N), rng);
        std::vector<float> dc = random_vector(size_t(batch * M * N), rng);
        std::vector<float> ga0 = random_vector(a.size(), rng), gb0 = random_vector(b.size(), rng);
        std::vector<double> wa = to_double(ga0), wb = to_double(gb0);
        std::vector<double> a64 = to_double(a), b64 = to_double(b), dc64 = to_double(dc);
        const Transpose t = transpose_of(ta, tb);
        const Accumulate add = accumulate_if(acc);
        matmul_backward(wa.data(), wb.data(), dc64.data(), a64.data(), b64.data(), batch, M, N, K, t, add, add);
        DeviceBuffer d_a(a, Storage::f32), d_b(b, Storage::f32), d_dc(dc, Storage::f32);
        DeviceBuffer d_ga(ga0, Storage::f32), d_gb(gb0, Storage::f32);
        cuda::matmul_backward<float, float>(d_ga.f32(), d_gb.f32(), d_dc.f32(), d_a.f32(), d_b.f32(), batch, M,
                                                     N, K, t, add, add);
        // f32 accumulation over <= 21 products of O(1) values.
        std::string what = strfmt("ta %d tb %d acc %d", int(ta), int(tb), int(acc));
        check_close(d_ga.download(), wa, 1e-5, 1e-5, "dA " + what);
        check_close(d_gb.download(), wb, 1e-5, 1e-5, "dB " + what);
      }
}

TEST_CASE("cuda gemm: a shape cuBLASLt cannot take is one clear error", "[cuda]") {
  SKIP_WITHOUT_CUDA();
  DeviceBuffer a(4, Storage::f32), c(4, Storage::f32);
  CHECK_THROWS_WITH(cuda::gemm(c.f32(), a.f32(), a.f32(), cuda::GemmShape{1, 2, 2, 0}),
                    Catch::Contains("K = 0"));
}

TEST_CASE("cuda gemm: plans are cached per shape and alignment, with the uncached results", "[cuda]") {
  SKIP_WITHOUT_CUDA();
  std::mt19937 rng(9);
  // A shape no other test uses, so that the first call must make its plan.
  const cuda::GemmShape g{2, 19, 23, 29, Transpose::b};
  const size_t na = size_t(g.batch) * g.M * g.K, nb = size_t(g.batch) * g.N * g.K, nc = size_t(g.batch) * g.M * g.N;
  std::vector<float> a = random_vector(na, rng), b = random_vector(nb, rng);
  std::vector<double> want = reference(a, b, std::vector<float>(nc, 0.0f), {}, g);
  // One element more than needed: a + 1 is then a 4-byte aligned operand beside the 256-byte one.
  std::vector<float> a_shifted(na + 1, 0.0f);
  std::copy(a.begin(), a.end(), a_shifted.begin() + 1);
  DeviceBuffer da(a, Storage::f32), db(b, Storage::f32), da_shifted(a_shifted, Storage::f32);
  DeviceBuffer c1(nc, Storage::f32), c2(nc, Storage::f32), c3(nc, Storage::f32);

  cuda::GemmPlanStats s0 = cuda::gemm_plan_stats();
  cuda::gemm(c1.f32(), da.f32(), db.f32(), g);  // a fresh plan
  cuda::GemmPlanStats s1 = cuda::gemm_plan_stats();
  CHECK(s1.misses == s0.misses + 1);
  CHECK(s1.plans == s0.plans + 1);
  cuda::gemm(c2.f32(), da.f32(), db.f32(), g);  // the same plan, from the cache
  cuda::GemmPlanStats s2 = cuda::gemm_plan_stats();
  CHECK(s2.hits == s1.hits + 1);
  CHECK(s2.misses == s1.misses);
  CHECK(c1.download() == c2.download());  // the same bits, cached or fresh
  check_close(c2.download(), want, 1e-5, 1e-5, "cached plan");

  // The same shape with A only 4-byte aligned: the cached plan's algorithm was chosen for 256-byte
  // operands (the emulated cuBLASLt refuses it, as a GPU may fault), so this must be a new plan.
  cuda::gemm(c3.f32(), da_shifted.f32() + 1, db.f32(), g);
  cuda::GemmPlanStats s3 = cuda::gemm_plan_stats();
  CHECK(s3.misses == s2.misses + 1);
  CHECK(s3.plans == s2.plans + 1);
  check_close(c3.download(), want, 1e-5, 1e-5, "plan for a 4-byte aligned A");

  // Another shape is another plan; a bias is another plan too (its epilogue is in the descriptor).
  cuda::gemm(c3.f32(), da.f32(), db.f32(), cuda::GemmShape{2, 19, 23, 28, Transpose::b});
  CHECK(cuda::gemm_plan_stats().misses == s3.misses + 1);
  std::vector<float> bias = random_vector(size_t(g.N), rng);
  DeviceBuffer dbias(bias, Storage::f32);
  cuda::gemm(c3.f32(), da.f32(), db.f32(), g, dbias.f32());
  CHECK(cuda::gemm_plan_stats().misses == s3.misses + 2);
  check_close(c3.download(), reference(a, b, std::vector<float>(nc, 0.0f), bias, g), 1e-5, 1e-5, "bias plan");
  // The bias pointer is set per call on the cached plan: another bias buffer, the same plan.
  std::vector<float> bias2 = random_vector(size_t(g.N), rng);
  DeviceBuffer dbias2(bias2, Storage::f32);
  cuda::GemmPlanStats s4 = cuda::gemm_plan_stats();
  cuda::gemm(c3.f32(), da.f32(), db.f32(), g, dbias2.f32());
  CHECK(cuda::gemm_plan_stats().hits == s4.hits + 1);
  check_close(c3.download(), reference(a, b, std::vector<float>(nc, 0.0f), bias2, g), 1e-5, 1e-5,
              "bias plan, second bias");
}

#ifdef LOLCATS_CUDA_EMU
TEST_CASE("emulated cuBLASLt: an operand less aligned than the algorithm was chosen for is refused", "[emu]") {
  // What makes the plan cache's alignment key necessary: an algorithm from a heuristic told 16-byte
  // operands, given a 4-byte aligned one.
  DeviceBuffer a(64 + 4, Storage::f32), b(64, Storage::f32), c(64, Storage::f32);  // A read from a + 4 too
  a.zero();
  b.zero();
  cublasLtHandle_t h;
  REQUIRE(cublasLtCreate(&h) == CUBLAS_STATUS_SUCCESS);
  cublasLtMatrixLayout_t l;
  REQUIRE(cublasLtMatrixLayoutCreate(&l, CUDA_R_32F, 8, 8, 8) == CUBLAS_STATUS_SUCCESS);
  cublasLtMatmulDesc_t op;
  REQUIRE(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F) == CUBLAS_STATUS_SUCCESS);
  cublasLtMatmulPreference_t pref;
  REQUIRE(cublasLtMatmulPreferenceCreate(&pref) == CUBLAS_STATUS_SUCCESS);
  uint32_t sixteen = 16;
  for (auto attr : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES})
    REQUIRE(cublasLtMatmulPreferenceSetAttribute(pref, attr, &sixteen, sizeof sixteen) == CUBLAS_STATUS_SUCCESS);
  cublasLtMatmulHeuristicResult_t result;
  int found = 0;
  REQUIRE(cublasLtMatmulAlgoGetHeuristic(h, op, l, l, l, l, pref, 1, &result, &found) == CUBLAS_STATUS_SUCCESS);
  REQUIRE(found == 1);
  const float alpha = 1, beta = 0;
  auto matmul = [&](const float* a_ptr) {
    return cublasLtMatmul(h, op, &alpha, a_ptr, l, b.f32(), l, &beta, c.f32(), l, c.f32(), l, &result.algo,
                          nullptr, 0, nullptr);
  };
  CHECK(matmul(a.f32()) == CUBLAS_STATUS_SUCCESS);             // 256-byte aligned
  CHECK(matmul(a.f32() + 4) == CUBLAS_STATUS_SUCCESS);         // 16 bytes: as chosen
  CHECK(matmul(a.f32() + 1) == CUBLAS_STATUS_NOT_SUPPORTED);   // 4 bytes: less than chosen
  cublasLtMatmulPreferenceDestroy(pref);
  cublasLtMatmulDescDestroy(op);
  cublasLtMatrixLayoutDestroy(l);
  cublasLtDestroy(h);
}
#endif

#endif  // LOLCATS_CUDA
