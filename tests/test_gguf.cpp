// The GGUF reader (data/gguf.h) against files written by the `gguf` Python package
// (tests/reference/ref_gguf.py) and the real SmolLM2 model file; then every kind of malformed file,
// made by corrupting a valid one, must give one clear error (never a crash: see also tests/fuzz/).
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "data/defaults.h"
#include "data/gguf.h"
#include "tests/helpers.h"

using namespace lolcats;
using lolcats_test::fixture_dir;
using json = nlohmann::json;

namespace {

const char* kModel = kDefaultModel;

// small.gguf / small.json are side files of the ref_gguf fixture (tests/reference/ref_gguf.py).
std::string side_file(const std::string& name) {
  lolcats_test::fixture("ref_gguf");  // fails with "run `make test`" when never generated
  std::string path = fixture_dir() + "/gguf/" + name;
  if (!std::ifstream(path).good())
    FAIL(path << " is missing: delete " << fixture_dir() << "/ref_gguf.safetensors and run `make test`");
  return path;
}
std::string small_gguf() { return side_file("small.gguf"); }
json small_json() {
  std::ifstream f(side_file("small.json"));
  return json::parse(f);
}

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}
void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}
template <typename T>
std::string with(std::string b, size_t at, T v) {
  std::memcpy(&b[at], &v, sizeof(T));
  return b;
}
template <typename T>
T at(const std::string& b, size_t pos) {
  T v;
  std::memcpy(&v, &b[pos], sizeof(T));
  return v;
}
// Offset of the GGUF string `s` (its u64 length prefix) in the file: where a key or tensor name is.
size_t string_at(const std::string& b, const std::string& s) {
  std::string needle(8, '\0');
  uint64_t n = s.size();
  std::memcpy(&needle[0], &n, 8);
  size_t p = b.find(needle + s);
  REQUIRE(p != std::string::npos);
  return p;
}

}  // namespace

TEST_CASE("gguf: metadata of every value type reads back as the gguf package wrote it", "[gguf]") {
  GGUFFile f(small_gguf());
  json want = small_json();
  CHECK(f.version() == 3);
  CHECK(f.keys() == want["keys"].get<std::vector<std::string>>());
  for (const auto& [key, kv] : want["metadata"].items()) {
    INFO("key " << key);
    std::string type = kv["type"];
    const json& v = kv["value"];
    REQUIRE(f.has(key));
    auto wrong = Catch::Contains("metadata key '" + key + "' is " + type + ", not");
    if (type == "STRING") {
      CHECK(f.get_string(key) == v.get<std::string>());
      REQUIRE_THROWS_WITH(f.get_int(key), wrong);
    } else if (type == "BOOL") {
      CHECK(f.get_bool(key) == v.get<bool>());
      CHECK(f.get_int(key) == int64_t(v.get<bool>()));
      REQUIRE_THROWS_WITH(f.get_string(key), wrong);
    } else if (type == "FLOAT32" || type == "FLOAT64") {
      CHECK(f.get_float(key) == v.get<double>());  // FLOAT32 values were stored as float(f32(x))
      REQUIRE_THROWS_WITH(f.get_int(key), wrong);
    } else if (type.rfind("ARRAY of ", 0) == 0) {
      std::string elem = type.substr(9);
      REQUIRE_THROWS_WITH(f.get_string(key), wrong);
      if (elem == "STRING") {
        CHECK(f.get_string_array(key) == v.get<std::vector<std::string>>());
        REQUIRE_THROWS_WITH(f.get_int_array(key), wrong);
      } else if (elem == "FLOAT32" || elem == "FLOAT64") {
        CHECK(f.get_float_array(key) == v.get<std::vector<double>>());
        REQUIRE_THROWS_WITH(f.get_int_array(key), wrong);
      } else {  // integers and bools
        std::vector<int64_t> ints;
        for (const json& x : v) ints.push_back(x.is_boolean() ? int64_t(x.get<bool>()) : x.get<int64_t>());
        CHECK(f.get_int_array(key) == ints);
        CHECK(f.get_float_array(key) == std::vector<double>(ints.begin(), ints.end()));
        REQUIRE_THROWS_WITH(f.get_string_array(key), wrong);
      }
    } else if (key == "test.u64_huge") {  // 2^63 + 5: an integer, but not one an int64 can hold
      REQUIRE_THROWS_WITH(f.get_int(key), Catch::Contains("holds 9223372036854775813, which does not fit in int64"));
    } else {  // integers
      CHECK(f.get_int(key) == v.get<int64_t>());
      CHECK(f.get_float(key) == double(v.get<int64_t>()));
      REQUIRE_THROWS_WITH(f.get_string(key), wrong);
      REQUIRE_THROWS_WITH(f.get_bool(key), wrong);
    }
  }
  CHECK_FALSE(f.has("no.such.key"));
  REQUIRE_THROWS_WITH(f.get_string("no.such.key"), Catch::Contains("has no metadata key 'no.such.key'"));
}

TEST_CASE("gguf: every supported tensor type dequantises bit-exactly like gguf.quants", "[gguf]") {
  GGUFFile f(small_gguf());
  json want = small_json();
  std::vector<std::string> names;
  for (const json& t : want["tensors"]) names.push_back(t["name"]);
  CHECK(f.tensor_names() == names);
  const uint8_t* first = f.tensor(names[0]).data;
  for (const json& t : want["tensors"]) {
    std::string name = t["name"];
    INFO("tensor " << name);
    const GGUFTensorInfo& info = f.tensor(name);
    CHECK(info.shape == t["shape"].get<std::vector<int64_t>>());  // PyTorch order
    CHECK(info.type == t["type"].get<uint32_t>());
    CHECK((info.data - first) % 64 == 0);  // general.alignment = 64 in this file
    if (name == "blk.0.attn_q.weight") {  // the Q4_K one
      REQUIRE_THROWS_WITH(f.load_f32(name),
                          Catch::Contains("tensor blk.0.attn_q.weight has type Q4_K, which this reader does not "
                                          "dequantise (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1)"));
      continue;
    }
    Tensor x = f.load_f32(name);
    CHECK(x.shape() == Shape(info.shape));
    // Exact: every format here is a product of an f16 scale and a small integer (exact in f32)
    // plus at most one f32 addition, which numpy and we round identically.
    CHECK_CLOSE(name, x.f32(), lolcats_test::fx<double>("ref_gguf", name), 0.0, 0.0);
  }
  CHECK_FALSE(f.has_tensor("nope"));
  REQUIRE_THROWS_WITH(f.tensor("nope"), Catch::Contains("has no tensor named 'nope'"));
  REQUIRE_THROWS_WITH(f.load_f32("nope"), Catch::Contains("has no tensor named 'nope'"));
  CHECK(std::string(ggml_type_name(12)) == "Q4_K");
  CHECK(std::string(ggml_type_name(30)) == "BF16");
  CHECK(std::string(ggml_type_name(4)) == "unknown");  // a retired id (Q4_2)
  CHECK(std::string(ggml_type_name(1000)) == "unknown");
}

TEST_CASE("gguf: the SmolLM2-135M-Instruct model file", "[gguf]") {
  if (!std::ifstream(kModel).good()) SKIP_TEST(kModel << " is missing: run `make model`");
  GGUFFile f(kModel);
  CHECK(f.tensor_names().size() == 272);
  CHECK(f.get_string("general.architecture") == "llama");
  CHECK(f.get_int("llama.block_count") == 30);
  CHECK(f.get_int("llama.attention.head_count_kv") == 3);
  CHECK(f.get_float("llama.rope.freq_base") == 100000.0);
  CHECK_FALSE(f.get_bool("tokenizer.ggml.add_bos_token"));
  std::vector<std::string> tokens = f.get_string_array("tokenizer.ggml.tokens");
  CHECK(tokens.size() == 49152);
  CHECK(f.get_int_array("tokenizer.ggml.token_type").size() == 49152);
  const GGUFTensorInfo& emb = f.tensor("token_embd.weight");
  CHECK(emb.shape == std::vector<int64_t>{49152, 576});
  CHECK(std::string(ggml_type_name(emb.type)) == "Q8_0");
  CHECK(emb.type == uint32_t(GGUFType::Q8_0));
  CHECK(f.tensor("blk.0.attn_q.weight").type == uint32_t(GGUFType::Q4_1));
  CHECK(f.tensor("blk.0.ffn_down.weight").shape == std::vector<int64_t>{576, 1536});
  // Rows of real tensors against gguf.quants.dequantize of the same bytes.
  for (std::string name : {"blk.0.attn_q.weight", "blk.29.ffn_down.weight", "token_embd.weight",
                           "blk.0.attn_norm.weight"}) {
    INFO("tensor " << name);
    Tensor x = f.load_f32(name);
    int64_t cols = x.size(-1);
    std::vector<double> want = lolcats_test::fx<double>("ref_gguf", "model." + name + ".rows");
    std::vector<int32_t> rows = lolcats_test::fx_i32("ref_gguf", "model." + name + ".row_idx");
    REQUIRE(want.size() == rows.size() * size_t(cols));
    std::vector<float> got;
    for (int32_t r : rows) got.insert(got.end(), x.f32() + r * cols, x.f32() + (r + 1) * cols);
    CHECK_CLOSE(name, got, want, 0.0, 0.0);
  }
}

TEST_CASE("gguf: a file cut at any byte gives an error, never a crash", "[gguf]") {
  std::string good = read_bytes(small_gguf()), path = "build/test_tmp_gguf_cut.gguf";
  // Only the padding after the last tensor's data may go; every shorter cut must be refused.
  // (Cut in place with truncate(): rewriting the file 10,000 times is 20x slower.)
  write_bytes(path, good);
  int64_t first_ok = int64_t(good.size());
  for (size_t n = good.size(); n-- > 0;) {
    if (truncate(path.c_str(), off_t(n)) != 0) FAIL("cannot truncate " << path);
    bool ok = true;
    try {
      GGUFFile f(path);
    } catch (const Error&) {
      ok = false;
    }
    if (ok && first_ok != int64_t(n) + 1) FAIL("a cut at " << n << " bytes is accepted, one at " << first_ok - 1 << " was not");
    if (ok) first_ok = int64_t(n);
  }
  CHECK(first_ok > int64_t(good.size()) - 64);
  // A few cuts, with what the message must say.
  size_t arr = string_at(good, "test.arr_str") + 8 + 12 + 4;       // element type, count, elements
  size_t name = string_at(good, "q8_0.3x64");                      // tensor info 12
  size_t ti = name + 8 + 9;                                        // n_dims, ne[0], ne[1], type, offset
  // (Cuts before byte 24 + 24 * 25 fail the header's count checks first: 24 metadata
  // entries and 25 tensor infos cannot fit. test.arr_str is the last key so that it lies beyond.)
  struct Cut { size_t n; const char* message; };
  for (Cut c : std::vector<Cut>{
           {2, "is not a GGUF file"},
           {12, "file ends inside the tensor count of the header"},
           {100, "metadata count 24 cannot fit in the 76 bytes left (truncated or corrupt)"},
           {name + 8 + 3, "the name of tensor info 12 claims 9 bytes but only 3 are left"},
           {arr + 12 + (8 + 1) + (8 + 0) + (8 + 11) + 8 + 5,  // 5 bytes into the 4th string
            "a string element of metadata key 'test.arr_str' claims 27 bytes but only 5 are left"},
           {ti + 10, "file ends inside a dimension of tensor info 'q8_0.3x64'"},
           {good.size() - 100, "runs past the end of the file"}}) {
    INFO("cut at " << c.n);
    write_bytes(path, good.substr(0, c.n));
    REQUIRE_THROWS_WITH(GGUFFile(path), Catch::Contains(c.message) && Catch::Contains(path));
  }
  std::remove(path.c_str());
}

TEST_CASE("gguf: malformed files give one clear error", "[gguf]") {
  std::string good = read_bytes(small_gguf()), path = "build/test_tmp_gguf_bad.gguf";
  size_t u32 = string_at(good, "test.u32") + 8 + 8;               // its value type, then value
  size_t arr = string_at(good, "test.arr_str") + 8 + 12;          // type, element type, count
  size_t align = string_at(good, "general.alignment") + 8 + 17 + 4;  // the value
  size_t ti = string_at(good, "q8_0.3x64") + 8 + 9;               // n_dims, ne[0], ne[1], type, offset
  size_t last = string_at(good, "blk.0.attn_q.weight") + 8 + 19;  // the Q4_K tensor (2 dims)
  std::string dup = good;
  dup.replace(string_at(good, "test.i8") + 8, 7, "test.u8");
  struct Case { const char* what; std::string bytes; std::string message; };
  std::vector<Case> cases = {
      {"empty", "", "is not a GGUF file"},
      {"wrong magic", with<char>(good, 0, 'X'), "is not a GGUF file"},
      {"version 1", with<uint32_t>(good, 4, 1), "unsupported GGUF version 1 (this reader handles versions 2 and 3)"},
      {"version 4", with<uint32_t>(good, 4, 4), "unsupported GGUF version 4"},
      {"big-endian", with<uint32_t>(good, 4, 0x03000000), "big-endian GGUF files are not supported"},
      {"absurd tensor count", with<uint64_t>(good, 8, 1ull << 50), "tensor count 1125899906842624 cannot fit"},
      {"absurd metadata count", with<uint64_t>(good, 16, ~0ull), "metadata count 18446744073709551615 cannot fit"},
      {"absurd key length", with<uint64_t>(good, 24, 1000000000000000000ull),
       "the key of metadata entry 0 claims 1000000000000000000 bytes"},
      {"absurd array count", with<uint64_t>(good, arr + 8, 1ull << 60),
       "metadata key 'test.arr_str' claims 1152921504606846976 STRING elements, more than"},
      {"unknown value type", with<uint32_t>(good, u32, 13), "metadata key 'test.u32' has unknown value type 13"},
      {"nested array", with<uint32_t>(good, arr + 4, 9), "is an array of unsupported element type 9"},
      {"duplicate key", dup, "metadata key 'test.u8' appears twice"},
      {"alignment not a power of two", with<uint32_t>(good, align, 48), "general.alignment 48 is not a power of two"},
      {"alignment 0", with<uint32_t>(good, align, 0), "general.alignment 0 is not a power of two"},
      {"5 dimensions", with<uint32_t>(good, ti, 5), "tensor q8_0.3x64 has 5 dimensions (GGUF allows at most 4)"},
      {"row not whole blocks", with<uint64_t>(good, ti + 4, 48),
       "tensor q8_0.3x64: row length 48 (numel 144) is not a multiple of the Q8_0 block size 32"},
      {"unknown tensor type", with<uint32_t>(good, ti + 20, 99), "tensor q8_0.3x64 has unknown ggml type 99"},
      {"misaligned offset", with<uint64_t>(good, ti + 24, at<uint64_t>(good, ti + 24) + 32),
       "is not a multiple of the alignment 64"},
      {"data past the end", with<uint64_t>(good, last + 4 + 16 + 4, 1ull << 20),
       "tensor blk.0.attn_q.weight (Q4_K, 2 blocks of 144 bytes at data offset 1048576) runs past the end"},
      {"data offset overflows", with<uint64_t>(good, last + 4 + 16 + 4, ~0ull << 6), "runs past the end"},
      {"huge dimensions", with<uint64_t>(with<uint64_t>(good, ti + 4, 1ull << 40), ti + 12, 1ull << 40),
       "element count overflows"},
  };
  for (const Case& c : cases) {
    INFO(c.what);
    write_bytes(path, c.bytes);
    REQUIRE_THROWS_WITH(GGUFFile(path), Catch::Contains(c.message) && Catch::Contains(path));
  }
  // Version 2 has the same layout and is accepted.
  write_bytes(path, with<uint32_t>(good, 4, 2));
  CHECK(GGUFFile(path).version() == 2);
  std::remove(path.c_str());
  REQUIRE_THROWS_WITH(GGUFFile("build/does_not_exist.gguf"), Catch::Contains("cannot open build/does_not_exist.gguf"));
  REQUIRE_THROWS_WITH(GGUFFile("build"), Catch::Contains("build is not a regular file"));
}
