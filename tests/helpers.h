// Shared by the tests: reference fixtures written by tests/reference/*.py, and a closeness check
// that fails loudly (the first differing values and the max abs/rel error).
#pragma once
#include <catch2/catch.hpp>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "data/alpaca.h"
#include "data/safetensors.h"
#include "tensor/check.h"

namespace lolcats_test {

extern bool g_skip_current;

// Marks the running test case as skipped (with the reason printed) and leaves it.
#define SKIP_TEST(reason)                     \
  do {                                        \
    WARN("skipped: " << reason);              \
    ::lolcats_test::g_skip_current = true;    \
    return;                                   \
  } while (0)

// The folder of the reference fixtures ($LOLCATS_FIXTURES, default build/fixtures).
inline std::string fixture_dir() {
  const char* dir = std::getenv("LOLCATS_FIXTURES");
  return dir ? dir : "build/fixtures";
}

// `count` deterministic training chunks of T token ids below `vocab`, every fifth target ignored
// (-100), for trainer tests that need data but no tokenizer.
inline lolcats::Chunks synthetic_chunks(int count, int T, int vocab, int seed) {
  lolcats::Chunks c;
  c.T = T;
  for (int i = 0; i < count * T; i++) {
    c.inputs.push_back(int32_t((i * 7919 + seed * 104729) % vocab));
    c.targets.push_back(i % 5 == 0 ? -100 : int32_t((i * 31 + seed) % vocab));
  }
  return c;
}

// The fixture file build/fixtures/NAME.safetensors (directory from $LOLCATS_FIXTURES), opened once.
inline const lolcats::SafeTensorsFile& fixture(const std::string& name) {
  static std::map<std::string, std::unique_ptr<lolcats::SafeTensorsFile>> cache;
  auto& slot = cache[name];
  if (!slot) {
    std::string path = fixture_dir() + "/" + name + ".safetensors";
    FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) FAIL("reference fixture " << path << " is missing: run `make test`, which generates it");
    std::fclose(f);
    slot = std::make_unique<lolcats::SafeTensorsFile>(path);
    auto it = slot->metadata().find("version");
    REQUIRE(it != slot->metadata().end());
    REQUIRE(it->second == "1");  // FIXTURE_VERSION of tests/reference/common.py
  }
  return *slot;
}

template <typename T>
std::vector<T> fx(const std::string& file, const std::string& name) {
  std::vector<double> v = fixture(file).load_f64(name);
  return std::vector<T>(v.begin(), v.end());
}
inline std::vector<int32_t> fx_i32(const std::string& file, const std::string& name) {
  std::vector<double> v = fixture(file).load_f64(name);
  return std::vector<int32_t>(v.begin(), v.end());
}

struct Closeness {
  bool ok = true;
  std::string msg;
};

// |got - want| <= atol + rtol * |want| for every element; NaN matches only NaN.
template <typename G>
Closeness compare(const std::string& what, const G* got, const std::vector<double>& want,
                  double atol, double rtol) {
  Closeness c;
  double max_abs = 0, max_rel = 0;
  int bad = 0;
  for (size_t i = 0; i < want.size(); i++) {
    double g = double(got[i]), w = want[i];
    bool same_nan = std::isnan(g) && std::isnan(w);
    bool same_inf = std::isinf(g) && g == w;
    double err = (same_nan || same_inf) ? 0.0 : std::fabs(g - w);
    if (std::isnan(err)) err = INFINITY;
    max_abs = std::max(max_abs, err);
    max_rel = std::max(max_rel, err / (std::fabs(w) + 1e-30));
    if (err > atol + rtol * std::fabs(w)) {
      if (bad++ < 5)
        c.msg += lolcats::strfmt("  [%zu] got %.9g want %.9g\n", i, g, w);
      c.ok = false;
    }
  }
  c.msg = lolcats::strfmt("%s: %d of %zu values off (atol %g, rtol %g), max abs err %.3g, max rel err %.3g\n",
                          what.c_str(), bad, want.size(), atol, rtol, max_abs, max_rel) + c.msg;
  return c;
}

}  // namespace lolcats_test

// CHECK that `got` (pointer or vector) matches the reference vector `want`.
#define CHECK_CLOSE(what, got, want, atol, rtol)                                            \
  do {                                                                                      \
    const auto& want_ = (want);                                                             \
    auto c_ = ::lolcats_test::compare((what), ::lolcats_test::data_of(got), want_, (atol), (rtol)); \
    INFO(c_.msg);                                                                           \
    CHECK(c_.ok);                                                                           \
  } while (0)

namespace lolcats_test {
template <typename T> const T* data_of(const std::vector<T>& v) { return v.data(); }
template <typename T> const T* data_of(const T* p) { return p; }
template <typename T> const T* data_of(T* p) { return p; }
}  // namespace lolcats_test
