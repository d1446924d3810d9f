// cuda/adamw.cu against its CPU twin (nn/adamw.cpp's adamw_step, f32), over several steps, with
// and without the bf16 copy of the parameters, under every emulated thread order.
#ifdef LOLCATS_CUDA
#include <cstring>

#include "cuda/adamw.h"
#include "nn/adamw.h"
#include "tests/cuda_helpers.h"

using namespace lolcats_test;
namespace cu = lolcats::cuda;

namespace {

std::vector<double> dbl(const std::vector<float>& v) { return {v.begin(), v.end()}; }

struct State {  // an optimiser's state on the device
  explicit State(const std::vector<float>& p)
      : params(p, Storage::f32), m(std::vector<float>(p.size(), 0.0f), Storage::f32),
        v(std::vector<float>(p.size(), 0.0f), Storage::f32), grads(p.size(), Storage::f32),
        copy(p.size(), Storage::bf16) {}
  DeviceBuffer params, m, v, grads, copy;
};

}  // namespace

TEST_CASE("cuda adamw_step matches the CPU's f32 step to a few ulp", "[cuda][sanitize]") {
  SKIP_WITHOUT_CUDA();
  lolcats::AdamWConfig cfg;
  cfg.weight_decay = 0.1f;
  const float lr = 1e-2f;
  // Steps 1-3 (bias correction large), then a jump to 1000 (bias correction ~ 1 for m).
  const int64_t steps[] = {1, 2, 3, 1000};
  for (bool with_copy : {false, true})
    for (int64_t n : {int64_t(1), int64_t(37), int64_t(1030), int64_t(38110)}) {
      INFO("n=" << n << (with_copy ? " with the bf16 copy" : ""));
      const size_t un = size_t(n);
      std::mt19937 rng{uint32_t(n)};
      std::vector<float> p = random_vector(un, rng), m(un, 0.0f), v(un, 0.0f);
      State d(p);
      for_each_thread_order([&] {
        // Each thread order continues the same trajectory from the state the previous one left.
        for (int64_t t : steps) {
          INFO("step " << t);
          std::vector<float> g = random_vector(un, rng, 0.3f);
          for (size_t i = 0; i < un; i += 7) g[i] = 0.0f;  // parameters with no gradient this step
          lolcats::adamw_step(p.data(), m.data(), v.data(), g.data(), n, t, lr, cfg);
          d.grads.upload(g);
          cu::adamw_step(d.params.f32(), d.m.f32(), d.v.f32(), d.grads.f32(), n, t, lr, cfg.beta1,
                         cfg.beta2, cfg.eps, cfg.weight_decay, with_copy ? d.copy.bf16() : nullptr,
                         nullptr);
          // The same f32 operations, except where a compiler fuses a multiply-add: a few ulp.
          // m = beta1 m + (1 - beta1) g can cancel, its error relative to the terms (~0.3): atol 1e-7.
          // The update (size ~lr) is a few ulp of lr off where p itself cancels: atol 1e-8.
          check_close(d.m.download(), dbl(m), 1e-7, 5e-7, "m");
          check_close(d.v.download(), dbl(v), 0, 5e-7, "v");
          std::vector<float> got = d.params.download();
          check_close(got, dbl(p), 1e-8, 5e-7, "params");
          // The CPU and GPU parameters agree to a few ulp; the GPU state continues from the CPU's,
          // so that differences do not compound across steps.
          d.params.upload(p);
          d.m.upload(m);
          d.v.upload(v);
          if (with_copy) {  // exactly the updated f32 parameters, rounded to bf16
            std::vector<float> copy = d.copy.download(), want = rounded(got, Storage::bf16);
            CHECK(std::memcmp(copy.data(), want.data(), un * sizeof(float)) == 0);
          }
        }
      });
    }
}

TEST_CASE("cuda adamw_step: bit-identical run to run; step 0 is an error", "[cuda]") {
  SKIP_WITHOUT_CUDA();
  // 600,000 parameters: more than the 2048 blocks x 256 threads of one grid, so threads loop.
  const int64_t n = 600000;
  std::mt19937 rng(4);
  std::vector<float> p = random_vector(size_t(n), rng), g = random_vector(size_t(n), rng);
  auto run = [&] {
    State d(p);
    d.grads.upload(g);
    for (int64_t t = 1; t <= 2; t++)
      cu::adamw_step(d.params.f32(), d.m.f32(), d.v.f32(), d.grads.f32(), n, t, 1e-3f, 0.9f,
                     0.999f, 1e-8f, 0.01f, d.copy.bf16(), nullptr);
    std::vector<float> out = d.params.download(), c = d.copy.download();
    out.insert(out.end(), c.begin(), c.end());
    return out;
  };
  std::vector<float> first = run(), second = run();
  CHECK(std::memcmp(first.data(), second.data(), first.size() * sizeof(float)) == 0);
  State d(p);
  CHECK_THROWS_WITH(cu::adamw_step(d.params.f32(), d.m.f32(), d.v.f32(), d.grads.f32(), n, 0, 1e-3f,
                                   0.9f, 0.999f, 1e-8f, 0.01f, nullptr, nullptr),
                    Catch::Contains("step counts from 1"));
}
#endif  // LOLCATS_CUDA
