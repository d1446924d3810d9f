// Shared by the CUDA kernel tests (tests/test_cuda_*.cpp): device buffers filled from and read back
// into f32 host vectors (converting to and from bf16 storage), the closeness check, and running a
// check under several thread orders of the SIMT emulator.
//
// How a kernel test is built: inputs drawn in f32; for a bf16 kernel, rounded to bf16 first, so that
// the CPU twin (run in double on exactly the values the kernel saw) is the reference, and the
// tolerance only has to cover the kernel's own f32 arithmetic and its output rounding.
#pragma once
#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <type_traits>
#include <vector>

#include "cuda/api.h"
#include "tensor/bf16.h"
#include "tensor/tensor.h"
#include "tests/helpers.h"
#ifdef LOLCATS_CUDA_EMU
#include "cuda/emu/scheduler.h"
#endif

namespace lolcats_test {

enum class Storage { f32, bf16 };
inline const char* storage_name(Storage s) { return s == Storage::f32 ? "f32" : "bf16"; }

// Rounds each value to what bf16 storage keeps (identity for f32).
inline std::vector<float> rounded(std::vector<float> v, Storage s) {
  if (s == Storage::bf16)
    for (float& x : v) x = lolcats::bf16_to_f32(lolcats::f32_to_bf16(x));
  return v;
}

// n values in storage `s` on the device. Freed with the object.
class DeviceBuffer {
 public:
  DeviceBuffer(size_t n, Storage s) : n_(n), s_(s) {
    p_ = lolcats::device_malloc(bytes());
  }
  DeviceBuffer(const std::vector<float>& host, Storage s) : DeviceBuffer(host.size(), s) { upload(host); }
  ~DeviceBuffer() { lolcats::device_free(p_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  size_t bytes() const { return n_ * (s_ == Storage::f32 ? 4 : 2); }
  void upload(const std::vector<float>& host) {
    REQUIRE(host.size() == n_);
    if (s_ == Storage::f32) {
      lolcats::device_upload(p_, host.data(), bytes());
    } else {
      std::vector<uint16_t> h(n_);
      for (size_t i = 0; i < n_; i++) h[i] = lolcats::f32_to_bf16(host[i]);
      lolcats::device_upload(p_, h.data(), bytes());
    }
  }
  std::vector<float> download() const {
    std::vector<float> out(n_);
    if (s_ == Storage::f32) {
      lolcats::device_download(out.data(), p_, bytes());
    } else {
      std::vector<uint16_t> h(n_);
      lolcats::device_download(h.data(), p_, bytes());
      for (size_t i = 0; i < n_; i++) out[i] = lolcats::bf16_to_f32(h[i]);
    }
    return out;
  }
  void zero() { lolcats::device_memset_zero(p_, bytes()); }
  float* f32() const { REQUIRE(s_ == Storage::f32); return static_cast<float*>(p_); }
  lolcats::cuda::bf16* bf16() const { REQUIRE(s_ == Storage::bf16); return static_cast<lolcats::cuda::bf16*>(p_); }
  int32_t* i32() const { return static_cast<int32_t*>(p_); }  // for an index buffer made as f32-sized
  void* data() const { return p_; }
  template <typename T>
  T* as() const {  // T = float or cuda::bf16, matching the storage
    if constexpr (std::is_same_v<T, float>) return f32();
    else return bf16();
  }

 private:
  size_t n_;
  Storage s_;
  void* p_ = nullptr;
};

// Calls f with a null float* or cuda::bf16*: picks the kernel template for storage s.
template <typename F>
void with_storage(Storage s, F&& f) {
  if (s == Storage::f32) f(static_cast<float*>(nullptr));
  else f(static_cast<lolcats::cuda::bf16*>(nullptr));
}
template <typename T>
T* dev(const DeviceBuffer& b) { return b.as<T>(); }

inline std::vector<float> random_vector(size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// |got - want| <= atol + rtol |want| everywhere; on failure, the first offenders and the worst error.
inline void check_close(const std::vector<float>& got, const std::vector<double>& want, double atol,
                        double rtol, const std::string& what) {
  REQUIRE(got.size() == want.size());
  size_t bad = 0, worst = 0;
  double worst_excess = 0;
  std::string first;
  for (size_t i = 0; i < got.size(); i++) {
    double err = std::fabs(double(got[i]) - want[i]), lim = atol + rtol * std::fabs(want[i]);
    if (!(err <= lim)) {  // NaN fails too
      if (bad < 5) first += "\n  [" + std::to_string(i) + "] got " + std::to_string(got[i]) + " want " + std::to_string(want[i]);
      bad++;
      if (!(err - lim <= worst_excess)) worst_excess = err - lim, worst = i;
    }
  }
  INFO(what << ": " << bad << " of " << got.size() << " values off (atol " << atol << ", rtol " << rtol
            << "); worst at [" << worst << "]" << first);
  CHECK(bad == 0);
}

// Runs `check` once on a GPU; under the emulator, once per thread order (forward, reversed,
// shuffled), so that a kernel that reads shared memory before the barrier that orders it fails.
inline void for_each_thread_order(const std::function<void()>& check) {
#ifdef LOLCATS_CUDA_EMU
  using lolcats::emu::ThreadOrder;
  ThreadOrder prev = lolcats::emu::thread_order();
  for (ThreadOrder o : {ThreadOrder::forward, ThreadOrder::reverse, ThreadOrder::shuffled}) {
    lolcats::emu::set_thread_order(o);
    INFO("emulator thread order " << int(o));
    check();
  }
  lolcats::emu::set_thread_order(prev);
#else
  check();
#endif
}

#define SKIP_WITHOUT_CUDA() \
  do {                      \
    if (!lolcats::cuda_available()) SKIP_TEST("no cuda device in this build (CUDA=0)"); \
  } while (0)

}  // namespace lolcats_test
