// RMSNorm (Llama): normalise each row by its root mean square, then scale per channel.
//
//   r_n   = 1 / sqrt(mean_c x[n,c]^2 + eps)                      (saved: rstd (N))
//   y[n,c] = w[c] * x[n,c] * r_n
//   PyTorch (HF LlamaRMSNorm): w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))
//
// Backward. With g_c = w_c dy_c and xhat_c = x_c r:
//   dr/dx_c = -r^3 x_c / C, so  dx_c = r g_c - r^3 x_c (1/C) sum_j g_j x_j
//                                   = r (g_c - xhat_c mean_j(g_j xhat_j))
//   dw_c += sum_n dy[n,c] xhat[n,c]                 (parameter gradient: accumulates)
// dx is written.
#pragma once
#include <cstdint>

namespace lolcats {

template <typename T>
void rmsnorm_forward(T* y, T* rstd, const T* x, const T* w, int N, int C, T eps);
template <typename T>
void rmsnorm_backward(T* dx, T* dw, const T* dy, const T* x, const T* w, const T* rstd, int N,
                      int C);


// Tensor-level entry points (tensor/device.h). x, y (..., C) in the device's activation dtype;
// w (C) of x's dtype; rstd (N) f32; dw (C) f32, accumulated; dx written. dx / dw may be null.
class Tensor;
void rmsnorm_forward(Tensor& y, Tensor& rstd, const Tensor& x, const Tensor& w, float eps);
void rmsnorm_backward(Tensor* dx, Tensor* dw, const Tensor& dy, const Tensor& x, const Tensor& w,
                      const Tensor& rstd);

}  // namespace lolcats
