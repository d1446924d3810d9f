// The activations category of memory: every tensor that is not carved from an Arena
// (tensor/arena.h: frozen weights, trainable parameters, gradients, optimizer moments) - a step's
// intermediate values and their gradients, the saved tensors of the tape, temporaries - counted per
// device as they are allocated and freed (Tensor::empty). A training step calls begin_step(): from
// there, the step's activations are the peak of the live bytes above what was live when it began.
//
// Why a ledger over the allocator rather than one bump arena reset every step: a step allocates far
// more than it ever holds at once (the backward frees each activation and gradient as soon as its
// consumers are done), so a bump arena would need the step's whole allocated total, several times
// its peak (both are reported: `allocated` below). Blocks are reused instead: on the GPU by the
// caching allocator (cuda/memory.cu: after the first step no cudaMalloc), on the CPU by glibc's heap,
// kept from unmapping (tensor/tensor.cpp). What the ledger adds is the number, per step.
#pragma once
#include <cstdint>
#include <string>

#include "tensor/tensor.h"

namespace lolcats {

struct ActivationStats {
  int64_t live = 0;       // bytes of activations alive now
  int64_t at_begin = 0;   // ... when the step began
  int64_t peak = 0;       // the most alive at once since then
  int64_t allocated = 0;  // bytes handed out since then (a bump arena's size)
  int64_t tensors = 0;    // allocations since then
  int64_t step_peak() const { return peak - at_begin; }  // what the step itself needed
};

ActivationStats activation_stats(Device device);
void begin_step(Device device);  // at_begin = peak = live; allocated = tensors = 0
// "activations: 812.3 MiB peak in the step (4120 tensors, 2.41 GiB allocated; 3.1 MiB live before)"
std::string activation_report(Device device);

}  // namespace lolcats
