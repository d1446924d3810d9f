// Streams and events for the SIMT emulator, synchronous by default and queued when a test asks
// (see cuda/emu/streams.h for the model).
#include "cuda/emu/streams.h"

#include <atomic>
#include <chrono>
#include <deque>
#include <exception>
#include <mutex>
#include <set>

#include "cuda/emu/emu.h"
#include "tensor/check.h"

namespace lolcats::emu {
namespace {

struct StreamState {  // what an emulated cudaStream_t points to
  bool blocking = true;  // synchronises with the legacy stream (not cudaStreamNonBlocking)
  std::deque<std::function<void()>> queue;
};
struct EventMark {  // shared by an event and the queued record that completes it
  std::atomic<bool> done{true};
  double ms = 0;  // the host's clock when the record ran
};
struct EventState {  // what an emulated cudaEvent_t points to
  std::shared_ptr<EventMark> mark = std::make_shared<EventMark>();
  StreamState* stream = nullptr;  // where the pending record is queued
};

std::mutex g_mu;                   // the stream set and every queue
std::set<StreamState*> g_streams;  // live streams
std::atomic<bool> g_async{false};
std::exception_ptr g_fault;        // a fault met where it could not be thrown (cudaFree)

std::mutex g_wait_mu;  // the host-wait counters
HostWaits g_waits;
std::string g_last_kernel;  // empty: none launched since the reset

double now_ms() {
  using namespace std::chrono;
  return duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
}

StreamState* state(cudaStream_t s) { return reinterpret_cast<StreamState*>(s); }
bool is_legacy(cudaStream_t s) {
  // The per-thread default stream is not modelled: it runs at once, as the legacy stream does.
  return s == nullptr || s == cudaStreamLegacy || s == cudaStreamPerThread;
}

// Runs the first queued item of `s`; false when the queue was empty. The lock is not held while
// the work runs (a kernel takes long, and work never calls back into the queues).
bool run_front(StreamState* s) {
  std::function<void()> work;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    if (s->queue.empty()) return false;
    work = std::move(s->queue.front());
    s->queue.pop_front();
  }
  work();
  return true;
}
void drain(StreamState* s) {
  while (run_front(s)) {
  }
}
std::vector<StreamState*> streams(bool blocking_only) {
  std::lock_guard<std::mutex> lock(g_mu);
  std::vector<StreamState*> out;
  for (StreamState* s : g_streams)
    if (s->blocking || !blocking_only) out.push_back(s);
  return out;
}
void drain_all(bool blocking_only) {
  for (StreamState* s : streams(blocking_only)) drain(s);
}
void rethrow_pending_fault() {
  if (g_fault) {
    std::exception_ptr f = g_fault;
    g_fault = nullptr;
    std::rethrow_exception(f);
  }
}

}  // namespace

void reset_host_waits() {
  std::lock_guard<std::mutex> lock(g_wait_mu);
  g_waits = HostWaits{};
  g_last_kernel.clear();
}
HostWaits host_waits() {
  std::lock_guard<std::mutex> lock(g_wait_mu);
  return g_waits;
}
void note_host_wait(const char* call) {
  std::lock_guard<std::mutex> lock(g_wait_mu);
  g_waits.waits++;
  if (g_last_kernel.empty()) return;
  if (g_waits.after_first_launch++ == 0) g_waits.first_late = std::string(call) + " after " + g_last_kernel;
}
void note_launch(const char* kernel) {
  std::lock_guard<std::mutex> lock(g_wait_mu);
  g_last_kernel = kernel;
}

void set_async_streams(bool on) {
  if (!on) synchronize_device();  // nothing stays queued once launches are synchronous again
  g_async = on;
}
bool async_streams() { return g_async; }

AsyncStreams::AsyncStreams() : prev_(async_streams()) { set_async_streams(true); }
AsyncStreams::~AsyncStreams() {
  try {
    set_async_streams(prev_);
  } catch (...) {
    g_fault = std::current_exception();  // a destructor must not throw; the next sync reports it
    g_async = prev_;
  }
}

bool queues(cudaStream_t stream) { return g_async && !is_legacy(stream); }

void enqueue(cudaStream_t stream, std::function<void()> work) {
  std::lock_guard<std::mutex> lock(g_mu);
  state(stream)->queue.push_back(std::move(work));
}

cudaError_t enqueue_launch(cudaStream_t stream, const Launch& launch, std::shared_ptr<void> owner) {
  enqueue(stream, [launch, owner] {
    cudaError_t e = run_grid(launch);
    if (e != cudaSuccess)
      throw Error(strfmt("queued launch of %s failed: %s", launch.name, cudaGetErrorString(e)));
  });
  return cudaSuccess;
}

void legacy_stream_point() {
  if (!g_async) return;
  rethrow_pending_fault();
  drain_all(true);
}

void synchronize_device() {
  rethrow_pending_fault();
  drain_all(false);
}

// cudaFree synchronises the device but is called from destructors, so a fault of queued work is
// kept for the next synchronising call instead of thrown there.
void synchronize_device_for_free() {
  try {
    drain_all(false);
  } catch (...) {
    g_fault = std::current_exception();
  }
}

}  // namespace lolcats::emu

using namespace lolcats::emu;

extern "C" {

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned int flags) {
  auto* st = new StreamState;
  st->blocking = (flags & cudaStreamNonBlocking) == 0;
  std::lock_guard<std::mutex> lock(g_mu);
  g_streams.insert(st);
  *s = reinterpret_cast<cudaStream_t>(st);
  return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t* s) { return cudaStreamCreateWithFlags(s, cudaStreamDefault); }
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  if (is_legacy(s)) return cudaErrorInvalidResourceHandle;
  drain(state(s));  // a GPU finishes a destroyed stream's work too
  std::lock_guard<std::mutex> lock(g_mu);
  g_streams.erase(state(s));
  delete state(s);
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
  note_host_wait("cudaStreamSynchronize");
  rethrow_pending_fault();
  if (is_legacy(s)) legacy_stream_point();
  else drain(state(s));
  return cudaSuccess;
}
cudaError_t cudaStreamQuery(cudaStream_t s) {
  if (is_legacy(s)) return cudaSuccess;
  std::lock_guard<std::mutex> lock(g_mu);
  return state(s)->queue.empty() ? cudaSuccess : cudaErrorNotReady;
}

cudaError_t cudaEventCreate(cudaEvent_t* e) {
  *e = reinterpret_cast<cudaEvent_t>(new EventState);
  return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned int) { return cudaEventCreate(e); }
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete reinterpret_cast<EventState*>(e);  // a queued record keeps its mark alive
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
  auto* ev = reinterpret_cast<EventState*>(e);
  if (!queues(s)) {
    legacy_stream_point();  // a no-op unless async
    ev->mark = std::make_shared<EventMark>();
    ev->mark->ms = now_ms();
    ev->stream = nullptr;
    return cudaSuccess;
  }
  // A new mark per record: an earlier record still queued completes its own mark, not this one.
  auto mark = std::make_shared<EventMark>();
  mark->done = false;
  ev->mark = mark;
  ev->stream = state(s);
  enqueue(s, [mark] {
    mark->ms = now_ms();
    mark->done = true;
  });
  return cudaSuccess;
}
cudaError_t cudaEventQuery(cudaEvent_t e) {
  return reinterpret_cast<EventState*>(e)->mark->done ? cudaSuccess : cudaErrorNotReady;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
  note_host_wait("cudaEventSynchronize");
  rethrow_pending_fault();
  auto* ev = reinterpret_cast<EventState*>(e);
  while (!ev->mark->done && run_front(ev->stream)) {
  }
  return cudaSuccess;
}
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned int) {
  auto* ev = reinterpret_cast<EventState*>(e);
  std::shared_ptr<EventMark> mark = ev->mark;
  StreamState* producer = ev->stream;
  auto wait = [mark, producer] {
    while (!mark->done && producer && run_front(producer)) {
    }
  };
  if (queues(s)) enqueue(s, wait);
  else wait();
  return cudaSuccess;
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  auto &a = *reinterpret_cast<EventState*>(start)->mark, &b = *reinterpret_cast<EventState*>(end)->mark;
  if (!a.done || !b.done) return cudaErrorNotReady;
  *ms = float(b.ms - a.ms);
  return cudaSuccess;
}

}  // extern "C"

