// Knobs of the SIMT emulator's scheduler that tests and the runtime use.
#pragma once
#include <cstddef>

namespace lolcats::emu {

// The order in which the scheduler runs a block's threads between two barriers. Reversed and
// shuffled orders expose kernels that read shared memory before the barrier that orders it.
enum class ThreadOrder { forward, reverse, shuffled };
void set_thread_order(ThreadOrder order);
ThreadOrder thread_order();

// The per-block opt-in limit of dynamic shared memory the emulated device reports
// (cudaDevAttrMaxSharedMemoryPerBlockOptin, cudaDeviceProp::sharedMemPerBlockOptin) and enforces:
// cudaFuncSetAttribute above it and launches above it fail with cudaErrorInvalidValue, as on a GPU.
// Default 227 KiB (sm_90, H100/H200); 163 KiB is sm_80's (A100), 99 KiB sm_86/89's (RTX 30xx/40xx,
// A10, L4). The environment variable LOLCATS_EMU_SHARED_OPTIN sets the initial value: bytes
// ("101376"), or KiB with a K or KiB suffix ("99K", "99KiB"). A test that sets it restores it.
void set_shared_memory_optin(size_t bytes);
size_t shared_memory_optin();

// The dynamic shared memory a launch of `func` may use: 48 KiB, or what cudaFuncSetAttribute
// (cudaFuncAttributeMaxDynamicSharedMemorySize) allowed, never above shared_memory_optin() (which
// a test may have lowered since the attribute was set).
size_t max_dynamic_shared(const void* func);

}  // namespace lolcats::emu
