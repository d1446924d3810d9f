// Shared by the tests of PyTorch checkpoints (test_torch_pt.cpp, test_reference_checkpoint.cpp,
// test_peft_export.cpp): the .pt files and the tiny base model that tests/reference/ref_torch_pt.py
// writes, and small file helpers.
#pragma once
#include <stdlib.h>

#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "tests/helpers.h"

namespace lolcats_test {

// A file written by ref_torch_pt.py into build/fixtures/torch_pt/.
inline std::string pt_file(const std::string& name) {
  fixture("ref_torch_pt");  // fails with "run `make test`" when never generated
  const std::string path = fixture_dir() + "/torch_pt/" + name;
  if (!std::ifstream(path).good())
    FAIL(path << " is missing: delete " << fixture_dir() << "/ref_torch_pt.safetensors and run `make test`");
  return path;
}
inline std::string tiny_base() { return fixture_dir() + "/pt_tiny_llama"; }  // written by ref_torch_pt.py

// A tensor's values (any device and dtype) as doubles.
inline std::vector<double> values(const lolcats::Tensor& t) {
  lolcats::Tensor f = t.to(lolcats::Device::cpu, lolcats::DType::f32);
  return std::vector<double>(f.f32(), f.f32() + f.numel());
}

// A fresh directory /tmp/PREFIXXXXXXX.
inline std::string temp_dir(const std::string& prefix) {
  std::string tmpl = "/tmp/" + prefix + "XXXXXX";
  REQUIRE(mkdtemp(tmpl.data()) != nullptr);
  return tmpl;
}
inline std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

}  // namespace lolcats_test
