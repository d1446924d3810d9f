// LoLCATs ops on the autograd tape (kernels: lolcats/feature_map.h, lolcats/hybrid_attention.h).
#pragma once
#include "autograd/tape.h"
#include "lolcats/hybrid_attention.h"

namespace lolcats {

// Hedgehog features of x (B, T, Hx, D) for H query heads with W (H, D, Fh) -> (B, T, H, 2*Fh).
Var hedgehog(const Var& x, const Var& W);
// T2R features of x (B, T, Hx, D) for H query heads with W (H, D, F), b (H, F) -> (B, T, H, F).
Var t2r(const Var& x, const Var& W, const Var& b);

// Hybrid window + linear attention. q (B, T, H, D), k/v (B, T, Hkv, D), phiq/phik (B, T, H, F),
// wlogit (H) -> y (B, T, H, D). `mask`: where terrace's blocks lie (lolcats/hybrid_attention.h).
Var hybrid_attention(const Var& q, const Var& k, const Var& v, const Var& phiq, const Var& phik,
                     const Var& wlogit, HybridVariant variant, AttentionMask mask = AttentionMask::paper);

}  // namespace lolcats
