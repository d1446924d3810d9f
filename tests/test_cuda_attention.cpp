// cuda/attention.cu against its CPU twin (tensor/attention.h, run in double on the very values the
// kernels see), forward and backward, for f32 and bf16 storage, GQA and plain heads, both supported
// head sizes, under every emulated thread order; results must also be bit-identical run to run.
#ifdef LOLCATS_CUDA
#include <cstring>

#include "cuda/attention.h"
#include "tensor/attention.h"
#include "tests/cuda_helpers.h"
#include "tests/cuda_shared_limit.h"

using namespace lolcats_test;
namespace cu = lolcats::cuda;

namespace {

std::vector<double> to_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }

struct Shape {
  int B, T, H, Hkv, D;
};

// The device's buffers of one case: inputs, then outputs (pre-filled with NaN before each run, so
// that a value the kernels fail to write cannot pass).
struct Buffers {
  DeviceBuffer q, k, v, dy, y, lse, dq, dk, dv;
  Buffers(const Shape& s, Storage st, const std::vector<float>& hq, const std::vector<float>& hk,
          const std::vector<float>& hv, const std::vector<float>& hdy)
      : q(hq, st), k(hk, st), v(hv, st), dy(hdy, st), y(hq.size(), st),
        lse(size_t(s.B) * s.H * s.T, Storage::f32), dq(hq.size(), st), dk(hk.size(), st),
        dv(hk.size(), st) {}
};

struct Outputs {
  std::vector<float> y, lse, dq, dk, dv;
  bool operator==(const Outputs& o) const {  // bit-identical (NaN-safe)
    auto same = [](const std::vector<float>& a, const std::vector<float>& b) {
      return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
    };
    return same(y, o.y) && same(lse, o.lse) && same(dq, o.dq) && same(dk, o.dk) && same(dv, o.dv);
  }
};

// Forward, then backward from the forward's own y and lse (as training runs them).
Outputs run(const Shape& s, Storage st, Buffers& b) {
  const size_t nq = size_t(s.B) * s.T * s.H * s.D, nkv = size_t(s.B) * s.T * s.Hkv * s.D;
  const float nan = std::nanf("");
  for (DeviceBuffer* out : {&b.y, &b.dq}) out->upload(std::vector<float>(nq, nan));
  for (DeviceBuffer* out : {&b.dk, &b.dv}) out->upload(std::vector<float>(nkv, nan));
  b.lse.upload(std::vector<float>(size_t(s.B) * s.H * s.T, nan));
  auto go = [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    cu::attention_forward(dev<T>(b.y), b.lse.f32(), dev<T>(b.q), dev<T>(b.k), dev<T>(b.v), s.B,
                          s.T, s.H, s.Hkv, s.D, nullptr);
    cu::attention_backward(dev<T>(b.dq), dev<T>(b.dk), dev<T>(b.dv), dev<T>(b.dy), dev<T>(b.y),
                           b.lse.f32(), dev<T>(b.q), dev<T>(b.k), dev<T>(b.v), s.B, s.T, s.H,
                           s.Hkv, s.D, nullptr);
  };
  if (st == Storage::f32) go(static_cast<float*>(nullptr));
  else go(static_cast<cu::bf16*>(nullptr));
  return {b.y.download(), b.lse.download(), b.dq.download(), b.dk.download(), b.dv.download()};
}

void check_case(const Shape& s, Storage st) {
  INFO(storage_name(st) << " B=" << s.B << " T=" << s.T << " H=" << s.H << " Hkv=" << s.Hkv
                        << " D=" << s.D);
  std::mt19937 rng(uint32_t(s.T * 1000 + s.H * 100 + s.D + int(st)));
  const size_t nq = size_t(s.B) * s.T * s.H * s.D, nkv = size_t(s.B) * s.T * s.Hkv * s.D;
  // Queries at 1.5x: scores of standard deviation 1.5, so the running max moves between key tiles.
  std::vector<float> q = rounded(random_vector(nq, rng, 1.5f), st);
  std::vector<float> k = rounded(random_vector(nkv, rng), st);
  std::vector<float> v = rounded(random_vector(nkv, rng), st);
  std::vector<float> dy = rounded(random_vector(nq, rng), st);
  std::vector<double> qd = to_double(q), kd = to_double(k), vd = to_double(v), dyd = to_double(dy);
  std::vector<double> y_want(nq), lse_want(size_t(s.B) * s.H * s.T);
  lolcats::attention_forward<double>(y_want.data(), lse_want.data(), qd.data(), kd.data(), vd.data(),
                                     s.B, s.T, s.H, s.Hkv, s.D);

  // Tolerances. y and the gradients are sums of up to T terms of size ~1 (products of D-term f32
  // dot products and f32 exp): f32 arithmetic leaves a few 1e-6 (measured: 2e-6 on y, 4e-6 on the
  // gradients, which also cancel in dp - delta), allowed 1e-5 and 2e-5, absolute and relative.
  // bf16 storage adds the output's rounding to 8 significant bits: up to 2^-8 = 3.9e-3 relative.
  // lse is f32 in both storages, the log of an f32 sum: 1e-5 absolute (measured 2e-6).
  const bool f32 = st == Storage::f32;
  const double rtol_y = f32 ? 1e-5 : 3.91e-3 + 1e-5, rtol_g = f32 ? 2e-5 : 3.91e-3 + 2e-5;
  const double atol_y = 1e-5, atol_g = 2e-5, atol_lse = 1e-5;

  Buffers b(s, st, q, k, v, dy);
  Outputs first;
  bool have_first = false;
  for_each_thread_order([&] {
    Outputs got = run(s, st, b);
    check_close(got.y, y_want, atol_y, rtol_y, "y");
    check_close(got.lse, lse_want, atol_lse, 0, "lse");
    // The backward's reference is the CPU twin on the y and lse the kernels produced (bf16-rounded
    // y as the kernels read it), so that only the backward kernels' own arithmetic is measured.
    std::vector<double> yd = to_double(got.y), lsed = to_double(got.lse);
    std::vector<double> dq_want(nq), dk_want(nkv), dv_want(nkv);
    lolcats::attention_backward<double>(dq_want.data(), dk_want.data(), dv_want.data(), dyd.data(),
                                        yd.data(), lsed.data(), qd.data(), kd.data(), vd.data(), s.B,
                                        s.T, s.H, s.Hkv, s.D);
    check_close(got.dq, dq_want, atol_g, rtol_g, "dq");
    check_close(got.dk, dk_want, atol_g, rtol_g, "dk");
    check_close(got.dv, dv_want, atol_g, rtol_g, "dv");
    // Deterministic: every thread order (and, on a GPU, a second run) gives the same bits.
    if (!have_first) {
      first = got, have_first = true;
#ifndef LOLCATS_CUDA_EMU
      CHECK(run(s, st, b) == first);
#endif
    } else {
      CHECK(got == first);
    }
  });
}

// T: a single token, two, a partial tile, one full tile, one row past it, and three tiles with a
// partial last one (130 = 2 * 64 + 2); all with B = 2 and both head layouts.
const int kLengths[] = {1, 2, 17, 64, 65, 130};

void check_all(Storage st) {
  for (int D : {64, 128})
    for (auto [H, Hkv] : {std::pair{4, 2}, std::pair{3, 3}})
      for (int T : kLengths) check_case({2, T, H, Hkv, D}, st);
}

}  // namespace

// [slow]: the race checker on a GPU takes minutes over all 48 shapes; it runs the case below instead.
TEST_CASE("cuda attention forward and backward match the CPU twin (f32)", "[cuda][slow]") {
  SKIP_WITHOUT_CUDA();
  check_all(Storage::f32);
}

TEST_CASE("cuda attention forward and backward match the CPU twin (bf16)", "[cuda][slow]") {
  SKIP_WITHOUT_CUDA();
  check_all(Storage::bf16);
}

TEST_CASE("cuda attention: one partial-tile GQA case per head size (for the race checker)", "[cuda][sanitize]") {
  SKIP_WITHOUT_CUDA();
  check_case({1, 65, 4, 2, 64}, Storage::bf16);
  check_case({1, 130, 4, 2, 128}, Storage::f32);
  // The small heads of test models (16) and of some small checkpoints (32).
  check_case({2, 70, 4, 2, 16}, Storage::f32);
  check_case({1, 65, 2, 1, 32}, Storage::bf16);
}

TEST_CASE("cuda attention refuses head sizes other than 16, 32, 64 and 128, naming D", "[cuda]") {
  SKIP_WITHOUT_CUDA();
  DeviceBuffer q(size_t(96), Storage::f32), lse(size_t(1), Storage::f32);
  REQUIRE_THROWS_WITH(cu::attention_forward(q.f32(), lse.f32(), q.f32(), q.f32(), q.f32(), 1, 1, 1,
                                            1, 96, nullptr),
                      Catch::Contains("head size D = 96"));
  REQUIRE_THROWS_WITH(cu::attention_backward(q.f32(), q.f32(), q.f32(), q.f32(), q.f32(), lse.f32(),
                                             q.f32(), q.f32(), q.f32(), 1, 1, 1, 1, 48, nullptr),
                      Catch::Contains("head size D = 48"));
}

// The kernels pick their tile from the card's per-block shared memory (cuda/shared_limit.cuh): at
// 99 KiB (sm_86/89) the backward at D = 64 and 128 streams half tiles, at 163 and 227 KiB full
// ones. Each limit's choice must match the CPU twin with the same tolerances.
TEST_CASE("cuda attention matches the CPU twin at each card's shared memory (99, 163, 227 KiB)", "[cuda][sanitize]") {
  SKIP_WITHOUT_CUDA();
  for_each_shared_limit([](size_t) {
    check_case({1, 130, 4, 2, 64}, Storage::bf16);
    check_case({1, 130, 4, 2, 128}, Storage::f32);
  });
}

TEST_CASE("cuda attention: the tile each card's shared memory gets", "[cuda]") {
  SKIP_WITHOUT_CUDA();
  for_each_shared_limit([](size_t limit) {
    for (int D : {16, 32, 64, 128}) {
      INFO("D = " << D);
      const cu::AttentionTiles t = cu::attention_tiles(D);
      for (const cu::KernelTile& k : {t.forward, t.dq, t.dkdv}) {
        CHECK(k.rows == 64);
        if (limit) CHECK(k.shared_bytes <= limit);
      }
      if (!limit) continue;  // a GPU: its own limit, whatever it is
      const int full = D <= 64 ? 64 : 32;
      // Only the backward at D >= 64 is short of room, and only at 99 KiB.
      const bool half = limit < 163 * kKiB && D >= 64;
      CHECK(t.forward.cols == full);
      CHECK(t.dq.cols == (half && D == 128 ? full / 2 : full));
      CHECK(t.dkdv.cols == (half ? full / 2 : full));
    }
    if (limit == 227 * kKiB) {  // sm_90 keeps the tiles (and so the bits) the kernels always had
      const cu::AttentionTiles t = cu::attention_tiles(128);
      CHECK(t.forward.shared_bytes == 76800);
      CHECK(t.dq.shared_bytes == 110592);
      CHECK(t.dkdv.shared_bytes == 120064);
    }
  });
}

#ifdef LOLCATS_CUDA_EMU
TEST_CASE("cuda attention on a card with too little shared memory: one error naming the limit", "[cuda]") {
  SharedLimitGuard guard(32 * kKiB);
  DeviceBuffer q(size_t(2 * 128), Storage::f32), lse(size_t(2), Storage::f32);
  // D = 128: the forward's half tile needs 55808 bytes.
  REQUIRE_THROWS_WITH(cu::attention_forward(q.f32(), lse.f32(), q.f32(), q.f32(), q.f32(), 1, 2, 1, 1, 128, nullptr),
                      Catch::Contains("attention_forward (cuda)") && Catch::Contains("(64 x 16) needs 55808 bytes") &&
                          Catch::Contains("this device allows 32768"));
  REQUIRE_THROWS_WITH(cu::attention_tiles(128), Catch::Contains("this device allows 32768"));
}
#endif

#endif  // LOLCATS_CUDA
