#include "lolcats/recurrent_device.h"

#include <algorithm>
#include <memory>

#include "tensor/device.h"
#ifdef LOLCATS_CUDA
#include "cuda/decode.h"
#endif

namespace lolcats {

namespace {

constexpr int kRing = LolcatsDecodeState::kRing;

// The fused recurrent attention of one converted layer on the device (Tensor-level entry point of
// cuda::lolcats_decode_attention, then the ring write). seq: (batch, 4) i32 on the device, per
// sequence its first row, new rows, first position and keys already folded.
void lolcats_decode_attention(Tensor& y, LolcatsDeviceState::Layer& st, const Tensor& q, const Tensor& k,
                              const Tensor& v, const Tensor& seq, const LolcatsModel& m, HybridVariant window) {
  const LlamaConfig& c = m.base.cfg;
  const bool cpu = check_operands("lolcats decode", {&y, &q, &k, &v, &st.ring_k, &st.ring_v});
  ENSURE(!cpu, "lolcats decode: this is the device path; on the CPU use lolcats_decode_step");
  check_devices("lolcats decode", {&q, &seq, &st.S, &st.z, &st.wq, &st.wk, &st.wlogit});
  const bool t2r = m.cfg.feature_map == FeatureMapKind::t2r;
  const int batch = int(seq.size(0)), rule = window == HybridVariant::terrace ? 0 : window == HybridVariant::sw ? 1 : 2;
  ON_CUDA(q.dtype(), T, {
    cuda::LolcatsLayerState<T> s{st.S.dev<float>(),      st.z.dev<float>(),      st.ring_k.dev<T>(),
                                 st.ring_v.dev<T>(),     st.wq.dev<float>(),     st.wk.dev<float>(),
                                 t2r ? st.bq.dev<float>() : nullptr, t2r ? st.bk.dev<float>() : nullptr,
                                 st.wlogit.dev<float>()};
    cuda::lolcats_decode_attention(y.dev<T>(), q.dev<T>(), k.dev<T>(), v.dev<T>(), s, seq.dev<int32_t>(), batch,
                                   c.n_heads, c.n_kv_heads, c.head_dim, m.Fh, m.F, t2r, rule, nullptr);
    cuda::lolcats_ring_write(st.ring_k.dev<T>(), st.ring_v.dev<T>(), k.dev<T>(), v.dev<T>(), seq.dev<int32_t>(),
                             batch, c.n_kv_heads, c.head_dim, nullptr);
  });
}

}  // namespace

LolcatsDeviceState::LolcatsDeviceState(const LolcatsModel& m, int batch, int max_len, DecodeMode mode)
    : window(m.cfg.variant), trunk(m.base, batch, max_len, kept_as_softmax(m)), layers(m.layers.size()),
      folded(size_t(batch), 0) {
  ENSURE(mode == DecodeMode::exact || m.cfg.variant == HybridVariant::linear,
         "decoding on %s runs the exact mode only (the reference mode prefills with the parallel hybrid kernel, "
         "which has no CUDA twin yet)", device_name(m.base.device()));
  const LlamaConfig& c = m.base.cfg;
  const Device dev = m.base.device();
  for (size_t l = 0; l < m.layers.size(); l++) {
    const LolcatsLayer& L = m.layers[l];
    if (!L.converted) continue;
    Layer& st = layers[l];
    st.S = Tensor::zeros({batch, c.n_heads, m.F, c.head_dim}, DType::f32, dev);
    st.z = Tensor::zeros({batch, c.n_heads, m.F}, DType::f32, dev);
    st.ring_k = Tensor::zeros({batch, kRing, c.n_kv_heads, c.head_dim}, m.base.dtype(), dev);
    st.ring_v = Tensor::zeros({batch, kRing, c.n_kv_heads, c.head_dim}, m.base.dtype(), dev);
    st.wq = L.wq_fm->value.to(dev, DType::f32);
    st.wk = L.wk_fm->value.to(dev, DType::f32);
    if (L.bq_fm) st.bq = L.bq_fm->value.to(dev, DType::f32), st.bk = L.bk_fm->value.to(dev, DType::f32);
    st.wlogit = L.wlogit->value.to(dev, DType::f32);
  }
}

void LolcatsDeviceState::reset(int b) {
  trunk.reset(b);
  folded[size_t(b)] = 0;
  for (Layer& st : layers) {
    if (!st.S.defined()) continue;
    st.S.rows(b, 1).zero_();
    st.z.rows(b, 1).zero_();  // the ring needs no clearing: a slot is written before it is read
  }
}

void LolcatsDeviceState::assume_length(int b, int P) {
  ENSURE(P >= 0 && (!trunk.k.defined() || P <= trunk.max_len), "assume_length: %d tokens do not fit", P);
  trunk.length[size_t(b)] = P;
  folded[size_t(b)] = P == 0 ? 0 : std::min(window_start(P - 1, window), P);  // as after position P-1
}

size_t LolcatsDeviceState::state_bytes() const {
  size_t n = 0;
  for (const Layer& st : layers)
    if (st.S.defined()) n += st.S.nbytes() + st.z.nbytes() + st.ring_k.nbytes() + st.ring_v.nbytes();
  return n;
}

void lolcats_decode_step_device(const LolcatsModel& m, LolcatsDeviceState& s, const int32_t* tokens, const int* n,
                                float* logits) {
  const int batch = s.trunk.batch;
  std::vector<int32_t> info(size_t(batch) * 4);  // per sequence: first row, rows, first position, folded
  for (int b = 0, r0 = 0; b < batch; r0 += n[b], b++) {
    info[size_t(b) * 4 + 0] = r0;
    info[size_t(b) * 4 + 1] = n[b];
    info[size_t(b) * 4 + 2] = s.length(b);
    info[size_t(b) * 4 + 3] = s.folded[size_t(b)];
  }
  Tensor seq = Tensor::from_i32(info, {batch, 4}).to(m.base.device());
  llama_decode_step_device(m.base, s.trunk, tokens, n, logits,
                           [&](int l, Tensor& y, const Tensor& q, const Tensor& k, const Tensor& v) {
                             lolcats_decode_attention(y, s.layers[size_t(l)], q, k, v, seq, m, s.window);
                           });
  for (int b = 0; b < batch; b++)  // what the kernel folded: up to the last new row's window
    if (n[b] > 0) {
      const int P = s.length(b) - 1;  // the trunk has advanced the length already
      s.folded[size_t(b)] = std::min(window_start(P, s.window), P + 1);
    }
}

BatchDecoder lolcats_decoder(const LolcatsModel& model, int batch, int max_len, DecodeMode mode) {
  if (model.base.device() == Device::cpu) {
    auto state = std::make_shared<LolcatsDecodeState>(model, batch, max_len, mode);
    return BatchDecoder{batch, model.base.cfg.vocab,
                        [&model, state](const int32_t* t, const int* n, float* l) {
                          lolcats_decode_step(model, *state, t, n, l);
                        },
                        [state](int b) { state->reset(b); }};
  }
  auto state = std::make_shared<LolcatsDeviceState>(model, batch, max_len, mode);
  return BatchDecoder{batch, model.base.cfg.vocab,
                      [&model, state](const int32_t* t, const int* n, float* l) {
                        lolcats_decode_step_device(model, *state, t, n, l);
                      },
                      [state](int b) { state->reset(b); }};
}

}  // namespace lolcats
