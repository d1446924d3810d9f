// The Alpaca instruction data (LOLCATS.md section 5): reading, prompt template, tokenisation,
// packing into fixed-length chunks, the train/validation split and the seeded shuffle.
//
// Pipeline:
//   read_alpaca       records {instruction, input, output} from a JSON array or a JSONL file,
//                     either one optionally zstd-compressed (detected by the magic bytes)
//   tokenize_example  ids    = BOS, tokens(prompt),         tokens(output), EOS
//                     labels = -100, -100 for each prompt token, the output ids, EOS
//                     (prompt and output are tokenised separately; no BOS when the tokenizer
//                     has none). -100 (kIgnoreLabel) means "no loss here", as in Hugging Face.
//   pack              the examples of one split, in order, form one stream of (id, label)
//                     pairs s[0..N-1], cut into chunks of T inputs each:
//                        chunk k:  x[t] = id(s[k*T + t]),  y[t] = label(s[k*T + t + 1]),  t = 0..T-1
//                     so y is the label of the *next* stream entry: the model at position t
//                     predicts token t+1 (Hugging Face's "labels shifted left" of a causal LM).
//                     A chunk thus reads T+1 stream entries, and consecutive chunks share one:
//                     s[(k+1)*T] gives chunk k its last target (label) and chunk k+1 its first
//                     input (id). There are floor((N-1)/T)
//                     full chunks; the shorter tail is dropped, and so is every chunk whose
//                     targets are all -100 (nothing to learn: a stretch of prompt). No
//                     cross-document masking: attention runs across example boundaries inside a
//                     chunk, positions are 0..T-1 in every chunk.
//   load_alpaca       rows [0, val_rows) in file order are validation, the rest training; each
//                     split is packed separately; training chunks are shuffled (Fisher-Yates on
//                     std::mt19937_64, whose output the C++ standard fixes, so the order is the
//                     same on every platform); the result is cached on disk (data/token_cache.h).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace lolcats {

class Tokenizer;

constexpr int32_t kIgnoreLabel = -100;
struct AlpacaRecord {
  std::string instruction, input, output;
};

// A JSON array of objects, or JSONL (one object per line; blank lines skipped); zstd or plain.
// Every record must be an object with string fields "instruction", "input" and "output" (others
// are ignored). Any problem is one error naming the file, the record (0-based) and its line.
std::vector<AlpacaRecord> read_alpaca(const std::string& path);
// The same on text already in memory; `name` stands for the file in error messages.
std::vector<AlpacaRecord> parse_alpaca(const std::string& text, const std::string& name);

// The Alpaca prompt: the "with input" template when r.input is non-empty, else the short one.
std::string alpaca_prompt(const AlpacaRecord& r);

struct TokenizedExample {
  std::vector<int32_t> ids;     // BOS, prompt tokens, output tokens, EOS
  std::vector<int32_t> labels;  // same length: -100 for BOS and the prompt, else the id
};
TokenizedExample tokenize_example(const Tokenizer& tok, const AlpacaRecord& r);
// Every record, in parallel (OpenMP); progress on stderr when `progress`.
std::vector<TokenizedExample> tokenize_examples(const Tokenizer& tok, const std::vector<AlpacaRecord>& records,
                                                bool progress = false);

struct Chunks {
  int T = 0;
  std::vector<int32_t> inputs;   // (count, T) x: token ids fed to the model
  std::vector<int32_t> targets;  // (count, T) y: next-token labels (-100: no loss), see above
  int64_t count() const { return T > 0 ? int64_t(inputs.size()) / T : 0; }
  // Targets that are not -100 (the tokens a loss is taken over) in the first n chunks (all if n < 0).
  int64_t label_tokens(int64_t n = -1) const;
};

// Packs examples [begin, end) in order (see the top of this file).
Chunks pack(const std::vector<TokenizedExample>& examples, int T, size_t begin = 0, size_t end = SIZE_MAX);
// Reorders the chunks: Fisher-Yates driven by std::mt19937_64(seed), with unbiased draws.
void shuffle_chunks(Chunks& c, uint64_t seed);

struct AlpacaOptions {
  int T = 1024;                             // tokens per chunk
  int val_rows = 200;                       // the first val_rows records are validation
  uint64_t seed = 0;                        // training chunk order
  int64_t max_train_chunks = 0;             // keep only the first N shuffled chunks (0: all)
  std::string cache_dir = ".cache/tokens";  // "" disables the token cache
  bool verbose = true;                      // progress and a summary on stderr
  bool need_train = true;                   // false (evaluation): a file of validation rows only is fine
};

struct AlpacaData {
  Chunks train;            // shuffled
  Chunks val;              // in file order
  int64_t n_records = 0;   // in the file (0 on a cache hit: the file was not parsed)
  bool cache_hit = false;
  std::string cache_file;  // "" when caching is off
};

// Everything above, through the token cache. The cache key covers the tokenizer (vocabulary,
// special tokens, pre-tokenisation behaviour), the data file's bytes, T, val_rows, seed and the
// template/packing version; max_train_chunks is applied after the cache.
AlpacaData load_alpaca(const std::string& path, const Tokenizer& tok, const AlpacaOptions& opt = {});

}  // namespace lolcats
