// cuda/hybrid_attention.cu and cuda/feature_map.cu against their CPU twins (lolcats/hybrid_attention.h,
// lolcats/feature_map.h), run in double on the very values the kernels see: forward and backward,
// every variant, f32 and bf16 storage of q/k/v, GQA and plain heads, lengths that are and are not
// multiples of the 64-token block (1 .. 2048), under every emulated thread order. The CPU twins are
// themselves held to the O(T^2) definition and to a PyTorch transcription (test_hybrid_attention.cpp,
// test_lolcats_reference.cpp), so this closes the chain to the GPU.
#ifdef LOLCATS_CUDA
#include <cstring>

#include "cuda/feature_map.h"
#include "cuda/gemm.h"
#include "cuda/hybrid_attention.h"
#include "lolcats/feature_map.h"
#include "lolcats/hybrid_attention.h"
#include "tests/cuda_helpers.h"
#include "tests/cuda_shared_limit.h"

using namespace lolcats_test;
namespace cu = lolcats::cuda;
using lolcats::HybridVariant;

namespace {

std::vector<double> to_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }

struct Case {
  int B, T, H, Hkv, D, F;
  HybridVariant variant;
};

// Positive features of the size a feature map gives (each row sums to about 2, like Hedgehog's pair
// of softmaxes), so that the normaliser Z is well away from 0 as in real use.
std::vector<float> features(size_t n, int F, std::mt19937& rng) {
  std::uniform_real_distribution<float> d(0.05f, 1.95f);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng) * 2.0f / float(F);
  return v;
}

struct Outputs {
  std::vector<float> y, Z, dq, dk, dv, dphiq, dphik, dw;
  bool operator==(const Outputs& o) const {  // bit-identical
    auto same = [](const std::vector<float>& a, const std::vector<float>& b) {
      return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
    };
    return same(y, o.y) && same(Z, o.Z) && same(dq, o.dq) && same(dk, o.dk) && same(dv, o.dv) &&
           same(dphiq, o.dphiq) && same(dphik, o.dphik) && same(dw, o.dw);
  }
};

void check_case(const Case& c, Storage st, bool all_orders = true) {
  INFO(storage_name(st) << " " << lolcats::variant_name(c.variant) << " B=" << c.B << " T=" << c.T << " H=" << c.H
                        << " Hkv=" << c.Hkv << " D=" << c.D << " F=" << c.F);
  std::mt19937 rng(uint32_t(c.T * 1000 + c.H * 100 + c.D + c.F + 7 * int(c.variant) + int(st)));
  const size_t nq = size_t(c.B) * c.T * c.H * c.D, nkv = size_t(c.B) * c.T * c.Hkv * c.D;
  const size_t nf = size_t(c.B) * c.T * c.H * c.F, nz = size_t(c.B) * c.H * c.T;
  // Queries at 1.5x: window scores of standard deviation 1.5, so the window max matters.
  std::vector<float> q = rounded(random_vector(nq, rng, 1.5f), st), k = rounded(random_vector(nkv, rng), st),
                     v = rounded(random_vector(nkv, rng), st), dy = rounded(random_vector(nq, rng), st);
  std::vector<float> phiq = features(nf, c.F, rng), phik = features(nf, c.F, rng);
  std::vector<float> wl = random_vector(size_t(c.H), rng), dw0(size_t(c.H), 0.25f);
  std::vector<double> qd = to_double(q), kd = to_double(k), vd = to_double(v), dyd = to_double(dy),
                      pqd = to_double(phiq), pkd = to_double(phik), wld = to_double(wl);
  std::vector<double> y_want(nq), Z_want(nz);
  lolcats::hybrid_attention_forward<double>(y_want.data(), Z_want.data(), qd.data(), kd.data(), vd.data(), pqd.data(),
                                            pkd.data(), wld.data(), c.B, c.T, c.H, c.Hkv, c.D, c.F, c.variant);

  DeviceBuffer bq(q, st), bk(k, st), bv(v, st), bdy(dy, st), by(nq, st), bdq(nq, st), bdk(nkv, st), bdv(nkv, st);
  DeviceBuffer bpq(phiq, Storage::f32), bpk(phik, Storage::f32), bwl(wl, Storage::f32), bZ(nz, Storage::f32),
      bdpq(nf, Storage::f32), bdpk(nf, Storage::f32), bdw(size_t(c.H), Storage::f32);
  auto run = [&] {
    const float nan = std::nanf("");
    for (DeviceBuffer* b : {&by, &bdq}) b->upload(std::vector<float>(nq, nan));
    for (DeviceBuffer* b : {&bdk, &bdv}) b->upload(std::vector<float>(nkv, nan));
    for (DeviceBuffer* b : {&bdpq, &bdpk}) b->upload(std::vector<float>(nf, nan));
    bZ.upload(std::vector<float>(nz, nan));
    bdw.upload(dw0);
    with_storage(st, [&](auto* tag) {
      using T = std::remove_pointer_t<decltype(tag)>;
      cu::hybrid_attention_forward(dev<T>(by), bZ.f32(), dev<T>(bq), dev<T>(bk), dev<T>(bv), bpq.f32(), bpk.f32(),
                                   bwl.f32(), c.B, c.T, c.H, c.Hkv, c.D, c.F, c.variant, nullptr);
      cu::hybrid_attention_backward(dev<T>(bdq), dev<T>(bdk), dev<T>(bdv), bdpq.f32(), bdpk.f32(), bdw.f32(),
                                    dev<T>(bdy), dev<T>(by), bZ.f32(), dev<T>(bq), dev<T>(bk), dev<T>(bv),
                                    bpq.f32(), bpk.f32(), bwl.f32(), c.B, c.T, c.H, c.Hkv, c.D, c.F,
                                    c.variant, nullptr);
    });
    return Outputs{by.download(),  bZ.download(),   bdq.download(),   bdk.download(),
                   bdv.download(), bdpq.download(), bdpk.download(), bdw.download()};
  };

  // Tolerances. y = num / Z with num and Z sums of up to T positive-weighted terms of size ~1: f32
  // arithmetic in another order leaves errors of order 1e-6 relative; allowed 1e-5 absolute and
  // relative (as for the softmax attention kernels); the gradients, which also cancel
  // (dw = dN . v + dZ) and sum over more terms, 4e-5. bf16 storage
  // of y, dq, dk, dv adds the output's rounding, 2^-8 = 3.9e-3 relative; phi's gradients, Z and the
  // window factors' gradient stay f32.
  const bool f32 = st == Storage::f32;
  const double r_bf = f32 ? 0 : 3.91e-3;
  Outputs first;
  bool have_first = false;
  auto check = [&] {
    Outputs got = run();
    check_close(got.y, y_want, 1e-5, 1e-5 + r_bf, "y");
    check_close(got.Z, Z_want, 1e-5, 1e-5, "Z");
    // The backward's reference reads the kernels' own y and Z (bf16-rounded y as the kernels do).
    std::vector<double> yd = to_double(got.y), Zd = to_double(got.Z);
    std::vector<double> dq(nq), dk(nkv), dv(nkv), dpq(nf), dpk(nf), dw(size_t(c.H), 0.25);
    lolcats::hybrid_attention_backward<double>(dq.data(), dk.data(), dv.data(), dpq.data(), dpk.data(), dw.data(),
                                               dyd.data(), yd.data(), Zd.data(), qd.data(), kd.data(), vd.data(),
                                               pqd.data(), pkd.data(), wld.data(), c.B, c.T, c.H, c.Hkv, c.D, c.F,
                                               c.variant);
    check_close(got.dq, dq, 4e-5, 4e-5 + r_bf, "dq");
    check_close(got.dk, dk, 4e-5, 4e-5 + r_bf, "dk");
    check_close(got.dv, dv, 4e-5, 4e-5 + r_bf, "dv");
    check_close(got.dphiq, dpq, 4e-5, 4e-5, "dphi_q");
    check_close(got.dphik, dpk, 4e-5, 4e-5, "dphi_k");
    check_close(got.dw, dw, 1e-4, 4e-5, "dwlogit (accumulated onto 0.25)");
    if (!have_first) first = got, have_first = true;
    else CHECK(got == first);  // deterministic: every thread order gives the same bits
  };
  if (all_orders) for_each_thread_order(check);
  else check();
}

const HybridVariant kVariants[] = {HybridVariant::terrace, HybridVariant::sw, HybridVariant::linear};

}  // namespace

TEST_CASE("cuda hybrid attention matches the CPU twin: every variant, GQA, lengths 1..200 (f32)", "[cuda][hybrid][slow]") {
  SKIP_WITHOUT_CUDA();
  for (HybridVariant var : kVariants)
    for (int T : {1, 17, 64, 65, 130, 200}) {
      check_case({2, T, 4, 2, 16, 16, var}, Storage::f32);  // GQA, F = D
      check_case({1, T, 2, 2, 32, 48, var}, Storage::f32);  // plain heads, F != D, F not a multiple of 32
    }
}

TEST_CASE("cuda hybrid attention matches the CPU twin with bf16 q, k, v", "[cuda][hybrid][sanitize]") {
  SKIP_WITHOUT_CUDA();
  for (HybridVariant var : kVariants)
    for (int T : {33, 130}) check_case({2, T, 4, 2, 16, 16, var}, Storage::bf16);
}

TEST_CASE("cuda hybrid attention at model shapes and at T = 2048", "[cuda][hybrid]") {
  SKIP_WITHOUT_CUDA();
  // SmolLM2's heads (D = 64, Hedgehog F = 128), and the largest the kernels take (Llama 3 8B's D = 128
  // with F = 256, the most shared memory), one thread order each.
  check_case({1, 70, 3, 1, 64, 128, HybridVariant::terrace}, Storage::bf16, false);
  check_case({1, 67, 2, 1, 128, 256, HybridVariant::sw}, Storage::f32, false);
  // A long sequence: 32 blocks of state.
  check_case({1, 2048, 2, 1, 16, 16, HybridVariant::terrace}, Storage::f32, false);
}

TEST_CASE("cuda hybrid attention refuses sizes it does not take, naming them", "[cuda][hybrid]") {
  SKIP_WITHOUT_CUDA();
  DeviceBuffer x(size_t(4096), Storage::f32);
  REQUIRE_THROWS_WITH(cu::hybrid_attention_forward(x.f32(), x.f32(), x.f32(), x.f32(), x.f32(), x.f32(), x.f32(),
                                                   x.f32(), 1, 2, 1, 1, 160, 16, HybridVariant::terrace, nullptr),
                      Catch::Contains("head size 160"));
  REQUIRE_THROWS_WITH(cu::hybrid_attention_forward(x.f32(), x.f32(), x.f32(), x.f32(), x.f32(), x.f32(), x.f32(),
                                                   x.f32(), 1, 2, 3, 2, 16, 16, HybridVariant::terrace, nullptr),
                      Catch::Contains("H = 3, Hkv = 2"));
}

// The kernels pick their tile from the card's per-block shared memory (cuda/shared_limit.cuh): each
// limit's choice must match the CPU twin with the same tolerances. SmolLM2's heads (D = 64,
// F = 128) and the largest the kernels take (D = 128, F = 256), both variants with a window, over
// three 64-token blocks (so the state is read too) with a partial last one.
TEST_CASE("cuda hybrid attention matches the CPU twin at each card's shared memory (99, 163, 227 KiB)",
          "[cuda][hybrid][sanitize]") {
  SKIP_WITHOUT_CUDA();
  for_each_shared_limit([](size_t) {
    for (HybridVariant var : {HybridVariant::terrace, HybridVariant::sw}) {
      check_case({1, 130, 2, 1, 64, 128, var}, Storage::bf16, false);
      check_case({1, 130, 2, 1, 128, 256, var}, Storage::f32, false);
    }
  });
}

TEST_CASE("cuda hybrid attention: the tile each card's shared memory gets", "[cuda][hybrid]") {
  SKIP_WITHOUT_CUDA();
  using P = std::pair<int, int>;
  auto shape = [](const cu::KernelTile& t) { return P{t.rows, t.cols}; };
  for_each_shared_limit([&](size_t limit) {
    const cu::HybridAttentionTiles big = cu::hybrid_attention_tiles(128, 256), smol = cu::hybrid_attention_tiles(64, 128);
    for (const cu::HybridAttentionTiles& t : {big, smol})
      for (const cu::KernelTile& k : {t.scan, t.forward, t.query, t.key})
        if (limit) CHECK(k.shared_bytes <= limit);
    CHECK(shape(big.scan) == P{64, 32});
    if (limit == 227 * kKiB) {  // sm_90 keeps the tiles (and so the bits) the kernels always had
      for (const cu::KernelTile& k : {big.forward, big.query, big.key, smol.forward, smol.query, smol.key})
        CHECK(shape(k) == P{32, 32});
      CHECK(big.forward.shared_bytes == 136448);
      CHECK(big.query.shared_bytes == 186112);
      CHECK(big.key.shared_bytes == 206848);
    } else if (limit == 163 * kKiB) {
      CHECK(shape(big.forward) == P{32, 32});
      CHECK(shape(big.query) == P{16, 32});
      CHECK(shape(big.key) == P{16, 32});
      for (const cu::KernelTile& k : {smol.forward, smol.query, smol.key}) CHECK(shape(k) == P{32, 32});
    } else if (limit == 99 * kKiB) {
      CHECK(shape(big.forward) == P{16, 32});
      CHECK(shape(big.query) == P{16, 16});
      CHECK(shape(big.key) == P{16, 16});
      CHECK(big.key.shared_bytes == 99 * kKiB);  // exactly the limit
      CHECK(shape(smol.forward) == P{32, 32});
      CHECK(shape(smol.query) == P{32, 32});
      CHECK(shape(smol.key) == P{16, 32});
    }
  });
}

TEST_CASE("cuda hybrid attention: a cap on the shared memory gives a smaller card's tiles", "[cuda][hybrid]") {
  SKIP_WITHOUT_CUDA();
  using P = std::pair<int, int>;
  auto shape = [](const cu::KernelTile& t) { return P{t.rows, t.cols}; };
  const cu::HybridAttentionTiles own = cu::hybrid_attention_tiles(128, 256);
  cu::HybridAttentionTiles capped;
  {
    SharedCapGuard cap(99 * kKiB);
    capped = cu::hybrid_attention_tiles(128, 256);
    check_case({1, 130, 2, 1, 128, 256, HybridVariant::terrace}, Storage::f32, false);  // runs with them
  }
  for (const cu::KernelTile& k : {capped.forward, capped.query, capped.key}) CHECK(k.shared_bytes <= 99 * kKiB);
  CHECK(shape(capped.forward) == P{16, 32});  // an RTX 4090's tiles (the 99 KiB case above)
  CHECK(shape(capped.key) == P{16, 16});
  const cu::HybridAttentionTiles after = cu::hybrid_attention_tiles(128, 256);
  CHECK(shape(after.key) == shape(own.key));  // the guard put the card's own limit back
  if (cu::device_shared_limit() >= 227 * kKiB) CHECK(shape(own.key) == P{32, 32});
}

#ifdef LOLCATS_CUDA_EMU
TEST_CASE("cuda hybrid attention on a card with too little shared memory: one error naming the limit",
          "[cuda][hybrid]") {
  SharedLimitGuard guard(64 * kKiB);
  DeviceBuffer x(size_t(2 * 2 * 256), Storage::f32);
  // D = 128, F = 256: the forward's smallest tile, 16 x 16, needs 67200 bytes.
  REQUIRE_THROWS_WITH(cu::hybrid_attention_forward(x.f32(), x.f32(), x.f32(), x.f32(), x.f32(), x.f32(), x.f32(),
                                                   x.f32(), 1, 2, 1, 1, 128, 256, HybridVariant::terrace, nullptr),
                      Catch::Contains("hybrid_attention_forward (cuda)") &&
                          Catch::Contains("(16 x 16) needs 67200 bytes") && Catch::Contains("this device allows 65536"));
  REQUIRE_THROWS_WITH(cu::hybrid_attention_tiles(128, 256), Catch::Contains("this device allows 65536"));
}
#endif

// ---- feature maps ---------------------------------------------------------------------------------

namespace {

void check_feature_map(bool t2r, int B, int T, int H, int Hx, int D, int Fw, Storage st) {
  INFO((t2r ? "t2r " : "hedgehog ") << storage_name(st) << " B=" << B << " T=" << T << " H=" << H << " Hx=" << Hx
                                    << " D=" << D << " F=" << Fw);
  std::mt19937 rng(uint32_t(T * 100 + H * 10 + D + Fw + int(t2r) + 3 * int(st)));
  const int F = t2r ? Fw : 2 * Fw;
  const size_t nx = size_t(B) * T * Hx * D, nphi = size_t(B) * T * H * F, nw = size_t(H) * D * Fw;
  std::vector<float> x = rounded(random_vector(nx, rng), st);
  std::vector<float> W = random_vector(nw, rng, 0.5f), bias = random_vector(size_t(H) * F, rng, 0.5f);
  std::vector<float> dphi = random_vector(nphi, rng), dW0 = random_vector(nw, rng), db0(size_t(H) * F, 0.5f);
  std::vector<double> xd = to_double(x), Wd = to_double(W), bd = to_double(bias), dphid = to_double(dphi);
  std::vector<double> phi_want(nphi);
  if (t2r) lolcats::t2r_forward<double>(phi_want.data(), xd.data(), Wd.data(), bd.data(), B, T, H, Hx, D, F);
  else lolcats::hedgehog_forward<double>(phi_want.data(), xd.data(), Wd.data(), B, T, H, Hx, D, Fw);

  DeviceBuffer bx(x, st), bdx(nx, st), bW(W, Storage::f32), bb(bias, Storage::f32), bphi(nphi, Storage::f32),
      bdphi(dphi, Storage::f32), bdW(dW0, Storage::f32), bdb(db0, Storage::f32);
  for_each_thread_order([&] {
    bdW.upload(dW0);
    bdb.upload(db0);
    bdx.upload(std::vector<float>(nx, std::nanf("")));
    const cu::GemmPlanStats before = cu::gemm_plan_stats();
    with_storage(st, [&](auto* tag) {
      using T_ = std::remove_pointer_t<decltype(tag)>;
      if (t2r) {
        cu::t2r_forward(bphi.f32(), dev<T_>(bx), bW.f32(), bb.f32(), B, T, H, Hx, D, F, nullptr);
        cu::t2r_backward(dev<T_>(bdx), bdW.f32(), bdb.f32(), bdphi.f32(), bphi.f32(), dev<T_>(bx), bW.f32(), B, T,
                         H, Hx, D, F, nullptr);
      } else {
        cu::hedgehog_forward(bphi.f32(), dev<T_>(bx), bW.f32(), B, T, H, Hx, D, Fw, nullptr);
        cu::hedgehog_backward(dev<T_>(bdx), bdW.f32(), bdphi.f32(), bphi.f32(), dev<T_>(bx), bW.f32(), B, T, H, Hx,
                              D, Fw, nullptr);
      }
    });
    // One strided-batched product over the heads for z, one for dW and one for dx: not one per head.
    const cu::GemmPlanStats after = cu::gemm_plan_stats();
    CHECK(after.hits + after.misses - before.hits - before.misses == 3);
    std::vector<float> phi = bphi.download();
    // phi: softmaxes of D-term f32 dot products (or a relu of one): 1e-6 relative noise; 1e-5 allowed.
    check_close(phi, phi_want, 1e-6, 1e-5, "phi");
    // The backward's reference reads the kernels' phi (the clamp decides which entries pass a gradient).
    std::vector<double> phid = to_double(phi), dx(nx), dW = to_double(dW0), db = to_double(db0);
    if (t2r)
      lolcats::t2r_backward<double>(dx.data(), dW.data(), db.data(), dphid.data(), phid.data(), xd.data(), Wd.data(),
                                    B, T, H, Hx, D, F);
    else
      lolcats::hedgehog_backward<double>(dx.data(), dW.data(), dphid.data(), phid.data(), xd.data(), Wd.data(), B, T,
                                         H, Hx, D, Fw);
    const double r_bf = st == Storage::f32 ? 0 : 3.91e-3;  // dx stored in bf16
    check_close(bdx.download(), dx, 2e-5, 2e-5 + r_bf, "dx");
    check_close(bdW.download(), dW, 2e-5, 2e-5, "dW (accumulated)");
    if (t2r) check_close(bdb.download(), db, 2e-5, 2e-5, "dbias (accumulated)");
  });
}

}  // namespace

TEST_CASE("cuda Hedgehog and T2R feature maps match the CPU twins", "[cuda][hybrid][sanitize]") {
  SKIP_WITHOUT_CUDA();
  for (bool t2r : {false, true}) {
    check_feature_map(t2r, 2, 37, 4, 2, 16, 8, Storage::f32);  // GQA keys: 4 maps read 2 key heads
    check_feature_map(t2r, 1, 20, 3, 3, 32, t2r ? 32 : 40, Storage::bf16);  // Fh > 32: two features per lane
  }
}

#endif  // LOLCATS_CUDA
