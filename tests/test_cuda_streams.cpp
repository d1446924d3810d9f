// Stream discipline (cuda/README.md, "Streams and scratch memory"): scratch memory freed at the end
// of a launcher call, while the kernels that use it are still queued on the launcher's stream, must
// not be handed to anyone else until that stream has passed the free. The emulator's launches are
// synchronous unless a test asks for asynchronous streams (cuda/emu/streams.h), and its caching
// allocator is off unless a test turns it on (cuda/memory.h): this file does both, so that reuse
// in flight is visible on the CPU as it would be on a GPU.
#ifdef LOLCATS_CUDA  // these tests call the cuda launchers, absent from a CUDA=0 build
#include "cuda/memory.h"
#include "cuda/mse.h"
#include "tests/cuda_helpers.h"
#include "tests/stream_kernels.h"
#ifdef LOLCATS_CUDA_EMU
#include <cuda_runtime.h>

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
TEST_CASE("emulator: asynchronous streams queue work in order until the program synchronises", "[emu]") {
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
#endif

#endif  // LOLCATS_CUDA
