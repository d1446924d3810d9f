#include "lolcats/recurrent.h"

#include "lolcats/recurrent_device.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "autograd/ops.h"

namespace lolcats {

DecodeMode parse_decode_mode(const std::string& name) {
  if (name == "exact") return DecodeMode::exact;
  if (name == "reference") return DecodeMode::reference;
  fail(__FILE__, __LINE__, "unknown decode mode \"" + name + "\" (exact or reference)");
}

int window_start(int P, HybridVariant v) {
  constexpr int C = kHybridBlock;
  if (v == HybridVariant::terrace) return std::max(0, (P / C - 1) * C);
  if (v == HybridVariant::sw) return std::max(0, P - C + 1);
  return P + 1;  // linear: no window, every key goes through the state
}

std::vector<bool> kept_as_softmax(const LolcatsModel& m) {
  std::vector<bool> cached;
  for (const LolcatsLayer& L : m.layers) cached.push_back(!L.converted);
  return cached;
}

namespace {

constexpr int C = kHybridBlock;
constexpr int R = LolcatsDecodeState::kRing;

// The variant whose window rule the decoder follows.
HybridVariant decode_variant(const LolcatsModel& m, DecodeMode mode) {
  if (m.cfg.variant == HybridVariant::linear || mode == DecodeMode::exact) return m.cfg.variant;
  return HybridVariant::sw;  // the reference decoder's 64-key FIFO
}

struct Dims {
  int H, Hkv, D, F, Fh, G;  // G = H / Hkv query heads per key head
};

// One thread's scratch, grown once: decoding allocates nothing per token.
struct Scratch {
  std::vector<float> phi, z, score;
  std::vector<double> num;
  void fit(const Dims& d) {
    if (phi.size() < size_t(d.F)) phi.resize(size_t(d.F));
    if (z.size() < size_t(d.F)) z.resize(size_t(d.F));
    if (score.size() < size_t(R)) score.resize(size_t(R));
    if (num.size() < size_t(d.D)) num.resize(size_t(d.D));
  }
};

// The part of one sequence's state (in one converted layer) that key head hk and its G query
// heads own: they can advance independently of the other key heads, in parallel.
struct Group {
  float* S;       // (H, F, D) the sequence's; heads hk*G .. hk*G+G-1 are the group's
  float* z;       // (H, F)
  float* ring_k;  // (R, Hkv, D) column hk is the group's
  float* ring_v;  // (R, Hkv, D)
  int* folded;    // keys 0 .. *folded-1 are in the group's S, z
  int hk;
};

Group group_of(LolcatsDecodeState::Layer& st, int b, int hk, const Dims& d) {
  return Group{st.S.data() + size_t(b) * d.H * d.F * d.D, st.z.data() + size_t(b) * d.H * d.F,
               st.ring_k.data() + size_t(b) * R * d.Hkv * d.D, st.ring_v.data() + size_t(b) * R * d.Hkv * d.D,
               st.folded.data() + size_t(b) * d.Hkv + size_t(hk), hk};
}

// Key j (from the ring) into the state of the group's query heads:
//   S_h += phi_k,h(k_j) v_j^T,  z_h += phi_k,h(k_j)
void fold_key(const Group& g, const LolcatsModel& m, int l, int j, const Dims& d, Scratch& sc) {
  const float* kj = g.ring_k + (size_t(j % R) * d.Hkv + size_t(g.hk)) * d.D;
  const float* vj = g.ring_v + (size_t(j % R) * d.Hkv + size_t(g.hk)) * d.D;
  for (int h = g.hk * d.G; h < (g.hk + 1) * d.G; h++) {
    m.feature_head(sc.phi.data(), kj, l, h, true, sc.z.data());
    float* S = g.S + size_t(h) * d.F * d.D;
    float* z = g.z + size_t(h) * d.F;
    for (int f = 0; f < d.F; f++) {
      const float p = sc.phi[size_t(f)];
      z[f] += p;
      float* Sf = S + size_t(f) * d.D;
#pragma omp simd
      for (int e = 0; e < d.D; e++) Sf[e] += p * vj[e];
    }
  }
}

// Query head h at position P: y (D) from q (D), the ring and the state.
void attend(float* y, const float* q, const Group& g, const LolcatsModel& m, int l, int h, int P, HybridVariant v,
            const Dims& d, Scratch& sc) {
  m.feature_head(sc.phi.data(), q, l, h, false, sc.z.data());
  const float* S = g.S + size_t(h) * d.F * d.D;
  const float* z = g.z + size_t(h) * d.F;
  double* num = sc.num.data();
  std::fill(num, num + d.D, 0.0);
  double den = 0;
  for (int f = 0; f < d.F; f++) {  // linear part: phi_q S, phi_q . z
    const double p = sc.phi[size_t(f)];
    den += p * z[f];
    for (int e = 0; e < d.D; e++) num[e] += p * S[size_t(f) * d.D + e];
  }
  const int w0 = window_start(P, v);
  if (w0 <= P) {  // window part: exact softmax scores, shifted by their max
    const float gate = 1.0f / (1.0f + std::exp(-m.layers[size_t(l)].wlogit->value.f32()[h]));
    const float scale = 1.0f / std::sqrt(float(d.D));
    float mx = -std::numeric_limits<float>::infinity();
    for (int j = w0; j <= P; j++) {
      const float* kj = g.ring_k + (size_t(j % R) * d.Hkv + size_t(g.hk)) * d.D;
      float dot = 0;
#pragma omp simd reduction(+ : dot)
      for (int e = 0; e < d.D; e++) dot += q[e] * kj[e];
      mx = std::max(mx, sc.score[size_t(j - w0)] = dot * scale);
    }
    for (int j = w0; j <= P; j++) {
      const double a = gate * std::exp(sc.score[size_t(j - w0)] - mx);
      const float* vj = g.ring_v + (size_t(j % R) * d.Hkv + size_t(g.hk)) * d.D;
      den += a;
      for (int e = 0; e < d.D; e++) num[e] += a * vj[e];
    }
  }
  for (int e = 0; e < d.D; e++) y[e] = float(num[e] / den);
}

// n rows of one sequence, positions P0 .. P0+n-1, through the group: each key enters the ring and
// the keys leaving the window are folded; then (unless the rows were prefilled in parallel) each
// query head of the group attends. q, y: (n, H, D); k, v: (n, Hkv, D).
void advance(const Group& g, float* y, const float* q, const float* k, const float* v, int P0, int n, bool answer,
             const LolcatsModel& m, int l, HybridVariant var, const Dims& d, Scratch& sc) {
  const size_t kv_row = size_t(d.Hkv) * d.D, hk = size_t(g.hk) * d.D;
  for (int t = 0; t < n; t++) {
    const int P = P0 + t, target = std::min(window_start(P, var), P + 1);
    // Fold the keys leaving the window before k_P takes its ring slot (it may be the slot of the
    // oldest of them), then k_P itself when the variant has no window.
    for (; *g.folded < std::min(target, P); ++*g.folded) fold_key(g, m, l, *g.folded, d, sc);
    std::memcpy(g.ring_k + size_t(P % R) * kv_row + hk, k + size_t(t) * kv_row + hk, size_t(d.D) * sizeof(float));
    std::memcpy(g.ring_v + size_t(P % R) * kv_row + hk, v + size_t(t) * kv_row + hk, size_t(d.D) * sizeof(float));
    for (; *g.folded < target; ++*g.folded) fold_key(g, m, l, *g.folded, d, sc);
    if (!answer) continue;
    for (int h = g.hk * d.G; h < (g.hk + 1) * d.G; h++) {
      const size_t at = (size_t(t) * d.H + size_t(h)) * d.D;
      attend(y + at, q + at, g, m, l, h, P, var, d, sc);
    }
  }
}

// A copy of n rows of width w as a (1, n, heads, D) tensor.
Tensor rows_tensor(const float* p, int n, int heads, int D) {
  Tensor t = Tensor::empty({1, n, heads, D});
  std::memcpy(t.f32(), p, t.nbytes());
  return t;
}

}  // namespace

LolcatsDecodeState::LolcatsDecodeState(const LolcatsModel& m, int batch, int max_len, DecodeMode mode_)
    : mode(mode_), window(decode_variant(m, mode_)), trunk(m.base.cfg, batch, max_len, kept_as_softmax(m)),
      layers(m.layers.size()) {
  const LlamaConfig& c = m.base.cfg;
  const size_t B = size_t(batch);
  for (size_t l = 0; l < m.layers.size(); l++) {
    if (!m.layers[l].converted) continue;
    Layer& st = layers[l];
    st.S.assign(B * c.n_heads * m.F * c.head_dim, 0.0f);
    st.z.assign(B * c.n_heads * m.F, 0.0f);
    st.ring_k.assign(B * R * c.n_kv_heads * c.head_dim, 0.0f);
    st.ring_v.assign(B * R * c.n_kv_heads * c.head_dim, 0.0f);
    st.folded.assign(B * c.n_kv_heads, 0);
  }
}

void LolcatsDecodeState::reset(int b) {
  trunk.reset(b);
  const size_t B = size_t(trunk.batch);
  auto clear = [&](auto& v) {
    const size_t per = v.size() / B;
    std::fill(v.begin() + ptrdiff_t(size_t(b) * per), v.begin() + ptrdiff_t(size_t(b + 1) * per), 0);
  };
  for (Layer& st : layers) {
    if (st.S.empty()) continue;
    clear(st.S), clear(st.z), clear(st.ring_k), clear(st.ring_v), clear(st.folded);
  }
}

void LolcatsDecodeState::copy_sequence(int from, int to) {
  trunk.copy_sequence(from, to);  // checks the indices
  if (from == to) return;
  const size_t B = size_t(trunk.batch);
  auto copy = [&](auto& v) {  // v: (batch, ...): one sequence's block onto another's
    const size_t per = v.size() / B;
    std::copy(v.begin() + ptrdiff_t(size_t(from) * per), v.begin() + ptrdiff_t(size_t(from + 1) * per),
              v.begin() + ptrdiff_t(size_t(to) * per));
  };
  for (Layer& st : layers) {
    if (st.S.empty()) continue;
    copy(st.S), copy(st.z), copy(st.ring_k), copy(st.ring_v), copy(st.folded);
  }
}

void LolcatsDecodeState::assume_length(int b, int P) {
  ENSURE(P >= 0 && (trunk.cache_bytes() == 0 || P <= trunk.max_len), "assume_length: %d tokens do not fit", P);
  trunk.length[size_t(b)] = P;
  const int folded = P == 0 ? 0 : std::min(window_start(P - 1, window), P);  // as after position P-1
  for (Layer& st : layers) {
    if (st.S.empty()) continue;
    const size_t per = st.folded.size() / size_t(trunk.batch);
    std::fill(st.folded.begin() + ptrdiff_t(size_t(b) * per), st.folded.begin() + ptrdiff_t(size_t(b + 1) * per),
              folded);
  }
}

size_t LolcatsDecodeState::state_bytes() const {
  size_t n = 0;
  for (const Layer& st : layers)
    n += (st.S.size() + st.z.size() + st.ring_k.size() + st.ring_v.size()) * sizeof(float) +
         st.folded.size() * sizeof(int);
  return n;
}

void lolcats_decode_step(const LolcatsModel& m, LolcatsDecodeState& s, const int32_t* tokens, const int* n,
                         float* logits) {
  const LlamaConfig& c = m.base.cfg;
  const Dims d{c.n_heads, c.n_kv_heads, c.head_dim, m.F, m.Fh, c.n_heads / c.n_kv_heads};
  const HybridVariant var = s.window;
  const int batch = s.trunk.batch;
  // The converted layers' attention, called by the Llama step with this step's rows.
  auto attention = [&](int l, float* y, const float* q, const float* k, const float* v, int /*rows*/) {
    LolcatsDecodeState::Layer& st = s.layers[size_t(l)];
    // A whole prompt on an empty sequence: the parallel (training) form gives its outputs.
    for (int b = 0, r0 = 0; b < batch; r0 += n[b], b++) {
      if (!(s.length(b) == 0 && n[b] > 1)) continue;
      NoGrad no_grad;
      Tensor yb = m.student_attention(l, leaf(rows_tensor(q + size_t(r0) * d.H * d.D, n[b], d.H, d.D)),
                                      leaf(rows_tensor(k + size_t(r0) * d.Hkv * d.D, n[b], d.Hkv, d.D)),
                                      leaf(rows_tensor(v + size_t(r0) * d.Hkv * d.D, n[b], d.Hkv, d.D)))->value;
      std::memcpy(y + size_t(r0) * d.H * d.D, yb.f32(), yb.nbytes());
    }
    // Every (sequence, key head) group advances on its own: state update, then (decode) attention.
    s.row0.resize(size_t(batch));
    for (int b = 0, r0 = 0; b < batch; r0 += n[b], b++) s.row0[size_t(b)] = r0;
#pragma omp parallel for collapse(2) schedule(dynamic)
    for (int b = 0; b < batch; b++)
      for (int hk = 0; hk < d.Hkv; hk++) {
        if (n[b] == 0) continue;
        const int r0 = s.row0[size_t(b)];
        static thread_local Scratch sc;
        sc.fit(d);
        const bool parallel_prefill = s.length(b) == 0 && n[b] > 1;
        advance(group_of(st, b, hk, d), y + size_t(r0) * d.H * d.D, q + size_t(r0) * d.H * d.D,
                k + size_t(r0) * d.Hkv * d.D, v + size_t(r0) * d.Hkv * d.D, s.length(b), n[b], !parallel_prefill,
                m, l, var, d, sc);
      }
  };
  llama_decode_step(m.base, s.trunk, tokens, n, logits, attention);
}

void LolcatsSequenceDecoder::reserve(int batch, int max_len) {
  state_ = std::make_unique<LolcatsDecodeState>(model_, batch, max_len, mode_);
}

size_t LolcatsSequenceDecoder::sequence_bytes(int max_len) const {
  LolcatsDecodeState one(model_, 1, 1, mode_);  // S, z and rings: fixed per sequence
  const LlamaConfig& c = model_.base.cfg;
  size_t kept = 0;  // the KV cache of each layer kept as softmax
  for (const LolcatsLayer& L : model_.layers) kept += L.converted ? 0 : 1;
  return one.state_bytes() + kept * 2 * size_t(c.n_kv_heads) * c.head_dim * sizeof(float) * size_t(max_len);
}

void LolcatsSequenceDecoder::step(const int32_t* tokens, const int* n, float* logits, bool every_row) {
  state_->trunk.every_row_logits = every_row;
  lolcats_decode_step(model_, *state_, tokens, n, logits);
}

std::vector<int32_t> lolcats_generate(const LolcatsModel& model, const std::vector<int32_t>& prompt,
                                      const SamplingConfig& cfg, DecodeMode mode,
                                      const std::function<bool(int32_t)>& on_token) {
  return generate_one(lolcats_decoder(model, 1, int(prompt.size()) + cfg.max_new_tokens, mode), prompt, cfg,
                      on_token);
}

void lolcats_generate_batch(const LolcatsModel& model, const std::vector<std::vector<int32_t>>& prompts,
                            int batch, const SamplingConfig& cfg, DecodeMode mode,
                            const std::function<void(size_t, const std::vector<int32_t>&)>& on_done) {
  ENSURE(batch > 0, "generate_batch: batch must be positive, got %d", batch);
  const int B = int(std::min<size_t>(size_t(batch), std::max<size_t>(prompts.size(), 1)));
  generate_batch(lolcats_decoder(model, B, longest_sequence(prompts, cfg), mode), prompts, cfg, on_done);
}

}  // namespace lolcats
