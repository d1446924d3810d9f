// Passkey retrieval (Mohtashami & Jaggi 2023, as LongLoRA's script and the LoLCATs appendix B.4.2
// run it): a five-digit number hidden at a chosen depth of a long stretch of filler, then asked for.
//
// The prompt, lines joined by "\n" (an empty filler part is left out with its line):
//   There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. I
//   will quiz you about the important information there.
//   <filler sentences 0 .. a-1, joined by spaces>
//   The pass key is KEY. Remember it. KEY is the pass key.
//   <filler sentences a .. N-1>
//   What is the pass key? The pass key is
// Filler sentence i is the (i mod 5)-th of "The grass is green." "The sky is blue." "The sun is
// yellow." "Here we go." "There and back again." N is the largest count whose tokenised prompt
// (BOS included when the model takes one) is at most the target length, so the prompt is within one
// filler sentence of it; a = floor(depth% * N / 100 + 1/2) sentences precede the needle, so depth 0
// puts it right after the instruction and depth 100 right before the question.
//
// Scoring: greedy decoding of `new_tokens` tokens (stopping at EOS); a trial is correct when the
// first run of decimal digits in the decoded text is exactly the key (" 12345." is right; "123456",
// "1234", "12,345" and "54321 ... 12345" are wrong; no digits at all is wrong).
//
// Decoding shares the prompts' common beginning: every prompt of one length starts with the
// instruction and filler up to its needle, so one anchor sequence is fed the filler once and each
// prompt goes on from a copy of it at its own needle (Decoder::copy, as the log-likelihood
// scorer of nn/eval/loglik.h). A causal softmax model, and a linearized one in exact mode, give the same
// continuation as from an empty sequence (the tests check it against generate); reference mode
// does not equal its own chunked prefill, so there every prompt starts from an empty sequence.
#pragma once
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/tokenizer.h"
#include "nn/eval/loglik.h"

namespace lolcats {

extern const char* const kPasskeyInstruction;
extern const char* const kPasskeyFiller[5];
extern const char* const kPasskeyQuestion;

// The prompt's text with `filler` sentences, `before` of them ahead of the needle.
std::string passkey_text(int filler, int before, int key);
// Filler sentences ahead of the needle at `depth` % of `filler`: floor(depth * filler / 100 + 1/2).
int passkey_before(int filler, int depth);

struct PasskeyPrompt {
  int length = 0, depth = 0;  // target tokens, needle depth in %
  int key = 0;                // 10000 .. 99999
  int filler = 0, before = 0; // filler sentences N, and a of them before the needle
  std::string text;
  std::vector<int32_t> ids;   // what the model reads: BOS (when `bos`) + the text's tokens
};
// The prompt of at most `length` tokens closest to it (N fitted by bisection: the token count
// grows with N). An error when even N = 0 does not fit.
PasskeyPrompt build_passkey_prompt(const Tokenizer& tok, int length, int depth, int key, bool bos);

// The scoring rule above.
bool passkey_correct(const std::string& output, int key);
// The key of trial `trial` of cell (length, depth): a five-digit number from a generator seeded by
// (seed, length, depth, trial), so a cell's keys do not depend on which other cells run.
int passkey_key(uint64_t seed, int length, int depth, int trial);

struct PasskeyGenOptions {
  int new_tokens = 10;                       // greedy tokens per prompt
  std::vector<int32_t> stop_ids;             // a prompt ends after making one of these
  bool share_prefix = true;                  // an anchor sequence feeds common beginnings once;
                                             // false: each prompt from an empty sequence, in one piece
  int max_slots = 16;                        // sequences in one step, the anchor included
  size_t max_state_bytes = size_t(2) << 30;  // bound on all slots' decode state (KV caches)
  int max_rows = 1024;                       // prompt rows fed in one step (each a row of every matmul)
};
// Greedy continuations of `prompts` (each non-empty): result[i] continues prompts[i]. progress(prompts
// done, tokens fed) after each step.
std::vector<std::vector<int32_t>> passkey_generate(Decoder& decoder,
                                                   const std::vector<std::vector<int32_t>>& prompts,
                                                   const PasskeyGenOptions& options,
                                                   const std::function<void(size_t, size_t)>& progress = {});

struct PasskeyOptions {
  std::vector<int> lengths = {512, 1024, 2048, 4096};
  std::vector<int> depths = {0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100};
  int trials = 1;            // prompts per (length, depth) cell, each with its own key
  uint64_t seed = 1234;
  bool bos = false;          // BOS before each prompt
  int max_position = 0;      // the model's positions (0: unknown, no check)
  bool progress = true;      // a progress line with ETA on stderr
  PasskeyGenOptions gen;
};

struct PasskeyTrial {
  int length = 0, depth = 0, trial = 0, key = 0;
  int prompt_tokens = 0;  // the prompt's actual length (<= length)
  int needle_token = 0;   // where the needle's line starts, in tokens (as the prompt's tokenizer cut it)
  std::string output;     // the decoded continuation
  bool correct = false;
};
struct PasskeyResult {
  PasskeyOptions options;
  std::vector<PasskeyTrial> trials;  // in (length, depth, trial) order
  size_t tokens = 0;                 // tokens fed to the model
  double seconds = 0;
};

// Every cell of the grid: builds the prompts, decodes them (longest length first), scores them. An
// error before any work when a length plus the generated tokens pass the model's positions.
PasskeyResult run_passkey(Decoder& decoder, const Tokenizer& tok, const PasskeyOptions& options);

// results["tasks"]["passkey"]: the mean accuracy as its metric (for ./eval's table and --compare),
// the grid (lengths, depths, per cell accuracy and n), the rule, and every trial.
nlohmann::json passkey_json(const PasskeyResult& r);
// One row per length, a column per depth (accuracy in %), and the row's mean.
void print_passkey_table(const nlohmann::json& passkey, FILE* out);

}  // namespace lolcats
