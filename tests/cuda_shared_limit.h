// The per-block shared memory limit of the card classes the kernels are built for, as a test knob:
// under the SIMT emulator a test runs a check at each limit (the emulated device then reports and
// enforces it, cuda/emu/scheduler.h); on a GPU the card has one limit and the check runs once.
#pragma once
#include <cstddef>
#include <functional>

#include "cuda/kernel_tile.h"
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

// The tiles' cap (cuda/kernel_tile.h) for the guard's lifetime: on a GPU, the tiles of a card with
// less shared memory than this one.
class SharedCapGuard {
 public:
  explicit SharedCapGuard(size_t bytes) : prev_(lolcats::cuda::shared_limit_cap()) {
    lolcats::cuda::set_shared_limit_cap(bytes);
  }
  ~SharedCapGuard() { lolcats::cuda::set_shared_limit_cap(prev_); }
  SharedCapGuard(const SharedCapGuard&) = delete;
  SharedCapGuard& operator=(const SharedCapGuard&) = delete;

 private:
  size_t prev_;
};

// Runs `check(limit)` once at each card class's limit: under the emulator the emulated device has
// that limit (it refuses a launch over it); on a GPU the tiles are chosen under that cap, for every
// limit up to the card's own (an H100 runs all three), or once at the card's own limit (0) if it
// has less than all of them.
inline void for_each_shared_limit(const std::function<void(size_t)>& check) {
#ifdef LOLCATS_CUDA_EMU
  for (size_t limit : kSharedLimits) {
    SharedLimitGuard guard(limit);
    INFO("emulated shared memory limit per block " << limit / kKiB << " KiB");
    check(limit);
  }
#else
  const size_t card = lolcats::cuda::device_shared_limit();
  bool ran = false;
  for (size_t limit : kSharedLimits) {
    if (limit > card) continue;
    SharedCapGuard guard(limit);
    INFO("tiles chosen for " << limit / kKiB << " KiB of shared memory per block (the card has " << card / kKiB << ")");
    check(limit);
    ran = true;
  }
  if (!ran) check(0);
#endif
}

}  // namespace lolcats_test
