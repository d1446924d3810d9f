// The zero-shot / 5-shot tasks scored as the paper's harness scores them (LOLCATS.md section 8):
// requests tokenised without BOS (by default), log-likelihoods from nn/eval/loglik.h, then
//   acc       = mean over items of [argmax_k loglik_k == gold]
//   acc_norm  = the same with loglik_k / (choice k's length in characters)
//   stderr    = sample standard deviation / sqrt(n) of the per-item 0/1 scores (as the harness)
//   MMLU      = acc macro-averaged over its subjects (the paper's number) and micro-averaged over
//               questions; the macro stderr is sqrt(sum_s stderr_s^2) / S, the standard error of
//               a mean of S independent subject means.
// Results go to a JSON object (one entry per task) that --compare reads back.
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/tokenizer.h"
#include "nn/eval/loglik.h"
#include "nn/eval/tasks.h"

namespace lolcats {

struct HarnessOptions {
  bool bos = false;           // prepend BOS to every context (the paper's harness does not)
  bool progress = true;       // a progress line with ETA on stderr
  LoglikOptions loglik;
};

// The requests of one item, tokenised as the harness does: trailing whitespace of a context moves
// to the front of its continuation, context and continuation are encoded separately (an empty
// context becomes the EOS token), BOS before the context when `bos`.
std::vector<LoglikRequest> item_requests(const EvalItem& item, const Tokenizer& tok, bool bos);

struct Metric {
  std::string name;  // acc, acc_norm, acc_macro
  double value = 0, stderr_ = 0;
  size_t n = 0;
};
struct TaskResult {
  std::string task;
  std::vector<Metric> metrics;
  std::string paper_metric;  // the column the paper reports for this task
  std::vector<std::pair<std::string, Metric>> subjects;  // MMLU: acc per subject
  std::vector<std::vector<Loglik>> logliks;              // (items, choices)
  size_t tokens = 0;                                     // tokens fed to the model
  double seconds = 0;
};

// Scores every item of `task` and computes its metrics: on a decoder (score_loglik), or with any
// scorer of requests (score_loglik_whole), which reports progress(items done, tokens fed).
TaskResult evaluate_task(const EvalTask& task, const Tokenizer& tok, Decoder& decoder,
                         const HarnessOptions& options);
using LoglikScorer = std::function<std::vector<std::vector<Loglik>>(
    const std::vector<std::vector<LoglikRequest>>& items, const std::function<void(size_t, size_t)>& progress)>;
TaskResult evaluate_task(const EvalTask& task, const Tokenizer& tok, const LoglikScorer& scorer,
                         const HarnessOptions& options);
// Metrics of already-scored items (what evaluate_task computes after scoring).
void compute_metrics(const EvalTask& task, TaskResult& result);

// results["tasks"][name]: the metrics, the paper's column, time and tokens, each item's per-choice
// log-likelihoods ("logliks") and, for MMLU, the accuracy per subject.
nlohmann::json result_json(const TaskResult& r);
// A table row per metric: task, metric, value and stderr (in %), n.
void print_results_table(const nlohmann::json& tasks, FILE* out);
// Teacher (a) vs linearized (b) from two results files, with the paper's numbers.
void print_comparison(const nlohmann::json& a, const nlohmann::json& b, FILE* out);

}  // namespace lolcats
