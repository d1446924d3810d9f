// Feature maps of LoLCATs' linear attention (LOLCATS.md 2.1). One map per layer, separate for
// queries and keys, and one weight matrix per query head.
//
// Hedgehog (the published default), for head h, x (D) the post-RoPE q or k of that head:
//   z      = x W[h]                               W (H, D, Fh), no bias
//   phi(x) = [softmax(z), softmax(-z)]            two separate softmaxes over Fh, F = 2 Fh
//   phi    = max(phi, 1e-12)                      (the clamp's gradient is 0 where it clips)
// Backward, with s = softmax(z) and ds its incoming gradient: dz = s (ds - <ds, s>); the second
// half does the same for softmax(-z) and enters dz with a minus sign. Then
//   dW[h] += x^T dz      dx = dz W[h]^T
// Identity init (all published results): W[h] = first Fh columns of I_D, i.e. z = x[:Fh].
//
// T2R (ablation baseline, `./linearize --feature-map t2r`): phi(x) = relu(x W[h] + b[h]),
// W (H, D, F), b (H, F), with F = D here (LOLCATS.md 2.1: W is D x D); identity init (W[h] = I,
// b = 0) starts it at relu(x). The relu's gradient is 0 where the output is 0.
//
// GQA: keys have Hkv heads but every query head h has its own key map, applied to key head
// h / (H / Hkv); so phi is always (B, T, H, F) while x may be (B, T, Hkv, D).
#pragma once
#include <cstdint>
#include <string>

namespace lolcats {

constexpr double kFeatureClamp = 1e-12;

enum class FeatureMapKind { hedgehog, t2r };
FeatureMapKind parse_feature_map(const std::string& name);  // "hedgehog", "t2r"
const char* feature_map_name(FeatureMapKind k);

// phi (B, T, H, 2*Fh); x (B, T, Hx, D) with H % Hx == 0; W (H, D, Fh).
template <typename T>
void hedgehog_forward(T* phi, const T* x, const T* W, int B, int T_, int H, int Hx, int D, int Fh);
// The same for one token, allocating nothing (decode): phi (H, 2*Fh) from x (Hx, D); z: Fh scratch.
// (T2R's forward allocates nothing already: t2r_forward with B = T = 1.)
template <typename T>
void hedgehog_row(T* phi, const T* x, const T* W, int H, int Hx, int D, int Fh, T* z);
// dx (B, T, Hx, D) written (may be null); dW (H, D, Fh) accumulated (may be null).
template <typename T>
void hedgehog_backward(T* dx, T* dW, const T* dphi, const T* phi, const T* x, const T* W, int B,
                       int T_, int H, int Hx, int D, int Fh);

// phi (B, T, H, F); W (H, D, F); bias (H, F).
template <typename T>
void t2r_forward(T* phi, const T* x, const T* W, const T* bias, int B, int T_, int H, int Hx, int D,
                 int F);
// dx written (may be null); dW, dbias accumulated (may be null).
template <typename T>
void t2r_backward(T* dx, T* dW, T* dbias, const T* dphi, const T* phi, const T* x, const T* W,
                  int B, int T_, int H, int Hx, int D, int F);

// Identity init of W (H, D, Fh): W[h][d][f] = (d == f). Also T2R's W (H, D, F).
template <typename T>
void hedgehog_identity_init(T* W, int H, int D, int Fh);


// Tensor-level entry points (tensor/device.h); shapes from the tensors: x (B, T, Hx, D), W (H, D, Fh
// or F), bias (H, F), phi (B, T, H, 2 Fh or F): the CPU code above (f32) or its CUDA twin
// (cuda/feature_map.h: x and dx f32 or bf16; weights, features and their gradients f32).
class Tensor;
void hedgehog_forward(Tensor& phi, const Tensor& x, const Tensor& W);
void hedgehog_backward(Tensor* dx, Tensor* dW, const Tensor& dphi, const Tensor& phi, const Tensor& x, const Tensor& W);
void t2r_forward(Tensor& phi, const Tensor& x, const Tensor& W, const Tensor& bias);
void t2r_backward(Tensor* dx, Tensor* dW, Tensor* dbias, const Tensor& dphi, const Tensor& phi, const Tensor& x,
                  const Tensor& W);

}  // namespace lolcats
