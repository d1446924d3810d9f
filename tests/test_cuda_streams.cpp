// Stream discipline (cuda/README.md, "Streams and scratch memory"): scratch memory freed at the end
// of a launcher call, while the kernels that use it are still queued on the launcher's stream, must
// not be handed to anyone else until that stream has passed the free. The emulator's launches are
// synchronous unless a test asks for asynchronous streams (cuda/emu/streams.h), and its caching
// allocator is off unless a test turns it on (cuda/memory.h): this file does both, so that reuse
// in flight is visible on the CPU as it would be on a GPU.
#ifdef LOLCATS_CUDA  // these tests call the cuda launchers, absent from a CUDA=0 build
#include "cuda/attention.h"
#include "cuda/embedding.h"
#include "cuda/feature_map.h"
#include "cuda/hybrid_attention.h"
#include "cuda/memory.h"
#include "cuda/mse.h"
#include "cuda/rmsnorm.h"
#include "tests/cuda_helpers.h"
#include "tests/stream_kernels.h"
#ifdef LOLCATS_CUDA_EMU
#include <cuda_runtime.h>

#include <functional>

#include "cuda/emu/streams.h"
#endif

using namespace lolcats;
using namespace lolcats_test;

namespace {

struct CacheForTest {  // the caching allocator on for the test's lifetime (emulator; a GPU always caches)
  CacheForTest() { device_cache_for_tests(true); }
  ~CacheForTest() { device_cache_for_tests(false); }
};

std::vector<float> ramp(int n) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int i = 0; i < n; i++) v[size_t(i)] = 1.0f + float(i);
  return v;
}

}  // namespace

TEST_CASE("cuda streams: scratch freed on a stream is not reused while work there is in flight",
          "[cuda][sanitize]") {
  SKIP_WITHOUT_CUDA();
  const int n = 1000;
  CacheForTest cache;  // outlives `async`, whose end runs what is still queued
#ifdef LOLCATS_CUDA_EMU
  emu::AsyncStreams async;
  {
    // The hazard is real: freed at once (the rule that holds only on the legacy stream), the block
    // goes to the very next allocation of its size while the copy that reads it is still queued,
    // and the copy reads its new owner's zeros. Without the discipline the case below fails so.
    stream_test::ScratchReuse naive = stream_test::run_scratch_reuse(n, true);
    REQUIRE(naive.in_flight);
    CHECK(naive.next == naive.scratch);
    CHECK(naive.out == std::vector<float>(size_t(n), 0.0f));
  }
  stream_test::ScratchReuse r = stream_test::run_scratch_reuse(n, false);
  REQUIRE(r.in_flight);
  CHECK(r.next != r.scratch);  // in flight: the block was kept back
  CHECK(r.out == ramp(n));
  CHECK(r.after_sync == r.scratch);  // once the stream has passed the free, it is reused
#else
  // On a GPU the stream really is asynchronous; whether the copy is still in flight when the block
  // would be reused is up to the hardware, so only the result is checked.
  CHECK(stream_test::run_scratch_reuse(n, false).out == ramp(n));
#endif
}

#ifdef LOLCATS_CUDA_EMU
TEST_CASE("emulator: asynchronous streams queue work in order until the program synchronises", "[cuda][emu]") {
  const int n = 4096;  // 16 blocks of mse_forward's partial sums
  std::mt19937 rng(3);
  std::vector<float> a = random_vector(size_t(n), rng), b = random_vector(size_t(n), rng);
  DeviceBuffer da(a, Storage::f32), db(b, Storage::f32), loss(1, Storage::f32), loss_sync(1, Storage::f32);
  cuda::mse_forward(loss_sync.f32(), da.f32(), db.f32(), n, nullptr);  // synchronous: the reference
  CacheForTest cache;
  emu::AsyncStreams async;
  for (unsigned flags : {unsigned(cudaStreamDefault), unsigned(cudaStreamNonBlocking)}) {
    INFO("stream flags " << flags);
    cudaStream_t s = nullptr;
    REQUIRE(cudaStreamCreateWithFlags(&s, flags) == cudaSuccess);
    cudaEvent_t done = nullptr;
    REQUIRE(cudaEventCreate(&done) == cudaSuccess);
    loss.upload({-1.0f});
    cuda::mse_forward(loss.f32(), da.f32(), db.f32(), n, s);  // its scratch is freed on s, queued
    REQUIRE(cudaEventRecord(done, s) == cudaSuccess);
    CHECK(cudaStreamQuery(s) == cudaErrorNotReady);
    CHECK(cudaEventQuery(done) == cudaErrorNotReady);
    if (flags == cudaStreamDefault) {
      // A copy on the legacy stream waits for a blocking stream's work.
      CHECK(loss.download() == loss_sync.download());
    } else {
      // ...but not for a non-blocking stream's: the result is not there until its event is waited for.
      CHECK(loss.download() == std::vector<float>{-1.0f});
      REQUIRE(cudaEventSynchronize(done) == cudaSuccess);
      CHECK(loss.download() == loss_sync.download());  // the same bits as the synchronous launch
    }
    CHECK(cudaEventQuery(done) == cudaSuccess);
    CHECK(cudaStreamQuery(s) == cudaSuccess);
    cudaEventDestroy(done);
    REQUIRE(cudaStreamDestroy(s) == cudaSuccess);
  }
}

namespace {

// Runs `launch` on the legacy stream, then on a non-blocking stream with queued launches and the
// caching allocator on, and compares every output bit for bit. A launcher that put any of its work
// (a kernel, a copy, a memset, a gemm) on another stream than the one it was given runs that work
// out of order here (the legacy stream does not wait for a non-blocking one), and gets other bits.
void same_bits_on_a_queued_stream(const char* what, const std::function<void(cuda::Stream)>& launch,
                                  const std::vector<DeviceBuffer*>& outputs) {
  INFO(what);
  std::vector<std::vector<float>> want;
  for (DeviceBuffer* o : outputs) o->zero();
  launch(nullptr);
  for (DeviceBuffer* o : outputs) want.push_back(o->download());
  CacheForTest cache;
  emu::AsyncStreams async;
  cudaStream_t s = nullptr;
  REQUIRE(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) == cudaSuccess);
  for (DeviceBuffer* o : outputs) o->zero();
  launch(s);
  CHECK(cudaStreamQuery(s) == cudaErrorNotReady);  // the work really was queued
  REQUIRE(cudaStreamSynchronize(s) == cudaSuccess);
  for (size_t i = 0; i < outputs.size(); i++) {
    INFO("output " << i);
    CHECK(outputs[i]->download() == want[i]);
  }
  REQUIRE(cudaStreamDestroy(s) == cudaSuccess);
}

}  // namespace

TEST_CASE("emulator: every launcher with scratch keeps all its work on the stream it is given", "[cuda][emu]") {
  std::mt19937 rng(5);
  auto input = [&](size_t n) { return std::make_unique<DeviceBuffer>(random_vector(n, rng), Storage::f32); };
  auto output = [](size_t n) { return std::make_unique<DeviceBuffer>(n, Storage::f32); };
  const int B = 1, T = 80, H = 2, Hkv = 1, D = 16, F = 16;  // T > 64: the linear state takes part
  const size_t nq = size_t(B) * T * H * D, nkv = size_t(B) * T * Hkv * D, nphi = size_t(B) * T * H * F;
  {
    const int N = 37, C = 48;
    auto dy = input(size_t(N) * C), x = input(size_t(N) * C), w = input(size_t(C)), rstd = input(size_t(N));
    auto dx = output(size_t(N) * C), dw = output(size_t(C));
    same_bits_on_a_queued_stream("rmsnorm_backward", [&](cuda::Stream st) {
      cuda::rmsnorm_backward<float>(dx->f32(), dw->f32(), dy->f32(), x->f32(), w->f32(), rstd->f32(), N, C, st);
    }, {dx.get(), dw.get()});
  }
  {
    const int Fh = 8;
    auto x = input(size_t(B) * T * H * D), W = input(size_t(H) * D * Fh), bias = input(size_t(H) * Fh);
    auto dphi = input(size_t(B) * T * H * 2 * Fh);
    auto phi = output(size_t(B) * T * H * 2 * Fh), dx = output(size_t(B) * T * H * D), dW = output(size_t(H) * D * Fh);
    auto dbias = output(size_t(H) * Fh), phi_t2r = output(size_t(B) * T * H * Fh);
    same_bits_on_a_queued_stream("hedgehog", [&](cuda::Stream st) {
      cuda::hedgehog_forward<float>(phi->f32(), x->f32(), W->f32(), B, T, H, H, D, Fh, st);
      cuda::hedgehog_backward<float>(dx->f32(), dW->f32(), dphi->f32(), phi->f32(), x->f32(), W->f32(), B, T, H, H,
                                     D, Fh, st);
    }, {phi.get(), dx.get(), dW.get()});
    same_bits_on_a_queued_stream("t2r", [&](cuda::Stream st) {
      cuda::t2r_forward<float>(phi_t2r->f32(), x->f32(), W->f32(), bias->f32(), B, T, H, H, D, Fh, st);
      cuda::t2r_backward<float>(dx->f32(), dW->f32(), dbias->f32(), dphi->f32(), phi_t2r->f32(), x->f32(), W->f32(),
                                B, T, H, H, D, Fh, st);
    }, {phi_t2r.get(), dx.get(), dW.get(), dbias.get()});
  }
  {
    auto q = input(nq), k = input(nkv), v = input(nkv), dy = input(nq), wlogit = input(size_t(H));
    std::vector<float> phi_host = random_vector(2 * nphi, rng);
    for (float& p : phi_host) p = std::fabs(p) + 0.1f;  // features are positive
    DeviceBuffer phiq(std::vector<float>(phi_host.begin(), phi_host.begin() + long(nphi)), Storage::f32);
    DeviceBuffer phik(std::vector<float>(phi_host.begin() + long(nphi), phi_host.end()), Storage::f32);
    auto y = output(nq), Z = output(size_t(B) * H * T), dq = output(nq), dk = output(nkv), dv = output(nkv);
    auto dphiq = output(nphi), dphik = output(nphi), dwlogit = output(size_t(H)), lse = output(size_t(B) * H * T);
    same_bits_on_a_queued_stream("hybrid_attention", [&](cuda::Stream st) {
      cuda::hybrid_attention_forward<float>(y->f32(), Z->f32(), q->f32(), k->f32(), v->f32(), phiq.f32(), phik.f32(),
                                            wlogit->f32(), B, T, H, Hkv, D, F, HybridVariant::terrace, st);
      cuda::hybrid_attention_backward<float>(dq->f32(), dk->f32(), dv->f32(), dphiq->f32(), dphik->f32(),
                                             dwlogit->f32(), dy->f32(), y->f32(), Z->f32(), q->f32(), k->f32(),
                                             v->f32(), phiq.f32(), phik.f32(), wlogit->f32(), B, T, H, Hkv, D, F,
                                             HybridVariant::terrace, st);
    }, {y.get(), Z.get(), dq.get(), dk.get(), dv.get(), dphiq.get(), dphik.get(), dwlogit.get()});
    same_bits_on_a_queued_stream("attention", [&](cuda::Stream st) {
      cuda::attention_forward<float>(y->f32(), lse->f32(), q->f32(), k->f32(), v->f32(), B, T, H, Hkv, D, st);
      cuda::attention_backward<float>(dq->f32(), dk->f32(), dv->f32(), dy->f32(), y->f32(), lse->f32(), q->f32(),
                                      k->f32(), v->f32(), B, T, H, Hkv, D, st);
    }, {y.get(), lse.get(), dq.get(), dk.get(), dv.get()});
  }
  {
    const int N = 50, V = 11, C = 24;
    std::vector<int32_t> idx_host(static_cast<size_t>(N));
    for (int n = 0; n < N; n++) idx_host[size_t(n)] = int32_t((n * 7) % V);  // repeated tokens
    DeviceBuffer idx(size_t(N), Storage::f32);  // int32 indices in an f32-sized buffer
    device_upload(idx.data(), idx_host.data(), sizeof(int32_t) * size_t(N));
    auto dy = input(size_t(N) * C), dwte = output(size_t(V) * C);
    same_bits_on_a_queued_stream("embedding_backward", [&](cuda::Stream st) {
      cuda::embedding_backward<float>(dwte->f32(), dy->f32(), idx.i32(), N, V, C, st);
    }, {dwte.get()});
  }
  {
    const int n = 5000;
    auto a = input(size_t(n)), b = input(size_t(n)), loss = output(1);
    same_bits_on_a_queued_stream("mse_forward", [&](cuda::Stream st) {
      cuda::mse_forward<float>(loss->f32(), a->f32(), b->f32(), n, st);
    }, {loss.get()});
  }
}
#endif

#endif  // LOLCATS_CUDA
