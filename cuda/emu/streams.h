// Streams and events of the SIMT emulator, and an opt-in model of asynchronous launches.
//
// By default every launch, copy and matmul runs when it is called, on every stream: a stream is
// only a token and an event a time stamp. That hides a whole class of bugs that a GPU shows:
// memory handed to someone else while queued work still reads it. With asynchronous streams on
// (a test switch, AsyncStreams below), work given to a stream other than the legacy default
// stream is queued instead and runs later, in order per stream, when the program synchronises:
//   cudaStreamSynchronize(s)        runs s's queue
//   cudaEventSynchronize(e)         runs e's stream up to the record of e
//   cudaDeviceSynchronize, cudaFree every queue (cudaFree synchronises the device on a GPU too)
//   the legacy stream               a launch, copy or record on it (cudaMemcpy included) first runs
//                                   the queues of the blocking streams, which CUDA's legacy stream
//                                   waits for; streams made with cudaStreamNonBlocking are left
//   AsyncStreams' end               every queue
// cudaEventQuery reports cudaErrorNotReady until its record has run, so code that polls events
// sees work in flight. A fault inside a queued kernel is thrown by the synchronising call (a bad
// launch configuration too: a GPU would report that at the launch itself). Queued work runs on
// the thread that synchronises; the legacy stream itself always runs at once (one legal schedule
// of in-order work that the host cannot observe otherwise).
#pragma once
#include <cuda_runtime.h>

#include <functional>
#include <memory>
#include <string>

namespace lolcats::emu {

struct Launch;

void set_async_streams(bool on);  // on: queue work as above; off (the default): run it at once
bool async_streams();

// Turns asynchronous streams on for its lifetime; runs every queue when it ends.
class AsyncStreams {
 public:
  AsyncStreams();
  ~AsyncStreams();
  AsyncStreams(const AsyncStreams&) = delete;
  AsyncStreams& operator=(const AsyncStreams&) = delete;

 private:
  bool prev_;
};

// Host waits: the calls after which, on a GPU, the host has waited for the device: a stream, event
// or device synchronisation, a copy into host memory, and a synchronous cudaMemcpy from host memory
// (the driver waits for the stream before it copies pageable memory). Each is counted, and also
// whether a kernel had been launched since the last reset: a training step may upload its inputs
// before its first kernel, but any wait after it stalls the queue (tests/test_lolcats_cuda.cpp).
// cudaFree is not counted: the caching allocator keeps a GPU's step free of it.
struct HostWaits {
  long waits = 0;               // since the last reset
  long after_first_launch = 0;  // of those, after the first kernel launch since the reset
  std::string first_late;       // the first of those: the call and the kernel launched before it
};
void reset_host_waits();
HostWaits host_waits();

// For the runtime, the launcher and the emulated cuBLASLt:
void note_host_wait(const char* call);  // the calls above
void note_launch(const char* kernel);   // every kernel launch
bool queues(cudaStream_t stream);  // is work on `stream` queued (async on, not the legacy stream)?
void enqueue(cudaStream_t stream, std::function<void()> work);  // only when queues(stream)
// A launch on a queued stream; `owner` keeps the launch's parameters alive until it has run.
cudaError_t enqueue_launch(cudaStream_t stream, const Launch& launch, std::shared_ptr<void> owner);
void legacy_stream_point();  // an operation on the legacy stream: the blocking streams' queues run
void synchronize_device();   // every queue runs
void synchronize_device_for_free();  // the same for cudaFree: a fault is kept for the next sync

}  // namespace lolcats::emu
