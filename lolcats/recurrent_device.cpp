#include "lolcats/recurrent_device.h"

#include <algorithm>

#include "tensor/device.h"
#ifdef LOLCATS_CUDA
#include "cuda/decode.h"
#endif

namespace lolcats {

namespace {

constexpr int kRing = LolcatsMemory::kRing;

class LolcatsDeviceMemory : public DecodeMemory {
 public:
  LolcatsDeviceMemory(const LolcatsModel& m, DecodeMode mode, SparseCacheConfig cache)
      : m_(m), window_(m.cfg.variant), kept_(m.base, kept_as_softmax(m)), layers_(m.layers.size()),
        G_(cache.pairs), sinks_(cache.sinks) {
    check_sparse_cache(m, cache);
    ENSURE(mode == DecodeMode::exact || m.cfg.variant == HybridVariant::linear,
           "decoding on %s runs the exact mode only (the reference mode prefills with the parallel hybrid kernel, "
           "which has no CUDA twin yet)", device_name(m.base.device()));
    const Device dev = m.base.device();
    for (size_t l = 0; l < m.layers.size(); l++) {  // the layer's LoLCATs parameters on the device, f32
      const LolcatsLayer& L = m.layers[l];
      if (!L.converted) continue;
      Layer& st = layers_[l];
      st.wq = L.wq_fm->value.to(dev, DType::f32);
      st.wk = L.wk_fm->value.to(dev, DType::f32);
      if (L.bq_fm) st.bq = L.bq_fm->value.to(dev, DType::f32), st.bk = L.bk_fm->value.to(dev, DType::f32);
      st.wlogit = L.wlogit->value.to(dev, DType::f32);
    }
  }

  void reserve(int batch, int max_len) override {
    kept_.reserve(batch, max_len);
    const LlamaConfig& c = m_.base.cfg;
    const Device dev = m_.base.device();
    for (size_t l = 0; l < layers_.size(); l++) {
      if (!m_.layers[l].converted) continue;
      Layer& st = layers_[l];
      st.S = Tensor::zeros({batch, c.n_heads, m_.F, c.head_dim}, DType::f32, dev);
      st.z = Tensor::zeros({batch, c.n_heads, m_.F}, DType::f32, dev);
      st.ring_k = Tensor::zeros({batch, kRing, c.n_kv_heads, c.head_dim}, m_.base.dtype(), dev);
      st.ring_v = Tensor::zeros({batch, kRing, c.n_kv_heads, c.head_dim}, m_.base.dtype(), dev);
      if (G_ > 0) {
        st.cache_k = Tensor::zeros({batch, c.n_heads, G_, c.head_dim}, m_.base.dtype(), dev);
        st.cache_v = Tensor::zeros({batch, c.n_heads, G_, c.head_dim}, m_.base.dtype(), dev);
        st.cache_phi = Tensor::zeros({batch, c.n_heads, G_, m_.F}, DType::f32, dev);
        st.cache_pos = Tensor::zeros({batch, c.n_heads, G_}, DType::i32, dev);
        st.cache_n = Tensor::zeros({batch, c.n_heads}, DType::i32, dev);
      }
    }
    folded_.assign(size_t(batch), 0);
  }

  size_t sequence_bytes(int max_len) const override {
    const LlamaConfig& c = m_.base.cfg;
    size_t n = kept_.sequence_bytes(max_len);
    for (const LolcatsLayer& L : m_.layers)
      if (L.converted)
        n += size_t(c.n_heads) * m_.F * (c.head_dim + 1) * sizeof(float) +
             size_t(2) * kRing * c.n_kv_heads * c.head_dim * dtype_size(m_.base.dtype()) +
             (G_ > 0 ? size_t(c.n_heads) * (size_t(G_) * (2 * c.head_dim * dtype_size(m_.base.dtype()) +
                                                          (m_.F + 1) * sizeof(float)) + sizeof(int32_t))
                     : 0);
    return n;
  }

  size_t bytes() const override {
    size_t n = kept_.bytes();
    for (const Layer& st : layers_)
      if (st.S.defined()) {
        n += st.S.nbytes() + st.z.nbytes() + st.ring_k.nbytes() + st.ring_v.nbytes();
        for (const Tensor* t : st.cache()) n += t->nbytes();
      }
    return n;
  }

  bool bounded() const override { return kept_.bounded(); }

  // Per sequence, uploaded once per step for every layer: first row, rows, first position, folded.
  void begin_step(const StepRows& rows) override {
    const int batch = int(rows.n.size());
    std::vector<int32_t> info(size_t(batch) * 4);
    for (int b = 0; b < batch; b++) {
      info[size_t(b) * 4 + 0] = rows.first[size_t(b)];
      info[size_t(b) * 4 + 1] = rows.n[size_t(b)];
      info[size_t(b) * 4 + 2] = rows.length[size_t(b)];
      info[size_t(b) * 4 + 3] = folded_[size_t(b)];
    }
    seq_ = Tensor::from_i32(info, {batch, 4}).to(m_.base.device());
  }

  void attend(int l, Tensor& y, const Tensor& q, const Tensor& k, const Tensor& v, const StepRows& rows) override {
    if (!m_.layers[size_t(l)].converted) return kept_.attend(l, y, q, k, v, rows);
    Layer& st = layers_[size_t(l)];
    const LlamaConfig& c = m_.base.cfg;
    const bool cpu = check_operands("lolcats decode", {&y, &q, &k, &v, &st.ring_k, &st.ring_v});
    ENSURE(!cpu, "lolcats decode: this is the device path; on the CPU the decoder uses LolcatsMemory");
    check_devices("lolcats decode", {&q, &seq_, &st.S, &st.z, &st.wq, &st.wk, &st.wlogit});
    const bool t2r = m_.cfg.feature_map == FeatureMapKind::t2r;
    const int batch = int(seq_.size(0));
    ON_CUDA(q.dtype(), T, {
      cuda::LolcatsLayerState<T> s{st.S.dev<float>(),  st.z.dev<float>(),  st.ring_k.dev<T>(),
                                   st.ring_v.dev<T>(), st.wq.dev<float>(), st.wk.dev<float>(),
                                   t2r ? st.bq.dev<float>() : nullptr, t2r ? st.bk.dev<float>() : nullptr,
                                   st.wlogit.dev<float>()};
      if (G_ > 0) {
        s.cache_cap = G_, s.cache_sinks = sinks_;
        s.cache_k = st.cache_k.dev<T>(), s.cache_v = st.cache_v.dev<T>(), s.cache_phi = st.cache_phi.dev<float>();
        s.cache_pos = st.cache_pos.dev<int32_t>(), s.cache_n = st.cache_n.dev<int32_t>();
      }
      cuda::lolcats_decode_attention(y.dev<T>(), q.dev<T>(), k.dev<T>(), v.dev<T>(), s, seq_.dev<int32_t>(), batch,
                                     c.n_heads, c.n_kv_heads, c.head_dim, m_.Fh, m_.F, t2r, window_, nullptr);
      cuda::lolcats_ring_write(st.ring_k.dev<T>(), st.ring_v.dev<T>(), k.dev<T>(), v.dev<T>(), seq_.dev<int32_t>(),
                               batch, c.n_kv_heads, c.head_dim, nullptr);
    });
  }

  void end_step(const StepRows& rows) override {
    for (size_t b = 0; b < rows.n.size(); b++)  // what the kernel folded: up to the last new row's window
      if (rows.n[b] > 0) {
        const int P = rows.length[b] + rows.n[b] - 1;
        folded_[b] = std::min(window_start(P, window_), P + 1);
      }
  }

  void reset(int b) override {
    kept_.reset(b);
    folded_[size_t(b)] = 0;
    for (Layer& st : layers_) {
      if (!st.S.defined()) continue;
      st.S.rows(b, 1).zero_();
      st.z.rows(b, 1).zero_();  // the ring needs no clearing: a slot is written before it is read
      if (G_ > 0) st.cache_n.rows(b, 1).zero_();  // (nor the cache: its first cache_n slots are read)
    }
  }

  void copy(int from, int to, int length) override {
    kept_.copy(from, to, length);
    folded_[size_t(to)] = folded_[size_t(from)];
    for (Layer& st : layers_) {
      if (!st.S.defined()) continue;
      for (Tensor* t : {&st.S, &st.z, &st.ring_k, &st.ring_v}) t->rows(to, 1).copy_from(t->rows(from, 1), "state");
      for (Tensor* t : st.cache()) t->rows(to, 1).copy_from(t->rows(from, 1), "sparse cache");
    }
  }

  void assume_length(int b, int P) override {
    folded_[size_t(b)] = P == 0 ? 0 : std::min(window_start(P - 1, window_), P);  // as after position P-1
    if (G_ == 0) return;  // and a full cache, when that many keys have left the window
    const Tensor n = Tensor::from_i32(std::vector<int32_t>(size_t(m_.base.cfg.n_heads), std::min(G_, folded_[size_t(b)])),
                                      {1, m_.base.cfg.n_heads});
    for (Layer& st : layers_)
      if (st.cache_n.defined()) st.cache_n.rows(b, 1).copy_from(n.to(m_.base.device()), "sparse cache length");
  }

 private:
  struct Layer {                      // a converted layer (undefined tensors for a softmax one)
    Tensor S, z, ring_k, ring_v;      // state
    Tensor cache_k, cache_v, cache_phi, cache_pos, cache_n;  // the sparse cache (cuda/decode.h), G > 0
    std::vector<Tensor*> cache() {
      if (!cache_n.defined()) return {};
      return {&cache_k, &cache_v, &cache_phi, &cache_pos, &cache_n};
    }
    std::vector<const Tensor*> cache() const {
      if (!cache_n.defined()) return {};
      return {&cache_k, &cache_v, &cache_phi, &cache_pos, &cache_n};
    }
    Tensor wq, wk, bq, bk, wlogit;    // the layer's LoLCATs parameters on the device (bq, bk: T2R)
  };
  const LolcatsModel& m_;
  HybridVariant window_;      // the decode window rule (exact mode: the training variant's)
  KvCache kept_;              // the layers kept as softmax
  std::vector<Layer> layers_;  // (L)
  int G_ = 0, sinks_ = 0;      // sparse cache pairs per query head, of which sinks
  std::vector<int> folded_;   // (batch) keys 0 .. folded-1 have left the window (the same in every layer)
  Tensor seq_;                // (batch, 4) this step's per-sequence rows, on the device
};

}  // namespace

std::unique_ptr<DecodeMemory> make_lolcats_device_memory(const LolcatsModel& model, DecodeMode mode,
                                                         SparseCacheConfig cache) {
  return std::make_unique<LolcatsDeviceMemory>(model, mode, cache);
}

}  // namespace lolcats
