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

std::vector<bool> kept_as_softmax(const LolcatsModel& m) {
  std::vector<bool> cached;
  for (const LolcatsLayer& L : m.layers) cached.push_back(!L.converted);
  return cached;
}

namespace {

constexpr int R = LolcatsMemory::kRing;

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

Group group_of(LolcatsMemory::Layer& st, int b, int hk, const Dims& d) {
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

Dims dims_of(const LolcatsModel& m) {
  const LlamaConfig& c = m.base.cfg;
  return Dims{c.n_heads, c.n_kv_heads, c.head_dim, m.F, m.Fh, c.n_heads / c.n_kv_heads};
}

}  // namespace

LolcatsMemory::LolcatsMemory(const LolcatsModel& m, DecodeMode mode)
    : layers(m.layers.size()), model_(m), window_(decode_variant(m, mode)),
      kept_(m.base, kept_as_softmax(m)) {
  ENSURE(m.base.device() == Device::cpu, "LolcatsMemory is the CPU decoder's; on %s use make_decoder",
         device_name(m.base.device()));
}

void LolcatsMemory::reserve(int batch, int max_len) {
  kept_.reserve(batch, max_len);
  batch_ = batch;
  const Dims d = dims_of(model_);
  const size_t B = size_t(batch);
  for (size_t l = 0; l < model_.layers.size(); l++) {
    if (!model_.layers[l].converted) continue;
    Layer& st = layers[l];
    st.S.assign(B * d.H * d.F * d.D, 0.0f);
    st.z.assign(B * d.H * d.F, 0.0f);
    st.ring_k.assign(B * R * d.Hkv * d.D, 0.0f);
    st.ring_v.assign(B * R * d.Hkv * d.D, 0.0f);
    st.folded.assign(B * d.Hkv, 0);
  }
}

namespace {
// Sequence b's part of v (batch, ...): its first value; each part holds v.size() / batch values.
template <typename T>
T* part(std::vector<T>& v, int batch, int b) {
  return v.data() + v.size() / size_t(batch) * size_t(b);
}
}  // namespace

void LolcatsMemory::reset(int b) {
  kept_.reset(b);
  for (Layer& st : layers) {
    if (st.S.empty()) continue;
    auto clear = [&](auto& v) { std::fill_n(part(v, batch_, b), v.size() / size_t(batch_), 0); };
    clear(st.S), clear(st.z), clear(st.ring_k), clear(st.ring_v), clear(st.folded);
  }
}

void LolcatsMemory::copy(int from, int to, int length) {
  kept_.copy(from, to, length);
  for (Layer& st : layers) {
    if (st.S.empty()) continue;
    auto copy = [&](auto& v) { std::copy_n(part(v, batch_, from), v.size() / size_t(batch_), part(v, batch_, to)); };
    copy(st.S), copy(st.z), copy(st.ring_k), copy(st.ring_v), copy(st.folded);
  }
}

void LolcatsMemory::assume_length(int b, int P) {
  const int folded = P == 0 ? 0 : std::min(window_start(P - 1, window_), P);  // as after position P-1
  for (Layer& st : layers)
    if (!st.S.empty()) std::fill_n(part(st.folded, batch_, b), st.folded.size() / size_t(batch_), folded);
}

size_t LolcatsMemory::bytes() const {
  size_t n = kept_.bytes();
  for (const Layer& st : layers)
    n += (st.S.size() + st.z.size() + st.ring_k.size() + st.ring_v.size()) * sizeof(float) +
         st.folded.size() * sizeof(int);
  return n;
}

size_t LolcatsMemory::sequence_bytes(int max_len) const {
  const Dims d = dims_of(model_);  // S, z, rings and fold counts: fixed per sequence
  size_t n = kept_.sequence_bytes(max_len);
  for (const LolcatsLayer& L : model_.layers)
    if (L.converted)
      n += (size_t(d.H) * d.F * (d.D + 1) + size_t(2) * R * d.Hkv * d.D) * sizeof(float) + size_t(d.Hkv) * sizeof(int);
  return n;
}

void LolcatsMemory::attend(int l, Tensor& yt, const Tensor& qt, const Tensor& kt, const Tensor& vt,
                           const StepRows& rows) {
  if (!model_.layers[size_t(l)].converted) return kept_.attend(l, yt, qt, kt, vt, rows);
  const LolcatsModel& m = model_;
  const Dims d = dims_of(m);
  float* y = yt.f32();
  const float *q = qt.f32(), *k = kt.f32(), *v = vt.f32();
  Layer& st = layers[size_t(l)];
  const int batch = batch_;
  // A whole prompt on an empty sequence: the parallel (training) form gives its outputs.
  auto parallel_prefill = [&](int b) { return rows.length[size_t(b)] == 0 && rows.n[size_t(b)] > 1; };
  for (int b = 0; b < batch; b++) {
    if (!parallel_prefill(b)) continue;
    const int r0 = rows.first[size_t(b)], n = rows.n[size_t(b)];
    NoGrad no_grad;
    Tensor yb = m.student_attention(l, leaf(rows_tensor(q + size_t(r0) * d.H * d.D, n, d.H, d.D)),
                                    leaf(rows_tensor(k + size_t(r0) * d.Hkv * d.D, n, d.Hkv, d.D)),
                                    leaf(rows_tensor(v + size_t(r0) * d.Hkv * d.D, n, d.Hkv, d.D)))->value;
    std::memcpy(y + size_t(r0) * d.H * d.D, yb.f32(), yb.nbytes());
  }
  // Every (sequence, key head) group advances on its own: state update, then (decode) attention.
#pragma omp parallel for collapse(2) schedule(dynamic)
  for (int b = 0; b < batch; b++)
    for (int hk = 0; hk < d.Hkv; hk++) {
      const int n = rows.n[size_t(b)];
      if (n == 0) continue;
      const size_t r0 = size_t(rows.first[size_t(b)]);
      static thread_local Scratch sc;
      sc.fit(d);
      advance(group_of(st, b, hk, d), y + r0 * d.H * d.D, q + r0 * d.H * d.D, k + r0 * d.Hkv * d.D,
              v + r0 * d.Hkv * d.D, rows.length[size_t(b)], n, !parallel_prefill(b), m, l, window_, d, sc);
    }
}

std::unique_ptr<Decoder> make_decoder(const LolcatsModel& model, DecodeMode mode) {
  std::unique_ptr<DecodeMemory> memory;
  if (model.base.device() == Device::cpu) memory = std::make_unique<LolcatsMemory>(model, mode);
  else memory = make_lolcats_device_memory(model, mode);
  return std::make_unique<Decoder>(model.base, std::move(memory));
}

}  // namespace lolcats
