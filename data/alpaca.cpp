#include "data/alpaca.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <random>

#include "data/token_cache.h"
#include "data/tokenizer.h"
#include "tensor/check.h"

namespace lolcats {

using json = nlohmann::json;

// Part of every cache key: bump it whenever the template, the labels or the packing change, so
// that old cache entries are never read as if they were made by the new code.
static const char* kFormatVersion = "alpaca-template-v1 labels-v1 pack-next-token-v1 shuffle-fisher-yates-mt64-v1";

// ---- reading ---------------------------------------------------------------------------------------

namespace {

// One record's JSON text and where it starts, for error messages.
struct RawRecord {
  std::string_view text;
  size_t line;  // 1-based line of the file where the record starts
};

size_t skip_space(const std::string& s, size_t i) {
  while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) i++;
  return i;
}

// JSONL: one record per non-blank line.
std::vector<RawRecord> split_lines(const std::string& s) {
  std::vector<RawRecord> out;
  size_t line = 1;
  for (size_t i = 0; i < s.size(); line++) {
    size_t end = s.find('\n', i);
    if (end == std::string::npos) end = s.size();
    std::string_view v(s.data() + i, end - i);
    if (v.find_first_not_of(" \t\r") != std::string_view::npos) out.push_back({v, line});
    i = end + 1;
  }
  return out;
}

// A JSON array: cut it into its elements without parsing them (each is parsed on its own
// below, so an error can name the record). Strings are skipped whole, so brackets and commas
// inside them do not count. Structural errors inside an element surface when it is parsed.
std::vector<RawRecord> split_array(const std::string& s, size_t i, const std::string& name) {
  std::vector<RawRecord> out;
  size_t line = 1 + std::count(s.begin(), s.begin() + i, '\n');
  auto advance = [&](size_t to) {  // moves i to `to`, counting newlines
    line += std::count(s.begin() + i, s.begin() + to, '\n');
    i = to;
  };
  advance(skip_space(s, i + 1));  // past '['
  if (i < s.size() && s[i] == ']') return advance(i + 1), out;
  while (true) {
    advance(skip_space(s, i));
    size_t start = i, start_line = line;
    int depth = 0;
    bool in_string = false;
    for (; i < s.size(); i++) {
      char c = s[i];
      if (in_string) {
        if (c == '\\') i++;
        else if (c == '"') in_string = false;
      } else if (c == '"') {
        in_string = true;
      } else if (c == '[' || c == '{') {
        depth++;
      } else if (c == ']' || c == '}') {
        if (depth == 0) break;
        depth--;
      } else if (c == ',' && depth == 0) {
        break;
      } else if (c == '\n') {
        line++;
      }
    }
    ENSURE(i < s.size(), "%s: record %zu (line %zu): the JSON array is not closed (file truncated?)",
           name.c_str(), out.size(), start_line);
    out.push_back({std::string_view(s.data() + start, i - start), start_line});
    if (s[i] == ']') break;
    i++;  // past ','
  }
  size_t end = skip_space(s, i + 1);
  ENSURE(end == s.size(), "%s: unexpected text after the closing ']' of the JSON array", name.c_str());
  return out;
}

std::string field(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end()) throw std::runtime_error(std::string("it has no \"") + key + "\" field");
  if (!it->is_string()) throw std::runtime_error(std::string("its \"") + key + "\" is not a string");
  return it->get<std::string>();
}

}  // namespace

std::vector<AlpacaRecord> parse_alpaca(const std::string& text, const std::string& name) {
  size_t start = skip_space(text, text.compare(0, 3, "\xEF\xBB\xBF") == 0 ? 3 : 0);  // skip a UTF-8 BOM
  ENSURE(start < text.size(), "%s: the file is empty", name.c_str());
  ENSURE(text[start] == '[' || text[start] == '{',
         "%s: expected a JSON array of records or JSONL (one object per line), but it starts with '%c'",
         name.c_str(), text[start]);
  std::vector<RawRecord> raw = text[start] == '[' ? split_array(text, start, name) : split_lines(text);
  std::vector<AlpacaRecord> records(raw.size());
  std::vector<std::string> errors(raw.size());
  // Parsing is independent per record, so it runs in parallel; the first error (in file order) wins.
#pragma omp parallel for schedule(dynamic, 256)
  for (size_t r = 0; r < raw.size(); r++) {
    try {
      json j = json::parse(raw[r].text);
      if (!j.is_object()) throw std::runtime_error(std::string("it is a JSON ") + j.type_name() + ", not an object");
      records[r] = {field(j, "instruction"), field(j, "input"), field(j, "output")};
    } catch (const std::exception& e) {
      errors[r] = e.what();
    }
  }
  for (size_t r = 0; r < raw.size(); r++)
    ENSURE(errors[r].empty(), "%s: record %zu (line %zu) is not a valid Alpaca record: %s", name.c_str(), r,
           raw[r].line, errors[r].c_str());
  return records;
}

std::vector<AlpacaRecord> read_alpaca(const std::string& path) {
  return parse_alpaca(decompress_if_zstd(read_file(path), path), path);
}

// ---- template and tokens ------------------------------------------------------------------------------

std::string alpaca_prompt(const AlpacaRecord& r) {
  if (r.input.empty())
    return "Below is an instruction that describes a task. Write a response that appropriately completes "
           "the request.\n\n### Instruction:\n" + r.instruction + "\n\n### Response:\n";
  return "Below is an instruction that describes a task, paired with an input that provides further context. "
         "Write a response that appropriately completes the request.\n\n### Instruction:\n" + r.instruction +
         "\n\n### Input:\n" + r.input + "\n\n### Response:\n";
}

TokenizedExample tokenize_example(const Tokenizer& tok, const AlpacaRecord& r) {
  // Prompt and output are tokenised separately, so the boundary between them is a token boundary
  // (tokenising the joined text could merge the prompt's last "\n" with the output's start).
  std::vector<int32_t> prompt = tok.encode(alpaca_prompt(r), false);
  std::vector<int32_t> output = tok.encode(r.output, false);
  TokenizedExample ex;
  if (tok.bos_id() >= 0) ex.ids.push_back(tok.bos_id());
  ex.ids.insert(ex.ids.end(), prompt.begin(), prompt.end());
  ex.labels.assign(ex.ids.size(), kIgnoreLabel);
  ex.ids.insert(ex.ids.end(), output.begin(), output.end());
  ENSURE(tok.eos_id() >= 0, "tokenize_example: the tokenizer has no EOS token to end the response with");
  ex.ids.push_back(tok.eos_id());
  ex.labels.insert(ex.labels.end(), ex.ids.begin() + ex.labels.size(), ex.ids.end());
  return ex;
}

std::vector<TokenizedExample> tokenize_examples(const Tokenizer& tok, const std::vector<AlpacaRecord>& records,
                                                bool progress) {
  std::vector<TokenizedExample> out(records.size());
  std::vector<std::string> errors(records.size());  // an exception must not leave an OpenMP loop
  std::atomic<size_t> done{0};
  auto t0 = std::chrono::steady_clock::now();
  auto last = t0;
#pragma omp parallel for schedule(dynamic, 64)
  for (size_t i = 0; i < records.size(); i++) {
    try {
      out[i] = tokenize_example(tok, records[i]);
    } catch (const std::exception& e) {
      errors[i] = e.what();
    }
    size_t d = ++done;
    if (progress && omp_get_thread_num() == 0) {  // one thread reports, about once a second
      auto now = std::chrono::steady_clock::now();
      if (now - last > std::chrono::seconds(1)) {
        last = now;
        std::fprintf(stderr, "\rtokenizing: %zu / %zu records", d, records.size());
      }
    }
  }
  for (size_t i = 0; i < records.size(); i++)
    ENSURE(errors[i].empty(), "tokenizing record %zu: %s", i, errors[i].c_str());
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (progress && s > 1) std::fprintf(stderr, "\rtokenizing: %zu / %zu records, %.1f s\n", records.size(), records.size(), s);
  return out;
}

// ---- packing -------------------------------------------------------------------------------------------

int64_t Chunks::label_tokens(int64_t n) const {
  auto end = n < 0 || n >= count() ? targets.end() : targets.begin() + n * T;
  return int64_t(std::count_if(targets.begin(), end, [](int32_t y) { return y != kIgnoreLabel; }));
}

Chunks pack(const std::vector<TokenizedExample>& examples, int T, size_t begin, size_t end) {
  ENSURE(T >= 1, "pack: T must be at least 1, got %d", T);
  end = std::min(end, examples.size());
  std::vector<int32_t> ids, labels;  // the stream s
  for (size_t e = begin; e < end; e++) {
    ids.insert(ids.end(), examples[e].ids.begin(), examples[e].ids.end());
    labels.insert(labels.end(), examples[e].labels.begin(), examples[e].labels.end());
  }
  Chunks c;
  c.T = T;
  for (size_t k = 0; (k + 1) * T + 1 <= ids.size(); k++) {  // chunk k reads s[kT .. kT+T]
    const int32_t* y = labels.data() + k * T + 1;
    if (std::all_of(y, y + T, [](int32_t v) { return v == kIgnoreLabel; })) continue;
    c.inputs.insert(c.inputs.end(), ids.data() + k * T, ids.data() + k * T + T);
    c.targets.insert(c.targets.end(), y, y + T);
  }
  return c;
}

// Uniform in [0, n) without modulo bias: 2^64 - (2^64 mod n) is a multiple of n, so rejecting the
// lowest (2^64 mod n) outputs leaves every residue equally likely.
static uint64_t uniform_below(std::mt19937_64& rng, uint64_t n) {
  uint64_t reject = (UINT64_MAX % n + 1) % n;  // 2^64 mod n
  uint64_t r;
  do r = rng();
  while (r < reject);
  return r % n;
}

void shuffle_chunks(Chunks& c, uint64_t seed) {
  int64_t n = c.count();
  std::vector<int64_t> order(n);
  for (int64_t i = 0; i < n; i++) order[i] = i;
  std::mt19937_64 rng(seed);
  for (int64_t i = n - 1; i > 0; i--) std::swap(order[i], order[uniform_below(rng, uint64_t(i) + 1)]);
  Chunks out;
  out.T = c.T;
  out.inputs.resize(c.inputs.size());
  out.targets.resize(c.targets.size());
  for (int64_t i = 0; i < n; i++) {
    std::copy_n(c.inputs.begin() + order[i] * c.T, c.T, out.inputs.begin() + i * c.T);
    std::copy_n(c.targets.begin() + order[i] * c.T, c.T, out.targets.begin() + i * c.T);
  }
  c = std::move(out);
}

// ---- everything, through the cache ---------------------------------------------------------------------

AlpacaData load_alpaca(const std::string& path, const Tokenizer& tok, const AlpacaOptions& opt) {
  ENSURE(opt.T >= 1, "load_alpaca: T must be at least 1, got %d", opt.T);
  ENSURE(opt.val_rows >= 0, "load_alpaca: val_rows must be >= 0, got %d", opt.val_rows);
  auto t0 = std::chrono::steady_clock::now();
  std::string bytes = read_file(path);
  AlpacaData d;
  uint64_t key = 0;
  if (!opt.cache_dir.empty()) {
    Hash64 h;
    h.str(kFormatVersion).u64(tokenizer_fingerprint(tok)).str(bytes);
    h.u64(uint64_t(opt.T)).u64(uint64_t(opt.val_rows)).u64(opt.seed);
    key = h.h;
    d.cache_file = opt.cache_dir + strfmt("/alpaca-%016llx.tokens.zst", (unsigned long long)key);
  }
  std::vector<std::vector<int32_t>> arrays;
  bool hit = !d.cache_file.empty() && read_token_cache(d.cache_file, key, arrays);
  if (hit && !(arrays.size() == 4 && arrays[0].size() == arrays[1].size() && arrays[2].size() == arrays[3].size() &&
               arrays[0].size() % opt.T == 0 && arrays[2].size() % opt.T == 0)) {
    std::fprintf(stderr, "warning: token cache %s does not hold (T=%d) chunks; rebuilding it\n", d.cache_file.c_str(),
                 opt.T);
    hit = false;
  }
  if (hit) {
    d.cache_hit = true;
    d.train = {opt.T, std::move(arrays[0]), std::move(arrays[1])};
    d.val = {opt.T, std::move(arrays[2]), std::move(arrays[3])};
  } else {
    std::vector<AlpacaRecord> records = parse_alpaca(decompress_if_zstd(std::move(bytes), path), path);
    d.n_records = int64_t(records.size());
    ENSURE(!opt.need_train || d.n_records > opt.val_rows,
           "%s: %lld records, but %d are set aside for validation: nothing left to train on",
           path.c_str(), (long long)d.n_records, opt.val_rows);
    if (opt.verbose) std::fprintf(stderr, "alpaca: %s: %lld records\n", path.c_str(), (long long)d.n_records);
    std::vector<TokenizedExample> examples = tokenize_examples(tok, records, opt.verbose);
    d.val = pack(examples, opt.T, 0, size_t(opt.val_rows));
    d.train = pack(examples, opt.T, size_t(opt.val_rows));
    shuffle_chunks(d.train, opt.seed);
    if (!d.cache_file.empty()) {
      // The cache only saves time: failing to write it (read-only folder, full disk) is a warning.
      try {
        write_token_cache(d.cache_file, key, {d.train.inputs, d.train.targets, d.val.inputs, d.val.targets});
      } catch (const Error& e) {
        std::fprintf(stderr, "warning: could not write the token cache: %s\n", e.what());
      }
    }
  }
  ENSURE(!opt.need_train || d.train.count() > 0,
         "%s: the rows after the first %d (validation) fill no chunk of %d tokens: nothing left to train on",
         path.c_str(), opt.val_rows, opt.T);
  if (opt.max_train_chunks > 0 && d.train.count() > opt.max_train_chunks) {
    d.train.inputs.resize(size_t(opt.max_train_chunks) * opt.T);
    d.train.targets.resize(size_t(opt.max_train_chunks) * opt.T);
  }
  if (opt.verbose) {
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::string cache = d.cache_file.empty() ? "token cache off"
                        : (d.cache_hit ? "token cache hit: " : "token cache written: ") + d.cache_file;
    std::fprintf(stderr, "alpaca: T=%d: %lld train chunks (%lld label tokens), %lld val chunks (%lld label tokens); "
                 "%s; %.2f s\n", opt.T, (long long)d.train.count(), (long long)d.train.label_tokens(),
                 (long long)d.val.count(), (long long)d.val.label_tokens(), cache.c_str(), s);
  }
  return d;
}

}  // namespace lolcats
