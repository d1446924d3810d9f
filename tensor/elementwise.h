// Elementwise ops on n contiguous values. Gradients are *written* (=), never accumulated: the
// autograd tape decides when a contribution has to be added to an existing gradient.
//
//   add:     y = a + b          da = dy,           db = dy
//   mul:     y = a * b          da = dy * b,       db = dy * a
//   scale:   y = s * a          da = s * dy
//   silu:    y = x * sigmoid(x) dx = dy * sigmoid(x) * (1 + x * (1 - sigmoid(x)))
//   swiglu:  y = silu(g) * u    dg = dy * u * silu'(g),  du = dy * silu(g)
// SwiGLU is the gate of the Llama MLP:  PyTorch: down(F.silu(gate(x)) * up(x)).
#pragma once
#include <cstdint>

namespace lolcats {

template <typename T> void add_forward(T* y, const T* a, const T* b, int64_t n);
template <typename T> void add_backward(T* da, T* db, const T* dy, int64_t n);  // da/db may be null

template <typename T> void mul_forward(T* y, const T* a, const T* b, int64_t n);
template <typename T> void mul_backward(T* da, T* db, const T* dy, const T* a, const T* b, int64_t n);

template <typename T> void scale_forward(T* y, const T* a, T s, int64_t n);
template <typename T> void scale_backward(T* da, const T* dy, T s, int64_t n);

template <typename T> void silu_forward(T* y, const T* x, int64_t n);
template <typename T> void silu_backward(T* dx, const T* dy, const T* x, int64_t n);

template <typename T> void swiglu_forward(T* y, const T* gate, const T* up, int64_t n);
template <typename T>
void swiglu_backward(T* dgate, T* dup, const T* dy, const T* gate, const T* up, int64_t n);

// ---- Tensor-level entry points (tensor/device.h): one device, same shapes, outputs allocated by
// the caller; a null gradient output is skipped. y may be a or b (in place).
class Tensor;
void add_forward(Tensor& y, const Tensor& a, const Tensor& b);
void mul_forward(Tensor& y, const Tensor& a, const Tensor& b);
void mul_backward(Tensor* da, Tensor* db, const Tensor& dy, const Tensor& a, const Tensor& b);
void scale_forward(Tensor& y, const Tensor& a, float s);
void silu_forward(Tensor& y, const Tensor& x);
void silu_backward(Tensor& dx, const Tensor& dy, const Tensor& x);
void swiglu_forward(Tensor& y, const Tensor& gate, const Tensor& up);
void swiglu_backward(Tensor* dgate, Tensor* dup, const Tensor& dy, const Tensor& gate, const Tensor& up);

}  // namespace lolcats
