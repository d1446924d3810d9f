// The tape: a small Llama-style block built from our autograd ops must give the loss and every
// gradient that PyTorch autograd gives (tests/reference/ref_autograd.py); plus the rules of the
// gradient convention (fan-out, accumulation across backward calls, frozen weights, no-grad).
#include "autograd/ops.h"
#include "tensor/rope.h"
#include "tests/helpers.h"

using namespace lolcats;
using lolcats_test::fx;
using lolcats_test::fx_i32;

namespace {

const char* F = "ref_autograd";

Var param(const std::string& name, const Shape& s) {
  return leaf(Tensor::from(fx<float>(F, "p." + name), s), true);
}

struct Block {
  static constexpr int B = 2, T = 70, C = 32, H = 4, Hkv = 2, D = 8, FF = 48, V = 50;
  std::map<std::string, Var> p;
  Tensor cos_t, sin_t;
  Block() {
    p["n1"] = param("n1", {C});
    p["wq"] = param("wq", {H * D, C});
    p["wk"] = param("wk", {Hkv * D, C});
    p["wv"] = param("wv", {Hkv * D, C});
    p["wo"] = param("wo", {C, H * D});
    p["n2"] = param("n2", {C});
    p["wg"] = param("wg", {FF, C});
    p["wu"] = param("wu", {FF, C});
    p["wd"] = param("wd", {C, FF});
    p["n3"] = param("n3", {C});
    p["wlm"] = param("wlm", {V, C});
    double inv[D / 2];
    rope_inv_freq(inv, D, RopeConfig{10000.0});
    std::vector<int32_t> pos(T);
    for (int t = 0; t < T; t++) pos[t] = t;
    cos_t = Tensor::empty({T, D / 2});
    sin_t = Tensor::empty({T, D / 2});
    rope_tables(cos_t.f32(), sin_t.f32(), pos.data(), T, D, inv);
  }
  // Returns (loss, logits).
  std::pair<Var, Var> forward(const Var& x, const Tensor& targets) {
    const float eps = 1e-5f;
    Var a = rmsnorm(x, p["n1"], eps);
    Var q = rope(reshape(linear(a, p["wq"]), {B, T, H, D}), cos_t, sin_t, RopeLayout::half_split);
    Var k = rope(reshape(linear(a, p["wk"]), {B, T, Hkv, D}), cos_t, sin_t, RopeLayout::half_split);
    Var v = reshape(linear(a, p["wv"]), {B, T, Hkv, D});
    Var h = add(x, linear(reshape(attention(q, k, v), {B, T, H * D}), p["wo"]));
    Var m = rmsnorm(h, p["n2"], eps);
    Var h2 = add(h, linear(swiglu(linear(m, p["wg"]), linear(m, p["wu"])), p["wd"]));
    Var logits = reshape(linear(rmsnorm(h2, p["n3"], eps), p["wlm"]), {B * T, V});
    return {cross_entropy(logits, targets), logits};
  }
};

}  // namespace

TEST_CASE("autograd: a Llama-style block matches PyTorch autograd", "[autograd][ref]") {
  Block blk;
  Var x = leaf(Tensor::from(fx<float>(F, "x"), {Block::B, Block::T, Block::C}), true);
  Tensor targets = Tensor::from_i32(fx_i32(F, "targets"), {Block::B * Block::T});
  auto [loss, logits] = blk.forward(x, targets);
  // float32 through ~12 ops with sums of up to 70 terms, reference in float64: 1e-5 relative on
  // values of size ~1; gradients pass the same chain twice, 1e-5 absolute on entries of ~1e-3..1.
  CHECK_CLOSE("loss", loss->value.f32(), fx<double>(F, "loss"), 1e-6, 1e-5);
  CHECK_CLOSE("logits", logits->value.f32(), fx<double>(F, "logits"), 1e-5, 1e-5);
  backward(loss);
  CHECK_CLOSE("dx", x->grad.f32(), fx<double>(F, "dx"), 1e-6, 1e-4);
  for (auto& [name, v] : blk.p) CHECK_CLOSE("d" + name, v->grad.f32(), fx<double>(F, "d." + name), 1e-6, 1e-4);
  CHECK_FALSE(logits->grad.defined());  // intermediate gradients are released after use

  // A second backward over a fresh graph accumulates into the parameter gradients (+=).
  auto [loss2, logits2] = blk.forward(x, targets);
  backward(loss2);
  auto twice = fx<double>(F, "d.wq");
  for (double& g : twice) g *= 2;
  CHECK_CLOSE("dwq after two backward calls", blk.p["wq"]->grad.f32(), twice, 2e-6, 1e-4);
  zero_grad(blk.p["wq"]);
  CHECK(blk.p["wq"]->grad.f32()[0] == 0.0f);
}

TEST_CASE("autograd: fan-out adds the contributions of every consumer", "[autograd]") {
  // y = sum(x * x + x): dy/dx = 2x + 1 (calculus, not our code). x feeds three uses.
  Var x = leaf(Tensor::from({1.5f, -2.0f, 0.25f}, {3}), true);
  Var y = sum(add(mul(x, x), x));
  backward(y);
  CHECK(item(y) == Approx(1.5 * 1.5 + 1.5 + 4.0 - 2.0 + 0.0625 + 0.25));
  std::vector<float> g = x->grad.to_vector();
  CHECK(g[0] == Approx(4.0));
  CHECK(g[1] == Approx(-3.0));
  CHECK(g[2] == Approx(1.5));
}

TEST_CASE("autograd: frozen weights get no gradient, no-grad records nothing", "[autograd]") {
  Var w = leaf(Tensor::from({1, 2, 3, 4, 5, 6}, {2, 3}), false);  // frozen
  Var x = leaf(Tensor::from({0.5f, -1, 2}, {1, 3}), true);
  Var y = sum(linear(x, w));
  backward(y);
  CHECK_FALSE(w->grad.defined());
  CHECK(x->grad.to_vector() == std::vector<float>{5, 7, 9});  // column sums of w

  NoGrad scope;
  Var z = sum(linear(x, w));
  CHECK_FALSE(z->requires_grad);
  CHECK(z->parents.empty());
  REQUIRE_THROWS_WITH(backward(z), Catch::Contains("does not depend on any parameter"));
}

TEST_CASE("autograd: shape errors are one clear message", "[autograd]") {
  Var a = leaf(Tensor::zeros({2, 3}), true), b = leaf(Tensor::zeros({4, 5}), true);
  REQUIRE_THROWS_WITH(matmul(a, b), Catch::Contains("inner dimensions differ: (2, 3) @ (4, 5)"));
  REQUIRE_THROWS_WITH(add(a, b), Catch::Contains("add: shapes differ"));
  REQUIRE_THROWS_WITH(backward(add(a, a)), Catch::Contains("needs a scalar loss"));
  Tensor bad_targets = Tensor::from_i32({0, 9}, {2});
  REQUIRE_THROWS_WITH(cross_entropy(leaf(Tensor::zeros({2, 5})), bad_targets),
                      Catch::Contains("target 9 at row 1 is outside [0, 5)"));
}
