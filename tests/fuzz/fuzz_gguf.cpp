// libFuzzer target: the GGUF reader (data/gguf.h) on arbitrary bytes. Opening either succeeds or
// throws lolcats::Error; after a successful open every metadata getter and every tensor load must
// also return or throw lolcats::Error. Anything else (a crash, a sanitizer report, another
// exception type) is a bug in the reader. Run with `make fuzz`.
#include "data/gguf.h"
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
  const std::string& path = fuzz::write_input(data, size, ".gguf");
  expect_ok_or_error([&] {
    GGUFFile f(path);
    for (const std::string& key : f.keys()) {
      expect_ok_or_error([&] { f.get_string(key); });
      expect_ok_or_error([&] { f.get_int(key); });
      expect_ok_or_error([&] { f.get_float(key); });
      expect_ok_or_error([&] { f.get_bool(key); });
      expect_ok_or_error([&] { f.get_string_array(key); });
      expect_ok_or_error([&] { f.get_int_array(key); });
      expect_ok_or_error([&] { f.get_float_array(key); });
    }
    for (const std::string& name : f.tensor_names()) {
      const GGUFTensorInfo& t = f.tensor(name);
      ggml_type_name(t.type);
      expect_ok_or_error([&] {
        Tensor x = f.load_f32(name);
        if (x.numel() != t.numel()) abort();
      });
    }
  });
  return 0;
}
