// The tokenizer and chat templates against Hugging Face (tests/reference/ref_tokenizer.py):
// 1100 strings (English, code, many scripts, emoji sequences, digits, whitespace runs,
// contractions, special tokens in text, long strings) through SmolLM2's tokenizer (from its
// tokenizer.json and from the GGUF file), transformers' own conversion of the GGUF, and a
// Llama-3-layout tokenizer; chat templates rendered by transformers' Jinja.
#include <unistd.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "data/chat_template.h"
#include "data/defaults.h"
#include "data/gguf.h"
#include "data/tokenizer.h"
#include "tests/helpers.h"

using namespace lolcats;
using json = nlohmann::json;

namespace {

const char* kGguf = kDefaultModel;

std::string fixture_dir() {
  lolcats_test::fixture("ref_tokenizer");  // fails with a clear message when not generated
  const char* dir = std::getenv("LOLCATS_FIXTURES");
  return dir ? dir : "build/fixtures";
}

const json& cases() {
  static const json j = [] {
    std::ifstream in(fixture_dir() + "/tokenizer_cases.json");
    return json::parse(in);
  }();
  return j;
}

const json& entry(const std::string& name) {
  for (const json& e : cases()["tokenizers"])
    if (e["name"] == name) return e;
  throw std::runtime_error("no tokenizer " + name + " in tokenizer_cases.json");
}

const Tokenizer& tokenizer(const std::string& name) {
  static std::map<std::string, Tokenizer> cache;
  auto it = cache.find(name);
  if (it == cache.end())
    it = cache.emplace(name, Tokenizer::from_json(fixture_dir() + "/" + entry(name)["json"].get<std::string>())).first;
  return it->second;
}

// Printable form of a test string for failure messages.
std::string escaped(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c == '\n') out += "\\n";
    else if (c == '\t') out += "\\t";
    else if (c == '\r') out += "\\r";
    else if (c < 0x20 || c == 0x7F) out += strfmt("\\x%02x", c);
    else out += char(c);
  }
  return out.size() > 300 ? out.substr(0, 300) + "..." : out;
}

std::string show(const std::vector<int32_t>& ids) {
  std::string out = "[";
  for (size_t i = 0; i < ids.size() && i < 60; i++) out += (i ? ", " : "") + std::to_string(ids[i]);
  return out + (ids.size() > 60 ? ", ...]" : "]");
}

// Hugging Face returns decoded text as a Rust String: bytes that are not valid UTF-8 (here: a
// character whose lead byte had no token and was dropped) each become U+FFFD, one per maximal
// invalid subsequence (Unicode's "substitution of maximal subparts"). Our decode returns the raw
// bytes; this maps them the same way for the comparison.
std::string utf8_lossy(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    uint8_t c = uint8_t(s[i]);
    int len = c < 0x80 ? 1 : c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
    uint8_t lo = c == 0xE0 ? 0xA0 : c == 0xF0 ? 0x90 : 0x80, hi = c == 0xED ? 0x9F : c == 0xF4 ? 0x8F : 0xBF;
    int k = len == 0 ? 0 : 1;  // bytes of a valid prefix of one character
    while (k > 0 && k < len && i + k < s.size()) {
      uint8_t d = uint8_t(s[i + k]);
      if (d < (k == 1 ? lo : 0x80) || d > (k == 1 ? hi : 0xBF)) break;
      k++;
    }
    if (len > 0 && k == len) out.append(s, i, len);
    else out += "\xEF\xBF\xBD";  // U+FFFD
    i += std::max(k, 1);
  }
  return out;
}

// Encodes every case string and compares with HF's ids, decodes and compares with HF's text;
// reports the number of mismatches and the first one in full.
void check_against_hf(const Tokenizer& tok, const json& e) {
  const json& texts = cases()["texts"];
  int bad_ids = 0, bad_decode = 0, bad_skip = 0, bad_round = 0;
  std::string first;
  for (size_t i = 0; i < texts.size(); i++) {
    std::string text = texts[i];
    std::vector<int32_t> want = e["ids"][i], got = tok.encode(text);
    if (got != want && bad_ids++ == 0)
      first += "encode mismatch on \"" + escaped(text) + "\"\n  ours: " + show(got) + "\n  HF:   " + show(want) + "\n";
    std::string dec = utf8_lossy(tok.decode(want));
    if (dec != e["decoded"][i].get<std::string>() && bad_decode++ == 0)
      first += "decode mismatch on " + show(want) + ": \"" + escaped(dec) + "\"\n";
    if (utf8_lossy(tok.decode(want, true)) != e["decoded_skip"][i].get<std::string>() && bad_skip++ == 0)
      first += "decode(skip_special) mismatch on " + show(want) + "\n";
    // decode(encode(s)) == s byte for byte, wherever HF round-trips too (it does not when the
    // text holds a byte the vocabulary has no token for: SmolLM2 lacks 0x04, 0x06, ...).
    if (e["decoded"][i] == text && tok.decode(got) != text && bad_round++ == 0)
      first += "round trip fails on \"" + escaped(text) + "\"\n";
  }
  INFO(e["name"].get<std::string>() << ": " << texts.size() << " strings\n" << first);
  CHECK(bad_ids == 0);
  CHECK(bad_decode == 0);
  CHECK(bad_skip == 0);
  CHECK(bad_round == 0);
}

std::string temp_dir() {
  char dir[] = "/tmp/lolcats_tokenizer_XXXXXX";
  REQUIRE(mkdtemp(dir) != nullptr);
  return dir;
}

std::string write_file(const std::string& dir, const std::string& bytes) {
  std::string path = dir + "/tokenizer.json";
  std::ofstream(path, std::ios::binary) << bytes;
  return path;
}

}  // namespace

TEST_CASE("tokenizer: tokenizer.json encodes and decodes as Hugging Face", "[tokenizer]") {
  for (const char* name : {"smollm2", "smollm2_gguf", "llama3"}) {
    const json& e = entry(name);
    const Tokenizer& tok = tokenizer(name);
    CHECK(tok.vocab_size() == e["vocab_size"].get<int>());
    CHECK(tok.bos_id() == e["bos_id"].get<int>());
    CHECK(tok.eos_id() == e["eos_id"].get<int>());
    // HF's encode with special tokens: BOS in front for Llama 3, nothing for SmolLM2.
    CHECK(tok.encode("Hello world", tok.adds_bos()) == e["with_special"].get<std::vector<int32_t>>());
    check_against_hf(tok, e);
  }
}

TEST_CASE("tokenizer: the GGUF file's tokenizer equals SmolLM2's", "[tokenizer]") {
  if (!std::ifstream(kGguf).good()) FAIL(kGguf << " is missing: run `make model`");
  GGUFFile f(kGguf);
  Tokenizer tok = Tokenizer::from_gguf(f);
  const json& e = entry("smollm2");
  CHECK(tok.vocab_size() == e["vocab_size"].get<int>());
  CHECK(tok.bos_id() == 1);  // tokenizer.ggml.bos_token_id, <|im_start|>
  CHECK(tok.eos_id() == 2);  // <|im_end|>
  CHECK(!tok.adds_bos());
  check_against_hf(tok, e);
  CHECK(chat_format_for(f.get_string("tokenizer.chat_template")) == ChatFormat::chatml);
}

TEST_CASE("tokenizer: lookups, special tokens and partial UTF-8", "[tokenizer]") {
  const Tokenizer& tok = tokenizer("smollm2");
  CHECK(tok.id_of("<|im_start|>") == 1);
  CHECK(tok.is_special(1));
  CHECK(tok.token(tok.id_of("Ġthe")) == "Ġthe");
  CHECK(tok.id_of("no such token, surely") == -1);
  CHECK(tok.decode({1, tok.id_of("Ġthe"), 2}, true) == " the");
  // A family emoji is 25 bytes in several tokens, some of which hold part of a character: decoded
  // one at a time and joined, they must give back the same bytes.
  std::string family = "👨‍👩‍👧‍👦";
  std::vector<int32_t> ids = tok.encode(family);
  std::string joined;
  bool some_partial = false;
  for (int32_t id : ids) {
    std::string piece = tok.decode({id});
    some_partial |= (uint8_t(piece.back()) & 0xC0) == 0x80 || uint8_t(piece[0]) >= 0xF0;
    joined += piece;
  }
  CHECK(some_partial);
  CHECK(joined == family);
  CHECK_THROWS_WITH(tok.decode({tok.vocab_size()}), Catch::Contains("is not a token"));
  CHECK_THROWS_WITH(tok.decode({-1}), Catch::Contains("is not a token"));
  CHECK_THROWS_WITH(tok.encode("ok \xC3\x28"), Catch::Contains("not valid UTF-8 (byte 3"));
  CHECK(tok.encode("x", true).front() == 1);  // BOS from tokenizer_config.json: <|im_start|>
  Tokenizer tiny = Tokenizer::from_vocab({"a", "b", "ab"}, {"a b"}, {}, -1, -1, "gpt2");
  CHECK(tiny.encode("abba") == std::vector<int32_t>{2, 1, 0});
  CHECK_THROWS_WITH(tiny.encode("a", true), Catch::Contains("no BOS"));
  CHECK(tiny.encode("acb") == std::vector<int32_t>{2});  // no token for 'c': dropped, as HF does
}

TEST_CASE("tokenizer: chat templates equal transformers' rendering", "[tokenizer]") {
  for (const json& c : cases()["chat"]) {
    std::vector<ChatMessage> messages;
    for (const json& m : c["messages"]) messages.push_back({m["role"], m["content"]});
    ChatFormat fmt = c["format"] == "chatml" ? ChatFormat::chatml : ChatFormat::llama3;
    std::string got = apply_chat_template(fmt, messages, c["add_generation_prompt"]);
    INFO(c["format"].get<std::string>() << " with " << messages.size() << " messages:\n" << got);
    CHECK(got == c["text"].get<std::string>());
  }
  CHECK(chat_format_for(cases()["templates"]["chatml"]) == ChatFormat::chatml);
  CHECK(chat_format_for(cases()["templates"]["llama3"]) == ChatFormat::llama3);
  CHECK_THROWS_WITH(chat_format_for("{{ messages }}"), Catch::Contains("unknown chat template"));
}

TEST_CASE("tokenizer: bad tokenizer.json gives one clear error", "[tokenizer]") {
  std::string dir = temp_dir();
  json good = json::parse(std::ifstream(fixture_dir() + "/llama3_tokenizer/tokenizer.json"));
  std::string path = write_file(dir, good.dump());
  CHECK_NOTHROW(Tokenizer::from_json(path));  // the edits below are what breaks it

  path = write_file(dir, good.dump().substr(0, 5000));
  CHECK_THROWS_WITH(Tokenizer::from_json(path), Catch::Contains(path) && Catch::Contains("malformed JSON"));

  json bad = good;
  bad["model"]["type"] = "WordPiece";
  path = write_file(dir, bad.dump());
  CHECK_THROWS_WITH(Tokenizer::from_json(path), Catch::Contains(path) && Catch::Contains("model type 'WordPiece'"));

  bad = good;
  bad["pre_tokenizer"]["pretokenizers"][0] = {{"type", "Whitespace"}};
  path = write_file(dir, bad.dump());
  CHECK_THROWS_WITH(Tokenizer::from_json(path),
                    Catch::Contains(path) && Catch::Contains("unsupported pre-tokenizer type 'Whitespace'"));

  bad = good;
  bad["model"].erase("merges");
  path = write_file(dir, bad.dump());
  CHECK_THROWS_WITH(Tokenizer::from_json(path), Catch::Contains(path) && Catch::Contains("missing or mistyped"));

  bad = good;
  bad["model"]["merges"][0] = "Ġ nonexistent";
  path = write_file(dir, bad.dump());
  CHECK_THROWS_WITH(Tokenizer::from_json(path), Catch::Contains("merge #0"));

  std::remove(path.c_str());
  rmdir(dir.c_str());
  CHECK_THROWS_WITH(Tokenizer::from_json(dir + "/absent.json"), Catch::Contains("cannot open"));
  CHECK_THROWS_WITH(Tokenizer::from_vocab({"a"}, {}, {}, -1, -1, "qwen2"),
                    Catch::Contains("unsupported pre-tokenizer 'qwen2'"));
}
