// Embedding lookup on the GPU: the CUDA twin of tensor/embedding.h.
//
//   forward:  y[n, :] = wte[idx[n], :]
//   backward: dwte[idx[n], :] += dy[n, :]     (parameter gradient, f32, accumulated: repeated
//                                              tokens add up, in the order of their positions)
// Indices are checked on the host before any kernel runs: the launcher copies idx (N int32) back,
// and an index outside [0, V) is a lolcats::Error naming the index and its position, as on the CPU;
// no kernel ever reads outside wte. That copy waits for the stream (one synchronisation per call).
// The backward needs the indices on the host anyway: it groups the positions by token there, so
// that each row of dwte is summed by one thread per channel, in position order, without atomics
// (deterministic, and the same additions in the same order as the CPU twin).
#pragma once
#include <cstdint>

#include "cuda/api.h"

namespace lolcats::cuda {

template <typename T>
void embedding_forward(T* y,               // (N, C)
                       const int32_t* idx,  // (N), device memory, each in [0, V)
                       const T* wte,        // (V, C)
                       int N, int V, int C, Stream stream);

// The same lookup with indices already checked on the host (the Tensor-level entry point checks
// host ids before it uploads them): nothing is copied back, so nothing waits for the device.
template <typename T>
void embedding_forward_checked(T* y, const int32_t* idx, const T* wte, int N, int V, int C, Stream stream);

template <typename T>
void embedding_backward(float* dwte,         // (V, C), accumulated
                        const T* dy,         // (N, C)
                        const int32_t* idx,  // (N), device memory, each in [0, V)
                        int N, int V, int C, Stream stream);

}  // namespace lolcats::cuda
