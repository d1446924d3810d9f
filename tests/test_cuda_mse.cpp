// cuda/mse.cu against its CPU twin (tensor/loss.h, run in double on the very values the kernels
// see), for f32 and bf16 storage, under every emulated thread order.
#ifdef LOLCATS_CUDA
#include <cstring>

#include "cuda/mse.h"
#include "tensor/loss.h"
#include "tests/cuda_helpers.h"

using namespace lolcats_test;
namespace cu = lolcats::cuda;

namespace {


// 1 and 37: one partly filled block; 1030 and 19013 (= 576 * 33 + 5): several blocks, the last
// one partial.
const int64_t kSizes[] = {1, 37, 1030, 19013};

}  // namespace

TEST_CASE("cuda mse_forward/backward match the CPU twin", "[cuda][sanitize]") {
  SKIP_WITHOUT_CUDA();
  const float dloss = 0.75f;
  for (Storage s : {Storage::f32, Storage::bf16})
    for (int64_t n : kSizes) {
      INFO(storage_name(s) << " n=" << n);
      std::mt19937 rng{uint32_t(n)};
      const size_t un = size_t(n);
      std::vector<float> a = rounded(random_vector(un, rng), s), b = rounded(random_vector(un, rng), s);
      std::vector<double> ad(a.begin(), a.end()), bd(b.begin(), b.end()), da(un), db(un);
      const double loss_want = lolcats::mse_forward<double>(ad.data(), bd.data(), n);
      lolcats::mse_backward<double>(da.data(), db.data(), double(dloss), ad.data(), bd.data(), n);
      DeviceBuffer A(a, s), B(b, s), DA(un, s), DB(un, s), loss(1, Storage::f32);
      for_each_thread_order([&] {
        DA.upload(std::vector<float>(un, 9.0f));  // stale values must be overwritten
        DB.upload(std::vector<float>(un, 9.0f));
        with_storage(s, [&](auto* tag) {
          using T = std::remove_pointer_t<decltype(tag)>;
          cu::mse_forward(loss.f32(), dev<T>(A), dev<T>(B), n, nullptr);
          cu::mse_backward(dev<T>(DA), dev<T>(DB), dloss, dev<T>(A), dev<T>(B), n, nullptr);
        });
        // The loss (f32 in both storages): a sum of positive terms, each f32 addition on the
        // longest path (< 30 of them here) costing 2^-24 relative: rtol 2e-6.
        check_close(loss.download(), {loss_want}, 0, 2e-6, "loss");
        // g (a - b): three f32 roundings (g, the difference, the product): rtol 3 * 2^-24 ≈ 2e-7;
        // bf16 adds the output's rounding, 2^-8 ≈ 3.9e-3.
        const double rtol = s == Storage::f32 ? 2e-7 : 3.91e-3 + 2e-7;
        check_close(DA.download(), da, 0, rtol, "da");
        check_close(DB.download(), db, 0, rtol, "db");
      });
      // Only da wanted: db is left alone.
      DB.upload(std::vector<float>(un, 9.0f));
      with_storage(s, [&](auto* tag) {
        using T = std::remove_pointer_t<decltype(tag)>;
        cu::mse_backward(dev<T>(DA), static_cast<T*>(nullptr), dloss, dev<T>(A), dev<T>(B), n, nullptr);
      });
      check_close(DA.download(), da, 0, s == Storage::f32 ? 2e-7 : 3.91e-3 + 2e-7, "da (db null)");
      CHECK(DB.download() == std::vector<float>(un, 9.0f));
    }
}

TEST_CASE("cuda mse: an empty mean is 0, and the loss is bit-identical run to run", "[cuda]") {
  SKIP_WITHOUT_CUDA();
  DeviceBuffer loss(std::vector<float>{5.0f}, Storage::f32), none(1, Storage::f32);
  cu::mse_forward(loss.f32(), none.f32(), none.f32(), 0, nullptr);
  CHECK(loss.download()[0] == 0.0f);

  // 300,000 values: more than the 1024 blocks x 256 threads of one grid, so threads loop.
  const int64_t n = 300000;
  std::mt19937 rng(8);
  std::vector<float> a = random_vector(size_t(n), rng), b = random_vector(size_t(n), rng);
  DeviceBuffer A(a, Storage::f32), B(b, Storage::f32);
  std::vector<double> ad(a.begin(), a.end()), bd(b.begin(), b.end());
  cu::mse_forward(loss.f32(), A.f32(), B.f32(), n, nullptr);
  const float first = loss.download()[0];
  check_close({first}, {lolcats::mse_forward<double>(ad.data(), bd.data(), n)}, 0, 2e-6, "loss");
  cu::mse_forward(loss.f32(), A.f32(), B.f32(), n, nullptr);
  const float second = loss.download()[0];
  CHECK(std::memcmp(&first, &second, sizeof(float)) == 0);
}
#endif  // LOLCATS_CUDA
