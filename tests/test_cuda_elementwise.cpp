// cuda/elementwise.cu against its CPU twins (tensor/elementwise.h, run in double on the very values
// the kernels see), for f32 and bf16 storage, under every emulated thread order; the casts against
// tensor/bf16.h bit for bit.
#ifdef LOLCATS_CUDA
#include <cstring>
#include <limits>

#include "cuda/elementwise.h"
#include "tensor/elementwise.h"
#include "tests/cuda_helpers.h"

using namespace lolcats_test;
namespace cu = lolcats::cuda;

namespace {

#define WITH_T(s, body)                                \
  with_storage(s, [&](auto* tag_) {                    \
    using T = std::remove_pointer_t<decltype(tag_)>;   \
    body;                                              \
  })

std::vector<double> dbl(const std::vector<float>& v) { return {v.begin(), v.end()}; }

// 1: a single thread; 37: part of a warp; 1030 and 4033 = 576 * 7 + 1: several blocks, the last
// one partial. (The grid-stride loop past one full grid: the determinism test's 600,000.)
const int64_t kSizes[] = {1, 37, 1030, 4033};

// Tolerances. add, mul, scale: one f32 rounding (2^-24) -> rtol 1.2e-7. silu and swiglu: expf
// (2 ulp on a GPU) and 3-5 more roundings -> rtol 1e-6; their derivatives cancel near
// silu'(x) = 0 (x ≈ -1.28), where the error is relative to the terms (~|dy|): atol 1e-6.
// bf16 storage adds the output's rounding to 8 significant bits: 2^-8 ≈ 3.9e-3.
double out_rtol(Storage s, double f32_rtol) { return s == Storage::f32 ? f32_rtol : 3.91e-3 + f32_rtol; }

}  // namespace

TEST_CASE("cuda elementwise forward and backward match the CPU twins", "[cuda][sanitize]") {
  SKIP_WITHOUT_CUDA();
  const float kScale = 0.37f;
  for (Storage s : {Storage::f32, Storage::bf16})
    for (int64_t n : kSizes) {
      INFO(storage_name(s) << " n=" << n);
      std::mt19937 rng{uint32_t(n)};
      const size_t un = size_t(n);
      // a, b: operands (scale 3 so that silu's saturated tails are reached); dy: incoming gradient.
      std::vector<float> a = rounded(random_vector(un, rng, 3.0f), s),
                         b = rounded(random_vector(un, rng, 3.0f), s),
                         dy = rounded(random_vector(un, rng), s);
      std::vector<double> ad = dbl(a), bd = dbl(b), gd = dbl(dy), w1(un), w2(un);
      DeviceBuffer A(a, s), Bb(b, s), DY(dy, s), O1(un, s), O2(un, s);
      auto check = [&](const DeviceBuffer& got, const std::vector<double>& want, double atol,
                       double f32_rtol, const char* what) {
        check_close(got.download(), want, atol, out_rtol(s, f32_rtol), what);
      };
      for_each_thread_order([&] {
        lolcats::add_forward<double>(w1.data(), ad.data(), bd.data(), n);
        WITH_T(s, cu::add_forward(dev<T>(O1), dev<T>(A), dev<T>(Bb), n, nullptr));
        check(O1, w1, 0, 1.2e-7, "add_forward");

        lolcats::add_backward<double>(w1.data(), w2.data(), gd.data(), n);
        WITH_T(s, cu::add_backward(dev<T>(O1), dev<T>(O2), dev<T>(DY), n, nullptr));
        check(O1, w1, 0, 0, "add_backward da");  // copies: exact
        check(O2, w2, 0, 0, "add_backward db");

        lolcats::mul_forward<double>(w1.data(), ad.data(), bd.data(), n);
        WITH_T(s, cu::mul_forward(dev<T>(O1), dev<T>(A), dev<T>(Bb), n, nullptr));
        check(O1, w1, 0, 1.2e-7, "mul_forward");

        lolcats::mul_backward<double>(w1.data(), w2.data(), gd.data(), ad.data(), bd.data(), n);
        WITH_T(s, cu::mul_backward(dev<T>(O1), dev<T>(O2), dev<T>(DY), dev<T>(A), dev<T>(Bb), n, nullptr));
        check(O1, w1, 0, 1.2e-7, "mul_backward da");
        check(O2, w2, 0, 1.2e-7, "mul_backward db");

        lolcats::scale_forward<double>(w1.data(), ad.data(), double(kScale), n);
        WITH_T(s, cu::scale_forward(dev<T>(O1), dev<T>(A), kScale, n, nullptr));
        check(O1, w1, 0, 1.2e-7, "scale_forward");
        WITH_T(s, cu::scale_backward(dev<T>(O1), dev<T>(A), kScale, n, nullptr));
        check(O1, w1, 0, 1.2e-7, "scale_backward");

        lolcats::silu_forward<double>(w1.data(), ad.data(), n);
        WITH_T(s, cu::silu_forward(dev<T>(O1), dev<T>(A), n, nullptr));
        check(O1, w1, 1e-30, 1e-6, "silu_forward");  // atol: silu(-90) underflows to -0 in f32

        lolcats::silu_backward<double>(w1.data(), gd.data(), ad.data(), n);
        WITH_T(s, cu::silu_backward(dev<T>(O1), dev<T>(DY), dev<T>(A), n, nullptr));
        check(O1, w1, 1e-6, 1e-6, "silu_backward");

        lolcats::swiglu_forward<double>(w1.data(), ad.data(), bd.data(), n);
        WITH_T(s, cu::swiglu_forward(dev<T>(O1), dev<T>(A), dev<T>(Bb), n, nullptr));
        check(O1, w1, 1e-30, 1e-6, "swiglu_forward");

        lolcats::swiglu_backward<double>(w1.data(), w2.data(), gd.data(), ad.data(), bd.data(), n);
        WITH_T(s, cu::swiglu_backward(dev<T>(O1), dev<T>(O2), dev<T>(DY), dev<T>(A), dev<T>(Bb), n, nullptr));
        check(O1, w1, 1e-6, 1e-6, "swiglu_backward dgate");
        check(O2, w2, 1e-6, 1e-6, "swiglu_backward dup");
      });

      // Null gradient outputs are skipped; the other one is still written.
      lolcats::swiglu_backward<double>(w1.data(), w2.data(), gd.data(), ad.data(), bd.data(), n);
      O1.upload(std::vector<float>(un, 5.0f));
      WITH_T(s, cu::swiglu_backward(static_cast<T*>(nullptr), dev<T>(O1), dev<T>(DY), dev<T>(A), dev<T>(Bb), n, nullptr));
      check(O1, w2, 1e-6, 1e-6, "swiglu_backward, dgate null");
      lolcats::mul_backward<double>(w1.data(), w2.data(), gd.data(), ad.data(), bd.data(), n);
      WITH_T(s, cu::mul_backward(dev<T>(O1), static_cast<T*>(nullptr), dev<T>(DY), dev<T>(A), dev<T>(Bb), n, nullptr));
      check(O1, w1, 0, 1.2e-7, "mul_backward, db null");

      // The residual add in place: x += branch.
      DeviceBuffer X(a, s);
      lolcats::add_forward<double>(w1.data(), ad.data(), bd.data(), n);
      WITH_T(s, cu::add_forward(dev<T>(X), dev<T>(X), dev<T>(Bb), n, nullptr));
      check(X, w1, 0, 1.2e-7, "add_forward in place");
    }
}

TEST_CASE("cuda elementwise: bit-identical results run to run", "[cuda]") {
  SKIP_WITHOUT_CUDA();
  const int64_t n = 600000;  // more than the 2048 blocks x 256 threads of one grid: threads loop
  std::mt19937 rng(3);
  for (Storage s : {Storage::f32, Storage::bf16}) {
    DeviceBuffer A(rounded(random_vector(size_t(n), rng, 3.0f), s), s),
        Bb(rounded(random_vector(size_t(n), rng), s), s), DY(rounded(random_vector(size_t(n), rng), s), s),
        O1(size_t(n), s), O2(size_t(n), s);
    auto run = [&] {
      WITH_T(s, cu::swiglu_backward(dev<T>(O1), dev<T>(O2), dev<T>(DY), dev<T>(A), dev<T>(Bb), n, nullptr));
      std::vector<float> out = O1.download(), o2 = O2.download();
      out.insert(out.end(), o2.begin(), o2.end());
      return out;
    };
    std::vector<float> first = run(), second = run();
    CHECK(std::memcmp(first.data(), second.data(), first.size() * sizeof(float)) == 0);
  }
}

TEST_CASE("cuda casts f32 <-> bf16 round exactly as tensor/bf16.h", "[cuda][sanitize]") {
  SKIP_WITHOUT_CUDA();
  auto from_bits = [](uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  };
  auto bits = [](float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
  };
  std::mt19937 rng(11);
  std::vector<float> x = random_vector(4000, rng, 100.0f);
  for (uint32_t u : {0x00000000u, 0x80000000u, 0x7F800000u, 0xFF800000u, 0x7FC00000u, 0xFFA00001u,
                     0x3F808000u,   // 1 + 2^-8: a tie, rounds down to the even 1.0
                     0x3F818000u,   // a tie that rounds up to the even neighbour
                     0x3F808001u,   // just above a tie: rounds up
                     0x7F7FFFFFu,   // FLT_MAX rounds to infinity
                     0x00000001u, 0x00018000u, 0x807FFFFFu})  // subnormals
    x.push_back(from_bits(u));
  for_each_thread_order([&] {
    DeviceBuffer X(x, Storage::f32), Y(x.size(), Storage::bf16), Z(x.size(), Storage::f32);
    cu::cast_f32_to_bf16(Y.bf16(), X.f32(), int64_t(x.size()), nullptr);
    std::vector<float> y = Y.download();  // widening to f32 is exact: these are the bf16 values
    size_t bad = 0;
    for (size_t i = 0; i < x.size(); i++) {
      if (std::isnan(x[i])) bad += !std::isnan(y[i]);  // NaN stays NaN (its payload may differ)
      else bad += bits(y[i]) != uint32_t(lolcats::f32_to_bf16(x[i])) << 16;
    }
    CHECK(bad == 0);
    // And back: bf16 -> f32 is exact.
    cu::cast_bf16_to_f32(Z.f32(), Y.bf16(), int64_t(x.size()), nullptr);
    std::vector<float> z = Z.download();
    size_t bad_back = 0;
    for (size_t i = 0; i < x.size(); i++)
      bad_back += std::isnan(y[i]) ? !std::isnan(z[i]) : bits(z[i]) != bits(y[i]);
    CHECK(bad_back == 0);
  });
}
#endif  // LOLCATS_CUDA
