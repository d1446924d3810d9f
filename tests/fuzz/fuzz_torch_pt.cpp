// libFuzzer target: the PyTorch checkpoint reader (data/torch_pt.h: zip archive + pickle) on
// arbitrary bytes. Opening either succeeds or throws lolcats::Error; after a successful open loading
// every tensor must also return or throw lolcats::Error. Anything else (a crash, a sanitizer report,
// a leak, another exception type) is a bug in the reader. Seeds: tests/fuzz/seeds/fuzz_torch_pt/
// (small files written by torch.save). Run with `make fuzz`.
#include "data/torch_pt.h"
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
  const std::string& path = fuzz::write_input(data, size, ".pt");
  expect_ok_or_error([&] {
    TorchCheckpoint f(path);
    for (const std::string& name : f.names()) {
      expect_ok_or_error([&] {
        Tensor t = f.load(name);
        if (t.numel() != f.info(name).numel()) abort();
      });
    }
  });
  return 0;
}
