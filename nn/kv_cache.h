// The KV cache: softmax attention's memory in a decode step (nn/decoder.h). Per cached layer and
// sequence, the post-RoPE keys and values of every position so far, on the model's device:
//   k, v (cached layers * batch, max_len, Hkv, D)    f32 on the CPU (the CPU trunk computes in f32),
//                                                     the weights' dtype on the cuda device
// A step writes its rows' keys and values at their positions, then each row attends causally over
// its sequence's cache (tensor/attention.h decode_attention, a CPU kernel and its CUDA twin):
//   y_r = softmax(q_r . k_j / sqrt(D), j <= pos_r) v_j
#pragma once
#include <vector>

#include "nn/decoder.h"

namespace lolcats {

class KvCache : public DecodeMemory {
 public:
  // A cache for each layer l with cached[l] (default: every layer).
  explicit KvCache(const Llama& model, std::vector<bool> cached = {});
  void reserve(int batch, int max_len) override;
  size_t sequence_bytes(int max_len) const override;
  size_t bytes() const override { return k.defined() ? k.nbytes() + v.nbytes() : 0; }
  bool bounded() const override { return slots_ > 0; }
  void attend(int layer, Tensor& y, const Tensor& q, const Tensor& k, const Tensor& v, const StepRows& rows) override;
  void reset(int) override {}  // positions past a sequence's length are never read
  void copy(int from, int to, int length) override;
  void assume_length(int, int) override {}
  bool caches(int layer) const { return slot_[size_t(layer)] >= 0; }

  Tensor k, v;  // (slots * batch, max_len, Hkv, D)

 private:
  Tensor layer_cache(Tensor& t, int slot) const;  // (batch, max_len, Hkv, D) of one cached layer
  const Llama& model_;
  std::vector<int> slot_;  // (L) layer l's slot in k and v, -1: no cache
  int slots_ = 0, batch_ = 0, max_len_ = 0;
};

}  // namespace lolcats
