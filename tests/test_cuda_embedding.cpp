// cuda/embedding.cu against its CPU twin (tensor/embedding.h, run in double on the very values the
// kernels see), for f32 and bf16 storage, under every emulated thread order; bad indices.
#ifdef LOLCATS_CUDA
#include <cstring>

#include "cuda/embedding.h"
#include "tensor/embedding.h"
#include "tests/cuda_helpers.h"

using namespace lolcats_test;
namespace cu = lolcats::cuda;

namespace {


struct Indices {  // N int32 token ids on the device
  explicit Indices(const std::vector<int32_t>& idx) : buf(idx.size(), Storage::f32) {
    lolcats::device_upload(buf.data(), idx.data(), idx.size() * sizeof(int32_t));
  }
  DeviceBuffer buf;
  const int32_t* ptr() const { return buf.i32(); }
};

struct Size {
  int N, V, C;
};
// V < N forces repeated tokens (the scatter-add's collisions); C from 1 to past the block size.
const Size kSizes[] = {{1, 1, 1}, {7, 11, 37}, {33, 50, 576}, {40, 5, 1030}, {70, 3, 33}};

std::vector<int32_t> draw_indices(int N, int V, std::mt19937& rng) {
  std::vector<int32_t> idx(static_cast<size_t>(N));
  for (int32_t& i : idx) i = int32_t(rng() % uint32_t(V));
  if (N > 2) idx[size_t(N - 1)] = idx[0];  // at least one repeat wherever possible
  return idx;
}

}  // namespace

TEST_CASE("cuda embedding_forward/backward match the CPU twin; dwte accumulates", "[cuda][sanitize]") {
  SKIP_WITHOUT_CUDA();
  for (Storage s : {Storage::f32, Storage::bf16})
    for (const Size& z : kSizes) {
      INFO(storage_name(s) << " N=" << z.N << " V=" << z.V << " C=" << z.C);
      std::mt19937 rng(uint32_t(z.N * 131 + z.C));
      const size_t NC = size_t(z.N) * z.C, VC = size_t(z.V) * z.C;
      std::vector<int32_t> idx = draw_indices(z.N, z.V, rng);
      std::vector<float> wte = rounded(random_vector(VC, rng), s), dy = rounded(random_vector(NC, rng), s);
      std::vector<float> dwte0 = random_vector(VC, rng);  // f32 gradient, already holding a contribution
      std::vector<double> wd(wte.begin(), wte.end()), gd(dy.begin(), dy.end()), y_want(NC);
      std::vector<double> dw_want(dwte0.begin(), dwte0.end());
      lolcats::embedding_forward<double>(y_want.data(), idx.data(), wd.data(), z.N, z.V, z.C);
      lolcats::embedding_backward<double>(dw_want.data(), gd.data(), idx.data(), z.N, z.V, z.C);

      Indices d_idx(idx);
      DeviceBuffer d_wte(wte, s), d_dy(dy, s), d_y(NC, s), d_dw(VC, Storage::f32);
      for_each_thread_order([&] {
        d_dw.upload(dwte0);
        with_storage(s, [&](auto* tag) {
          using T = std::remove_pointer_t<decltype(tag)>;
          cu::embedding_forward(dev<T>(d_y), d_idx.ptr(), dev<T>(d_wte), z.N, z.V, z.C, nullptr);
          cu::embedding_backward(d_dw.f32(), dev<T>(d_dy), d_idx.ptr(), z.N, z.V, z.C, nullptr);
        });
        check_close(d_y.download(), y_want, 0, 0, "y");  // a copy: exact
        // dwte: each value plus its token's dy values, one f32 rounding per repeat (< 20 here,
        // values ~1): atol 2e-6.
        check_close(d_dw.download(), dw_want, 2e-6, 1e-6, "dwte");
      });
    }
}

TEST_CASE("cuda embedding: the scatter-add is deterministic", "[cuda]") {
  SKIP_WITHOUT_CUDA();
  const int N = 500, V = 7, C = 300;  // ~70 positions per token
  std::mt19937 rng(17);
  std::vector<int32_t> idx = draw_indices(N, V, rng);
  Indices d_idx(idx);
  DeviceBuffer d_dy(random_vector(size_t(N) * C, rng), Storage::f32), d_dw(size_t(V) * C, Storage::f32);
  auto run = [&] {
    d_dw.zero();
    cu::embedding_backward(d_dw.f32(), d_dy.f32(), d_idx.ptr(), N, V, C, nullptr);
    return d_dw.download();
  };
  std::vector<float> first = run(), second = run();
  CHECK(std::memcmp(first.data(), second.data(), first.size() * sizeof(float)) == 0);
}

TEST_CASE("cuda embedding: an index outside [0, V) is an error naming it, and nothing is written", "[cuda]") {
  SKIP_WITHOUT_CUDA();
  const int N = 6, V = 10, C = 8;
  std::mt19937 rng(2);
  DeviceBuffer wte(random_vector(size_t(V) * C, rng), Storage::f32), dy(random_vector(size_t(N) * C, rng), Storage::f32);
  for (int32_t bad : {V, -1, 1 << 30}) {
    INFO("bad index " << bad);
    std::vector<int32_t> idx = {1, 2, 3, bad, 4, 5};
    Indices d_idx(idx);
    DeviceBuffer y(std::vector<float>(size_t(N) * C, 7.0f), Storage::f32);
    DeviceBuffer dw(std::vector<float>(size_t(V) * C, 7.0f), Storage::f32);
    std::string want = "token id " + std::to_string(bad) + " at position 3 is outside [0, 10)";
    CHECK_THROWS_WITH(cu::embedding_forward(y.f32(), d_idx.ptr(), wte.f32(), N, V, C, nullptr),
                      Catch::Contains(want));
    CHECK_THROWS_WITH(cu::embedding_backward(dw.f32(), dy.f32(), d_idx.ptr(), N, V, C, nullptr),
                      Catch::Contains(want));
    CHECK_THROWS_AS(cu::embedding_forward(y.f32(), d_idx.ptr(), wte.f32(), N, V, C, nullptr), lolcats::Error);
    CHECK(y.download() == std::vector<float>(size_t(N) * C, 7.0f));
    CHECK(dw.download() == std::vector<float>(size_t(V) * C, 7.0f));
  }
}
#endif  // LOLCATS_CUDA
