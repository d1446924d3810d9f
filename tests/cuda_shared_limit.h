// The per-block shared memory limit of the card classes the kernels are built for, as a test knob:
// under the SIMT emulator a test runs a check at each limit (the emulated device then reports and
// enforces it, cuda/emu/scheduler.h); on a GPU the card has one limit and the check runs once.
#pragma once
#include <cstddef>
#include <functional>

#include "tests/helpers.h"
#ifdef LOLCATS_CUDA_EMU
#include "cuda/emu/scheduler.h"
#endif

namespace lolcats_test {

constexpr size_t kKiB = 1024;
// sm_86/89 (RTX 30xx/40xx, A10, L4), sm_80 (A100), sm_90 (H100, H200).
constexpr size_t kSharedLimits[] = {99 * kKiB, 163 * kKiB, 227 * kKiB};

#ifdef LOLCATS_CUDA_EMU
// Sets the emulated device's per-block shared memory limit for the guard's lifetime, then puts the
// previous one back (also when a check throws).
class SharedLimitGuard {
 public:
  explicit SharedLimitGuard(size_t bytes) : prev_(lolcats::emu::shared_memory_optin()) {
    lolcats::emu::set_shared_memory_optin(bytes);
  }
  ~SharedLimitGuard() { lolcats::emu::set_shared_memory_optin(prev_); }
  SharedLimitGuard(const SharedLimitGuard&) = delete;
  SharedLimitGuard& operator=(const SharedLimitGuard&) = delete;

 private:
  size_t prev_;
};
#endif

// Runs `check(limit)` under the emulator once at each card class's limit; on a GPU once, with
// limit 0 (the card's own).
inline void for_each_shared_limit(const std::function<void(size_t)>& check) {
#ifdef LOLCATS_CUDA_EMU
  for (size_t limit : kSharedLimits) {
    SharedLimitGuard guard(limit);
    INFO("emulated shared memory limit per block " << limit / kKiB << " KiB");
    check(limit);
  }
#else
  check(0);
#endif
}

}  // namespace lolcats_test
