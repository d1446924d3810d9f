// PyTorch checkpoints (data/torch_pt.h) against files torch.save wrote (tests/reference/ref_torch_pt.py),
// and malformed files made from them or by hand: one clear error each, never a crash (see also
// tests/fuzz/fuzz_torch_pt.cpp).
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>

#include "data/safetensors.h"
#include "data/torch_pt.h"
#include "tests/helpers.h"
#include "tests/torch_pt_fixtures.h"

using namespace lolcats;
using lolcats_test::fixture;
using lolcats_test::fixture_dir;
using lolcats_test::pt_file;
using lolcats_test::tiny_base;
using lolcats_test::values;
using lolcats_test::read_bytes;
using lolcats_test::temp_dir;

namespace {


void write_bytes(const std::string& path, const std::string& bytes) { std::ofstream(path, std::ios::binary) << bytes; }


// The error opening (or, with `load`, loading every tensor of) `path` throws: must be lolcats::Error.
std::string error_of(const std::string& path, bool load = false) {
  try {
    TorchCheckpoint f(path);
    if (load)
      for (const std::string& n : f.names()) f.load(n);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}


}  // namespace

TEST_CASE("torch.save files: every tensor equals what PyTorch saved", "[pt]") {
  TorchCheckpoint f(pt_file("basic.pt"));
  CHECK(f.state_dict_key() == "model_state_dict");
  CHECK(f.names() == std::vector<std::string>{"bf16", "f16", "f32", "four_d", "pair_head", "pair_tail", "param",
                                              "row_of_big", "transposed"});
  CHECK(f.info("f32").dtype == "F32");
  CHECK(f.info("bf16").dtype == "BF16");
  CHECK(f.info("f16").dtype == "F16");
  CHECK(f.info("row_of_big").storage_offset == 10);
  CHECK(f.info("pair_tail").storage_offset == 3);
  CHECK(f.info("pair_head").storage == f.info("pair_tail").storage);
  CHECK(f.info("four_d").shape == std::vector<int64_t>{2, 3, 4, 5});
  for (const std::string& name : f.names()) {
    if (name == "transposed") continue;
    INFO(name);
    // bf16 and f16 widen to f32 exactly: the values must be identical, not close.
    CHECK(values(f.load(name)) == fixture("ref_torch_pt").load_f64("basic." + name));
  }

  // bf16 into a bf16 tensor: the stored bits, unconverted.
  Tensor b = Tensor::empty({4, 5}, DType::bf16);
  f.load_into("bf16", b);
  CHECK(values(b) == fixture("ref_torch_pt").load_f64("basic.bf16"));
  Tensor wrong = Tensor::empty({5, 4});
  CHECK_THROWS_WITH(f.load_into("f32", wrong), Catch::Contains("has shape (2, 3), but (5, 4)"));

  // A transposed view is listed but refused, with its strides.
  CHECK_FALSE(f.info("transposed").contiguous);
  CHECK(f.info("transposed").strides == std::vector<int64_t>{1, 4});
  CHECK_THROWS_WITH(f.load("transposed"), Catch::Contains("not contiguous") &&
                                              Catch::Contains(".contiguous()"));
  CHECK_THROWS_WITH(f.load("missing"), Catch::Contains("has no tensor named missing"));

  // A module's bare state dict in pickle protocol 4 (memo, frames, STACK_GLOBAL, BUILD).
  TorchCheckpoint plain(pt_file("plain.pt"));
  CHECK(plain.state_dict_key().empty());
  CHECK(plain.names() == std::vector<std::string>{"bias", "weight"});
  for (const std::string& name : plain.names())
    CHECK(values(plain.load(name)) == fixture("ref_torch_pt").load_f64("plain." + name));
}

TEST_CASE("torch.save files: what cannot be read is one clear error", "[pt]") {
  using Catch::Contains;
  CHECK_THAT(error_of(pt_file("legacy.pt")), Contains("legacy torch.save file"));
  CHECK_THAT(error_of(pt_file("deflated.pt")), Contains("is compressed (zip method 8)"));
  CHECK_THAT(error_of("/nonexistent.pt"), Contains("cannot open /nonexistent.pt"));

  const std::string dir = temp_dir("lolcats_pt_"), bad = dir + "/bad.pt";
  write_bytes(bad, "not a checkpoint at all");
  CHECK_THAT(error_of(bad), Contains("is not a PyTorch checkpoint"));

  // Every truncation of a real file fails cleanly, naming the file.
  const std::string good = read_bytes(pt_file("basic.pt"));
  for (size_t n = 0; n < good.size(); n += 37) {
    write_bytes(bad, good.substr(0, n));
    const std::string e = error_of(bad, true);
    INFO("truncated to " << n << " bytes");
    CHECK_THAT(e, Contains(bad));
  }

  // A flipped byte in a storage: the CRC-32 catches it when the tensor is loaded.
  TorchCheckpoint f(pt_file("basic.pt"));
  const size_t pos = good.find(std::string(reinterpret_cast<const char*>(f.info("four_d").data), 16));
  REQUIRE(pos != std::string::npos);
  std::string flipped = good;
  flipped[pos] ^= 0x40;
  write_bytes(bad, flipped);
  TorchCheckpoint g(bad);
  CHECK_THROWS_WITH(g.load("four_d"), Contains("fails its CRC-32 check"));

  // Hand-made pickles in a valid archive: a float32 storage of 4 elements, tensor "a" of size 2
  // at `offset`.
  auto archive = [&](const std::string& pickle) {
    ZipWriter z;
    z.add("x/data.pkl", pickle);
    const float storage[4] = {1, 2, 3, 4};
    z.add("x/data/0", std::string(reinterpret_cast<const char*>(storage), sizeof storage));
    write_bytes(bad, z.finish());
  };
  auto uni = [](const std::string& v) {  // BINUNICODE
    std::string o = "X";
    const uint32_t n = uint32_t(v.size());
    return o.append(reinterpret_cast<const char*>(&n), 4) + v;
  };
  auto tensor_pickle = [&](char offset, const char* key) {
    return std::string("\x80\x02}(") + uni("a") + "ctorch._utils\n_rebuild_tensor_v2\n((" + uni("storage") +
           "ctorch\nFloatStorage\n" + uni(key) + uni("cpu") + "K\x04tQK" + std::string(1, offset) +
           "K\x02\x85K\x01\x85\x89NtRu.";
  };
  archive(tensor_pickle(2, "0"));
  CHECK(values(TorchCheckpoint(bad).load("a")) == std::vector<double>{3, 4});
  archive(tensor_pickle(3, "0"));
  CHECK_THAT(error_of(bad), Contains("runs past its storage x/data/0 (4 elements)"));
  archive(tensor_pickle(0, "7"));
  CHECK_THAT(error_of(bad), Contains("storage 7 is not in the archive"));
  archive(std::string("\x80\x02}\xff."));
  CHECK_THAT(error_of(bad), Contains("unknown pickle opcode 0xff at byte 3"));
  archive(std::string("\x80\x02(") + uni("abcdef").substr(0, 7));
  CHECK_THAT(error_of(bad), Contains("data.pkl is truncated"));
  archive(std::string("\x80\x02]."));
  CHECK_THAT(error_of(bad), Contains("the pickle holds a list, not a dict of tensors"));
  remove(bad.c_str());
  rmdir(dir.c_str());
}

TEST_CASE("torch.save files: ours read back, dtype and values intact", "[pt]") {
  const std::string dir = temp_dir("lolcats_pt_"), path = dir + "/ours.pt";
  Tensor a = Tensor::from({1.5f, -2.25f, 3e-20f, 7.0f, 0.0f, -0.0f}, {2, 3});
  Tensor b = a.to(Device::cpu, DType::bf16);
  save_torch_state_dict(path, {{"a", a}, {"model.b", b}});
  TorchCheckpoint f(path);
  CHECK(f.state_dict_key() == "model_state_dict");
  CHECK(f.info("a").dtype == "F32");
  CHECK(f.info("model.b").dtype == "BF16");
  CHECK(values(f.load("a")) == values(a));
  CHECK(values(f.load("model.b")) == values(b));
  remove(path.c_str());
  rmdir(dir.c_str());
}
