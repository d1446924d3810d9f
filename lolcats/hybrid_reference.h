// The O(T^2) definition of the hybrid attention (LOLCATS.md 2.2), written as plainly as possible:
// loops over every (query, key) pair, window and linear sets from their definitions. It exists to
// check the linear-time kernels of hybrid_attention.h (same signatures) and is never used to train.
#pragma once
#include "lolcats/hybrid_attention.h"

namespace lolcats {

template <typename T>
void hybrid_reference_forward(T* y, T* Z, T* m, const T* q, const T* k, const T* v, const T* phiq,
                              const T* phik, const T* wlogit, int B, int T_, int H, int Hkv, int D,
                              int F, HybridVariant variant, AttentionMask mask = AttentionMask::paper);

template <typename T>
void hybrid_reference_backward(T* dq, T* dk, T* dv, T* dphiq, T* dphik, T* dwlogit, const T* dy,
                               const T* y, const T* Z, const T* m, const T* q, const T* k,
                               const T* v, const T* phiq, const T* phik, const T* wlogit, int B,
                               int T_, int H, int Hkv, int D, int F, HybridVariant variant,
                               AttentionMask mask = AttentionMask::paper);

}  // namespace lolcats
