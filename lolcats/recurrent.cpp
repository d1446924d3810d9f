#include "lolcats/recurrent.h"

#include <cmath>
#include <cstring>
#include <limits>

#include "autograd/ops.h"
#include "lolcats/feature_map.h"
#include "lolcats/ops.h"
#include "tensor/attention.h"

namespace lolcats {

DecodeMode parse_decode_mode(const std::string& name) {
  if (name == "exact") return DecodeMode::exact;
  if (name == "reference") return DecodeMode::reference;
  fail(__FILE__, __LINE__, "unknown decode mode \"" + name + "\" (exact or reference)");
}

namespace {

constexpr int C = kHybridBlock;
constexpr int R = LolcatsState::kRing;

// The variant whose window rule the decoder follows.
HybridVariant decode_variant(const LolcatsModel& m, DecodeMode mode) {
  if (m.cfg.variant == HybridVariant::linear || mode == DecodeMode::exact) return m.cfg.variant;
  return HybridVariant::sw;  // the reference decoder's 64-key FIFO
}

// First key of position P's window: keys before it are (or must be) folded into the state.
int window_start(int P, HybridVariant v) {
  if (v == HybridVariant::terrace) return std::max(0, (P / C - 1) * C);
  if (v == HybridVariant::sw) return std::max(0, P - C + 1);
  return P + 1;  // linear: no window, every key goes through the state
}

struct Dims {
  int H, Hkv, D, F;
};

// S += phi_k(k_j) v_j^T and z += phi_k(k_j) for every query head, for key j from the ring.
void fold_key(LolcatsState::Layer& st, const LolcatsModel& m, int l, int j, const Dims& d) {
  const float* kj = st.ring_k.f32() + size_t(j % R) * d.Hkv * d.D;
  const float* vj = st.ring_v.f32() + size_t(j % R) * d.Hkv * d.D;
  std::vector<float> phi(size_t(d.H) * d.F);
  m.features(phi.data(), kj, 1, d.Hkv, l, true);
  const int G = d.H / d.Hkv;
  for (int h = 0; h < d.H; h++) {
    float* S = st.S.f32() + size_t(h) * d.F * d.D;
    float* z = st.z.f32() + size_t(h) * d.F;
    const float* v = vj + size_t(h / G) * d.D;
    for (int f = 0; f < d.F; f++) {
      float p = phi[size_t(h) * d.F + f];
      z[f] += p;
      for (int e = 0; e < d.D; e++) S[size_t(f) * d.D + e] += p * v[e];
    }
  }
}

// One query at position P of a converted layer: y (H, D) from q (H, D), ring and state.
void attend(float* y, const float* q, const LolcatsState::Layer& st, const LolcatsModel& m, int l, int P,
            HybridVariant v, const Dims& d) {
  const LolcatsLayer& L = m.layers[l];
  std::vector<float> phi(size_t(d.H) * d.F);
  m.features(phi.data(), q, 1, d.H, l, false);
  const int G = d.H / d.Hkv, w0 = window_start(P, v);
  const float scale = 1.0f / std::sqrt(float(d.D));
  for (int h = 0; h < d.H; h++) {
    const float* qh = q + size_t(h) * d.D;
    const float* ph = phi.data() + size_t(h) * d.F;
    const float* S = st.S.f32() + size_t(h) * d.F * d.D;
    const float* z = st.z.f32() + size_t(h) * d.F;
    std::vector<double> num(d.D, 0.0);
    double den = 0;
    for (int f = 0; f < d.F; f++) {  // linear part: phi_q S, phi_q . z
      den += double(ph[f]) * z[f];
      for (int e = 0; e < d.D; e++) num[e] += double(ph[f]) * S[size_t(f) * d.D + e];
    }
    if (w0 <= P) {  // window part: exact softmax scores, shifted by their max
      const float g = 1.0f / (1.0f + std::exp(-L.wlogit->value.f32()[h]));
      std::vector<float> s(P - w0 + 1);
      float mx = -std::numeric_limits<float>::infinity();
      for (int j = w0; j <= P; j++) {
        const float* kj = st.ring_k.f32() + (size_t(j % R) * d.Hkv + h / G) * d.D;
        float dot = 0;
        for (int e = 0; e < d.D; e++) dot += qh[e] * kj[e];
        mx = std::max(mx, s[j - w0] = dot * scale);
      }
      for (int j = w0; j <= P; j++) {
        double a = g * std::exp(s[j - w0] - mx);
        const float* vj = st.ring_v.f32() + (size_t(j % R) * d.Hkv + h / G) * d.D;
        den += a;
        for (int e = 0; e < d.D; e++) num[e] += a * vj[e];
      }
    }
    for (int e = 0; e < d.D; e++) y[size_t(h) * d.D + e] = float(num[e] / den);
  }
}

}  // namespace

LolcatsState::LolcatsState(const LolcatsModel& model, DecodeMode m) : mode(m) {
  const LlamaConfig& c = model.base.cfg;
  const int F = model.F;
  for (const LolcatsLayer& L : model.layers) {
    Layer st;
    if (L.converted) {
      st.S = Tensor::zeros({c.n_heads, F, c.head_dim});
      st.z = Tensor::zeros({c.n_heads, F});
      st.ring_k = Tensor::zeros({R, c.n_kv_heads, c.head_dim});
      st.ring_v = Tensor::zeros({R, c.n_kv_heads, c.head_dim});
    }
    layers.push_back(std::move(st));
  }
}

size_t LolcatsState::bytes() const {
  size_t n = 0;
  for (const Layer& st : layers)
    for (const Tensor* t : {&st.S, &st.z, &st.ring_k, &st.ring_v})
      if (t->defined()) n += t->nbytes();
  return n;
}

Var lolcats_step(const LolcatsModel& model, LolcatsState& state, const Tensor& ids) {
  ENSURE(ids.ndim() == 2 && ids.size(0) == 1, "recurrent decoding runs one sequence, got ids %s",
         ids.shape().str().c_str());
  const LlamaConfig& c = model.base.cfg;
  const Dims d{c.n_heads, c.n_kv_heads, c.head_dim, model.F};
  const HybridVariant v = decode_variant(model, state.mode);
  const int start = state.length, T = int(ids.size(1));
  const size_t kv_row = size_t(d.Hkv) * d.D;
  NoGrad no_grad;
  Var logits = model.base.forward_with(ids, [&](int l, const Var& q, const Var& k, const Var& vv) -> Var {
    const LolcatsLayer& L = model.layers[l];
    LolcatsState::Layer& st = state.layers[l];
    const float *qp = q->value.f32(), *kp = k->value.f32(), *vp = vv->value.f32();
    if (!L.converted) {  // softmax layer: ordinary growing KV cache
      st.cache_k.insert(st.cache_k.end(), kp, kp + T * kv_row);
      st.cache_v.insert(st.cache_v.end(), vp, vp + T * kv_row);
      Tensor y = Tensor::empty({1, T, d.H, d.D});
      attention_forward_cached(y.f32(), qp, st.cache_k.data(), st.cache_v.data(), T, start, d.H,
                               d.Hkv, d.D);
      return leaf(y);
    }
    Tensor y;
    const bool parallel_prefill = start == 0 && T > 1;
    if (parallel_prefill) {  // the whole prompt at once (the training form), then the state from its keys
      y = model.student_attention(l, q, k, vv)->value;
    } else {
      y = Tensor::empty({1, T, d.H, d.D});
    }
    for (int t = 0; t < T; t++) {
      const int P = start + t, target = std::min(window_start(P, v), P + 1);
      // Fold the keys leaving the window before k_P takes its ring slot (it may be the slot of
      // the oldest of them), then k_P itself when the variant has no window.
      for (; st.folded < std::min(target, P); st.folded++) fold_key(st, model, l, st.folded, d);
      std::memcpy(st.ring_k.f32() + size_t(P % R) * kv_row, kp + t * kv_row, kv_row * sizeof(float));
      std::memcpy(st.ring_v.f32() + size_t(P % R) * kv_row, vp + t * kv_row, kv_row * sizeof(float));
      for (; st.folded < target; st.folded++) fold_key(st, model, l, st.folded, d);
      if (!parallel_prefill) attend(y.f32() + size_t(t) * d.H * d.D, qp + size_t(t) * d.H * d.D, st, model, l, P, v, d);
    }
    return leaf(y);
  }, start);
  state.length += T;
  return logits;
}

std::vector<int32_t> lolcats_generate(const LolcatsModel& model, const std::vector<int32_t>& prompt,
                                      const SamplingConfig& cfg, DecodeMode mode,
                                      const std::function<bool(int32_t)>& on_token) {
  LolcatsState state(model, mode);
  return generate_with([&](const Tensor& ids) { return lolcats_step(model, state, ids); },
                       model.base.cfg.vocab, prompt, cfg, on_token);
}

}  // namespace lolcats
