#include "nn/kv_cache.h"

#include "tensor/attention.h"

namespace lolcats {

KvCache::KvCache(const Llama& model, std::vector<bool> cached) : model_(model) {
  const int L = model.cfg.n_layers;
  if (cached.empty()) cached.assign(size_t(L), true);
  ENSURE(int(cached.size()) == L, "KV cache: %zu cache flags for %d layers", cached.size(), L);
  for (bool on : cached) slot_.push_back(on ? slots_++ : -1);
}

namespace {
DType cache_dtype(const Llama& m) { return m.device() == Device::cpu ? DType::f32 : m.dtype(); }
}  // namespace

void KvCache::reserve(int batch, int max_len) {
  batch_ = batch, max_len_ = max_len;
  k = v = Tensor();
  if (slots_ == 0) return;
  const LlamaConfig& c = model_.cfg;
  const Shape shape{int64_t(slots_) * batch, max_len, c.n_kv_heads, c.head_dim};
  k = Tensor::zeros(shape, cache_dtype(model_), model_.device());
  v = Tensor::zeros(shape, cache_dtype(model_), model_.device());
}

size_t KvCache::sequence_bytes(int max_len) const {
  const LlamaConfig& c = model_.cfg;  // keys and values of every cached layer
  return size_t(2) * size_t(slots_) * c.n_kv_heads * c.head_dim * dtype_size(cache_dtype(model_)) * size_t(max_len);
}

Tensor KvCache::layer_cache(Tensor& t, int slot) const {
  const LlamaConfig& c = model_.cfg;
  const int64_t per = int64_t(batch_) * max_len_ * c.n_kv_heads * c.head_dim;
  return t.view(slot * per, {batch_, max_len_, c.n_kv_heads, c.head_dim});
}

void KvCache::attend(int layer, Tensor& y, const Tensor& q, const Tensor& kn, const Tensor& vn, const StepRows& rows) {
  const int slot = slot_[size_t(layer)];
  ENSURE(slot >= 0, "KV cache: layer %d has no cache", layer);
  Tensor kc = layer_cache(k, slot), vc = layer_cache(v, slot);
  decode_attention(y, kc, vc, q, kn, vn, rows.seq_t, rows.pos_t);
}

void KvCache::copy(int from, int to, int length) {
  if (from == to || length == 0 || slots_ == 0) return;
  const LlamaConfig& c = model_.cfg;
  const int64_t seq = int64_t(max_len_) * c.n_kv_heads * c.head_dim;  // one sequence's cache
  const Shape prefix{length, c.n_kv_heads, c.head_dim};  // only the first `length` positions matter
  for (int s = 0; s < slots_; s++)
    for (Tensor* t : {&k, &v}) {
      const int64_t base = (int64_t(s) * batch_) * seq;
      t->view(base + to * seq, prefix).copy_from(t->view(base + from * seq, prefix), "KV cache");
    }
}

}  // namespace lolcats
