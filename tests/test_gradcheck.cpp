// Every backward kernel against central finite differences of its own forward, in double precision
// (autograd/gradcheck.h). Independent of PyTorch: a second oracle for the same gradients, and the
// one that also covers cases the fixtures do not (accumulating parameter gradients, odd sizes).
#include "autograd/gradcheck.h"
#include "tensor/attention.h"
#include "tensor/elementwise.h"
#include "tensor/embedding.h"
#include "tensor/loss.h"
#include "tensor/matmul.h"
#include "tensor/rmsnorm.h"
#include "tensor/rope.h"
#include "tests/helpers.h"

using namespace lolcats;
using V = std::vector<double>;

namespace {

// Runs the check and reports the worst entries on failure. Tolerances: h = 1e-6 in double gives
// truncation error ~h^2 * |f'''| ~ 1e-12 and cancellation error ~1e-16/h ~ 1e-10 relative to |L|,
// so 1e-6 relative + 1e-7 absolute leaves margin on smooth ops while a wrong term is O(1).
void expect_grads(const ForwardFn& f, const BackwardFn& b, Buffers inputs, uint64_t seed = 1) {
  GradCheckResult r = gradcheck(f, b, std::move(inputs), seed);
  INFO(r.report);
  CHECK(r.ok);
  CHECK(r.checked > 0);
}

V rnd(int64_t n, uint64_t seed, double scale = 1.0) { return random_normal(n, seed, scale); }

}  // namespace

TEST_CASE("gradcheck: matmul, every transpose and batched", "[ops][fd]") {
  const int M = 4, N = 5, K = 3;
  for (int batch : {1, 3})
    for (int ta = 0; ta < 2; ta++)
      for (int tb = 0; tb < 2; tb++) {
        INFO("batch " << batch << " ta " << ta << " tb " << tb);
        auto f = [&](const Buffers& in) {
          V c(batch * M * N);
          matmul_forward(c.data(), in[0].data(), in[1].data(), batch, M, N, K, transpose_of(ta, tb));
          return c;
        };
        auto b = [&](const Buffers& in, const V& dc) {
          Buffers g{V(in[0].size()), V(in[1].size())};
          matmul_backward(g[0].data(), g[1].data(), dc.data(), in[0].data(), in[1].data(), batch, M,
                          N, K, transpose_of(ta, tb), Accumulate::no, Accumulate::no);
          return g;
        };
        expect_grads(f, b, {rnd(batch * M * K, 1), rnd(batch * K * N, 2)});
      }
}

TEST_CASE("gradcheck: elementwise ops", "[ops][fd]") {
  const int n = 50;
  expect_grads([](const Buffers& in) { V y(n); add_forward(y.data(), in[0].data(), in[1].data(), n); return y; },
               [](const Buffers&, const V& dy) {
                 Buffers g{V(n), V(n)};
                 add_backward(g[0].data(), g[1].data(), dy.data(), n);
                 return g;
               },
               {rnd(n, 3), rnd(n, 4)});
  expect_grads([](const Buffers& in) { V y(n); mul_forward(y.data(), in[0].data(), in[1].data(), n); return y; },
               [](const Buffers& in, const V& dy) {
                 Buffers g{V(n), V(n)};
                 mul_backward(g[0].data(), g[1].data(), dy.data(), in[0].data(), in[1].data(), n);
                 return g;
               },
               {rnd(n, 5), rnd(n, 6)});
  expect_grads([](const Buffers& in) { V y(n); scale_forward(y.data(), in[0].data(), -1.7, n); return y; },
               [](const Buffers&, const V& dy) {
                 Buffers g{V(n)};
                 scale_backward(g[0].data(), dy.data(), -1.7, n);
                 return g;
               },
               {rnd(n, 7)});
  expect_grads([](const Buffers& in) { V y(n); silu_forward(y.data(), in[0].data(), n); return y; },
               [](const Buffers& in, const V& dy) {
                 Buffers g{V(n)};
                 silu_backward(g[0].data(), dy.data(), in[0].data(), n);
                 return g;
               },
               {rnd(n, 8, 3.0)});
  expect_grads([](const Buffers& in) { V y(n); swiglu_forward(y.data(), in[0].data(), in[1].data(), n); return y; },
               [](const Buffers& in, const V& dy) {
                 Buffers g{V(n), V(n)};
                 swiglu_backward(g[0].data(), g[1].data(), dy.data(), in[0].data(), in[1].data(), n);
                 return g;
               },
               {rnd(n, 9, 3.0), rnd(n, 10)});
}

TEST_CASE("gradcheck: embedding accumulates into dwte", "[ops][fd]") {
  const int N = 7, Vn = 5, C = 3;
  std::vector<int32_t> idx = {4, 1, 1, 0, 4, 4, 2};
  V prior = rnd(Vn * C, 11);  // gradient already present: the kernel must add, not overwrite
  auto f = [&](const Buffers& in) { V y(N * C); embedding_forward(y.data(), idx.data(), in[0].data(), N, Vn, C); return y; };
  auto b = [&](const Buffers&, const V& dy) {
    Buffers g{prior};
    embedding_backward(g[0].data(), dy.data(), idx.data(), N, Vn, C);
    for (int i = 0; i < Vn * C; i++) g[0][i] -= prior[i];
    return g;
  };
  expect_grads(f, b, {rnd(Vn * C, 12)});
}

TEST_CASE("gradcheck: rmsnorm (dx written, dw accumulated)", "[ops][fd]") {
  const int N = 4, C = 9;
  V prior = rnd(C, 13);
  auto f = [&](const Buffers& in) {
    V y(N * C), rstd(N);
    rmsnorm_forward(y.data(), rstd.data(), in[0].data(), in[1].data(), N, C, 1e-5);
    return y;
  };
  auto b = [&](const Buffers& in, const V& dy) {
    V y(N * C), rstd(N);
    rmsnorm_forward(y.data(), rstd.data(), in[0].data(), in[1].data(), N, C, 1e-5);
    Buffers g{V(N * C), prior};
    rmsnorm_backward(g[0].data(), g[1].data(), dy.data(), in[0].data(), in[1].data(), rstd.data(), N, C);
    for (int c = 0; c < C; c++) g[1][c] -= prior[c];
    return g;
  };
  expect_grads(f, b, {rnd(N * C, 14, 2.0), rnd(C, 15)});
}

TEST_CASE("gradcheck: rope, both layouts, llama3 scaling", "[ops][fd]") {
  const int B = 2, T = 5, H = 2, D = 8;
  RopeConfig cfg;
  cfg.theta = 500000.0;
  cfg.llama3_scaling = true;
  double inv[D / 2];
  rope_inv_freq(inv, D, cfg);
  std::vector<int32_t> pos = {0, 3, 4, 100, 9000};
  V cos_t(T * D / 2), sin_t(T * D / 2);
  rope_tables(cos_t.data(), sin_t.data(), pos.data(), T, D, inv);
  for (RopeLayout layout : {RopeLayout::half_split, RopeLayout::interleaved}) {
    auto f = [&](const Buffers& in) {
      V y(in[0].size());
      rope_forward(y.data(), in[0].data(), cos_t.data(), sin_t.data(), B, T, H, D, layout);
      return y;
    };
    auto b = [&](const Buffers& in, const V& dy) {
      Buffers g{V(in[0].size())};
      rope_backward(g[0].data(), dy.data(), cos_t.data(), sin_t.data(), B, T, H, D, layout);
      return g;
    };
    expect_grads(f, b, {rnd(B * T * H * D, 16)});
  }
}

TEST_CASE("gradcheck: causal GQA attention across a tile boundary", "[ops][fd]") {
  // T = 67 crosses the 64-row score tile; H = 4 over Hkv = 2 exercises shared kv heads.
  const int B = 1, T = 67, H = 4, Hkv = 2, D = 4;
  auto f = [&](const Buffers& in) {
    V y(B * T * H * D), lse(B * H * T);
    attention_forward(y.data(), lse.data(), in[0].data(), in[1].data(), in[2].data(), B, T, H, Hkv, D);
    return y;
  };
  auto b = [&](const Buffers& in, const V& dy) {
    V y(B * T * H * D), lse(B * H * T);
    attention_forward(y.data(), lse.data(), in[0].data(), in[1].data(), in[2].data(), B, T, H, Hkv, D);
    Buffers g{V(in[0].size()), V(in[1].size()), V(in[2].size())};
    attention_backward(g[0].data(), g[1].data(), g[2].data(), dy.data(), y.data(), lse.data(),
                       in[0].data(), in[1].data(), in[2].data(), B, T, H, Hkv, D);
    return g;
  };
  expect_grads(f, b, {rnd(B * T * H * D, 17), rnd(B * T * Hkv * D, 18), rnd(B * T * Hkv * D, 19)});
}

TEST_CASE("gradcheck: cross-entropy with ignored rows, mse, sum, mean", "[ops][fd]") {
  const int N = 6, Vn = 7;
  std::vector<int32_t> targets = {3, kIgnoreIndex, 0, 6, kIgnoreIndex, 3};
  auto f = [&](const Buffers& in) {
    V lse(N);
    return V{cross_entropy_forward(lse.data(), in[0].data(), targets.data(), N, Vn)};
  };
  auto b = [&](const Buffers& in, const V& dy) {
    V lse(N);
    cross_entropy_forward(lse.data(), in[0].data(), targets.data(), N, Vn);
    Buffers g{V(N * Vn)};
    cross_entropy_backward(g[0].data(), dy[0], in[0].data(), lse.data(), targets.data(), N, Vn);
    return g;
  };
  expect_grads(f, b, {rnd(N * Vn, 20, 3.0)});

  const int n = 40;
  expect_grads([](const Buffers& in) { return V{mse_forward(in[0].data(), in[1].data(), n)}; },
               [](const Buffers& in, const V& dy) {
                 Buffers g{V(n), V(n)};
                 mse_backward(g[0].data(), g[1].data(), dy[0], in[0].data(), in[1].data(), n);
                 return g;
               },
               {rnd(n, 21), rnd(n, 22)});
  expect_grads([](const Buffers& in) { return V{sum_forward(in[0].data(), n)}; },
               [](const Buffers&, const V& dy) { Buffers g{V(n)}; sum_backward(g[0].data(), dy[0], n); return g; },
               {rnd(n, 23)});
  expect_grads([](const Buffers& in) { return V{mean_forward(in[0].data(), n)}; },
               [](const Buffers&, const V& dy) { Buffers g{V(n)}; mean_backward(g[0].data(), dy[0], n); return g; },
               {rnd(n, 24)});
}

TEST_CASE("gradcheck itself catches a wrong gradient", "[autograd][fd]") {
  // The checker must not be vacuous: a backward with a flipped sign on one element fails it.
  const int n = 10;
  auto f = [](const Buffers& in) { V y(n); silu_forward(y.data(), in[0].data(), n); return y; };
  auto bad = [](const Buffers& in, const V& dy) {
    Buffers g{V(n)};
    silu_backward(g[0].data(), dy.data(), in[0].data(), n);
    g[0][3] = -g[0][3];
    return g;
  };
  GradCheckResult r = gradcheck(f, bad, {rnd(n, 25)});
  CHECK_FALSE(r.ok);
}
