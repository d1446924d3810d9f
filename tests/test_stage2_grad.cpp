// The stage-2 gradient of the whole product path against finite differences in double precision:
//   LoRA -> q/k/v -> RoPE -> feature maps (Hedgehog or T2R; frozen, differentiated through) ->
//   hybrid terrace attention -> o (LoRA) -> MLP ... -> logits -> L = sum(r * logits)
// on the tiny random Llama of tests/reference/ref_llama.py (GQA 4/2, Llama 3.1 RoPE scaling), with
// T = 160 > 2 C, so queries 128..159 also read keys through the linear state.
//
// Analytic: the tape's gradient, exactly as stage 2 computes it (Llama + LolcatsModel, float32).
// Oracle: the directional derivative along random directions u of each LoRA tensor in turn,
//   dL/de [theta + e u] ~ (L(theta + h u) - L(theta - h u)) / 2h,
// with L evaluated by a float64 forward of the same model written here from the kernels' double
// instantiations (each checked against PyTorch in test_ops_reference). Double matters: in float32
// the step must be so large that it crosses kinks of the window max m_i (which the linear part
// does not cancel), and the estimate was off by up to 50% for q/k directions.
// r is random: a plain sum would hide softmax and normalisation gradient errors.
#include <cmath>

#include "autograd/gradcheck.h"
#include "autograd/ops.h"
#include "lolcats/feature_map.h"
#include "lolcats/model.h"
#include "tensor/elementwise.h"
#include "tensor/embedding.h"
#include "tensor/matmul.h"
#include "tensor/rmsnorm.h"
#include "tensor/rope.h"
#include "tests/helpers.h"

using namespace lolcats;
using V = std::vector<double>;

namespace {

std::string tiny_path() {
  const char* d = std::getenv("LOLCATS_FIXTURES");
  return std::string(d ? d : "build/fixtures") + "/tiny_llama";
}

V to_double(const Var& v) {
  const float* p = v->value.f32();
  return V(p, p + v->value.numel());
}

// y (N, out) = x (N, in) W^T, plus s (x A^T) B^T when A is given (A (r, in), B (out, r)).
V linear_d(const V& x, const V& W, int N, int in, int out, const V* A = nullptr, const V* B = nullptr,
           double s = 0) {
  V y(size_t(N) * out);
  matmul_forward(y.data(), x.data(), W.data(), 1, N, out, in, Transpose::b);
  if (A) {
    const int r = int(A->size()) / in;
    V xa(size_t(N) * r);
    matmul_forward(xa.data(), x.data(), A->data(), 1, N, r, in, Transpose::b);
    V d(size_t(N) * out);
    matmul_forward(d.data(), xa.data(), B->data(), 1, N, out, r, Transpose::b);
    for (size_t i = 0; i < y.size(); i++) y[i] += s * d[i];
  }
  return y;
}

V rmsnorm_d(const V& x, const V& w, int N, int C, double eps) {
  V y(x.size()), rstd(N);
  rmsnorm_forward(y.data(), rstd.data(), x.data(), w.data(), N, C, eps);
  return y;
}

// The model in float64: weights copied once; `lora[l][s]` = {A, B} of site s (q, k, v, o).
struct DoubleModel {
  const Llama& base;
  const LolcatsModel& lm;
  std::vector<std::vector<std::pair<V, V>>> lora;
  double lora_scale = 0;

  V forward(const std::vector<int32_t>& ids) const {
    const LlamaConfig& c = base.cfg;
    const int T = int(ids.size()), C = c.d_model, H = c.n_heads, Hkv = c.n_kv_heads, D = c.head_dim;
    const int F = lm.F, FF = c.ffn;
    std::vector<double> inv_freq(D / 2);
    rope_inv_freq(inv_freq.data(), D, c.rope);
    std::vector<int32_t> pos(T);
    for (int t = 0; t < T; t++) pos[t] = t;
    V cos_t(size_t(T) * D / 2), sin_t(size_t(T) * D / 2);
    rope_tables(cos_t.data(), sin_t.data(), pos.data(), T, D, inv_freq.data());

    V x(size_t(T) * C);
    embedding_forward(x.data(), ids.data(), to_double(base.wte).data(), T, c.vocab, C);
    for (int l = 0; l < c.n_layers; l++) {
      const LlamaLayer& L = base.layers[l];
      const LolcatsLayer& LL = lm.layers[l];
      const auto& lo = lora[l];
      V a = rmsnorm_d(x, to_double(L.attn_norm), T, C, c.norm_eps);
      V q = linear_d(a, to_double(L.wq), T, C, H * D, &lo[0].first, &lo[0].second, lora_scale);
      V k = linear_d(a, to_double(L.wk), T, C, Hkv * D, &lo[1].first, &lo[1].second, lora_scale);
      V v = linear_d(a, to_double(L.wv), T, C, Hkv * D, &lo[2].first, &lo[2].second, lora_scale);
      rope_forward(q.data(), q.data(), cos_t.data(), sin_t.data(), 1, T, H, D, RopeLayout::half_split);
      rope_forward(k.data(), k.data(), cos_t.data(), sin_t.data(), 1, T, Hkv, D, RopeLayout::half_split);
      V phiq(size_t(T) * H * F), phik(size_t(T) * H * F), y(size_t(T) * H * D), Z(size_t(H) * T);
      if (lm.cfg.feature_map == FeatureMapKind::t2r) {
        t2r_forward(phiq.data(), q.data(), to_double(LL.wq_fm).data(), to_double(LL.bq_fm).data(), 1, T, H, H, D, F);
        t2r_forward(phik.data(), k.data(), to_double(LL.wk_fm).data(), to_double(LL.bk_fm).data(), 1, T, H, Hkv, D, F);
      } else {
        hedgehog_forward(phiq.data(), q.data(), to_double(LL.wq_fm).data(), 1, T, H, H, D, lm.Fh);
        hedgehog_forward(phik.data(), k.data(), to_double(LL.wk_fm).data(), 1, T, H, Hkv, D, lm.Fh);
      }
      hybrid_attention_forward(y.data(), Z.data(), q.data(), k.data(), v.data(), phiq.data(),
                               phik.data(), to_double(LL.wlogit).data(), 1, T, H, Hkv, D, F,
                               HybridVariant::terrace);
      V o = linear_d(y, to_double(L.wo), T, H * D, C, &lo[3].first, &lo[3].second, lora_scale);
      for (size_t i = 0; i < x.size(); i++) x[i] += o[i];
      V mn = rmsnorm_d(x, to_double(L.mlp_norm), T, C, c.norm_eps);
      V g = linear_d(mn, to_double(L.w_gate), T, C, FF), u = linear_d(mn, to_double(L.w_up), T, C, FF);
      V h(g.size());
      swiglu_forward(h.data(), g.data(), u.data(), int64_t(h.size()));
      V dn = linear_d(h, to_double(L.w_down), T, FF, C);
      for (size_t i = 0; i < x.size(); i++) x[i] += dn[i];
    }
    return linear_d(rmsnorm_d(x, to_double(base.norm), T, C, c.norm_eps), to_double(base.lm_head), T, C,
                    c.vocab);
  }
};

void check_stage2_gradients(FeatureMapKind feature_map) {
  auto base = Llama::load(tiny_path());
  const int T = 160, Vn = base->cfg.vocab;
  REQUIRE(T > 2 * kHybridBlock);
  std::vector<int32_t> tokens(T);
  for (int i = 0; i < T; i++) tokens[i] = int32_t((i * 7919 + 13) % Vn);
  Tensor ids = Tensor::from_i32(tokens, {1, T});

  LolcatsConfig cfg;  // terrace
  cfg.feature_map = feature_map;
  LolcatsModel m(*base, cfg);
  uint64_t seed = 300;
  for (const Var& p : m.parameters()) {  // trained-looking feature maps, frozen as in stage 2
    V e = random_normal(p->value.numel(), seed++, 0.3);
    for (int64_t i = 0; i < p->value.numel(); i++) p->value.f32()[i] += float(e[i]);
    p->requires_grad = false;
  }
  auto lora = base->add_lora(4, 8.0f, {"q", "k", "v", "o"}, 5);
  for (auto& [name, v] : lora)  // B away from zero, so A has a gradient too
    if (name.find("lora_B") != std::string::npos) {
      V e = random_normal(v->value.numel(), seed++, 0.1);
      for (int64_t i = 0; i < v->value.numel(); i++) v->value.f32()[i] = float(e[i]);
    }
  REQUIRE(lora.size() == 2 * 4 * 2);  // layer-major, then site q, k, v, o, then A, B

  DoubleModel dm{*base, m, {}, base->layers[0].lora_q.scale};
  for (int l = 0; l < 2; l++) {
    dm.lora.emplace_back();
    for (int s = 0; s < 4; s++)
      dm.lora[l].push_back({to_double(lora[(l * 4 + s) * 2].second), to_double(lora[(l * 4 + s) * 2 + 1].second)});
  }
  // The double forward is the model the tape runs: the same logits up to float32 rounding.
  Var logits = m.forward(ids);
  V want = dm.forward(tokens);
  CHECK_CLOSE("float64 forward vs the product's float32 forward", logits->value.f32(), want, 1e-4, 1e-4);

  // The linear part is in play: a feature map moves the logits of queries >= 128 only.
  {
    m.layers[0].wq_fm->value.f32()[0] += 0.5f;  // DoubleModel reads the feature maps from m
    V after = dm.forward(tokens);
    m.layers[0].wq_fm->value.f32()[0] -= 0.5f;
    double early = 0, late = 0;
    for (int t = 0; t < T; t++)
      for (int c = 0; c < Vn; c++)
        (t < 2 * kHybridBlock ? early : late) += std::fabs(after[size_t(t) * Vn + c] - want[size_t(t) * Vn + c]);
    CHECK(early == 0.0);
    CHECK(late > 1e-3);
  }

  // Two projections: every position, and only the positions that read the linear state.
  V r_all = random_normal(int64_t(T) * Vn, 10), r_late = random_normal(int64_t(T) * Vn, 11);
  for (int t = 0; t < 2 * kHybridBlock; t++)
    for (int c = 0; c < Vn; c++) r_late[size_t(t) * Vn + c] = 0;
  std::vector<std::vector<float>> grads[2];  // [projection][LoRA tensor]
  for (int k = 0; k < 2; k++) {
    for (auto& [name, v] : lora) zero_grad(v);
    Var out = m.forward(ids);
    const V& r = k == 0 ? r_all : r_late;
    backward(sum(mul(out, leaf(Tensor::from(std::vector<float>(r.begin(), r.end()), out->value.shape())))));
    for (auto& [name, v] : lora) grads[k].push_back(v->grad.to_vector());
  }
  auto dot = [](const V& a, const V& b) {
    double s = 0;
    for (size_t i = 0; i < a.size(); i++) s += a[i] * b[i];
    return s;
  };

  uint64_t dir_seed = 1000;
  for (size_t p = 0; p < lora.size(); p++) {
    auto& site = dm.lora[p / 8][(p / 2) % 4];  // layer, then q k v o, then A B
    V& theta = p % 2 == 0 ? site.first : site.second;
    const V theta0 = theta;
    for (int dir = 0; dir < 2; dir++) {
      V u = random_normal(int64_t(theta.size()), dir_seed++);
      // h = 1e-7 on entries of size ~0.1: truncation ~h^2 |L'''| ~ 1e-14, cancellation
      // ~1e-16 |L| / h ~ 1e-7 (|L| ~ 100); within so small a step no window max changes its
      // argmax and no T2R relu changes sign (both are kinks a larger step would straddle).
      const double h = 1e-7;
      for (size_t i = 0; i < u.size(); i++) theta[i] = theta0[i] + h * u[i];
      const V yp = dm.forward(tokens);
      for (size_t i = 0; i < u.size(); i++) theta[i] = theta0[i] - h * u[i];
      const V ym = dm.forward(tokens);
      theta = theta0;
      for (int k = 0; k < 2; k++) {
        INFO((k ? "positions >= 128: " : "all positions: ") << lora[p].first << ", direction " << dir);
        const V& r = k == 0 ? r_all : r_late;
        const double numeric = (dot(r, yp) - dot(r, ym)) / (2 * h);
        double analytic = 0, magnitude = 0;
        for (size_t i = 0; i < u.size(); i++)
          analytic += double(grads[k][p][i]) * u[i], magnitude += std::fabs(grads[k][p][i] * u[i]);
        // The analytic side is float32 (~1e-6 relative per term); 1e-4 of the summed magnitudes
        // covers it, while a wrong or missing term moves the derivative by O(1) of one term.
        INFO("analytic " << analytic << " numeric " << numeric << " sum |g u| " << magnitude);
        CHECK(magnitude > 1e-2);
        CHECK(std::fabs(analytic - numeric) <= 1e-4 * magnitude);
      }
    }
  }
}

}  // namespace

TEST_CASE("stage 2: LoRA gradients through Hedgehog + hybrid terrace attention match finite differences",
          "[lolcats][stage2][fd]") {
  check_stage2_gradients(FeatureMapKind::hedgehog);
}

TEST_CASE("stage 2: LoRA gradients through T2R + hybrid terrace attention match finite differences",
          "[lolcats][stage2][fd][t2r]") {
  check_stage2_gradients(FeatureMapKind::t2r);
}
