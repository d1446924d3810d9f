// Tensor, Arena and the safetensors reader/writer: basic contracts and bad input.
#include <cstdio>
#include <cstring>
#include <fstream>
#include <csignal>
#include <sys/resource.h>

#include "autograd/ops.h"
#include "nn/llama.h"
#include "tensor/activations.h"
#include "tensor/arena.h"
#include "tests/helpers.h"

using namespace lolcats;

TEST_CASE("tensor: shapes, reshape, dtype checks", "[tensor]") {
  Tensor t = Tensor::zeros({2, 3, 4});
  CHECK(t.numel() == 24);
  CHECK(t.nbytes() == 96);
  CHECK(t.size(-1) == 4);
  CHECK(t.shape().str() == "(2, 3, 4)");
  CHECK(reinterpret_cast<uintptr_t>(t.data()) % 64 == 0);
  Tensor r = t.reshape({6, 4});
  CHECK(r.data() == t.data());
  REQUIRE_THROWS_WITH(t.reshape({5, 5}), Catch::Contains("cannot reshape (2, 3, 4) to (5, 5)"));
  REQUIRE_THROWS_WITH(t.i32(), Catch::Contains("tensor is f32 on cpu, not i32 on cpu"));
  // A device pointer of a CPU tensor (and the reverse) cannot be taken.
  REQUIRE_THROWS_WITH(t.dev<float>(), Catch::Contains("tensor is f32 on cpu, not f32 on cuda"));
  REQUIRE_THROWS_WITH(Shape({1, 2, 3, 4, 5}), Catch::Contains("at most 4 dimensions"));
  REQUIRE_THROWS_WITH(check_shape(t, {2, 3}, "wq"), Catch::Contains("wq has shape (2, 3, 4), expected (2, 3)"));
}

TEST_CASE("arena: one allocation, aligned tensors, capacity enforced", "[tensor]") {
  std::vector<Shape> shapes = {{3, 5}, {7}, {2, 2, 2}};
  size_t bytes = Arena::bytes_for(shapes);
  CHECK(bytes == 3 * 64);  // each tensor rounded up to a 64-byte line
  Arena arena("params", bytes);
  std::vector<Tensor> ts;
  for (const Shape& s : shapes) ts.push_back(arena.alloc(s));
  for (const Tensor& t : ts) CHECK(reinterpret_cast<uintptr_t>(t.data()) % 64 == 0);
  CHECK(static_cast<char*>(ts[1].data()) - static_cast<char*>(ts[0].data()) == 64);
  CHECK(arena.used() == bytes);
  CHECK(arena.flat().numel() == int64_t(bytes / 4));
  REQUIRE_THROWS_WITH(arena.alloc({1}), Catch::Contains("arena params is full"));
  CHECK(arena.report() == "arena params: 0.00 MiB used of 0.00 MiB");
  arena.reset();
  CHECK(arena.alloc({3, 5}).data() == ts[0].data());
}

namespace {

std::string tmp_path(const std::string& name) { return "build/test_tmp_" + name; }

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

// A valid file: header JSON + data, as the format specifies.
std::string make_file(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  return out + header + data;
}

}  // namespace

TEST_CASE("activations: the ledger counts every tensor outside the arenas, per step", "[tensor]") {
  begin_step(Device::cpu);
  const ActivationStats s0 = activation_stats(Device::cpu);
  CHECK(s0.peak == s0.live);
  CHECK(s0.allocated == 0);
  {
    Tensor a = Tensor::empty({1000});  // 4000 bytes
    CHECK(activation_stats(Device::cpu).live == s0.live + 4000);
    {
      Tensor b = Tensor::zeros({500}, DType::bf16);  // 1000 more, then gone
      Tensor view = b.view(0, {10});                   // a view allocates nothing
      CHECK(activation_stats(Device::cpu).live == s0.live + 5000);
    }
    Arena arena("params", 1 << 20);  // an arena is its own category
    Tensor p = arena.alloc({100});
    const ActivationStats s = activation_stats(Device::cpu);
    CHECK(s.live == s0.live + 4000);
    CHECK(s.step_peak() == 5000);
    CHECK(s.allocated == 5000);
    CHECK(s.tensors == 2);
  }
  CHECK(activation_stats(Device::cpu).live == s0.live);
  CHECK(activation_stats(Device::cpu).step_peak() == 5000);  // until the next step begins
  begin_step(Device::cpu);
  CHECK(activation_stats(Device::cpu).step_peak() == 0);

  // A Llama forward+backward allocates more in total than it holds at once (why activations are not
  // one bump arena per step: tensor/activations.h).
  auto model = Llama::load(lolcats_test::fixture_dir() + "/tiny_llama");
  model->set_requires_grad(true);
  Tensor ids = Tensor::from_i32(std::vector<int32_t>(64, 3), {2, 32});
  Tensor targets = Tensor::from_i32(std::vector<int32_t>(64, 5), {64});
  begin_step(Device::cpu);
  backward(cross_entropy(model->forward(ids), targets));
  for (const Var& w : model->parameters()) zero_grad(w);
  const ActivationStats st = activation_stats(Device::cpu);
  CHECK(st.step_peak() > 0);
  CHECK(st.allocated > st.step_peak());
  INFO(activation_report(Device::cpu));
  CHECK(activation_report(Device::cpu).find("MiB peak in the step") != std::string::npos);
}

TEST_CASE("safetensors: reads what PyTorch wrote, round-trips what we write", "[tensor][io]") {
  // The fixtures were written by the Python safetensors package: reading them is the real test.
  const SafeTensorsFile& ref = lolcats_test::fixture("ref_ops");
  CHECK(ref.info("attention.q").dtype == "F64");
  CHECK(ref.info("attention.q").shape == std::vector<int64_t>{2, 150, 4, 16});
  CHECK(ref.info("embedding.idx").dtype == "I32");

  Tensor a = Tensor::from({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor b = Tensor::from_i32({7, -8}, {2});
  std::string path = tmp_path("roundtrip.safetensors");
  save_safetensors(path, {{"a", a}, {"b", b}}, {{"format", "pt"}});
  SafeTensorsFile f(path);
  CHECK(f.metadata().at("format") == "pt");
  CHECK(f.load("a").to_vector() == a.to_vector());
  CHECK(f.load("b").i32()[1] == -8);
  REQUIRE_THROWS_WITH(f.load("c"), Catch::Contains("has no tensor named c"));
  std::remove(path.c_str());
}

TEST_CASE("safetensors: bad files give one clear error", "[tensor][io]") {
  std::string path = tmp_path("bad.safetensors");
  std::string good_header = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  std::string data(8, '\0');
  struct Case { const char* what; std::string bytes; const char* message; };
  std::vector<Case> cases = {
      {"empty", "", "only 0 bytes"},
      {"header length past the end", make_file(good_header, data).substr(0, 20), "runs past the end"},
      {"truncated data", make_file(good_header, data.substr(0, 4)), "truncated?"},
      {"malformed JSON", make_file(R"({"w": {"dtype": )", ""), "malformed safetensors header"},
      {"unknown dtype", make_file(R"({"w":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})", data),
       "unknown dtype Q4"},
      {"shape disagrees with size", make_file(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", data),
       "shape and dtype need 12 bytes"},
      {"missing field", make_file(R"({"w":{"dtype":"F32","shape":[2]}})", data), "lacks dtype, shape or data_offsets"},
      {"dimension beyond 64 bits (found by fuzzing)",
       make_file(R"({"w":{"dtype":"F32","shape":[214748364864294967296],"data_offsets":[0,8]}})", data),
       "not a 64-bit integer"},
  };
  for (const Case& c : cases) {
    INFO(c.what);
    write_bytes(path, c.bytes);
    REQUIRE_THROWS_WITH(SafeTensorsFile(path), Catch::Contains(c.message));
  }
  write_bytes(path, make_file(good_header, data));
  CHECK_NOTHROW(SafeTensorsFile(path));
  std::remove(path.c_str());
  REQUIRE_THROWS_WITH(SafeTensorsFile(tmp_path("does_not_exist")), Catch::Contains("cannot open"));
}

TEST_CASE("atomic writes: a failed write leaves the old file and no temporary", "[tensor][io]") {
  std::string path = tmp_path("atomic.bin");
  write_file_atomic(path, "old contents");
  CHECK(read_bytes(path) == "old contents");
  write_file_atomic(path, "new contents");
  CHECK(read_bytes(path) == "new contents");
  REQUIRE_THROWS_WITH(write_file_atomic("build/no_such_dir/x.bin", "data"), Catch::Contains("cannot write"));
  // A full disk, simulated with a file-size limit: the write fails (EFBIG) part-way, the error
  // says so, the previous file is intact and no temporary is left behind.
  struct rlimit old_limit;
  getrlimit(RLIMIT_FSIZE, &old_limit);
  std::signal(SIGXFSZ, SIG_IGN);  // report the failure as an error code, not a signal
  struct rlimit small = {4096, old_limit.rlim_max};
  setrlimit(RLIMIT_FSIZE, &small);
  auto attempt = [&] { write_file_atomic(path, std::string(1 << 20, 'x')); };
  REQUIRE_THROWS_WITH(attempt(), Catch::Contains("disk full?"));
  setrlimit(RLIMIT_FSIZE, &old_limit);
  CHECK(read_bytes(path) == "new contents");
  CHECK_FALSE(std::ifstream(path + ".tmp").good());
  std::remove(path.c_str());
}

TEST_CASE("tensor: moving between devices and dtypes", "[tensor][cuda]") {
  if (!cuda_available()) SKIP_TEST("no cuda device in this build");
  std::vector<float> v = {1.0f, -2.5f, 3.14159f, 1e-3f, 65504.0f, -0.0f};
  Tensor t = Tensor::from(v, {2, 3});
  Tensor d = t.to(Device::cuda);
  CHECK(d.device() == Device::cuda);
  REQUIRE_THROWS_WITH(d.f32(), Catch::Contains("tensor is f32 on cuda, not f32 on cpu"));
  CHECK(d.to_vector() == v);                          // round trip, bit-exact
  Tensor b = d.to(Device::cuda, DType::bf16);           // cast on the device
  Tensor b_host = t.to(Device::cpu, DType::bf16);       // cast on the CPU (tensor/bf16.h)
  std::vector<uint16_t> from_device(6);
  device_download(from_device.data(), b.data(), 12);
  CHECK(std::vector<uint16_t>(b_host.bf16(), b_host.bf16() + 6) == from_device);
  Tensor c = b.clone();
  c.copy_from(b_host, "bf16 upload");                   // host -> device copy
  CHECK(c.to_vector() == b_host.to_vector());
}
