// The sparse global cache (LoLA; LOLCATS.md 9), written once for both decoders: the CPU memory
// (lolcats/recurrent.cpp) and its CUDA twin (cuda/decode.cu). A third memory per query head beside
// the softmax window and the linear state S, z: at most G past key/value pairs (with phi_k(k)),
// attended exactly, as window keys are:
//
//   y = (g sum_{window + cache} exp(q.k / sqrt(D) - m) v + phi_q(q)^T S) / (g sum exp(...) + phi_q(q) . z)
//
// Each time keys leave the window (terrace: a block of 64 at a block boundary; sw: one per token)
// the candidates, the cache's pairs and the leaving ones, in position order, are ranked:
//   - if they fit (at most G), all stay;
//   - else each is scored by its self-recall error against the state as it is,
//       e = || v - phi_k(k)^T S / (phi_k(k)^T z + eps) ||,
//     the G worst recalled stay (ties: the older key), and the others are folded into S, z in
//     position order. The cache keeps its pairs in position order.
// G = 0 is the paper's layer; G at least the sequence length is softmax attention (no key is ever
// folded and g cancels). Memory is constant in the context: G x (2 D + F) values per query head.
//
// Sinks (ours, not LoLA's): the sequence's first N keys rank before every other candidate, so they
// stay in the cache (counted in G) whatever their recall error. Softmax models put much of their
// attention on the first tokens (StreamingLLM's attention sinks); a cache that drops them changes
// every later output (LOLCATS.md 9, and the measurements in lolcats/QUALITY.md).
#pragma once

#include "lolcats/window.h"

namespace lolcats {

constexpr int kMaxSparseCache = 1024;  // G per query head (the CUDA kernel ranks in shared memory)
constexpr float kRecallEps = 1e-6f;    // the recall error's eps (LoLA's)

// What a decoder keeps beside each query head's window.
struct SparseCacheConfig {
  int pairs = 0;  // G: 0 = no cache, the paper's layer
  int sinks = 0;  // N: the first N keys always stay (within G)
  SparseCacheConfig(int pairs_ = 0, int sinks_ = 0) : pairs(pairs_), sinks(sinks_) {}
};

// Whether candidate j (score sj) ranks before candidate i (score si): worse recalled first, then
// older. Candidate i stays in the cache when fewer than G candidates rank before it.
LOLCATS_HOST_DEVICE inline bool ranks_before(float sj, int j, float si, int i) {
  return sj > si || (sj == si && j < i);
}

}  // namespace lolcats
