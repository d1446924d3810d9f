#include "data/tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <queue>

#include "data/gguf.h"
#include "tensor/check.h"

namespace lolcats {

using json = nlohmann::json;

// ---- the pre-tokenizer patterns ----------------------------------------------------------------
// GPT-2's (Hugging Face's ByteLevel pre-tokenizer with use_regex=true): contractions, an optional
// space glued to the letters / digits / punctuation after it, then whitespace. `\s+(?!\S)` leaves
// the last space of a run for the next word, so "a   b" is "a", "  ", " b".
static const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
// Llama 3's: case-insensitive contractions, one non-letter glued before letters, numbers in groups
// of at most three digits, newlines kept apart from other whitespace.
static const char* kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// A compiled pattern that cuts text into pieces, Hugging Face's Split with behavior "Isolated":
// every match is a piece, and so is every stretch of text between two matches.
struct SplitRegex {
  pcre2_code* code = nullptr;
  explicit SplitRegex(const std::string& pattern, const std::string& where) {
    int err = 0;
    PCRE2_SIZE at = 0;
    // UTF: the subject is UTF-8; UCP: \s \d \w and [[:classes:]] use Unicode properties, like
    // the Rust/Oniguruma engines Hugging Face runs these patterns with.
    code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.c_str()), pattern.size(),
                         PCRE2_UTF | PCRE2_UCP, &err, &at, nullptr);
    if (!code) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof msg);
      fail(__FILE__, __LINE__, strfmt("%s: cannot compile the pre-tokenizer regex %s at offset %zu: %s",
                                      where.c_str(), pattern.c_str(), size_t(at), (const char*)msg));
    }
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // a speed-up only: without JIT it still matches
  }
  ~SplitRegex() { pcre2_code_free(code); }
  SplitRegex(const SplitRegex&) = delete;
  SplitRegex& operator=(const SplitRegex&) = delete;

  void split(std::string_view text, std::vector<std::string_view>& out) const {
    // One match-data block per thread: the compiled pattern is shared, the match state is not.
    struct MatchData {
      pcre2_match_data* md = pcre2_match_data_create(1, nullptr);
      ~MatchData() { pcre2_match_data_free(md); }
    };
    thread_local MatchData m;
    const auto* s = reinterpret_cast<PCRE2_SPTR>(text.data());
    size_t done = 0, from = 0;  // text[0, done) is in `out`; search again from `from`
    while (from < text.size()) {
      // NO_UTF_CHECK: encode() validated the whole text once, and pieces start on characters.
      int rc = pcre2_match(code, s, text.size(), from, PCRE2_NO_UTF_CHECK, m.md, nullptr);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(rc, msg, sizeof msg);
        fail(__FILE__, __LINE__, strfmt("tokenizer: regex match failed: %s", (const char*)msg));
      }
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(m.md);
      size_t b = ov[0], e = ov[1];
      if (e == b) {  // an empty match: step over one UTF-8 character and search again
        from = b + 1;
        while (from < text.size() && (uint8_t(text[from]) & 0xC0) == 0x80) from++;
        continue;
      }
      if (b > done) out.push_back(text.substr(done, b - done));
      out.push_back(text.substr(b, e - b));
      done = from = e;
    }
    if (done < text.size()) out.push_back(text.substr(done));
  }
};

// Natural text repeats its words, so encode remembers the ids of each word it has merged: with
// the cache, encoding is mostly the regex and one hash lookup per word. Guarded by a mutex so that
// threads can share one Tokenizer; bounded by clearing it when it gets large.
struct WordCache {
  std::mutex mutex;
  std::unordered_map<std::string, std::vector<int32_t>> ids;
  static constexpr size_t kMaxWords = 1 << 17, kMaxWordBytes = 64;
};

// ---- UTF-8 and the GPT-2 byte alphabet ----------------------------------------------------------
static void append_utf8(std::string& s, uint32_t cp) {
  if (cp < 0x80) {
    s += char(cp);
  } else if (cp < 0x800) {
    s += char(0xC0 | cp >> 6), s += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    s += char(0xE0 | cp >> 12), s += char(0x80 | (cp >> 6 & 0x3F)), s += char(0x80 | (cp & 0x3F));
  } else {
    s += char(0xF0 | cp >> 18), s += char(0x80 | (cp >> 12 & 0x3F));
    s += char(0x80 | (cp >> 6 & 0x3F)), s += char(0x80 | (cp & 0x3F));
  }
}

// Decodes the character at s[i] and advances i; returns -1 (advancing one byte) on a byte that
// does not start a valid, shortest-form UTF-8 character of at most U+10FFFF, not a surrogate.
static int32_t next_codepoint(std::string_view s, size_t& i) {
  uint8_t c = uint8_t(s[i]);
  int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
  if (len == 0 || i + len > s.size()) return i++, -1;
  uint32_t cp = len == 1 ? c : c & (0x7F >> len);
  for (int k = 1; k < len; k++) {
    uint8_t d = uint8_t(s[i + k]);
    if ((d & 0xC0) != 0x80) return i++, -1;
    cp = cp << 6 | (d & 0x3F);
  }
  static const uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kMin[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i++, -1;
  i += len;
  return int32_t(cp);
}

// GPT-2's byte-to-unicode table. The vocabulary is a list of strings, and a token must be able to
// hold any byte (half of an emoji, a control character), so each byte gets a visible character:
// bytes that print in Latin-1 stand for themselves ('a' is 'a'), the other 68 (controls, space,
// 0x7F-0xA0, soft hyphen) get U+0100, U+0101, ... in byte order (' ' = 0x20 is U+0120 'Ġ').
static const std::array<uint32_t, 256>& byte_to_codepoint() {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    uint32_t next = 256;
    for (int b = 0; b < 256; b++) {
      bool prints = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      t[b] = prints ? uint32_t(b) : next++;
    }
    return t;
  }();
  return table;
}
static const std::array<std::string, 256>& byte_spelling() {  // the same, as UTF-8 strings
  static const std::array<std::string, 256> table = [] {
    std::array<std::string, 256> t;
    for (int b = 0; b < 256; b++) append_utf8(t[b], byte_to_codepoint()[b]);
    return t;
  }();
  return table;
}

// The bytes a vocabulary spelling stands for ("Ġhi" -> " hi"). A character outside the byte
// alphabet (possible only in hand-made vocabularies) is kept as its own UTF-8.
static std::string spelling_to_bytes(const std::string& spelling) {
  static const std::unordered_map<uint32_t, uint8_t> inverse = [] {
    std::unordered_map<uint32_t, uint8_t> m;
    for (int b = 0; b < 256; b++) m[byte_to_codepoint()[b]] = uint8_t(b);
    return m;
  }();
  std::string out;
  for (size_t i = 0; i < spelling.size();) {
    size_t start = i;
    int32_t cp = next_codepoint(spelling, i);
    auto it = cp >= 0 ? inverse.find(uint32_t(cp)) : inverse.end();
    if (it != inverse.end()) out += char(it->second);
    else out.append(spelling, start, i - start);
  }
  return out;
}

// ---- building -------------------------------------------------------------------------------------
void Tokenizer::add_token(int32_t id, const std::string& spelling, bool special, bool added) {
  if (size_t(id) >= spelling_.size()) {
    spelling_.resize(id + 1), bytes_.resize(id + 1), special_.resize(id + 1, 0);
  }
  spelling_[id] = spelling;
  // An added token (<|im_start|>) is written as plain text, not in the byte alphabet.
  bytes_[id] = added ? spelling : spelling_to_bytes(spelling);
  special_[id] = special;
  by_spelling_[spelling] = id;
  if (added && !spelling.empty()) added_.push_back({spelling, id});
}

void Tokenizer::build(const std::vector<std::pair<std::string, std::string>>& merges,
                      const std::string& where) {
  ENSURE(!spelling_.empty(), "%s: the vocabulary is empty", where.c_str());
  for (int b = 0; b < 256; b++) byte_token_[b] = id_of(byte_spelling()[b]);
  for (size_t r = 0; r < merges.size(); r++) {
    const auto& [a, b] = merges[r];
    int32_t ia = id_of(a), ib = id_of(b), im = id_of(a + b);
    ENSURE(ia >= 0 && ib >= 0 && im >= 0, "%s: merge #%zu \"%s %s\" names a token that is not in the vocabulary",
           where.c_str(), r, a.c_str(), b.c_str());
    // The first rule for a pair wins; a repeated pair later in the list is never reached.
    merges_.emplace(uint64_t(uint32_t(ia)) << 32 | uint32_t(ib), Merge{int32_t(r), im});
  }
  // Longest first, so that the first candidate that matches is the longest match.
  std::sort(added_.begin(), added_.end(),
            [](const Added& x, const Added& y) { return x.text.size() > y.text.size(); });
  for (size_t k = 0; k < added_.size(); k++)
    added_by_first_byte_[uint8_t(added_[k].text[0])].push_back(int32_t(k));
  cache_ = std::make_shared<WordCache>();
}

void Tokenizer::set_pre_tokenizer_by_name(const std::string& pre, const std::string& where) {
  auto re = [&](const char* p) { return std::make_shared<const SplitRegex>(p, where); };
  if (pre == "gpt2") {
    pre_ = {re(kGpt2Pattern)};
  } else if (pre == "smollm") {
    // SmolLM2's tokenizer.json: Sequence[Digits(individual_digits), ByteLevel(use_regex)].
    pre_ = {re(R"(\p{N})"), re(kGpt2Pattern)};
  } else if (pre == "llama-bpe" || pre == "llama3" || pre == "llama-v3") {
    // Llama 3's tokenizer.json: Split(llama3 regex), ByteLevel(use_regex=false), with
    // "ignore_merges": true in the model and a post-processor that adds <|begin_of_text|>.
    pre_ = {re(kLlama3Pattern)};
    ignore_merges_ = true;
    adds_bos_ = true;
  } else {
    fail(__FILE__, __LINE__, strfmt("%s: unsupported pre-tokenizer '%s' (supported: gpt2, smollm, llama-bpe)",
                                    where.c_str(), pre.c_str()));
  }
}

Tokenizer Tokenizer::from_vocab(std::vector<std::string> tokens, std::vector<std::string> merges,
                                std::vector<int32_t> token_types, int bos_id, int eos_id,
                                const std::string& pre) {
  const std::string where = "tokenizer (pre-tokenizer '" + pre + "')";
  ENSURE(token_types.empty() || token_types.size() == tokens.size(),
         "%s: %zu token types for %zu tokens", where.c_str(), token_types.size(), tokens.size());
  Tokenizer t;
  for (size_t i = 0; i < tokens.size(); i++) {
    int32_t type = token_types.empty() ? 1 : token_types[i];
    // llama.cpp's token types: 3 control (special, matched in text), 4 user-defined (matched in
    // text, not special), 5 unused (a placeholder nobody types).
    t.add_token(int32_t(i), tokens[i], type == 3, type == 3 || type == 4);
  }
  std::vector<std::pair<std::string, std::string>> pairs;
  pairs.reserve(merges.size());
  for (size_t r = 0; r < merges.size(); r++) {
    size_t sp = merges[r].find(' ');
    ENSURE(sp != std::string::npos && merges[r].find(' ', sp + 1) == std::string::npos,
           "%s: merge #%zu \"%s\" is not two tokens separated by one space", where.c_str(), r, merges[r].c_str());
    pairs.emplace_back(merges[r].substr(0, sp), merges[r].substr(sp + 1));
  }
  t.set_pre_tokenizer_by_name(pre, where);
  t.build(pairs, where);
  ENSURE(bos_id < t.vocab_size() && eos_id < t.vocab_size(), "%s: BOS id %d or EOS id %d is past the vocabulary (%d)",
         where.c_str(), bos_id, eos_id, t.vocab_size());
  t.bos_id_ = bos_id, t.eos_id_ = eos_id;
  return t;
}

Tokenizer Tokenizer::from_model(const std::string& path) {
  if (path.size() > 5 && path.compare(path.size() - 5, 5, ".gguf") == 0) return from_gguf(GGUFFile(path));
  return from_json(path + "/tokenizer.json");
}

Tokenizer Tokenizer::from_gguf(const GGUFFile& f) {
  const char* p = f.path().c_str();
  ENSURE(f.has("tokenizer.ggml.model"), "%s: the file holds no tokenizer (no tokenizer.ggml.model)", p);
  std::string model = f.get_string("tokenizer.ggml.model");
  ENSURE(model == "gpt2", "%s: tokenizer.ggml.model is '%s'; only 'gpt2' (byte-level BPE) is supported",
         p, model.c_str());
  std::vector<int32_t> types;
  if (f.has("tokenizer.ggml.token_type"))
    for (int64_t v : f.get_int_array("tokenizer.ggml.token_type")) types.push_back(int32_t(v));
  auto id = [&](const char* key) { return f.has(key) ? int(f.get_int(key)) : -1; };
  try {
    Tokenizer t = from_vocab(f.get_string_array("tokenizer.ggml.tokens"),
                             f.has("tokenizer.ggml.merges") ? f.get_string_array("tokenizer.ggml.merges")
                                                            : std::vector<std::string>{},
                             std::move(types), id("tokenizer.ggml.bos_token_id"),
                             id("tokenizer.ggml.eos_token_id"),
                             f.has("tokenizer.ggml.pre") ? f.get_string("tokenizer.ggml.pre") : "gpt2");
    if (f.has("tokenizer.ggml.add_bos_token")) t.adds_bos_ = f.get_bool("tokenizer.ggml.add_bos_token");
    return t;
  } catch (const Error& e) {
    throw Error(std::string(p) + ": " + e.what());
  }
}

// ---- tokenizer.json -------------------------------------------------------------------------------
// Turns a tokenizer.json pre_tokenizer into our list of split patterns. Digits and ByteLevel's
// regex are Isolated splits too (by \p{N} and the GPT-2 pattern), so one mechanism covers all.
// Returns whether a ByteLevel step was seen (it must be the last step).
static bool parse_pre_tokenizer(const json& p, std::vector<std::shared_ptr<const SplitRegex>>& out,
                                const std::string& where, int depth = 0) {
  ENSURE(depth < 16, "%s: pre_tokenizer Sequences nested too deep", where.c_str());
  auto re = [&](const std::string& pattern) { out.push_back(std::make_shared<const SplitRegex>(pattern, where)); };
  std::string type = p.at("type").get<std::string>();
  if (type == "Sequence") {
    const json& steps = p.at("pretokenizers");
    for (size_t i = 0; i < steps.size(); i++) {
      bool byte_level = parse_pre_tokenizer(steps[i], out, where, depth + 1);
      ENSURE(!byte_level || i + 1 == steps.size(),
             "%s: pre_tokenizer: a step after ByteLevel is not supported", where.c_str());
      if (byte_level) return true;
    }
    return false;
  }
  if (type == "Split") {
    ENSURE(p.at("pattern").contains("Regex"), "%s: pre_tokenizer Split: only a Regex pattern is supported, not %s",
           where.c_str(), p.at("pattern").dump().c_str());
    std::string behavior = p.at("behavior").get<std::string>();
    ENSURE(behavior == "Isolated" && !p.value("invert", false),
           "%s: pre_tokenizer Split: behavior '%s'%s is not supported (only Isolated)", where.c_str(),
           behavior.c_str(), p.value("invert", false) ? " with invert" : "");
    re(p.at("pattern").at("Regex").get<std::string>());
    return false;
  }
  if (type == "Digits") {
    re(p.value("individual_digits", false) ? R"(\p{N})" : R"(\p{N}+)");
    return false;
  }
  if (type == "ByteLevel") {
    ENSURE(!p.value("add_prefix_space", false), "%s: pre_tokenizer ByteLevel with add_prefix_space is not supported",
           where.c_str());
    if (p.value("use_regex", true)) re(kGpt2Pattern);
    return true;
  }
  fail(__FILE__, __LINE__, strfmt("%s: unsupported pre-tokenizer type '%s' (supported: Sequence, Split, Digits, ByteLevel)",
                                  where.c_str(), type.c_str()));
}

// The special token TemplateProcessing puts before every single sequence ("" when none).
static std::string bos_of_post_processor(const json& pp, const std::string& where, int depth = 0) {
  ENSURE(depth < 16, "%s: post_processor Sequences nested too deep", where.c_str());
  if (pp.is_null()) return "";
  std::string type = pp.at("type").get<std::string>();
  if (type == "Sequence") {
    for (const json& step : pp.at("processors")) {
      std::string bos = bos_of_post_processor(step, where, depth + 1);
      if (!bos.empty()) return bos;
    }
    return "";
  }
  if (type == "TemplateProcessing") {
    const json& single = pp.at("single");
    if (!single.empty() && single[0].contains("SpecialToken")) return single[0]["SpecialToken"].at("id").get<std::string>();
    return "";
  }
  ENSURE(type == "ByteLevel", "%s: unsupported post_processor type '%s'", where.c_str(), type.c_str());
  return "";
}

static json read_json(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  ENSURE(in, "cannot open %s", path.c_str());
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    fail(__FILE__, __LINE__, strfmt("%s: malformed JSON: %s", path.c_str(), e.what()));
  }
}

Tokenizer Tokenizer::from_json(const std::string& path) {
  json j = read_json(path);
  const char* p = path.c_str();
  Tokenizer t;
  std::vector<std::pair<std::string, std::string>> merges;
  std::string bos_text;
  try {
    ENSURE(j.is_object() && j.contains("model"), "%s: not a tokenizer.json (no \"model\")", p);
    const json& m = j["model"];
    std::string type = m.value("type", "");
    ENSURE(type == "BPE", "%s: model type '%s' is not supported (only BPE)", p, type.c_str());
    ENSURE(!m.value("byte_fallback", false), "%s: BPE byte_fallback is not supported", p);
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
      ENSURE(!m.contains(key) || m[key].is_null() || m[key] == "", "%s: BPE %s is not supported", p, key);
    ENSURE(!j.contains("normalizer") || j["normalizer"].is_null(), "%s: normalizer '%s' is not supported", p,
           j["normalizer"].value("type", "?").c_str());
    ENSURE(!j.contains("decoder") || j["decoder"].is_null() || j["decoder"].value("type", "") == "ByteLevel",
           "%s: decoder '%s' is not supported (only ByteLevel)", p, j["decoder"].value("type", "?").c_str());
    t.ignore_merges_ = m.value("ignore_merges", false);
    // Ids must be dense (as in every real tokenizer): that bounds the tables by the file's size.
    const int64_t entries = int64_t(m.at("vocab").size() + j.at("added_tokens").size());
    for (auto it = m.at("vocab").begin(); it != m.at("vocab").end(); ++it) {
      // Checked first: converting a float (e.g. 1e30) to an integer would be undefined behaviour.
      ENSURE(it.value().is_number_integer(), "%s: token %s has an id that is not an integer", p, it.key().c_str());
      int64_t id = it.value().get<int64_t>();
      ENSURE(id >= 0 && id < entries, "%s: token %s has id %lld, outside 0..%lld (vocab + added_tokens)", p,
             it.key().c_str(), (long long)id, (long long)entries - 1);
      t.add_token(int32_t(id), it.key(), false, false);
    }
    for (const json& a : j.at("added_tokens")) {
      std::string text = a.at("content").get<std::string>();
      for (const char* flag : {"lstrip", "rstrip", "single_word"})
        ENSURE(!a.value(flag, false), "%s: added token %s uses %s, which is not supported", p, text.c_str(), flag);
      ENSURE(a.at("id").is_number_integer(), "%s: added token %s has an id that is not an integer", p, text.c_str());
      int64_t id = a.at("id").get<int64_t>();
      ENSURE(id >= 0 && id < entries, "%s: added token %s has id %lld, outside 0..%lld (vocab + added_tokens)", p,
             text.c_str(), (long long)id, (long long)entries - 1);
      t.add_token(int32_t(id), text, a.value("special", false), true);
    }
    for (const json& mg : m.at("merges")) {
      if (mg.is_array()) {
        ENSURE(mg.size() == 2, "%s: merge %s is not a pair", p, mg.dump().c_str());
        merges.emplace_back(mg[0].get<std::string>(), mg[1].get<std::string>());
      } else {
        std::string s = mg.get<std::string>();
        size_t sp = s.find(' ');
        ENSURE(sp != std::string::npos && s.find(' ', sp + 1) == std::string::npos,
               "%s: merge \"%s\" is not two tokens separated by one space", p, s.c_str());
        merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
      }
    }
    ENSURE(j.contains("pre_tokenizer") && !j["pre_tokenizer"].is_null(), "%s: no pre_tokenizer", p);
    bool byte_level = parse_pre_tokenizer(j["pre_tokenizer"], t.pre_, path);
    ENSURE(byte_level, "%s: the pre_tokenizer has no ByteLevel step: not a byte-level BPE tokenizer", p);
    bos_text = bos_of_post_processor(j.value("post_processor", json()), path);
  } catch (const json::exception& e) {
    fail(__FILE__, __LINE__, strfmt("%s: missing or mistyped field: %s", p, e.what()));
  }
  t.build(merges, path);
  t.adds_bos_ = !bos_text.empty();
  t.bos_id_ = t.id_of(bos_text);

  // tokenizer_config.json beside it names BOS and EOS; without it, guess EOS by common names.
  std::string config = path.substr(0, path.find_last_of('/') + 1) + "tokenizer_config.json";
  if (std::ifstream(config).good()) {
    json c = read_json(config);
    auto name = [&](const char* key) -> std::string {  // "<s>" or {"content": "<s>", ...}
      if (!c.is_object() || !c.contains(key)) return "";
      const json& v = c[key];
      if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"];
      return v.is_string() ? v.get<std::string>() : "";
    };
    if (!name("bos_token").empty()) t.bos_id_ = t.id_of(name("bos_token"));
    t.eos_id_ = t.id_of(name("eos_token"));
  }
  for (const char* eos : {"<|end_of_text|>", "<|endoftext|>", "</s>"})
    if (t.eos_id_ < 0) t.eos_id_ = t.id_of(eos);
  return t;
}

// ---- encoding ---------------------------------------------------------------------------------------
std::vector<int32_t> Tokenizer::encode(const std::string& text, bool add_bos) const {
  for (size_t i = 0; i < text.size();) {
    size_t at = i;
    ENSURE(next_codepoint(text, i) >= 0, "encode: the text is not valid UTF-8 (byte %zu of %zu is 0x%02x)", at,
           text.size(), unsigned(uint8_t(text[at])));
  }
  std::vector<int32_t> ids;
  if (add_bos) {
    ENSURE(bos_id_ >= 0, "encode: add_bos is set but this tokenizer has no BOS token");
    ids.push_back(bos_id_);
  }
  // Step 1: cut out the added tokens; at each position the longest one that starts there.
  std::string_view s = text;
  size_t done = 0;  // s[0, done) is encoded
  for (size_t i = 0; i < s.size();) {
    const Added* hit = nullptr;
    for (int32_t k : added_by_first_byte_[uint8_t(s[i])])
      if (s.compare(i, added_[k].text.size(), added_[k].text) == 0) {
        hit = &added_[k];
        break;
      }
    if (!hit) {
      i++;
      continue;
    }
    encode_text(s.substr(done, i - done), ids);
    ids.push_back(hit->id);
    done = i += hit->text.size();
  }
  encode_text(s.substr(done), ids);
  return ids;
}

// Step 2: each split pattern cuts every piece the previous one left (as Hugging Face's Sequence
// does: a later pattern never sees across an earlier cut), then each piece is BPE-encoded.
void Tokenizer::encode_text(std::string_view text, std::vector<int32_t>& out) const {
  if (text.empty()) return;
  std::vector<std::string_view> pieces{text}, next;
  for (const auto& re : pre_) {
    next.clear();
    for (std::string_view piece : pieces) re->split(piece, next);
    pieces.swap(next);
  }
  for (std::string_view word : pieces) encode_word(word, out);
}

// Steps 3 and 4 on one word: one symbol per byte, then merges by rank. The pairs that could merge
// sit in a min-heap by (rank, position): the lowest rank merges first, the leftmost on a tie (as
// in Hugging Face tokenizers). Symbols live in a linked list so that a merge is O(1); heap entries
// made stale by a neighbour's merge are recognised and dropped when popped. O(n log n) per word,
// which matters for long words such as a run of 10k spaces or a base64 blob.
void Tokenizer::encode_word(std::string_view word, std::vector<int32_t>& out) const {
  if (word.size() > WordCache::kMaxWordBytes) return bpe(word, out);
  std::string key(word);
  {
    std::lock_guard<std::mutex> lock(cache_->mutex);
    auto it = cache_->ids.find(key);
    if (it != cache_->ids.end()) return out.insert(out.end(), it->second.begin(), it->second.end()), void();
  }
  size_t start = out.size();
  bpe(word, out);
  std::lock_guard<std::mutex> lock(cache_->mutex);
  if (cache_->ids.size() >= WordCache::kMaxWords) cache_->ids.clear();
  cache_->ids.emplace(std::move(key), std::vector<int32_t>(out.begin() + start, out.end()));
}

void Tokenizer::bpe(std::string_view word, std::vector<int32_t>& out) const {
  if (ignore_merges_) {  // Llama 3: a word that is in the vocabulary is one token, merges or not
    std::string spelled;
    for (char c : word) spelled += byte_spelling()[uint8_t(c)];
    int32_t id = id_of(spelled);
    if (id >= 0) return out.push_back(id);
  }
  // A byte whose one-byte token is missing from the vocabulary is dropped, as Hugging Face and
  // llama.cpp do (SmolLM2 has no token for 0x04, 0x06, 0x13, ...): there is no unknown token
  // to stand for it, and its neighbours may then merge with each other.
  std::vector<int32_t> sym;  // sym[i]: token id of the symbol in slot i (-1 once merged away)
  sym.reserve(word.size());
  for (char c : word)
    if (byte_token_[uint8_t(c)] >= 0) sym.push_back(byte_token_[uint8_t(c)]);
  const int n = int(sym.size());
  std::vector<int> prev(n), next(n);
  for (int i = 0; i < n; i++) prev[i] = i - 1, next[i] = i + 1 < n ? i + 1 : -1;
  struct Cand {
    int32_t rank, left, right, left_id, right_id, merged;
    bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : left > o.left; }
  };
  std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
  auto consider = [&](int left, int right) {
    if (left < 0 || right < 0) return;
    auto it = merges_.find(uint64_t(uint32_t(sym[left])) << 32 | uint32_t(sym[right]));
    if (it != merges_.end()) heap.push({it->second.rank, left, right, sym[left], sym[right], it->second.merged});
  };
  for (int i = 0; i + 1 < n; i++) consider(i, i + 1);
  while (!heap.empty()) {
    Cand c = heap.top();
    heap.pop();
    // Stale if either symbol has merged with something else since this entry was pushed.
    if (next[c.left] != c.right || sym[c.left] != c.left_id || sym[c.right] != c.right_id) continue;
    sym[c.left] = c.merged;  // the joined symbol keeps the left one's position
    sym[c.right] = -1;
    next[c.left] = next[c.right];
    if (next[c.left] >= 0) prev[next[c.left]] = c.left;
    next[c.right] = -2;  // dead: matches no candidate's `right`
    consider(prev[c.left], c.left);
    consider(c.left, next[c.left]);
  }
  for (int i = n > 0 ? 0 : -1; i >= 0; i = next[i]) out.push_back(sym[i]);
}

// ---- decoding and lookups ---------------------------------------------------------------------------
std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::string out;
  for (int32_t id : ids) {
    ENSURE(id >= 0 && id < vocab_size() && !spelling_[id].empty(),
           "decode: id %d is not a token (vocabulary size %d)", id, vocab_size());
    if (!(skip_special && special_[id])) out += bytes_[id];
  }
  return out;
}

std::string Tokenizer::token(int id) const {
  ENSURE(id >= 0 && id < vocab_size(), "token: id %d is outside the vocabulary (size %d)", id, vocab_size());
  return spelling_[id];
}

int Tokenizer::id_of(const std::string& token) const {
  auto it = by_spelling_.find(token);
  return it == by_spelling_.end() ? -1 : it->second;
}

bool Tokenizer::is_special(int id) const {
  ENSURE(id >= 0 && id < vocab_size(), "is_special: id %d is outside the vocabulary (size %d)", id, vocab_size());
  return special_[id] != 0;
}

}  // namespace lolcats
