// The SIMT emulator's scheduler: runs a grid's blocks, each block's threads as fibers, and the
// block- and warp-wide synchronisation between them (see cuda/emu/emu.h for the model).
#include <omp.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "cuda/emu/emu.h"
#include "cuda/emu/fiber.h"
#include "cuda/emu/scheduler.h"
#include "tensor/check.h"
#include "tensor/parallel.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define LOLCATS_EMU_ASAN 1
#endif

__thread lolcats::emu::FiberIndex* lolcats_emu_fiber = nullptr;
__thread lolcats::emu::BlockContext* lolcats_emu_block = nullptr;

namespace lolcats::emu {

namespace {

enum class State { runnable, barrier, warp, done, fault };

struct Fiber : FiberIndex {
  FiberStack stack;
  void* sp = nullptr;  // saved stack pointer while suspended
  int linear = 0;      // x + y*bx + z*bx*by, as CUDA numbers threads into warps
  State state = State::done;
  const char* file = nullptr;  // where it waits
  int line = 0;
  // the warp collective it waits at
  Collective kind = Collective::syncwarp;
  unsigned mask = 0;
  uint64_t value = 0, result = 0;
  int arg = 0, width = 32;
  // a warp matrix instruction (Collective::matrix): its name and what computes it
  const char* matrix_op = nullptr;
  WarpMatrixFn matrix_fn = nullptr;
  // cp.async: copies issued and not yet waited for; group -1 = not committed yet
  struct PendingCopy {
    void* dst;
    const void* src;
    int bytes, group;
  };
  std::vector<PendingCopy> cp_pending;
  int cp_groups = 0;  // groups committed so far
  void* asan_fake_stack = nullptr;
};

// One per OS thread: runs one block at a time.
struct Scheduler {
  std::vector<std::unique_ptr<Fiber>> fibers;  // a pool, grown to the largest block seen
  int nthreads = 0;                            // threads of the current block
  const Launch* launch = nullptr;
  BlockContext block{};
  std::vector<char> shared;  // dynamic shared memory
  void* main_sp = nullptr;
  std::string fault;  // set by a fiber that hit an error
  const void* main_stack_bottom = nullptr;
  size_t main_stack_size = 0;
  std::mt19937 rng{12345};
};

thread_local Scheduler t_sched;
std::atomic<ThreadOrder> g_order{ThreadOrder::forward};

const char* collective_name(Collective k) {
  static const char* names[] = {"__shfl_sync",  "__shfl_up_sync", "__shfl_down_sync",
                                "__shfl_xor_sync", "__ballot_sync", "__any_sync",
                                "__all_sync",   "__syncwarp", "a warp matrix instruction"};
  return names[int(k)];
}
// What a waiting fiber waits at: the collective, or the matrix instruction by name.
const char* wait_name(const Fiber& f) {
  return f.kind == Collective::matrix && f.matrix_op ? f.matrix_op : collective_name(f.kind);
}

std::string where(const Scheduler& s) {
  const uint3& b = s.block.block_idx;
  return strfmt("kernel %s, block (%u,%u,%u)", s.launch->name, b.x, b.y, b.z);
}
std::string thread_str(const Fiber& f) {
  return strfmt("thread (%u,%u,%u)", f.thread_idx.x, f.thread_idx.y, f.thread_idx.z);
}

// ---- switching -----------------------------------------------------------------------------------

void resume(Scheduler& s, Fiber& f) {
  lolcats_emu_fiber = &f;
#ifdef LOLCATS_EMU_ASAN
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, f.stack.bottom(), f.stack.size());
#endif
  lolcats_emu_switch(&s.main_sp, f.sp);
#ifdef LOLCATS_EMU_ASAN
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
  lolcats_emu_fiber = nullptr;
}

// Back to the scheduler, from a fiber that waits (or has finished for good).
void yield(Scheduler& s, Fiber& f) {
#ifdef LOLCATS_EMU_ASAN
  bool finished = f.state == State::done || f.state == State::fault;
  __sanitizer_start_switch_fiber(finished ? nullptr : &f.asan_fake_stack, s.main_stack_bottom,
                                 s.main_stack_size);
#endif
  lolcats_emu_switch(&f.sp, s.main_sp);
#ifdef LOLCATS_EMU_ASAN
  __sanitizer_finish_switch_fiber(f.asan_fake_stack, &s.main_stack_bottom, &s.main_stack_size);
#endif
}

void fiber_entry(void* arg) {
  Fiber& f = *static_cast<Fiber*>(arg);
  Scheduler& s = t_sched;
#ifdef LOLCATS_EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &s.main_stack_bottom, &s.main_stack_size);
#endif
  try {
    s.launch->body(s.launch->ctx);
    f.state = State::done;
  } catch (const std::exception& e) {  // never let an exception unwind past the fiber's stack
    if (s.fault.empty()) s.fault = thread_str(f) + ": " + e.what();
    f.state = State::fault;
  }
  yield(s, f);
  __builtin_unreachable();
}

// A fiber reports a fault and leaves for good; the scheduler throws it. Two steps, because a
// fiber that leaves never runs the destructors of its frames: the message (a temporary) must be
// gone before `leave`, so FIBER_FAULT records it in one statement and leaves in the next.
void record_fault(Scheduler& s, Fiber& f, const std::string& msg) {
  if (s.fault.empty()) s.fault = thread_str(f) + ": " + msg;
}
[[noreturn]] void leave(Scheduler& s, Fiber& f) {
  f.state = State::fault;
  yield(s, f);
  __builtin_unreachable();
}
#define FIBER_FAULT(s, f, ...)                 \
  do {                                         \
    record_fault(s, f, strfmt(__VA_ARGS__));   \
    leave(s, f);                               \
  } while (0)

Fiber& current(Scheduler& s) {
  ENSURE(lolcats_emu_fiber != nullptr, "a CUDA device function was called outside a kernel");
  return *static_cast<Fiber*>(lolcats_emu_fiber);
  (void)s;
}

// ---- warp collectives ----------------------------------------------------------------------------

// PTX's shfl rule (ISA manual, shfl.sync): with c = ((32 - width) << 8) | clamp, a lane's segment
// is [minLane, maxLane]; a source lane outside the allowed range means "keep your own value".
int shfl_source(Collective kind, int lane, int b, int width) {
  int segmask = 32 - width;
  int min_lane = lane & segmask;
  int max_lane = kind == Collective::shfl_up ? min_lane : (min_lane | (31 & ~segmask));
  int j = lane;
  bool ok = true;
  switch (kind) {
    case Collective::shfl_idx: j = min_lane | (b & ~segmask & 31); ok = j <= max_lane; break;
    case Collective::shfl_up: j = lane - b; ok = j >= max_lane; break;
    case Collective::shfl_down: j = lane + b; ok = j <= max_lane; break;
    case Collective::shfl_xor: j = lane ^ b; ok = j <= max_lane; break;
    default: break;
  }
  return ok ? j : lane;
}

// Every lane of `group` has arrived: compute each one's result.
void complete(Scheduler& s, Fiber& caller, int warp, unsigned group) {
  Fiber* lanes[32] = {};
  for (int l = 0; l < 32; l++)
    if (group >> l & 1) lanes[l] = s.fibers[size_t(warp * 32 + l)].get();
  for (int l = 0; l < 32; l++) {
    Fiber* f = lanes[l];
    if (!f) continue;
    if (f->kind != caller.kind || f->width != caller.width ||
        (f->kind == Collective::matrix && f->matrix_fn != caller.matrix_fn))
      FIBER_FAULT(s, caller, "lanes of one warp meet at different collectives with mask 0x%08x: %s "
                         "at %s %s:%d, %s at %s %s:%d",
                         group, thread_str(caller).c_str(), wait_name(caller),
                         caller.file, caller.line, thread_str(*f).c_str(),
                         wait_name(*f), f->file, f->line);
  }
  if (caller.kind == Collective::matrix) {  // group is the full warp (warp_matrix)
    void* data[32];
    for (int l = 0; l < 32; l++) data[l] = reinterpret_cast<void*>(uintptr_t(lanes[l]->value));
    bool bad = false;
    {  // the message must be gone before `leave` (see FIBER_FAULT)
      std::string err = caller.matrix_fn(data);
      if (!err.empty()) {
        bad = true;
        record_fault(s, caller, strfmt("%s at %s:%d: %s", caller.matrix_op, caller.file,
                                       caller.line, err.c_str()));
      }
    }
    if (bad) leave(s, caller);
    for (Fiber* f : lanes) f->state = State::runnable;
    return;
  }
  uint64_t bits = 0;
  for (int l = 0; l < 32; l++)
    if (lanes[l]) bits |= uint64_t(lanes[l]->value != 0) << l;
  for (int l = 0; l < 32; l++) {
    Fiber* f = lanes[l];
    if (!f) continue;
    switch (f->kind) {
      case Collective::ballot: f->result = bits; break;
      case Collective::any: f->result = bits != 0; break;
      case Collective::all: f->result = bits == group; break;
      case Collective::syncwarp: f->result = 0; break;
      default: {
        int src = shfl_source(f->kind, l, f->arg, f->width);
        // A source lane that is not in the mask gives an undefined value on the GPU: all ones
        // here (a NaN as a float), so that using it shows.
        f->result = lanes[src] ? lanes[src]->value : ~uint64_t(0);
      }
    }
    f->state = State::runnable;
  }
}

}  // namespace

void set_thread_order(ThreadOrder order) { g_order = order; }
ThreadOrder thread_order() { return g_order; }

void syncthreads(const char* file, int line) {
  Scheduler& s = t_sched;
  Fiber& f = current(s);
  f.state = State::barrier;
  f.file = file;
  f.line = line;
  yield(s, f);
}

uint64_t warp_collective(Collective kind, unsigned mask, uint64_t value, int arg, int width,
                         const char* file, int line) {
  Scheduler& s = t_sched;
  Fiber& f = current(s);
  int lane = f.linear % 32, warp = f.linear / 32;
  if (!(mask >> lane & 1))
    FIBER_FAULT(s, f, "%s at %s:%d with mask 0x%08x, which does not name its own lane %d",
                collective_name(kind), file, line, mask, lane);
  int warp_lanes = std::min(32, s.nthreads - warp * 32);
  if (warp_lanes < 32 && (mask >> warp_lanes) != 0)
    FIBER_FAULT(s, f, "%s at %s:%d with mask 0x%08x names lanes this block does not have "
                "(its last warp has %d threads)", collective_name(kind), file, line, mask, warp_lanes);
  if (width < 1 || width > 32 || (width & (width - 1)))
    FIBER_FAULT(s, f, "%s at %s:%d: width %d is not a power of 2 in 1..32", collective_name(kind),
                file, line, width);
  f.kind = kind;
  f.mask = mask;
  f.value = value;
  f.arg = arg;
  f.width = width;
  f.file = file;
  f.line = line;
  f.state = State::warp;
  unsigned arrived = 0;
  for (int l = 0; l < warp_lanes; l++) {
    const Fiber& o = *s.fibers[size_t(warp * 32 + l)];
    if (o.state == State::warp && o.mask == mask) arrived |= 1u << l;
  }
  if (arrived == mask)
    complete(s, f, warp, mask);  // the last to arrive: everyone's result is ready, f runs on
  else
    yield(s, f);
  return f.result;
}

void warp_matrix(const char* op, WarpMatrixFn compute, void* lane_data, const char* file, int line) {
  Scheduler& s = t_sched;
  Fiber& f = current(s);
  int warp = f.linear / 32, warp_lanes = std::min(32, s.nthreads - warp * 32);
  if (warp_lanes < 32)
    FIBER_FAULT(s, f, "%s at %s:%d needs all 32 lanes of a warp, but this block's last warp has %d "
                "threads", op, file, line, warp_lanes);
  f.matrix_op = op;
  f.matrix_fn = compute;
  (void)warp_collective(Collective::matrix, 0xffffffffu, uint64_t(uintptr_t(lane_data)), 0, 32,
                        file, line);
}

void cp_async(void* dst, const void* src, int bytes, const char* file, int line) {
  Scheduler& s = t_sched;
  Fiber& f = current(s);
  if (bytes != 4 && bytes != 8 && bytes != 16)
    FIBER_FAULT(s, f, "cp.async at %s:%d of %d bytes (4, 8 or 16)", file, line, bytes);
  if (uintptr_t(dst) % unsigned(bytes) != 0 || uintptr_t(src) % unsigned(bytes) != 0)
    FIBER_FAULT(s, f, "cp.async at %s:%d of %d bytes: addresses %p and %p must be aligned to %d",
                file, line, bytes, dst, src, bytes);
  f.cp_pending.push_back(Fiber::PendingCopy{dst, src, bytes, -1});
}

void cp_async_commit() {
  Fiber& f = current(t_sched);
  for (auto& c : f.cp_pending)
    if (c.group < 0) c.group = f.cp_groups;
  f.cp_groups++;  // with nothing pending, an empty group (as in PTX)
}

void cp_async_wait(int n) {
  Fiber& f = current(t_sched);
  int limit = f.cp_groups - n;  // groups [0, limit) must be complete
  size_t kept = 0;
  for (auto& c : f.cp_pending) {
    if (c.group >= 0 && c.group < limit) std::memcpy(c.dst, c.src, size_t(c.bytes));  // in issue order
    else f.cp_pending[kept++] = c;
  }
  f.cp_pending.resize(kept);
}

char* dynamic_shared() { return lolcats_emu_block->dynamic_shared; }

// ---- running a block -----------------------------------------------------------------------------

namespace {

[[noreturn]] void block_fault(Scheduler& s, const std::string& msg) {
  // Fibers left suspended are simply abandoned: kernels hold no resources. Their stacks may keep
  // ASan's poisoning of dead frames; clear it before reuse.
#ifdef LOLCATS_EMU_ASAN
  for (int i = 0; i < s.nthreads; i++)
    if (s.fibers[size_t(i)]->state != State::done)
      ASAN_UNPOISON_MEMORY_REGION(s.fibers[size_t(i)]->stack.bottom(), FiberStack::kSize);
#endif
  throw Error("SIMT emulator: " + where(s) + ": " + msg);
}

std::string describe_wait(const Fiber& f) {
  switch (f.state) {
    case State::done: return thread_str(f) + " has exited";
    case State::barrier: return strfmt("%s waits at __syncthreads %s:%d", thread_str(f).c_str(), f.file, f.line);
    case State::warp:
      return strfmt("%s waits at %s %s:%d (mask 0x%08x)", thread_str(f).c_str(),
                    wait_name(f), f.file, f.line, f.mask);
    default: return thread_str(f);
  }
}

// Nothing can run: release a barrier that every live thread waits at, or report why not.
void release_barrier_or_fail(Scheduler& s) {
  std::vector<Fiber*> live, at_barrier, exited;
  for (int i = 0; i < s.nthreads; i++) {
    Fiber* f = s.fibers[size_t(i)].get();
    if (f->state == State::done) exited.push_back(f);
    else live.push_back(f);
    if (f->state == State::barrier) at_barrier.push_back(f);
  }
  if (!at_barrier.empty() && at_barrier.size() == live.size()) {
    for (Fiber* f : at_barrier)
      if (f->line != at_barrier[0]->line || std::strcmp(f->file, at_barrier[0]->file) != 0)
        block_fault(s, "threads wait at different __syncthreads: " + describe_wait(*at_barrier[0]) +
                           ", " + describe_wait(*f));
    if (!exited.empty())
      block_fault(s, describe_wait(*at_barrier[0]) + ", but " + describe_wait(*exited[0]) +
                         " (every thread of a block must reach each __syncthreads)");
    for (Fiber* f : at_barrier) f->state = State::runnable;
    return;
  }
  // A deadlock: some thread waits at a warp collective for lanes that never come.
  std::string msg = "deadlock: ";
  int shown = 0;
  for (Fiber* f : live)
    if (f->state == State::warp) {
      msg += describe_wait(*f);
      shown++;
      break;
    }
  for (int i = 0; i < s.nthreads && shown < 4; i++) {
    Fiber* f = s.fibers[size_t(i)].get();
    if (f->state != State::warp) {
      msg += "; " + describe_wait(*f);
      shown++;
    }
  }
  block_fault(s, msg);
}

void run_block(Scheduler& s, uint3 block_idx) {
  s.block.block_idx = block_idx;
  const dim3& bd = s.block.block_dim;
  for (int i = 0; i < s.nthreads; i++) {
    Fiber& f = *s.fibers[size_t(i)];
    f.thread_idx = uint3{unsigned(i) % bd.x, (unsigned(i) / bd.x) % bd.y, unsigned(i) / (bd.x * bd.y)};
    f.linear = i;
    f.state = State::runnable;
    f.cp_pending.clear();  // copies a previous block never waited for are dropped
    f.cp_groups = 0;
    f.sp = fiber_prepare(f.stack, fiber_entry, &f);
  }
  if (!s.shared.empty()) std::memset(s.shared.data(), 0xFF, s.shared.size());
  s.fault.clear();
  ThreadOrder order = g_order;
  std::vector<int> perm(size_t(s.nthreads));
  for (int i = 0; i < s.nthreads; i++) perm[size_t(i)] = order == ThreadOrder::reverse ? s.nthreads - 1 - i : i;
  int done = 0;
  for (;;) {
    if (order == ThreadOrder::shuffled) std::shuffle(perm.begin(), perm.end(), s.rng);
    bool ran = false;
    for (int i : perm) {
      Fiber& f = *s.fibers[size_t(i)];
      if (f.state != State::runnable) continue;
      resume(s, f);
      ran = true;
      if (f.state == State::fault) block_fault(s, s.fault);
      if (f.state == State::done) done++;
    }
    if (done == s.nthreads) return;
    if (!ran) release_barrier_or_fail(s);
  }
}

// A crash inside a kernel: say in which block and thread, on stderr, with async-signal-safe calls.
void report_crash(const char* what) {
  if (!lolcats_emu_fiber || !lolcats_emu_block) return;
  const Fiber& f = *static_cast<const Fiber*>(lolcats_emu_fiber);
  const uint3 &b = lolcats_emu_block->block_idx, &t = f.thread_idx;
  const Launch* l = t_sched.launch;
  char buf[512];
  int n = snprintf(buf, sizeof buf, "SIMT emulator: crash in kernel %s (%s) at block (%u,%u,%u), thread (%u,%u,%u)\n",
                   l ? l->name : "?", what, b.x, b.y, b.z, t.x, t.y, t.z);
  if (n > 0) (void)!write(2, buf, size_t(std::min(n, int(sizeof buf) - 1)));
}

#ifdef LOLCATS_EMU_ASAN
void asan_death_callback() { report_crash("see the AddressSanitizer report above"); }

// ASan reports the crash itself; it calls back for the block and thread.
struct CrashHandlerScope {
  CrashHandlerScope() {
    static bool installed = (__sanitizer_set_death_callback(asan_death_callback), true);
    (void)installed;
  }
};
#else
constexpr int kCrashSignals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL};
struct sigaction g_previous[4];

void crash_handler(int sig, siginfo_t* info, void*) {
  if (lolcats_emu_fiber) {
    const Fiber& f = *static_cast<const Fiber*>(lolcats_emu_fiber);
    bool overflow = f.stack.contains(info->si_addr) && info->si_addr < f.stack.bottom();
    report_crash(overflow ? "stack overflow: a CUDA thread has 256 KiB of stack here"
                 : sig == SIGSEGV ? "segmentation fault" : sig == SIGBUS ? "bus error"
                 : sig == SIGFPE ? "arithmetic exception" : "illegal instruction");
  }
  // Hand over to whoever handled the signal before the launch (a test framework, or the default
  // action): returning re-executes the faulting instruction under that handler.
  for (int i = 0; i < 4; i++)
    if (kCrashSignals[i] == sig) sigaction(sig, &g_previous[i], nullptr);
}

// Our handler for the duration of one launch (installed per launch, because test frameworks
// install their own per test); each OS thread that runs blocks needs a signal stack of its own,
// since the crashing fiber's stack may be the one that overflowed.
struct CrashHandlerScope {
  CrashHandlerScope() {
    struct sigaction sa {};
    sa.sa_sigaction = crash_handler;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    for (int i = 0; i < 4; i++) sigaction(kCrashSignals[i], &sa, &g_previous[i]);
  }
  ~CrashHandlerScope() {
    for (int i = 0; i < 4; i++) sigaction(kCrashSignals[i], &g_previous[i], nullptr);
  }
};
#endif

void ensure_signal_stack() {
#ifndef LOLCATS_EMU_ASAN
  static thread_local std::vector<char> alt(64 * 1024);
  static thread_local bool alt_set = [] {
    stack_t ss{};
    ss.ss_sp = alt.data();
    ss.ss_size = alt.size();
    sigaltstack(&ss, nullptr);
    return true;
  }();
  (void)alt_set;
#endif
}

}  // namespace

cudaError_t run_grid(const Launch& l) {
  const dim3 &g = l.grid, &b = l.block;
  uint64_t threads = uint64_t(b.x) * b.y * b.z, blocks = uint64_t(g.x) * g.y * g.z;
  if (threads == 0 || threads > 1024 || b.x > 1024 || b.y > 1024 || b.z > 64 || blocks == 0 ||
      g.x > 0x7fffffffu || g.y > 65535 || g.z > 65535)
    return cudaErrorInvalidConfiguration;
  if (l.shared_bytes > max_dynamic_shared(l.func)) return cudaErrorInvalidValue;
  CrashHandlerScope crash_handler_scope;
  int nworkers = int(std::min<uint64_t>(blocks, uint64_t(std::max(1, num_threads()))));
  std::atomic<bool> failed{false};
  std::string first_fault;
  // One block (most test launches) runs on the calling thread: starting an OpenMP team for it
  // costs more than the block on a loaded machine.
#pragma omp parallel for num_threads(nworkers) schedule(dynamic, 1) if (nworkers > 1)
  for (uint64_t i = 0; i < blocks; i++) {
    if (failed.load(std::memory_order_relaxed)) continue;
    Scheduler& s = t_sched;
    ensure_signal_stack();
    try {
      if (s.fibers.size() < threads) {  // grow this OS thread's pool of fibers
        s.fibers.reserve(threads);
        while (s.fibers.size() < threads) s.fibers.push_back(std::make_unique<Fiber>());
      }
      s.launch = &l;
      s.nthreads = int(threads);
      s.block.block_dim = b;
      s.block.grid_dim = g;
      s.shared.resize(l.shared_bytes);
      s.block.dynamic_shared = s.shared.data();
      lolcats_emu_block = &s.block;
      run_block(s, uint3{unsigned(i % g.x), unsigned(i / g.x % g.y), unsigned(i / (uint64_t(g.x) * g.y))});
      lolcats_emu_block = nullptr;
    } catch (const std::exception& e) {
      lolcats_emu_block = nullptr;
#pragma omp critical(lolcats_emu_fault)
      if (!failed.exchange(true)) first_fault = e.what();
    }
  }
  if (failed) throw Error(first_fault);
  return cudaSuccess;
}

}  // namespace lolcats::emu
