// libFuzzer target: the safetensors reader (data/safetensors.h) on arbitrary bytes. Opening either
// succeeds or throws lolcats::Error; after a successful open loading every tensor (as a Tensor and
// as doubles) must also return or throw lolcats::Error. Anything else (a crash, a sanitizer report,
// another exception type) is a bug in the reader. Run with `make fuzz`.
#include "data/safetensors.h"
#include "tests/fuzz/fuzz_util.h"

using namespace lolcats;

template <typename F>
static void expect_ok_or_error(F f) {
  try {
    f();
  } catch (const Error&) {
  }
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = fuzz::write_input(data, size, ".safetensors");
  expect_ok_or_error([&] {
    SafeTensorsFile f(path);
    for (const std::string& name : f.names()) {
      expect_ok_or_error([&] { f.load(name); });
      expect_ok_or_error([&] { f.load_f64(name); });
    }
  });
  return 0;
}
