// The Alpaca pipeline (data/alpaca.*, data/token_cache.*): reading (JSON array / JSONL, zstd or
// not, clear errors), template, tokens and labels, packing, split and shuffle against an independent
// Python transcription tokenised by Hugging Face (tests/reference/ref_alpaca.py), and the token cache
// (hit, miss on a changed setting, corrupt files rebuilt).
#include <unistd.h>
#include <zstd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>

#include "data/alpaca.h"
#include "data/defaults.h"
#include "data/gguf.h"
#include "data/token_cache.h"
#include "data/tokenizer.h"
#include "tests/helpers.h"

using namespace lolcats;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

const char* kGguf = kDefaultModel;
const char* kRef = "ref_alpaca";

const Tokenizer& smollm2() {
  static const Tokenizer tok = [] {
    if (!std::ifstream(kGguf).good()) FAIL(kGguf << " is missing: run `make model`");
    return Tokenizer::from_gguf(GGUFFile(kGguf));
  }();
  return tok;
}

// The real data file, read once.
const std::vector<AlpacaRecord>& real_records() {
  static const std::vector<AlpacaRecord> r = read_alpaca(kDefaultAlpaca);
  return r;
}

// A fresh folder under /tmp, removed when the object goes away.
struct TempDir {
  std::string path;
  TempDir() {
    char dir[] = "/tmp/lolcats_alpaca_XXXXXX";
    REQUIRE(mkdtemp(dir) != nullptr);
    path = dir;
  }
  ~TempDir() { fs::remove_all(path); }
  std::string operator/(const std::string& name) const { return path + "/" + name; }
};

void write(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

std::string zstd(const std::string& bytes) {
  std::string out(ZSTD_compressBound(bytes.size()), '\0');
  size_t n = ZSTD_compress(out.data(), out.size(), bytes.data(), bytes.size(), 3);
  REQUIRE(!ZSTD_isError(n));
  out.resize(n);
  return out;
}

json to_json(const AlpacaRecord& r) { return {{"instruction", r.instruction}, {"input", r.input}, {"output", r.output}}; }

std::string jsonl(const std::vector<AlpacaRecord>& rs) {
  std::string s;
  for (const auto& r : rs) s += to_json(r).dump() + "\n";
  return s;
}

bool same(const std::vector<AlpacaRecord>& a, const std::vector<AlpacaRecord>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); i++)
    if (a[i].instruction != b[i].instruction || a[i].input != b[i].input || a[i].output != b[i].output) return false;
  return true;
}

bool same(const Chunks& a, const Chunks& b) { return a.T == b.T && a.inputs == b.inputs && a.targets == b.targets; }

// The order shuffle_chunks gives n chunks: chunk i of the result is chunk order[i] of the input.
std::vector<int32_t> shuffle_order(int64_t n, uint64_t seed) {
  Chunks c;
  c.T = 1;
  for (int32_t i = 0; i < n; i++) c.inputs.push_back(i), c.targets.push_back(i);
  shuffle_chunks(c, seed);
  return c.inputs;
}

// ref_alpaca.py's chunk_hashes: sum_t (v[t] + 1000) * 31^(T-1-t) mod (2^31 - 1).
std::vector<int32_t> chunk_hashes(const std::vector<int32_t>& m, int T) {
  const int64_t P = 2147483647;
  std::vector<int64_t> w(T);
  for (int t = T - 1, p = 1; t >= 0; t--) w[t] = p, p = int32_t(int64_t(p) * 31 % P);
  std::vector<int32_t> out;
  for (size_t r = 0; r < m.size() / T; r++) {
    int64_t s = 0;
    for (int t = 0; t < T; t++) s += (int64_t(m[r * T + t]) + 1000) * w[t];
    out.push_back(int32_t(s % P));
  }
  return out;
}

// Our loading of the first `n` real records to a JSONL file in `dir` (the reference's input).
std::string first_records_file(const TempDir& dir, size_t n) {
  std::string path = dir / "first.jsonl";
  write(path, jsonl({real_records().begin(), real_records().begin() + n}));
  return path;
}

AlpacaOptions quiet_options(const std::string& cache_dir, int T = 128) {
  AlpacaOptions o;
  o.T = T;
  o.cache_dir = cache_dir;
  o.verbose = false;
  return o;
}

}  // namespace

TEST_CASE("alpaca: the real file reads as Python's json reads it", "[alpaca]") {
  const auto& r = real_records();
  CHECK(int64_t(r.size()) == lolcats_test::fx_i32(kRef, "n_records")[0]);
  int64_t with_input = 0, empty_output = 0;
  for (const auto& x : r) with_input += !x.input.empty(), empty_output += x.output.empty();
  CHECK(with_input == lolcats_test::fx_i32(kRef, "n_with_input")[0]);
  CHECK(empty_output == lolcats_test::fx_i32(kRef, "n_empty_output")[0]);
  CHECK(r[0].instruction == "Give three tips for staying healthy.");
}

TEST_CASE("alpaca: template, tokens and labels", "[alpaca]") {
  CHECK(alpaca_prompt({"Add.", "", "x"}) ==
        "Below is an instruction that describes a task. Write a response that appropriately completes the "
        "request.\n\n### Instruction:\nAdd.\n\n### Response:\n");
  CHECK(alpaca_prompt({"Add.", "1 2", "x"}) ==
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n### Instruction:\nAdd.\n\n### Input:\n1 2"
        "\n\n### Response:\n");
  const Tokenizer& tok = smollm2();
  CHECK(tok.bos_id() == lolcats_test::fx_i32(kRef, "bos_id")[0]);
  CHECK(tok.eos_id() == lolcats_test::fx_i32(kRef, "eos_id")[0]);
  AlpacaRecord r{"Say hi.", "", "Hi!"};
  TokenizedExample e = tokenize_example(tok, r);
  std::vector<int32_t> p = tok.encode(alpaca_prompt(r)), o = tok.encode("Hi!");
  REQUIRE(e.ids.size() == 1 + p.size() + o.size() + 1);
  CHECK(e.ids.front() == tok.bos_id());
  CHECK(e.ids.back() == tok.eos_id());
  for (size_t i = 0; i < e.ids.size(); i++) CHECK(e.labels[i] == (i <= p.size() ? kIgnoreLabel : e.ids[i]));
  // An empty output still trains the EOS.
  TokenizedExample empty = tokenize_example(tok, {"Nothing.", "", ""});
  CHECK(empty.labels.back() == tok.eos_id());
  CHECK(std::count(empty.labels.begin(), empty.labels.end(), kIgnoreLabel) == int64_t(empty.labels.size()) - 1);
  // A tokenizer without BOS: none is added.
  Tokenizer tiny = Tokenizer::from_vocab({"a", "b", "<e>"}, {}, {1, 1, 3}, -1, 2, "gpt2");
  TokenizedExample t = tokenize_example(tiny, {"a", "", "b"});
  CHECK(t.ids.back() == 2);
  CHECK(t.labels.back() == 2);
  CHECK(t.labels.front() == kIgnoreLabel);
  CHECK(int64_t(t.ids.size()) == int64_t(tiny.encode(alpaca_prompt({"a", "", "b"})).size()) + 2);
}

TEST_CASE("alpaca: packing by hand: next-token targets, tail and label-less chunks dropped", "[alpaca]") {
  // Stream: ids 10..22 (13 entries); labels -100 except ids 15, 16 and 21.
  TokenizedExample a{{10, 11, 12, 13, 14, 15, 16}, {-100, -100, -100, -100, -100, 15, 16}};
  TokenizedExample b{{17, 18, 19, 20, 21, 22}, {-100, -100, -100, -100, 21, -100}};
  Chunks c = pack({a, b}, 3);
  // floor((13-1)/3) = 4 candidate chunks, reading s[0..3], s[3..6], s[6..9], s[9..12]:
  //   targets (labels of s[1..3]) = all -100: dropped;  (s[4..6]) = -100 15 16;
  //   (s[7..9]) = all -100: dropped;  (s[10..12]) = -100 21 -100.
  REQUIRE(c.count() == 2);
  CHECK(c.inputs == std::vector<int32_t>{13, 14, 15, 19, 20, 21});
  CHECK(c.targets == std::vector<int32_t>{-100, 15, 16, -100, 21, -100});
  CHECK(c.label_tokens() == 3);
  CHECK(c.label_tokens(1) == 2);  // first chunk only: 15, 16
  CHECK(c.label_tokens(5) == 3);  // more than there are: all
  // 13 entries at T=4: floor(12/4) = 3 chunks (the last reads s[8..12]); at T=12 one; at T=13 none.
  CHECK(pack({a, b}, 4).count() == 2);  // s[0..4] has no label: 3 minus 1
  CHECK(pack({a, b}, 12).count() == 1);
  CHECK(pack({a, b}, 13).count() == 0);
  // A range of examples: only b.
  Chunks only_b = pack({a, b}, 2, 1, 2);
  CHECK(only_b.inputs == std::vector<int32_t>{19, 20});  // s = 17..22: chunks s[0..2], s[2..4]: first dropped
  CHECK_THROWS_WITH(pack({a}, 0), Catch::Contains("T must be at least 1"));
}

TEST_CASE("alpaca: shuffle is a seeded permutation", "[alpaca]") {
  std::vector<int32_t> o0 = shuffle_order(1000, 0), o0b = shuffle_order(1000, 0), o1 = shuffle_order(1000, 1);
  CHECK(o0 == o0b);
  CHECK(o0 != o1);
  std::vector<int32_t> sorted = o0;
  std::sort(sorted.begin(), sorted.end());
  for (int32_t i = 0; i < 1000; i++) REQUIRE(sorted[i] == i);
  int fixed = 0;
  for (int32_t i = 0; i < 1000; i++) fixed += o0[i] == i;
  CHECK(fixed < 10);  // a uniform permutation has ~1 fixed point
  // Rows move whole: inputs and targets together.
  Chunks c{2, {1, 2, 3, 4, 5, 6}, {-1, -2, -3, -4, -5, -6}};
  shuffle_chunks(c, 7);
  for (int i = 0; i < 3; i++) CHECK(c.targets[2 * i] == -c.inputs[2 * i]);
  CHECK(shuffle_order(0, 0).empty());
  CHECK(shuffle_order(1, 0) == std::vector<int32_t>{0});
}

TEST_CASE("alpaca: first 300 real records equal the Python reference (T=128)", "[alpaca]") {
  const Tokenizer& tok = smollm2();
  std::vector<AlpacaRecord> first(real_records().begin(), real_records().begin() + 300);
  std::vector<TokenizedExample> ex = tokenize_examples(tok, first);
  Chunks val = pack(ex, 128, 0, 200), train = pack(ex, 128, 200);
  CHECK(val.inputs == lolcats_test::fx_i32(kRef, "small.val.inputs"));
  CHECK(val.targets == lolcats_test::fx_i32(kRef, "small.val.targets"));
  CHECK(train.inputs == lolcats_test::fx_i32(kRef, "small.train.inputs"));
  CHECK(train.targets == lolcats_test::fx_i32(kRef, "small.train.targets"));
  // load_alpaca on the same 300 records (JSONL, no cache): val in order, train shuffled.
  TempDir dir;
  AlpacaData d = load_alpaca(first_records_file(dir, 300), tok, quiet_options(""));
  CHECK(d.n_records == 300);
  CHECK(same(d.val, val));
  std::vector<int32_t> order = shuffle_order(train.count(), 0);
  REQUIRE(d.train.count() == train.count());
  bool rows_match = true;
  for (int64_t i = 0; i < train.count(); i++)
    rows_match &= std::equal(d.train.inputs.begin() + i * 128, d.train.inputs.begin() + (i + 1) * 128,
                             train.inputs.begin() + order[i] * 128);
  CHECK(rows_match);
  CHECK(d.train.label_tokens() == train.label_tokens());
  // The split is configurable: val_rows = 10 packs rows 0..9 only.
  AlpacaOptions o = quiet_options("");
  o.val_rows = 10;
  CHECK(same(load_alpaca(first_records_file(dir, 300), tok, o).val, pack(ex, 128, 0, 10)));
  o.max_train_chunks = 5;
  AlpacaData cut = load_alpaca(first_records_file(dir, 300), tok, o);
  CHECK(cut.train.count() == 5);
}

TEST_CASE("alpaca: JSON array, JSONL, zstd and plain read the same", "[alpaca]") {
  TempDir dir;
  // Brackets, braces, commas and escaped quotes inside strings; non-ASCII; an extra field with a
  // nested value (ignored); an empty input and output.
  std::vector<AlpacaRecord> want = {
      {"Fix [this], {that}: \"quoted\" \\ back", "x = [1, {2}]", "caf\xc3\xa9 \xe6\x97\xa5"},
      {"Second\nline", "", ""},
      {"Third", "in", "out ]}"},
  };
  json arr = json::array();
  for (const auto& r : want) arr.push_back(to_json(r));
  arr[1]["extra"] = {{"nested", {1, 2, "]"}}};
  std::string array_text = arr.dump(2), lines = jsonl(want) + "\n  \n";  // blank lines are skipped
  write(dir / "a.json", array_text);
  write(dir / "a.jsonl", lines);
  write(dir / "a.json.zst", zstd(array_text));
  write(dir / "b.data", zstd(lines));                  // the magic decides, not the name
  write(dir / "c.jsonl.zst", zstd(lines.substr(0, 40)) + zstd(lines.substr(40)));  // two frames
  write(dir / "d.json", "\xEF\xBB\xBF" + arr.dump());  // UTF-8 BOM, one line
  for (const char* f : {"a.json", "a.jsonl", "a.json.zst", "b.data", "c.jsonl.zst", "d.json"}) {
    INFO(f);
    CHECK(same(read_alpaca(dir / f), want));
  }
  write(dir / "empty.json", "[ ]");
  CHECK(read_alpaca(dir / "empty.json").empty());
}

TEST_CASE("alpaca: malformed input is one clear error naming the file and record", "[alpaca]") {
  TempDir dir;
  auto error_of = [&](const std::string& name, const std::string& bytes) {
    write(dir / name, bytes);
    try {
      read_alpaca(dir / name);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  std::string ok = R"({"instruction": "a", "input": "", "output": "b"})";
  auto has = [](const std::string& msg, std::vector<std::string> parts) {
    INFO(msg);
    for (const auto& p : parts) CHECK(msg.find(p) != std::string::npos);
  };
  has(error_of("bad.jsonl", ok + "\n" + ok + "\n\n{\"instruction\": \"a\", \"input\": \n" + ok),
      {"bad.jsonl", "record 2 (line 4)", "not a valid Alpaca record", "parse error"});
  has(error_of("missing.jsonl", ok + "\n" + R"({"instruction": "a", "input": ""})"),
      {"missing.jsonl", "record 1 (line 2)", "no \"output\" field"});
  has(error_of("number.jsonl", R"({"instruction": "a", "input": "", "output": 3})"),
      {"record 0 (line 1)", "\"output\" is not a string"});
  has(error_of("notobj.json", "[\n" + ok + ",\n  [1, 2]\n]"), {"notobj.json", "record 1 (line 3)", "array, not an object"});
  has(error_of("notobj.jsonl", ok + "\n\"just a string\"\n"), {"record 1 (line 2)", "not an object"});
  has(error_of("open.json", "[" + ok + ", " + ok), {"open.json", "record 1", "not closed"});
  has(error_of("trailing.json", "[" + ok + "] x"), {"trailing.json", "after the closing"});
  has(error_of("comma.json", "[" + ok + ",]"), {"record 1", "parse error"});
  has(error_of("other.txt", "hello"), {"other.txt", "expected a JSON array"});
  has(error_of("empty.jsonl", "  \n"), {"empty.jsonl", "empty"});
  std::string z = zstd(jsonl(std::vector<AlpacaRecord>(50, {"instruction", "input", "output"})));
  has(error_of("cut.jsonl.zst", z.substr(0, z.size() - 5)), {"cut.jsonl.zst", "truncated zstd"});
  has(error_of("garbled.zst", z.substr(0, 4) + std::string(40, 'x')), {"garbled.zst", "corrupt zstd"});
  CHECK_THROWS_WITH(read_alpaca(dir / "absent.json"), Catch::Contains("absent.json") && Catch::Contains("No such file"));
}

TEST_CASE("alpaca: token cache hits, misses on a changed setting, rebuilds a corrupt file", "[alpaca]") {
  const Tokenizer& tok = smollm2();
  TempDir dir;
  std::string data = first_records_file(dir, 300), cache = dir / "cache";
  AlpacaData first = load_alpaca(data, tok, quiet_options(cache));
  CHECK(!first.cache_hit);
  REQUIRE(fs::exists(first.cache_file));
  AlpacaData second = load_alpaca(data, tok, quiet_options(cache));
  CHECK(second.cache_hit);
  CHECK(second.cache_file == first.cache_file);
  CHECK(same(second.train, first.train));
  CHECK(same(second.val, first.val));

  auto rebuilt_ok = [&](const char* what) {
    INFO(what);
    AlpacaData d = load_alpaca(data, tok, quiet_options(cache));
    CHECK(!d.cache_hit);  // detected and rebuilt ...
    CHECK(same(d.train, first.train));
    CHECK(load_alpaca(data, tok, quiet_options(cache)).cache_hit);  // ... and the rebuilt file is good
  };
  std::string good = read_file(first.cache_file);
  for (size_t at : {size_t(3), size_t(17), good.size() / 2, good.size() - 1}) {  // magic, key, payload, frame end
    std::string bad = good;
    bad[at] ^= 0x40;
    write(first.cache_file, bad);
    rebuilt_ok(("a flipped byte at " + std::to_string(at)).c_str());
  }
  write(first.cache_file, good.substr(0, good.size() - 100));
  rebuilt_ok("truncated payload");
  write(first.cache_file, good.substr(0, 20));
  rebuilt_ok("truncated header");
  write(first.cache_file, "");
  rebuilt_ok("empty file");

  // Every setting is part of the key; max_train_chunks is not (applied after the cache).
  for (auto change : std::vector<std::function<void(AlpacaOptions&)>>{
           [](AlpacaOptions& o) { o.T = 64; }, [](AlpacaOptions& o) { o.val_rows = 100; },
           [](AlpacaOptions& o) { o.seed = 1; }}) {
    AlpacaOptions o = quiet_options(cache);
    change(o);
    AlpacaData d = load_alpaca(data, tok, o);
    CHECK(!d.cache_hit);
    CHECK(d.cache_file != first.cache_file);
  }
  AlpacaOptions cut = quiet_options(cache);
  cut.max_train_chunks = 3;
  AlpacaData c = load_alpaca(data, tok, cut);
  CHECK(c.cache_hit);
  CHECK(c.train.count() == 3);
  // The data file's bytes are part of the key: one changed record misses.
  write(data, read_file(data) + jsonl({{"one more", "", "record"}}));
  CHECK(!load_alpaca(data, tok, quiet_options(cache)).cache_hit);
  // An unwritable cache folder is a warning, not a failure.
  write(dir / "file", "x");
  CHECK(load_alpaca(data, tok, quiet_options(dir / "file/sub")).val.count() == first.val.count());
}

TEST_CASE("alpaca: the whole 52k file at T=1024 equals the Python reference", "[alpaca][slow]") {
  const Tokenizer& tok = smollm2();
  TempDir dir;
  AlpacaOptions o = quiet_options(dir / "cache", 1024);
  AlpacaData d = load_alpaca(kDefaultAlpaca, tok, o);
  AlpacaData hit = load_alpaca(kDefaultAlpaca, tok, o);
  CHECK(!d.cache_hit);
  CHECK(hit.cache_hit);
  CHECK(same(hit.train, d.train));
  CHECK(same(hit.val, d.val));
  CHECK(chunk_hashes(d.val.inputs, 1024) == lolcats_test::fx_i32(kRef, "full.val.x_hash"));
  CHECK(chunk_hashes(d.val.targets, 1024) == lolcats_test::fx_i32(kRef, "full.val.y_hash"));
  // Training chunks come shuffled: undo the permutation to compare with the reference's order.
  std::vector<int32_t> want_x = lolcats_test::fx_i32(kRef, "full.train.x_hash");
  std::vector<int32_t> want_y = lolcats_test::fx_i32(kRef, "full.train.y_hash");
  REQUIRE(d.train.count() == int64_t(want_x.size()));
  std::vector<int32_t> order = shuffle_order(d.train.count(), 0), got_x = chunk_hashes(d.train.inputs, 1024),
                       got_y = chunk_hashes(d.train.targets, 1024);
  int64_t bad = 0;
  for (int64_t i = 0; i < d.train.count(); i++) bad += got_x[i] != want_x[order[i]] || got_y[i] != want_y[order[i]];
  CHECK(bad == 0);
  CHECK(d.train.label_tokens() == lolcats_test::fx_i32(kRef, "full.train.label_tokens")[0]);
  CHECK(d.val.label_tokens() == lolcats_test::fx_i32(kRef, "full.val.label_tokens")[0]);
}
