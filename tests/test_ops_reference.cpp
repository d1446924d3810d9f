// Every CPU op, forward and backward, against PyTorch (tests/reference/ref_ops.py).
// Each case runs twice: the float instantiation at float32 accuracy and the double instantiation at
// float64 accuracy (the reference is computed in float64 from float32-representable inputs).
// Backward kernels get dy = r, the fixture's random projection, and must reproduce
// d(sum(r * y))/d input as torch.autograd computed it.
#include "tests/helpers.h"
#include "tensor/attention.h"
#include "tensor/bf16.h"
#include "tensor/elementwise.h"
#include "tensor/embedding.h"
#include "tensor/loss.h"
#include "tensor/matmul.h"
#include "tensor/rmsnorm.h"
#include "tensor/rope.h"

using namespace lolcats;
using lolcats_test::fx;
using lolcats_test::fx_i32;

namespace {

const char* F = "ref_ops";

// Tolerances. float: unit roundoff 6e-8, our dot products have <= ~200 terms of size O(1-10), so
// 1e-5 absolute + 1e-5 relative covers accumulated rounding with margin while still catching any
// real error (a wrong sign or index is O(1)). double: the same reasoning at 1e-16 roundoff.
template <typename T> double atol() { return sizeof(T) == 4 ? 1e-5 : 1e-11; }
template <typename T> double rtol() { return sizeof(T) == 4 ? 1e-5 : 1e-11; }

template <typename T>
std::vector<T> zeros_like(const std::vector<T>& v) { return std::vector<T>(v.size(), T(0)); }

template <typename T> std::vector<double> d(const std::vector<T>& v) {
  return std::vector<double>(v.begin(), v.end());
}

#define CLOSE(what, got, want) CHECK_CLOSE(what, got, want, atol<TestType>(), rtol<TestType>())

}  // namespace

TEMPLATE_TEST_CASE("matmul matches torch for every transpose", "[ops][ref]", float, double) {
  using T = TestType;
  for (int ta = 0; ta < 2; ta++)
    for (int tb = 0; tb < 2; tb++) {
      std::string n = "matmul_t" + std::to_string(ta) + std::to_string(tb);
      const int M = 5, N = 7, K = 9;
      auto a = fx<T>(F, n + ".a"), b = fx<T>(F, n + ".b"), r = fx<T>(F, n + ".r");
      std::vector<T> c(M * N), da(a.size()), db(b.size());
      matmul_forward(c.data(), a.data(), b.data(), 1, M, N, K, transpose_of(ta, tb));
      CLOSE(n + " y", c, fx<double>(F, n + ".y"));
      matmul_backward(da.data(), db.data(), r.data(), a.data(), b.data(), 1, M, N, K, transpose_of(ta, tb),
                      Accumulate::no, Accumulate::no);
      CLOSE(n + " da", da, fx<double>(F, n + ".da"));
      CLOSE(n + " db", db, fx<double>(F, n + ".db"));
      // accumulate = true adds to what is there
      matmul_forward(c.data(), a.data(), b.data(), 1, M, N, K, transpose_of(ta, tb), Accumulate::yes);
      auto y2 = fx<double>(F, n + ".y");
      for (double& v : y2) v *= 2;
      CLOSE(n + " y accumulated twice", c, y2);
    }
}

TEMPLATE_TEST_CASE("batched matmul and linear match torch", "[ops][ref]", float, double) {
  using T = TestType;
  auto a = fx<T>(F, "matmul_batched.a"), b = fx<T>(F, "matmul_batched.b"),
       r = fx<T>(F, "matmul_batched.r");
  std::vector<T> c(3 * 6 * 5), da(a.size()), db(b.size());
  matmul_forward(c.data(), a.data(), b.data(), 3, 6, 5, 4, Transpose::b);
  CLOSE("batched y", c, fx<double>(F, "matmul_batched.y"));
  matmul_backward(da.data(), db.data(), r.data(), a.data(), b.data(), 3, 6, 5, 4, Transpose::b, Accumulate::no,
                  Accumulate::no);
  CLOSE("batched da", da, fx<double>(F, "matmul_batched.da"));
  CLOSE("batched db", db, fx<double>(F, "matmul_batched.db"));

  auto x = fx<T>(F, "linear.x"), w = fx<T>(F, "linear.w"), rl = fx<T>(F, "linear.r");
  std::vector<T> y(6 * 24), dx(x.size()), dw(w.size());
  matmul_forward(y.data(), x.data(), w.data(), 1, 6, 24, 40, Transpose::b);
  CLOSE("linear y", y, fx<double>(F, "linear.y"));
  matmul_backward(dx.data(), dw.data(), rl.data(), x.data(), w.data(), 1, 6, 24, 40, Transpose::b,
                  Accumulate::no, Accumulate::no);
  CLOSE("linear dx", dx, fx<double>(F, "linear.dx"));
  CLOSE("linear dw", dw, fx<double>(F, "linear.dw"));
}

TEMPLATE_TEST_CASE("elementwise ops match torch", "[ops][ref]", float, double) {
  using T = TestType;
  const int n = 1000;
  std::vector<T> y(n), da(n), db(n);
  auto a = fx<T>(F, "add.a"), b = fx<T>(F, "add.b"), r = fx<T>(F, "add.r");
  add_forward(y.data(), a.data(), b.data(), n);
  CLOSE("add y", y, fx<double>(F, "add.y"));
  add_backward(da.data(), db.data(), r.data(), n);
  CLOSE("add da", da, fx<double>(F, "add.da"));
  CLOSE("add db", db, fx<double>(F, "add.db"));

  a = fx<T>(F, "mul.a"), b = fx<T>(F, "mul.b"), r = fx<T>(F, "mul.r");
  mul_forward(y.data(), a.data(), b.data(), n);
  CLOSE("mul y", y, fx<double>(F, "mul.y"));
  mul_backward(da.data(), db.data(), r.data(), a.data(), b.data(), n);
  CLOSE("mul da", da, fx<double>(F, "mul.da"));
  CLOSE("mul db", db, fx<double>(F, "mul.db"));

  a = fx<T>(F, "scale.a"), r = fx<T>(F, "scale.r");
  scale_forward(y.data(), a.data(), T(0.37), n);
  CLOSE("scale y", y, fx<double>(F, "scale.y"));
  scale_backward(da.data(), r.data(), T(0.37), n);
  CLOSE("scale da", da, fx<double>(F, "scale.da"));

  auto x = fx<T>(F, "silu.x");
  r = fx<T>(F, "silu.r");
  silu_forward(y.data(), x.data(), n);
  CLOSE("silu y", y, fx<double>(F, "silu.y"));
  silu_backward(da.data(), r.data(), x.data(), n);
  CLOSE("silu dx", da, fx<double>(F, "silu.dx"));

  auto g = fx<T>(F, "swiglu.gate"), u = fx<T>(F, "swiglu.up");
  r = fx<T>(F, "swiglu.r");
  swiglu_forward(y.data(), g.data(), u.data(), n);
  CLOSE("swiglu y", y, fx<double>(F, "swiglu.y"));
  swiglu_backward(da.data(), db.data(), r.data(), g.data(), u.data(), n);
  CLOSE("swiglu dgate", da, fx<double>(F, "swiglu.dgate"));
  CLOSE("swiglu dup", db, fx<double>(F, "swiglu.dup"));
}

TEMPLATE_TEST_CASE("embedding matches torch, repeated ids add up", "[ops][ref]", float, double) {
  using T = TestType;
  auto idx = fx_i32(F, "embedding.idx");
  auto wte = fx<T>(F, "embedding.wte"), r = fx<T>(F, "embedding.r");
  const int N = int(idx.size()), V = 11, C = 6;
  std::vector<T> y(N * C), dwte(V * C, T(0));
  embedding_forward(y.data(), idx.data(), wte.data(), N, V, C);
  CLOSE("embedding y", y, fx<double>(F, "embedding.y"));
  embedding_backward(dwte.data(), r.data(), idx.data(), N, V, C);
  CLOSE("embedding dwte", dwte, fx<double>(F, "embedding.dwte"));
  idx[2] = V;  // out of range: a clear error, not a read past the table
  REQUIRE_THROWS_WITH(embedding_forward(y.data(), idx.data(), wte.data(), N, V, C),
                      Catch::Contains("token id 11 at position 2 is outside [0, 11)"));
}

TEMPLATE_TEST_CASE("rmsnorm matches Hugging Face LlamaRMSNorm", "[ops][ref]", float, double) {
  using T = TestType;
  auto x = fx<T>(F, "rmsnorm.x"), w = fx<T>(F, "rmsnorm.w"), r = fx<T>(F, "rmsnorm.r");
  const int N = 6, C = 40;
  std::vector<T> y(N * C), rstd(N), dx(N * C), dw(C, T(0));
  rmsnorm_forward(y.data(), rstd.data(), x.data(), w.data(), N, C, T(1e-5));
  CLOSE("rmsnorm y", y, fx<double>(F, "rmsnorm.y"));
  rmsnorm_backward(dx.data(), dw.data(), r.data(), x.data(), w.data(), rstd.data(), N, C);
  CLOSE("rmsnorm dx", dx, fx<double>(F, "rmsnorm.dx"));
  CLOSE("rmsnorm dw", dw, fx<double>(F, "rmsnorm.dw"));
}

TEST_CASE("rope frequencies match transformers, plain and llama3-scaled", "[ops][ref]") {
  // transformers computes inv_freq in float32 (the pow, and for llama3 the ~6 float32 operations of
  // the smoothing): compare at float32 accuracy, 1e-6 relative = 8 ulps. Ours is in double.
  const int D = 16;
  double inv[D / 2];
  rope_inv_freq(inv, D, RopeConfig{10000.0});
  CHECK_CLOSE("plain inv_freq", inv, fx<double>(F, "rope_plain.inv_freq"), 0.0, 1e-6);
  RopeConfig l3;
  l3.theta = 500000.0;
  l3.llama3_scaling = true;
  rope_inv_freq(inv, D, l3);
  CHECK_CLOSE("llama3 inv_freq", inv, fx<double>(F, "rope_llama3.inv_freq"), 0.0, 1e-6);
}

TEMPLATE_TEST_CASE("rope matches transformers (half-split) and complex rotation (interleaved)",
                   "[ops][ref]", float, double) {
  using T = TestType;
  const int B = 2, Tn = 9, H = 3, D = 16;
  auto pos = fx_i32(F, "rope.pos");
  for (const char* cfg : {"plain", "llama3"}) {
    // Tables from the reference's own inv_freq, so this checks the rotation alone; the frequency
    // computation is checked by the test above.
    auto inv = fx<double>(F, std::string("rope_") + cfg + ".inv_freq");
    std::vector<T> cos_t(Tn * D / 2), sin_t(Tn * D / 2);
    rope_tables(cos_t.data(), sin_t.data(), pos.data(), Tn, D, inv.data());
    for (auto [suffix, layout] : {std::pair{"_half", RopeLayout::half_split},
                                  std::pair{"_inter", RopeLayout::interleaved}}) {
      std::string n = std::string("rope_") + cfg + suffix;
      auto x = fx<T>(F, n + ".x"), r = fx<T>(F, n + ".r");
      std::vector<T> y(x.size()), dx(x.size());
      rope_forward(y.data(), x.data(), cos_t.data(), sin_t.data(), B, Tn, H, D, layout);
      CLOSE(n + " y", y, fx<double>(F, n + ".y"));
      rope_backward(dx.data(), r.data(), cos_t.data(), sin_t.data(), B, Tn, H, D, layout);
      CLOSE(n + " dx", dx, fx<double>(F, n + ".dx"));
      rope_forward(x.data(), x.data(), cos_t.data(), sin_t.data(), B, Tn, H, D, layout);
      CLOSE(n + " in place", x, fx<double>(F, n + ".y"));
    }
  }
}

TEMPLATE_TEST_CASE("causal GQA attention matches F.scaled_dot_product_attention", "[ops][ref]",
                   float, double) {
  using T = TestType;
  struct Case { const char* name; int B, Tn, H, Hkv, D; };
  for (Case c : {Case{"attention", 2, 150, 4, 2, 16}, Case{"attention_t1", 1, 1, 3, 1, 8},
                 Case{"attention_mha", 1, 70, 2, 2, 8}}) {
    std::string n = c.name;
    auto q = fx<T>(F, n + ".q"), k = fx<T>(F, n + ".k"), v = fx<T>(F, n + ".v"), r = fx<T>(F, n + ".r");
    std::vector<T> y(q.size()), lse(c.B * c.H * c.Tn), dq(q.size()), dk(k.size()), dv(v.size());
    attention_forward(y.data(), lse.data(), q.data(), k.data(), v.data(), c.B, c.Tn, c.H, c.Hkv, c.D);
    CLOSE(n + " y", y, fx<double>(F, n + ".y"));
    attention_backward(dq.data(), dk.data(), dv.data(), r.data(), y.data(), lse.data(), q.data(),
                       k.data(), v.data(), c.B, c.Tn, c.H, c.Hkv, c.D);
    CLOSE(n + " dq", dq, fx<double>(F, n + ".dq"));
    CLOSE(n + " dk", dk, fx<double>(F, n + ".dk"));
    CLOSE(n + " dv", dv, fx<double>(F, n + ".dv"));
  }
}

TEMPLATE_TEST_CASE("losses and reductions match torch", "[ops][ref]", float, double) {
  using T = TestType;
  const int N = 7, V = 13;
  auto logits = fx<T>(F, "cross_entropy.logits");
  auto targets = fx_i32(F, "cross_entropy.targets");
  double r = fx<double>(F, "cross_entropy.r")[0];
  std::vector<T> lse(N), dlogits(N * V);
  double loss = cross_entropy_forward(lse.data(), logits.data(), targets.data(), N, V);
  CLOSE("cross_entropy", &loss, fx<double>(F, "cross_entropy.y"));
  cross_entropy_backward(dlogits.data(), r, logits.data(), lse.data(), targets.data(), N, V);
  CLOSE("cross_entropy dlogits", dlogits, fx<double>(F, "cross_entropy.dlogits"));

  auto a = fx<T>(F, "mse.a"), b = fx<T>(F, "mse.b");
  std::vector<T> da(a.size()), db(a.size());
  double m = mse_forward(a.data(), b.data(), int64_t(a.size()));
  CLOSE("mse", &m, fx<double>(F, "mse.y"));
  mse_backward(da.data(), db.data(), fx<double>(F, "mse.r")[0], a.data(), b.data(), int64_t(a.size()));
  CLOSE("mse da", da, fx<double>(F, "mse.da"));
  CLOSE("mse db", db, fx<double>(F, "mse.db"));

  for (const char* n : {"sum", "mean"}) {
    auto x = fx<T>(F, std::string(n) + ".x");
    std::vector<T> dx(x.size());
    bool is_sum = std::string(n) == "sum";
    double s = is_sum ? sum_forward(x.data(), int64_t(x.size())) : mean_forward(x.data(), int64_t(x.size()));
    double rr = fx<double>(F, std::string(n) + ".r")[0];
    if (is_sum) sum_backward(dx.data(), rr, int64_t(x.size()));
    else mean_backward(dx.data(), rr, int64_t(x.size()));
    CLOSE(std::string(n), &s, fx<double>(F, std::string(n) + ".y"));
    CLOSE(std::string(n) + " dx", dx, fx<double>(F, std::string(n) + ".dx"));
  }
}

TEST_CASE("bf16 rounding and f16 decoding match torch bit for bit", "[tensor][ref]") {
  auto x = fx<double>(F, "bf16.x"), want = fx<double>(F, "bf16.y");
  std::vector<float> got(x.size());
  for (size_t i = 0; i < x.size(); i++) got[i] = bf16_to_f32(f32_to_bf16(float(x[i])));
  CHECK_CLOSE("bf16 round trip", got, want, 0.0, 0.0);  // exact: rounding is fully specified
  auto bits = fx_i32(F, "f16.bits");
  std::vector<float> h(bits.size());
  for (size_t i = 0; i < bits.size(); i++) h[i] = f16_to_f32(uint16_t(bits[i]));
  CHECK_CLOSE("f16 decode", h, fx<double>(F, "f16.y"), 0.0, 0.0);  // exact: widening
  CHECK(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
}
