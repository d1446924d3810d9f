#include "lolcats/recurrent.h"

#include "lolcats/recurrent_device.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "autograd/ops.h"
#include "lolcats/sparse_cache.h"

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
  std::vector<float> leaving_phi, recall;  // the sparse cache's candidates: (kHybridBlock, F), (cap + kHybridBlock)
  std::vector<int> order;
  void fit(const Dims& d, int cap) {
    auto grow = [](auto& v, size_t n) { if (v.size() < n) v.resize(n); };
    grow(phi, size_t(d.F)), grow(z, size_t(d.F)), grow(num, size_t(d.D));
    grow(score, size_t(R + cap));
    if (cap > 0) {
      grow(leaving_phi, size_t(kHybridBlock) * d.F), grow(recall, size_t(cap + kHybridBlock));
      grow(order, size_t(cap + kHybridBlock));
    }
  }
};

// The part of one sequence's state (in one converted layer) that key head hk and its G query
// heads own: they can advance independently of the other key heads, in parallel.
struct Group {
  float* S;       // (H, F, D) the sequence's; heads hk*G .. hk*G+G-1 are the group's
  float* z;       // (H, F)
  float* ring_k;  // (R, Hkv, D) column hk is the group's
  float* ring_v;  // (R, Hkv, D)
  int* folded;    // keys 0 .. *folded-1 have left the window
  int hk;
  int cap;        // the sparse cache's G (0: none), its sinks; then the sequence's cache, (H, cap, ...):
  int sinks;
  float *cache_k, *cache_v, *cache_phi;
  int *cache_pos, *cache_n;
  const float* ring_key(int j, const Dims& d) const { return ring_k + (size_t(j % R) * d.Hkv + size_t(hk)) * d.D; }
  const float* ring_value(int j, const Dims& d) const { return ring_v + (size_t(j % R) * d.Hkv + size_t(hk)) * d.D; }
};

Group group_of(LolcatsMemory::Layer& st, int b, int hk, int cap, int sinks, const Dims& d) {
  Group g{st.S.data() + size_t(b) * d.H * d.F * d.D, st.z.data() + size_t(b) * d.H * d.F,
          st.ring_k.data() + size_t(b) * R * d.Hkv * d.D, st.ring_v.data() + size_t(b) * R * d.Hkv * d.D,
          st.folded.data() + size_t(b) * d.Hkv + size_t(hk), hk, cap, sinks, nullptr, nullptr, nullptr, nullptr, nullptr};
  if (cap > 0) {
    const size_t heads = size_t(b) * d.H;
    g.cache_k = st.cache_k.data() + heads * cap * d.D, g.cache_v = st.cache_v.data() + heads * cap * d.D;
    g.cache_phi = st.cache_phi.data() + heads * cap * d.F, g.cache_pos = st.cache_pos.data() + heads * cap;
    g.cache_n = st.cache_n.data() + heads;
  }
  return g;
}

// S += phi v^T, z += phi: one key into a query head's linear state.
void fold(float* S, float* z, const float* phi, const float* v, const Dims& d) {
  for (int f = 0; f < d.F; f++) {
    const float p = phi[f];
    z[f] += p;
    float* Sf = S + size_t(f) * d.D;
#pragma omp simd
    for (int e = 0; e < d.D; e++) Sf[e] += p * v[e];
  }
}

// Key j (from the ring) into the state of the group's query heads:
//   S_h += phi_k,h(k_j) v_j^T,  z_h += phi_k,h(k_j)
void fold_key(const Group& g, const LolcatsModel& m, int l, int j, const Dims& d, Scratch& sc) {
  for (int h = g.hk * d.G; h < (g.hk + 1) * d.G; h++) {
    m.feature_head(sc.phi.data(), g.ring_key(j, d), l, h, true, sc.z.data());
    fold(g.S + size_t(h) * d.F * d.D, g.z + size_t(h) * d.F, sc.phi.data(), g.ring_value(j, d), d);
  }
}

// The self-recall error of a pair against query head h's state (lolcats/sparse_cache.h):
//   e = || v - phi^T S / (phi^T z + eps) ||
float recall_error(const float* phi, const float* v, const float* S, const float* z, const Dims& d, Scratch& sc) {
  double den = kRecallEps;
  std::fill(sc.num.begin(), sc.num.begin() + d.D, 0.0);
  for (int f = 0; f < d.F; f++) {
    den += double(phi[f]) * z[f];
    for (int e = 0; e < d.D; e++) sc.num[size_t(e)] += double(phi[f]) * S[size_t(f) * d.D + e];
  }
  double err = 0;
  for (int e = 0; e < d.D; e++) {
    const double r = v[e] - sc.num[size_t(e)] / den;
    err += r * r;
  }
  return float(std::sqrt(err));
}

// Keys from .. to-1 leave the group's window. Without a sparse cache they are folded into S, z;
// with one, each query head ranks its cache and the leaving keys (lolcats/sparse_cache.h).
void leave_window(const Group& g, const LolcatsModel& m, int l, int from, int to, const Dims& d, Scratch& sc) {
  if (g.cap == 0) {
    for (int j = from; j < to; j++) fold_key(g, m, l, j, d, sc);
    return;
  }
  const int leaving = to - from;
  for (int h = g.hk * d.G; h < (g.hk + 1) * d.G; h++) {
    float *S = g.S + size_t(h) * d.F * d.D, *z = g.z + size_t(h) * d.F;
    float *ck = g.cache_k + size_t(h) * g.cap * d.D, *cv = g.cache_v + size_t(h) * g.cap * d.D;
    float* cphi = g.cache_phi + size_t(h) * g.cap * d.F;
    int *cpos = g.cache_pos + size_t(h) * g.cap, &cn = g.cache_n[h];
    const int n = cn + leaving;  // candidates: i < cn the cache's slot i, else key from + i - cn
    for (int t = 0; t < leaving; t++)
      m.feature_head(sc.leaving_phi.data() + size_t(t) * d.F, g.ring_key(from + t, d), l, h, true, sc.z.data());
    auto phi_of = [&](int i) { return i < cn ? cphi + size_t(i) * d.F : sc.leaving_phi.data() + size_t(i - cn) * d.F; };
    auto value_of = [&](int i) { return i < cn ? cv + size_t(i) * d.D : g.ring_value(from + i - cn, d); };
    auto key_of = [&](int i) { return i < cn ? ck + size_t(i) * d.D : g.ring_key(from + i - cn, d); };
    auto position_of = [&](int i) { return i < cn ? cpos[i] : from + i - cn; };
    // Which stay: all when they fit; else the G worst recalled by the state as it is now.
    std::vector<int>& stays = sc.order;
    if (n <= g.cap) {
      std::fill_n(stays.begin(), n, 1);
    } else {
      for (int i = 0; i < n; i++)  // (a sink ranks first)
        sc.recall[size_t(i)] = position_of(i) < g.sinks ? std::numeric_limits<float>::infinity()
                                                        : recall_error(phi_of(i), value_of(i), S, z, d, sc);
      for (int i = 0; i < n; i++) {
        int before = 0;
        for (int j = 0; j < n; j++) before += j != i && ranks_before(sc.recall[size_t(j)], j, sc.recall[size_t(i)], i);
        stays[size_t(i)] = before < g.cap;
      }
    }
    // In position order: a pair that stays moves down to the next free slot (never above its
    // own, so no pair is overwritten before it is read); the others are folded.
    int kept = 0;
    for (int i = 0; i < n; i++) {
      if (!stays[size_t(i)]) {
        fold(S, z, phi_of(i), value_of(i), d);
        continue;
      }
      const int pos = position_of(i);
      if (kept != i || i >= cn) {  // (not a cache pair that keeps its slot)
        std::memmove(ck + size_t(kept) * d.D, key_of(i), size_t(d.D) * sizeof(float));
        std::memmove(cv + size_t(kept) * d.D, value_of(i), size_t(d.D) * sizeof(float));
        std::memmove(cphi + size_t(kept) * d.F, phi_of(i), size_t(d.F) * sizeof(float));
      }
      cpos[kept++] = pos;
    }
    cn = kept;
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
  // Exact softmax keys: the window's (ring) then the sparse cache's, i < n_window + n_cache.
  const int w0 = window_start(P, v), n_window = w0 <= P ? P - w0 + 1 : 0, n_cache = g.cap ? g.cache_n[h] : 0;
  auto key = [&](int i) { return i < n_window ? g.ring_key(w0 + i, d) : g.cache_k + (size_t(h) * g.cap + i - n_window) * d.D; };
  auto value = [&](int i) { return i < n_window ? g.ring_value(w0 + i, d) : g.cache_v + (size_t(h) * g.cap + i - n_window) * d.D; };
  if (n_window + n_cache > 0) {  // exact softmax scores, shifted by their max
    const float gate = 1.0f / (1.0f + std::exp(-m.layers[size_t(l)].wlogit->value.f32()[h]));
    const float scale = 1.0f / std::sqrt(float(d.D));
    float mx = -std::numeric_limits<float>::infinity();
    for (int i = 0; i < n_window + n_cache; i++) {
      const float* kj = key(i);
      float dot = 0;
#pragma omp simd reduction(+ : dot)
      for (int e = 0; e < d.D; e++) dot += q[e] * kj[e];
      mx = std::max(mx, sc.score[size_t(i)] = dot * scale);
    }
    for (int i = 0; i < n_window + n_cache; i++) {
      const double a = gate * std::exp(sc.score[size_t(i)] - mx);
      const float* vj = value(i);
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
    if (*g.folded < std::min(target, P)) {
      leave_window(g, m, l, *g.folded, std::min(target, P), d, sc);
      *g.folded = std::min(target, P);
    }
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

void check_sparse_cache(const LolcatsModel& m, SparseCacheConfig cache) {
  const int G = cache.pairs;
  ENSURE(G >= 0 && G <= kMaxSparseCache, "--sparse-cache %d: give 0 (none) to %d pairs per head", G, kMaxSparseCache);
  ENSURE(cache.sinks >= 0, "--cache-sinks %d: give 0 or more", cache.sinks);
  ENSURE(G == 0 || m.cfg.variant != HybridVariant::linear,
         "--sparse-cache: the model's variant \"linear\" has no softmax window for the cache to join (terrace or sw)");
}

LolcatsMemory::LolcatsMemory(const LolcatsModel& m, DecodeMode mode, SparseCacheConfig cache)
    : layers(m.layers.size()), model_(m), window_(decode_variant(m, mode)),
      kept_(m.base, kept_as_softmax(m)), G_(cache.pairs), sinks_(cache.sinks) {
  ENSURE(m.base.device() == Device::cpu, "LolcatsMemory is the CPU decoder's; on %s use make_decoder",
         device_name(m.base.device()));
  check_sparse_cache(m, cache);
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
    const size_t slots = B * d.H * size_t(G_);  // (G = 0: no cache, nothing allocated)
    st.cache_k.assign(slots * d.D, 0.0f);
    st.cache_v.assign(slots * d.D, 0.0f);
    st.cache_phi.assign(slots * d.F, 0.0f);
    st.cache_pos.assign(slots, 0);
    st.cache_n.assign(G_ > 0 ? B * d.H : 0, 0);
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
    if (G_ > 0) clear(st.cache_k), clear(st.cache_v), clear(st.cache_phi), clear(st.cache_pos), clear(st.cache_n);
  }
}

void LolcatsMemory::copy(int from, int to, int length) {
  kept_.copy(from, to, length);
  for (Layer& st : layers) {
    if (st.S.empty()) continue;
    auto copy = [&](auto& v) { std::copy_n(part(v, batch_, from), v.size() / size_t(batch_), part(v, batch_, to)); };
    copy(st.S), copy(st.z), copy(st.ring_k), copy(st.ring_v), copy(st.folded);
    if (G_ > 0) copy(st.cache_k), copy(st.cache_v), copy(st.cache_phi), copy(st.cache_pos), copy(st.cache_n);
  }
}

void LolcatsMemory::assume_length(int b, int P) {
  const int folded = P == 0 ? 0 : std::min(window_start(P - 1, window_), P);  // as after position P-1
  for (Layer& st : layers) {  // and a full cache, when that many keys have left the window
    if (st.S.empty()) continue;
    std::fill_n(part(st.folded, batch_, b), st.folded.size() / size_t(batch_), folded);
    if (G_ > 0) std::fill_n(part(st.cache_n, batch_, b), st.cache_n.size() / size_t(batch_), std::min(G_, folded));
  }
}

size_t LolcatsMemory::bytes() const {
  size_t n = kept_.bytes();
  for (const Layer& st : layers)
    n += (st.S.size() + st.z.size() + st.ring_k.size() + st.ring_v.size()) * sizeof(float) +
         st.folded.size() * sizeof(int) +
         (st.cache_k.size() + st.cache_v.size() + st.cache_phi.size()) * sizeof(float) +
         (st.cache_pos.size() + st.cache_n.size()) * sizeof(int);
  return n;
}

size_t LolcatsMemory::sequence_bytes(int max_len) const {
  const Dims d = dims_of(model_);  // S, z, rings and fold counts: fixed per sequence
  size_t n = kept_.sequence_bytes(max_len);
  for (const LolcatsLayer& L : model_.layers)
    if (L.converted)
      n += (size_t(d.H) * d.F * (d.D + 1) + size_t(2) * R * d.Hkv * d.D) * sizeof(float) + size_t(d.Hkv) * sizeof(int) +
           (G_ > 0 ? size_t(d.H) * (G_ * ((2 * d.D + d.F) * sizeof(float) + sizeof(int)) + sizeof(int)) : 0);
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
  // A whole prompt on an empty sequence: the parallel (training) form gives its outputs (not with a
  // sparse cache, whose rule only the recurrence follows).
  auto parallel_prefill = [&](int b) { return G_ == 0 && rows.length[size_t(b)] == 0 && rows.n[size_t(b)] > 1; };
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
      sc.fit(d, G_);
      advance(group_of(st, b, hk, G_, sinks_, d), y + r0 * d.H * d.D, q + r0 * d.H * d.D, k + r0 * d.Hkv * d.D,
              v + r0 * d.Hkv * d.D, rows.length[size_t(b)], n, !parallel_prefill(b), m, l, window_, d, sc);
    }
}

std::unique_ptr<Decoder> make_decoder(const LolcatsModel& model, DecodeMode mode, SparseCacheConfig cache) {
  std::unique_ptr<DecodeMemory> memory;
  if (model.base.device() == Device::cpu) memory = std::make_unique<LolcatsMemory>(model, mode, cache);
  else memory = make_lolcats_device_memory(model, mode, cache);
  return std::make_unique<Decoder>(model.base, std::move(memory));
}

}  // namespace lolcats
