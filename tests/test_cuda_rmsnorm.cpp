// cuda/rmsnorm.cu against its CPU twin (tensor/rmsnorm.h, run in double on the very values the kernel
// sees), for f32 and bf16 storage, under every emulated thread order.
#ifdef LOLCATS_CUDA
#include <cstring>

#include "cuda/rmsnorm.h"
#include "tensor/rmsnorm.h"
#include "tests/cuda_helpers.h"

using namespace lolcats_test;
namespace cu = lolcats::cuda;

namespace {

// Calls f with a null pointer of the storage type (float* or bf16*), to pick the template.

std::vector<double> to_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }

// Sizes: N rows of C channels. Odd sizes leave warps and blocks partly idle; N = 130 spans three
// 64-row chunks of the dw reduction.
const std::pair<int, int> kSizes[] = {{1, 1}, {7, 37}, {33, 576}, {7, 1030}, {130, 64}};
constexpr float kEps = 1e-5f;

struct Case {
  int N, C;
  Storage s;
  std::vector<float> x, w, dy, dw0;  // inputs (bf16-representable when s is bf16)
};

Case make_case(int N, int C, Storage s, uint32_t seed) {
  std::mt19937 rng(seed);
  Case k{N, C, s, {}, {}, {}, {}};
  k.x = rounded(random_vector(size_t(N) * C, rng), s);
  k.w = rounded(random_vector(size_t(C), rng, 0.5f), s);
  for (float& v : k.w) v = rounded({1.0f + v}, s)[0];  // weights around 1, as trained norms are
  k.dy = rounded(random_vector(size_t(N) * C, rng), s);
  k.dw0 = random_vector(size_t(C), rng);  // f32 gradient buffer, already holding a contribution
  return k;
}

}  // namespace

TEST_CASE("cuda rmsnorm_forward matches the CPU twin", "[cuda][sanitize]") {
  SKIP_WITHOUT_CUDA();
  for (Storage s : {Storage::f32, Storage::bf16})
    for (auto [N, C] : kSizes) {
      INFO(storage_name(s) << " N=" << N << " C=" << C);
      Case k = make_case(N, C, s, uint32_t(N * 1000 + C));
      std::vector<double> xd = to_double(k.x), wd = to_double(k.w), y(xd.size()), rstd(static_cast<size_t>(N));
      lolcats::rmsnorm_forward<double>(y.data(), rstd.data(), xd.data(), wd.data(), N, C, kEps);
      DeviceBuffer x(k.x, s), w(k.w, s), yb(size_t(N) * C, s), rs(size_t(N), Storage::f32);
      for_each_thread_order([&] {
        with_storage(s, [&](auto* tag) {
          using T = std::remove_pointer_t<decltype(tag)>;
          cu::rmsnorm_forward(dev<T>(yb), rs.f32(), dev<T>(x), dev<T>(w), N, C, kEps, nullptr);
        });
        // f32: the sum of squares in f32 (at most ~40 rounding steps per row) and rsqrtf (2 ulp):
        // rtol 1e-5. bf16: plus the output's rounding to 8 significant bits, 2^-8 ≈ 3.9e-3.
        double rtol = s == Storage::f32 ? 1e-5 : 3.91e-3 + 1e-5;
        check_close(yb.download(), y, 1e-6, rtol, "y");
        check_close(rs.download(), rstd, 0, 1e-5, "rstd");  // f32 in both storages
      });
    }
}

TEST_CASE("cuda rmsnorm_backward matches the CPU twin; dx is written, dw accumulates", "[cuda][sanitize]") {
  SKIP_WITHOUT_CUDA();
  for (Storage s : {Storage::f32, Storage::bf16})
    for (auto [N, C] : kSizes) {
      INFO(storage_name(s) << " N=" << N << " C=" << C);
      Case k = make_case(N, C, s, uint32_t(N * 1000 + C + 7));
      // The saved statistic: the CPU's rstd rounded to f32, which both sides then use.
      std::vector<double> xd = to_double(k.x), wd = to_double(k.w), gd = to_double(k.dy);
      std::vector<double> y(xd.size()), rstd_d(static_cast<size_t>(N));
      lolcats::rmsnorm_forward<double>(y.data(), rstd_d.data(), xd.data(), wd.data(), N, C, kEps);
      std::vector<float> rstd(rstd_d.begin(), rstd_d.end());
      rstd_d = to_double(rstd);
      std::vector<double> dx_want(xd.size()), dw_want = to_double(k.dw0);
      lolcats::rmsnorm_backward<double>(dx_want.data(), dw_want.data(), gd.data(), xd.data(),
                                        wd.data(), rstd_d.data(), N, C);

      // dx = r (g - xhat mean(g xhat)) can cancel: its error is relative to the terms' size (~1
      // here), hence atol 2e-5 for the f32 dot product; bf16 adds the output rounding 2^-8.
      const double rtol = s == Storage::f32 ? 1e-5 : 3.91e-3 + 1e-5;
      DeviceBuffer x(k.x, s), w(k.w, s), dy(k.dy, s), rs(rstd, Storage::f32);
      DeviceBuffer dx(size_t(N) * C, s), dw(size_t(C), Storage::f32);
      for_each_thread_order([&] {
        dx.upload(std::vector<float>(size_t(N) * C, 1000.0f));  // stale values must be overwritten
        dw.upload(k.dw0);
        with_storage(s, [&](auto* tag) {
          using T = std::remove_pointer_t<decltype(tag)>;
          cu::rmsnorm_backward(dev<T>(dx), dw.f32(), dev<T>(dy), dev<T>(x), dev<T>(w), rs.f32(), N,
                               C, nullptr);
        });
        check_close(dx.download(), dx_want, 2e-5, rtol, "dx");
        // dw (f32 in both storages): a sum of N terms of size ~1 in f32, ~N 2^-24 absolute.
        check_close(dw.download(), dw_want, 1e-6 * (N + 10), 1e-6, "dw");
      });

      // A frozen weight: dw null, dx alone. No gradient wanted for x: dx null, dw alone.
      dx.zero();
      with_storage(s, [&](auto* tag) {
        using T = std::remove_pointer_t<decltype(tag)>;
        cu::rmsnorm_backward(dev<T>(dx), nullptr, dev<T>(dy), dev<T>(x), dev<T>(w), rs.f32(), N, C,
                             nullptr);
      });
      check_close(dx.download(), dx_want, 2e-5, rtol, "dx (dw null)");
      dw.upload(k.dw0);
      with_storage(s, [&](auto* tag) {
        using T = std::remove_pointer_t<decltype(tag)>;
        cu::rmsnorm_backward(static_cast<T*>(nullptr), dw.f32(), dev<T>(dy), dev<T>(x), dev<T>(w),
                             rs.f32(), N, C, nullptr);
      });
      check_close(dw.download(), dw_want, 1e-6 * (N + 10), 1e-6, "dw (dx null)");
    }
}

TEST_CASE("cuda rmsnorm is deterministic: the same input gives bit-identical output", "[cuda]") {
  SKIP_WITHOUT_CUDA();
  const int N = 300, C = 1030;  // several dw chunks and column tiles
  for (Storage s : {Storage::f32, Storage::bf16}) {
    INFO(storage_name(s));
    Case k = make_case(N, C, s, 99);
    DeviceBuffer x(k.x, s), w(k.w, s), dy(k.dy, s), y(size_t(N) * C, s), rs(size_t(N), Storage::f32);
    DeviceBuffer dx(size_t(N) * C, s), dw(size_t(C), Storage::f32);
    auto run = [&] {
      dw.upload(k.dw0);
      with_storage(s, [&](auto* tag) {
        using T = std::remove_pointer_t<decltype(tag)>;
        cu::rmsnorm_forward(dev<T>(y), rs.f32(), dev<T>(x), dev<T>(w), N, C, kEps, nullptr);
        cu::rmsnorm_backward(dev<T>(dx), dw.f32(), dev<T>(dy), dev<T>(x), dev<T>(w), rs.f32(), N, C,
                             nullptr);
      });
      std::vector<float> out = y.download(), a = rs.download(), b = dx.download(), c = dw.download();
      out.insert(out.end(), a.begin(), a.end());
      out.insert(out.end(), b.begin(), b.end());
      out.insert(out.end(), c.begin(), c.end());
      return out;
    };
    std::vector<float> first = run(), second = run();
    REQUIRE(first.size() == second.size());
    CHECK(std::memcmp(first.data(), second.data(), first.size() * sizeof(float)) == 0);
  }
}
#endif  // LOLCATS_CUDA
