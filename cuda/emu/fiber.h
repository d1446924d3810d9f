// Fibers for the SIMT emulator: one stack per CUDA thread and a context switch of a few
// instructions (x86-64 System V). ucontext would do the same job about ten times slower: it makes a
// signal-mask system call on every switch, and a block of 256 threads switches at every barrier.
#pragma once
#include <cstddef>
#include <cstdint>

namespace lolcats::emu {

class FiberStack {
 public:
  static constexpr size_t kSize = 256 * 1024;  // per CUDA thread; local arrays of a kernel live here
  FiberStack();                                // mmap'd, with an inaccessible guard page below
  ~FiberStack();
  FiberStack(const FiberStack&) = delete;
  FiberStack& operator=(const FiberStack&) = delete;
  char* bottom() const { return base_; }  // lowest usable address
  size_t size() const { return kSize; }
  bool contains(const void* p) const;      // p in this stack or its guard page
 private:
  char* map_ = nullptr;   // guard page + stack
  char* base_ = nullptr;
};

// Prepares `stack` so that the first switch into it calls entry(arg) on that stack; returns the
// stack pointer to switch to. entry must never return (it switches away for good instead).
void* fiber_prepare(const FiberStack& stack, void (*entry)(void*), void* arg);

}  // namespace lolcats::emu

// Saves the callee-saved registers, MXCSR and the x87 control word on the current stack, stores
// the stack pointer in *save_sp, then loads load_sp and restores the same from there.
extern "C" void lolcats_emu_switch(void** save_sp, void* load_sp);
