// Constant-memory decoding with a LoLCATs model: each converted layer's attention as a recurrence
// (LOLCATS.md 2.3), the memory of a Decoder (nn/decoder.h) on the CPU, for a batch of sequences.
//
// Per converted layer, sequence and query head: the linear-attention state S (F x D) and z (F),
// both fp32, summarising every key that has left the window; plus a ring of the last 2 x 64 = 128
// post-RoPE keys and values (per kv head) for the exact softmax window. Memory does not depend on
// the length. Step at position P:
//   1. write k_P, v_P into the ring;
//   2. fold every key that no longer belongs to P's window into S += phi_k(k) v^T, z += phi_k(k);
//   3. y_P = (sum_window A v + phi_q(q_P) S) / (sum_window A + phi_q(q_P) . z).
// The window of P depends on the mode:
//   exact (default): the training variant's own window, so decode equals the parallel forward at
//     every position: terrace = blocks b(P)-1 and b(P); sw = the last 64 keys; linear = none.
//   reference: the published decoder's 64-key FIFO (current token included) whatever the training
//     variant: identical to the parallel form for sw, and for terrace up to position 63 only.
// A prompt on an empty sequence is prefilled with the parallel kernels (the training variant, as
// the reference does), then the state is built from its keys. Layers kept as softmax keep a KV
// cache (nn/kv_cache.h).
//
// With a sparse cache of G pairs per query head (lolcats/sparse_cache.h, LOLCATS.md 9), step 2
// passes the leaving keys through the cache's rule instead (some stay as exact softmax keys), step
// 3 attends to the window and the cache, and every prompt goes through steps 1-3 row after row, so
// that scoring a prompt equals decoding it.
#pragma once
#include <vector>

#include "lolcats/model.h"
#include "lolcats/sparse_cache.h"
#include "nn/decoder.h"
#include "nn/kv_cache.h"

namespace lolcats {

enum class DecodeMode { exact, reference };
DecodeMode parse_decode_mode(const std::string& name);  // "exact", "reference"

// Per layer, whether it keeps softmax attention (and so a KV cache) rather than being converted.
std::vector<bool> kept_as_softmax(const LolcatsModel& model);

class LolcatsMemory : public DecodeMemory {
 public:
  static constexpr int kRing = 2 * kHybridBlock;  // R: key j lives in ring slot j % R
  // cache: the pairs each query head keeps beside its window (default: none, the paper's layer).
  LolcatsMemory(const LolcatsModel& model, DecodeMode mode, SparseCacheConfig cache = {});
  void reserve(int batch, int max_len) override;
  size_t sequence_bytes(int max_len) const override;
  size_t bytes() const override;
  bool bounded() const override { return kept_.bounded(); }  // only by the kept layers' KV caches
  void attend(int layer, Tensor& y, const Tensor& q, const Tensor& k, const Tensor& v, const StepRows& rows) override;
  void reset(int b) override;
  void copy(int from, int to, int length) override;
  void assume_length(int b, int P) override;

  struct Layer {                       // a converted layer (empty for a softmax one)
    std::vector<float> S;              // (batch, H, F, D)
    std::vector<float> z;              // (batch, H, F)
    std::vector<float> ring_k, ring_v; // (batch, R, Hkv, D)
    std::vector<int> folded;           // (batch, Hkv) keys 0 .. folded-1 have left the window
    // The sparse cache (G > 0): pairs 0 .. cache_n-1 of each query head, in position order.
    std::vector<float> cache_k, cache_v;  // (batch, H, G, D)
    std::vector<float> cache_phi;         // (batch, H, G, F) phi_k of each cached key
    std::vector<int> cache_pos;           // (batch, H, G) its position
    std::vector<int> cache_n;             // (batch, H)
  };
  std::vector<Layer> layers;  // (L)
  KvCache& kept() { return kept_; }

 private:
  const LolcatsModel& model_;
  HybridVariant window_;  // whose window rule decoding follows (reference mode: sw's)
  KvCache kept_;          // the layers kept as softmax
  int G_ = 0;             // sparse cache pairs per query head
  int sinks_ = 0;         // of which the sequence's first keys
  int batch_ = 0;
};

// Checks a cache for a model: G in 0 .. kMaxSparseCache, sinks >= 0, and a model with a softmax
// window (not "linear").
void check_sparse_cache(const LolcatsModel& model, SparseCacheConfig cache);

// A linearized model's decoder: this memory on the CPU, its twin (lolcats/recurrent_device.h) on the
// cuda device, by where the base model's weights are; cache: the sparse cache (see above).
std::unique_ptr<Decoder> make_decoder(const LolcatsModel& model, DecodeMode mode, SparseCacheConfig cache = {});

}  // namespace lolcats
