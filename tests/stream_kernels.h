// Host wrappers of tests/stream_kernels.cu (kept apart so that the Catch2 tests compile with g++
// only): scratch memory reused while work that reads it is still queued on a stream.
#pragma once
#include <vector>

namespace stream_test {

struct ScratchReuse {
  std::vector<float> out;       // what the queued kernel copied out of the scratch
  const void* scratch = nullptr;  // the scratch block
  const void* next = nullptr;     // the block the next allocation of that size got
  bool in_flight = false;         // the stream still had queued work when `next` was allocated
  const void* after_sync = nullptr;  // the block an allocation got once the stream had finished
};

// On a non-blocking stream: a kernel fills scratch (then the stream is synchronised), a second
// kernel copies the scratch into `out` and stays queued, the scratch is freed (by DeviceScratch's
// stream discipline, or at once with device_free when `naive_free`), and an allocation of the same
// size is overwritten on the legacy stream before the stream runs. out[i] should be 1 + i.
ScratchReuse run_scratch_reuse(int n, bool naive_free);

}  // namespace stream_test
