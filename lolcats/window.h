// The hybrid attention's window rule, written once for every user: the CPU kernels
// (lolcats/hybrid_attention.cpp), the recurrent decode (lolcats/recurrent.cpp) and both CUDA files
// (cuda/hybrid_attention.cu, cuda/decode.cu). Plain inline functions that nvcc compiles for host and
// device and g++ (the CPU build and the SIMT emulator) as ordinary C++. The O(T^2) definition
// (lolcats/hybrid_reference.h) keeps its own copy on purpose: it is the oracle this rule is tested
// against.
//
// Blocks of 64 tokens aligned to token 0; b(i) = i / 64. Query i attends to key j <= i:
//   terrace (default): window if b(j) >= b(i) - 1, else linear
//   sw:                window if i - j < 64 (the last 64 keys, itself included), else linear
//   linear:            always linear ("Hedgehog only")
// Under the reference implementation's mask terrace's blocks are aligned to the sequence's end
// instead, and at T <= 64 every key is both (lolcats/hybrid_attention.h, HybridBlocks).
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define LOLCATS_HOST_DEVICE __host__ __device__
#else
#define LOLCATS_HOST_DEVICE
#endif

namespace lolcats {

enum class HybridVariant { terrace, sw, linear };
constexpr int kHybridBlock = 64;  // block size of terrace, window size of sw (LOLCATS.md's C)

// How key j takes part in query i's output.
enum class PairKind : uint8_t { none, window, linear, both };

// For key j in block b(i) - 1 or b(i) of query i (every older key is linear, through the state).
// `both`: the reference mask at T <= 64, where a window pair is a linear pair too.
LOLCATS_HOST_DEVICE inline PairKind pair_kind(int i, int j, HybridVariant v, bool both = false) {
  if (j > i) return PairKind::none;
  if (v == HybridVariant::terrace) return both ? PairKind::both : PairKind::window;
  if (v == HybridVariant::sw) return i - j < kHybridBlock ? PairKind::window : PairKind::linear;
  return PairKind::linear;
}

// The first key of position P's window (the paper's blocks): keys before it are in the linear
// state S, z. P + 1 when there is no window (linear).
LOLCATS_HOST_DEVICE inline int window_start(int P, HybridVariant v) {
  const int w = v == HybridVariant::terrace ? (P / kHybridBlock - 1) * kHybridBlock
                : v == HybridVariant::sw    ? P - kHybridBlock + 1
                                            : P + 1;
  return w < 0 ? 0 : w;
}

}  // namespace lolcats
