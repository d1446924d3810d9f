// cuda/rope.cu against its CPU twin (tensor/rope.h, run in double on the very values the kernel
// sees: the same f32 cos/sin tables, the same bf16-rounded inputs), plain and Llama 3.1-scaled
// tables, both pair layouts, out of place and in place.
#ifdef LOLCATS_CUDA
#include <cstring>

#include "cuda/rope.h"
#include "tests/cuda_helpers.h"

using namespace lolcats_test;
using lolcats::RopeConfig;
using lolcats::RopeLayout;
namespace cu = lolcats::cuda;

namespace {


struct Shape {
  int B, T, H, D;
};
// D = 2 and 6: one and three pairs; T*H*D/2 not a multiple of the block size anywhere.
const Shape kShapes[] = {{1, 1, 1, 2}, {3, 5, 2, 6}, {2, 7, 3, 64}, {1, 17, 3, 128}};

struct Tables {
  std::vector<float> cos, sin;  // (T, D/2), f32 as the kernel reads them
};
// Positions far apart (up to ~20k, past Llama 3.1's original 8192) so the scaled and unscaled
// frequencies give very different angles.
Tables make_tables(int T, int D, bool llama3) {
  RopeConfig cfg;
  if (llama3) {
    cfg.theta = 500000.0;
    cfg.llama3_scaling = true;  // factor 8, low 1, high 4, original 8192: Llama 3.1's values
  }
  std::vector<double> inv_freq(size_t(D / 2));
  lolcats::rope_inv_freq(inv_freq.data(), D, cfg);
  std::vector<int32_t> pos(static_cast<size_t>(T));
  for (int t = 0; t < T; t++) pos[size_t(t)] = 3 + 613 * t;
  Tables tb{std::vector<float>(size_t(T) * (D / 2)), std::vector<float>(size_t(T) * (D / 2))};
  lolcats::rope_tables<float>(tb.cos.data(), tb.sin.data(), pos.data(), T, D, inv_freq.data());
  return tb;
}

std::vector<double> cpu_rope(const std::vector<float>& x, const Tables& tb, const Shape& sh,
                             RopeLayout layout, bool backward) {
  std::vector<double> xd(x.begin(), x.end()), y(x.size());
  std::vector<double> c(tb.cos.begin(), tb.cos.end()), s(tb.sin.begin(), tb.sin.end());
  if (backward) lolcats::rope_backward<double>(y.data(), xd.data(), c.data(), s.data(), sh.B, sh.T, sh.H, sh.D, layout);
  else lolcats::rope_forward<double>(y.data(), xd.data(), c.data(), s.data(), sh.B, sh.T, sh.H, sh.D, layout);
  return y;
}

void gpu_rope(DeviceBuffer& y, const DeviceBuffer& x, const DeviceBuffer& c, const DeviceBuffer& s,
              const Shape& sh, RopeLayout layout, bool backward, Storage st) {
  with_storage(st, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    if (backward) cu::rope_backward(dev<T>(y), dev<T>(x), c.f32(), s.f32(), sh.B, sh.T, sh.H, sh.D, layout, nullptr);
    else cu::rope_forward(dev<T>(y), dev<T>(x), c.f32(), s.f32(), sh.B, sh.T, sh.H, sh.D, layout, nullptr);
  });
}

// a cos - b sin in f32: each term rounded, then the difference: error ~2^-23 (|a| + |b|), with
// |a|, |b| < 5 here: atol 1e-6. bf16 adds the output rounding, rtol 2^-8 ≈ 3.9e-3.
double rtol_for(Storage s) { return s == Storage::f32 ? 1e-6 : 3.91e-3; }
constexpr double kAtol = 1e-6;

}  // namespace

TEST_CASE("cuda rope_forward/backward match the CPU twin: plain and Llama 3.1 tables, both layouts, in place", "[cuda][sanitize]") {
  SKIP_WITHOUT_CUDA();
  for (Storage st : {Storage::f32, Storage::bf16})
    for (bool llama3 : {false, true})
      for (RopeLayout layout : {RopeLayout::half_split, RopeLayout::interleaved})
        for (const Shape& sh : kShapes) {
          INFO(storage_name(st) << (llama3 ? " llama3" : " plain") << " layout " << int(layout)
                                << " B=" << sh.B << " T=" << sh.T << " H=" << sh.H << " D=" << sh.D);
          const size_t n = size_t(sh.B) * sh.T * sh.H * sh.D;
          std::mt19937 rng(uint32_t(n + sh.D));
          std::vector<float> x = rounded(random_vector(n, rng), st);
          Tables tb = make_tables(sh.T, sh.D, llama3);
          DeviceBuffer c(tb.cos, Storage::f32), s(tb.sin, Storage::f32), xb(x, st), yb(n, st);
          for (bool backward : {false, true}) {
            INFO((backward ? "backward" : "forward"));
            std::vector<double> want = cpu_rope(x, tb, sh, layout, backward);
            for_each_thread_order([&] {
              gpu_rope(yb, xb, c, s, sh, layout, backward, st);
              check_close(yb.download(), want, kAtol, rtol_for(st), "out of place");
              DeviceBuffer inplace(x, st);
              gpu_rope(inplace, inplace, c, s, sh, layout, backward, st);
              check_close(inplace.download(), want, kAtol, rtol_for(st), "in place");
            });
          }
        }
}

TEST_CASE("cuda rope: the backward undoes the forward, and results are bit-identical run to run", "[cuda]") {
  SKIP_WITHOUT_CUDA();
  // 614,400 pairs: more than the 2048 blocks x 256 threads of one grid, so threads loop.
  const Shape sh{1, 300, 16, 256};
  const size_t n = size_t(sh.B) * sh.T * sh.H * sh.D;
  std::mt19937 rng(5);
  std::vector<float> x = random_vector(n, rng);
  Tables tb = make_tables(sh.T, sh.D, true);
  DeviceBuffer c(tb.cos, Storage::f32), s(tb.sin, Storage::f32), xb(x, Storage::f32), yb(n, Storage::f32);
  gpu_rope(yb, xb, c, s, sh, RopeLayout::half_split, false, Storage::f32);
  std::vector<float> first = yb.download();
  check_close(first, cpu_rope(x, tb, sh, RopeLayout::half_split, false), kAtol, 1e-6, "forward");
  gpu_rope(yb, xb, c, s, sh, RopeLayout::half_split, false, Storage::f32);
  std::vector<float> second = yb.download();
  CHECK(std::memcmp(first.data(), second.data(), n * sizeof(float)) == 0);
  // Rotating back: x again, up to f32 rounding of two rotations (and cos^2 + sin^2 = 1 in f32).
  gpu_rope(yb, yb, c, s, sh, RopeLayout::half_split, true, Storage::f32);
  check_close(yb.download(), std::vector<double>(x.begin(), x.end()), 2e-6, 2e-6, "round trip");
}
#endif  // LOLCATS_CUDA
