// Embedding lookup: row idx[n] of the table becomes row n of the output.
//
//   forward:  y[n, :] = wte[idx[n], :]                 y (N, C), wte (V, C), idx (N) in [0, V)
//   backward: dwte[idx[n], :] += dy[n, :]              (a scatter-add: repeated tokens add up)
// dwte is a parameter gradient, so it accumulates (+=) like every parameter gradient.
// An index outside [0, V) is an ENSURE failure naming the index, never an out-of-bounds read.
#pragma once
#include <cstdint>

namespace lolcats {

template <typename T>
void embedding_forward(T* y, const int32_t* idx, const T* wte, int N, int V, int C);
template <typename T>
void embedding_backward(T* dwte, const T* dy, const int32_t* idx, int N, int V, int C);


// Tensor-level entry points (tensor/device.h). idx (...) i32 on the table's device, or on the CPU
// for a cuda table (checked on the host and uploaded, so the lookup never waits for the device);
// y (..., C) of the table's dtype; dwte (V, C) f32, accumulated.
class Tensor;
void embedding_forward(Tensor& y, const Tensor& idx, const Tensor& wte);
void embedding_backward(Tensor& dwte, const Tensor& dy, const Tensor& idx);

}  // namespace lolcats
