// The LM head's fused, chunked cross-entropy on the cuda device against the CPU: logits computed in
// double, then the CPU's cross_entropy_forward / _backward (tensor/loss.h) on them, and the
// head's matmul backward in double. Chunks that divide V, that do not, and a single chunk.
#ifdef LOLCATS_CUDA  // these tests call the cuda launchers, absent from a CUDA=0 build
#include <algorithm>

#include "cuda/cross_entropy.h"
#include "tensor/loss.h"
#include "tensor/matmul.h"
#include "tests/cuda_helpers.h"

using namespace lolcats;
using namespace lolcats_test;

namespace {

struct Case {
  int N, C, V;
  std::vector<float> x, w;
  std::vector<int32_t> targets;
};

Case make_case(int N, int C, int V, Storage s, std::mt19937& rng, int ignored_every) {
  Case c{N, C, V, rounded(random_vector(size_t(N) * C, rng), s), rounded(random_vector(size_t(V) * C, rng, 0.5f), s), {}};
  std::uniform_int_distribution<int> tok(0, V - 1);
  for (int n = 0; n < N; n++) c.targets.push_back(ignored_every && n % ignored_every == 1 ? kIgnoreIndex : tok(rng));
  return c;
}

double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::fabs(x));
  return m;
}

void check_case(const Case& c, Storage s, int chunk, bool with_dw) {
  const int N = c.N, C = c.C, V = c.V;
  // Reference in double.
  std::vector<double> x(c.x.begin(), c.x.end()), w(c.w.begin(), c.w.end()), logits(size_t(N) * V);
  matmul_forward(logits.data(), x.data(), w.data(), 1, N, V, C, Transpose::b);
  std::vector<double> lse(static_cast<size_t>(N)), dlogits(logits.size());
  double loss = cross_entropy_forward(lse.data(), logits.data(), c.targets.data(), N, V);
  const double dloss = 0.75;
  cross_entropy_backward(dlogits.data(), dloss, logits.data(), lse.data(), c.targets.data(), N, V);
  std::vector<double> dx(size_t(N) * C, 0.0), dw(size_t(V) * C, 0.25);
  matmul_backward(dx.data(), dw.data(), dlogits.data(), x.data(), w.data(), 1, N, V, C, Transpose::b,
                  Accumulate::no, Accumulate::yes);

  DeviceBuffer d_x(c.x, s), d_w(c.w, s), d_loss(1, Storage::f32), d_lse(size_t(N), Storage::f32);
  DeviceBuffer d_dx(size_t(N) * C, s), d_dw(std::vector<float>(size_t(V) * C, 0.25f), Storage::f32);
  DeviceBuffer d_t(size_t(N), Storage::f32);  // 4-byte slots for the i32 targets
  device_upload(d_t.data(), c.targets.data(), size_t(N) * 4);
  DeviceBuffer d_ws((cuda::lm_head_cross_entropy_workspace(N, C, chunk) + 3) / 4, Storage::f32);
  for_each_thread_order([&] {
    if (s == Storage::f32) {
      cuda::lm_head_cross_entropy_forward(d_loss.f32(), d_lse.f32(), d_x.f32(), d_w.f32(), d_t.i32(), N, C, V, kIgnoreIndex, chunk, d_ws.data());
    } else {
      cuda::lm_head_cross_entropy_forward(d_loss.f32(), d_lse.f32(), d_x.bf16(), d_w.bf16(), d_t.i32(), N, C, V, kIgnoreIndex, chunk, d_ws.data());
    }
    // f32 logits from f32 accumulation over C terms, then f32 exp/log: ~1e-6 relative.
    std::string what = strfmt("N %d C %d V %d chunk %d %s", N, C, V, chunk, storage_name(s));
    check_close(d_loss.download(), {loss}, 1e-5, 1e-5, "loss " + what);
    check_close(d_lse.download(), lse, 1e-5, 1e-5, "lse " + what);
  });
  d_dw.upload(std::vector<float>(size_t(V) * C, 0.25f));
  if (s == Storage::f32) {
    cuda::lm_head_cross_entropy_backward(d_dx.f32(), with_dw ? d_dw.f32() : nullptr, float(dloss), d_x.f32(), d_w.f32(), d_lse.f32(), d_t.i32(), N, C, V, kIgnoreIndex, chunk, d_ws.data());
  } else {
    cuda::lm_head_cross_entropy_backward(d_dx.bf16(), with_dw ? d_dw.f32() : nullptr, float(dloss), d_x.bf16(), d_w.bf16(), d_lse.f32(), d_t.i32(), N, C, V, kIgnoreIndex, chunk, d_ws.data());
  }
  // f32: sums of V f32 products. bf16: dlogits are stored in bf16 (2^-9 relative each) before the
  // two matmuls, and dx is rounded to bf16 at the end: a few 2^-8 of the largest gradient.
  double tol = s == Storage::f32 ? 1e-5 : 8e-3;
  std::string what = strfmt("N %d C %d V %d chunk %d %s", N, C, V, chunk, storage_name(s));
  check_close(d_dx.download(), dx, tol * max_abs(dx), tol, "dx " + what);
  if (with_dw) check_close(d_dw.download(), dw, tol * max_abs(dw), tol, "dw " + what);
  else check_close(d_dw.download(), std::vector<double>(dw.size(), 0.25), 0, 0, "dw untouched " + what);
}

}  // namespace

TEST_CASE("cuda lm_head_cross_entropy: chunked over the vocabulary, against the CPU", "[cuda][sanitize]") {
  SKIP_WITHOUT_CUDA();
  std::mt19937 rng(11);
  for (Storage s : {Storage::f32, Storage::bf16}) {
    Case c = make_case(37, 24, 101, s, rng, 5);
    for (int chunk : {101, 64, 16, 7}) check_case(c, s, chunk, chunk != 64);
  }
}

TEST_CASE("cuda lm_head_cross_entropy: all rows ignored gives 0, a bad target is named", "[cuda]") {
  SKIP_WITHOUT_CUDA();
  std::mt19937 rng(12);
  Case c = make_case(5, 8, 20, Storage::f32, rng, 0);
  std::fill(c.targets.begin(), c.targets.end(), kIgnoreIndex);
  check_case(c, Storage::f32, 8, true);  // the CPU's convention: loss 0, zero gradients
  c.targets[3] = 20;  // == V
  DeviceBuffer d_x(c.x, Storage::f32), d_w(c.w, Storage::f32), d_loss(1, Storage::f32), d_lse(5, Storage::f32), d_t(5, Storage::f32);
  device_upload(d_t.data(), c.targets.data(), 20);
  DeviceBuffer d_ws((cuda::lm_head_cross_entropy_workspace(5, 8, 8) + 3) / 4, Storage::f32);
  // The launcher does not wait for a flag: the loss is NaN and the workspace names the row.
  cuda::lm_head_cross_entropy_forward(d_loss.f32(), d_lse.f32(), d_x.f32(), d_w.f32(), d_t.i32(), 5, 8, 20, kIgnoreIndex, 8, d_ws.data());
  CHECK(std::isnan(d_loss.download()[0]));
  CHECK(cuda::lm_head_cross_entropy_bad_row(d_ws.data(), 5, 8, 8) == 3);
  c.targets[3] = kIgnoreIndex;
  device_upload(d_t.data(), c.targets.data(), 20);
  cuda::lm_head_cross_entropy_forward(d_loss.f32(), d_lse.f32(), d_x.f32(), d_w.f32(), d_t.i32(), 5, 8, 20, kIgnoreIndex, 8, d_ws.data());
  CHECK(d_loss.download()[0] == 0.0f);
  CHECK(cuda::lm_head_cross_entropy_bad_row(d_ws.data(), 5, 8, 8) == -1);
}

TEST_CASE("lm_head_cross_entropy on the cuda device: host targets are checked on the host, the row named", "[cuda]") {
  SKIP_WITHOUT_CUDA();
  std::mt19937 rng(13);
  Case c = make_case(5, 8, 20, Storage::f32, rng, 0);
  Tensor x = Tensor::from(c.x, {5, 8}).to(Device::cuda), w = Tensor::from(c.w, {20, 8}).to(Device::cuda);
  Tensor lse = Tensor::empty({5}, DType::f32, Device::cuda), loss = Tensor::empty({1}, DType::f32, Device::cuda);
  c.targets[2] = -7;
  Tensor t = Tensor::from_i32(c.targets, {5});
  CHECK_THROWS_WITH(lm_head_cross_entropy_forward(loss, lse, x, w, t, kIgnoreIndex), Catch::Contains("row 2"));
  CHECK_THROWS_WITH(checked_targets(t, 20, Device::cuda), Catch::Contains("row 2 is -7"));
  // Good host targets: the loss stays on the device and equals the CPU's.
  c.targets[2] = 4;
  t = Tensor::from_i32(c.targets, {5});
  lm_head_cross_entropy_forward(loss, lse, x, w, t, kIgnoreIndex);
  REQUIRE(loss.device() == Device::cuda);
  Tensor cpu_loss = Tensor::empty({1}), cpu_lse = Tensor::empty({5});
  lm_head_cross_entropy_forward(cpu_loss, cpu_lse, x.to(Device::cpu), w.to(Device::cpu), t, kIgnoreIndex);
  check_close(loss.to_vector(), {double(cpu_loss.to_vector()[0])}, 1e-5, 1e-5, "loss");
}

#endif  // LOLCATS_CUDA
