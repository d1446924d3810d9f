#include "cuda/emu/fiber.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstring>

#include "tensor/check.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

// The switch. Stack layout of a suspended fiber, from its saved stack pointer upwards:
//   [sp+0] MXCSR (4 bytes), x87 control word (2 bytes), padding
//   [sp+8] r15, r14, r13, r12, rbx, rbp, return address
// A fresh fiber's "return address" is the trampoline, which calls entry(arg) with the argument
// taken from r12 and entry from r13, on a 16-byte aligned stack as the ABI requires.
asm(R"(
  .pushsection .text
  .globl lolcats_emu_switch
  .type lolcats_emu_switch, @function
lolcats_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size lolcats_emu_switch, .-lolcats_emu_switch

  .type lolcats_emu_trampoline, @function
lolcats_emu_trampoline:
  movq %r12, %rdi
  andq $-16, %rsp
  call *%r13
  ud2
  .size lolcats_emu_trampoline, .-lolcats_emu_trampoline
  .popsection
)");
extern "C" void lolcats_emu_trampoline();

namespace lolcats::emu {

static size_t page_size() {
  static const size_t p = size_t(sysconf(_SC_PAGESIZE));
  return p;
}

FiberStack::FiberStack() {
  size_t guard = page_size();
  void* m = mmap(nullptr, guard + kSize, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  ENSURE(m != MAP_FAILED, "SIMT emulator: cannot map a %zu KiB fiber stack", kSize / 1024);
  map_ = static_cast<char*>(m);
  ENSURE(mprotect(map_, guard, PROT_NONE) == 0, "SIMT emulator: cannot protect a stack guard page");
  base_ = map_ + guard;
}

FiberStack::~FiberStack() { munmap(map_, page_size() + kSize); }

bool FiberStack::contains(const void* p) const {
  const char* c = static_cast<const char*>(p);
  return c >= map_ && c < base_ + kSize;
}

void* fiber_prepare(const FiberStack& stack, void (*entry)(void*), void* arg) {
#if defined(__SANITIZE_ADDRESS__)
  // A fiber never returns from its frames (it switches away for good), so ASan's poisoning of
  // their redzones outlives it; clear it before the stack is reused. The deepest 64 KiB suffice
  // for the kernels here (a stack overflow into older poison would show as an ASan report).
  constexpr size_t kUsed = 64 * 1024;
  ASAN_UNPOISON_MEMORY_REGION(stack.bottom() + stack.size() - kUsed, kUsed);
#endif
  uintptr_t top = reinterpret_cast<uintptr_t>(stack.bottom() + stack.size()) & ~uintptr_t(15);
  uint64_t* sp = reinterpret_cast<uint64_t*>(top);
  *--sp = 0;                                                  // keeps the trampoline's frame aligned
  *--sp = reinterpret_cast<uint64_t>(&lolcats_emu_trampoline);  // popped by `ret`
  *--sp = 0;                                                  // rbp
  *--sp = 0;                                                  // rbx
  *--sp = reinterpret_cast<uint64_t>(arg);                    // r12
  *--sp = reinterpret_cast<uint64_t>(entry);                  // r13
  *--sp = 0;                                                  // r14
  *--sp = 0;                                                  // r15
  // The current floating-point control state (rounding, flush-to-zero), so that a kernel computes
  // exactly as the launching thread would.
  uint32_t mxcsr;
  uint16_t fpucw;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(fpucw));
  *--sp = 0;
  std::memcpy(sp, &mxcsr, 4);
  std::memcpy(reinterpret_cast<char*>(sp) + 4, &fpucw, 2);
  return sp;
}

}  // namespace lolcats::emu
