// Knobs of the SIMT emulator's scheduler that tests and the runtime use.
#pragma once
#include <cstddef>

namespace lolcats::emu {

// The order in which the scheduler runs a block's threads between two barriers. Reversed and
// shuffled orders expose kernels that read shared memory before the barrier that orders it.
enum class ThreadOrder { forward, reverse, shuffled };
void set_thread_order(ThreadOrder order);
ThreadOrder thread_order();

// The dynamic shared memory a launch of `func` may use: 48 KiB, or what cudaFuncSetAttribute
// (cudaFuncAttributeMaxDynamicSharedMemorySize) allowed, up to the H100/H200's 227 KiB.
size_t max_dynamic_shared(const void* func);

}  // namespace lolcats::emu
