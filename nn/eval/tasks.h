// The zero-shot and 5-shot evaluation sets (../shared/data/eval/, described in its SOURCES.md),
// read and turned into the requests the paper's harness scores (LOLCATS.md section 8).
//
// An item is one multiple-choice question; choice k is scored as the log-likelihood of
// continuations[k] given contexts[k] (or contexts[0] when every choice shares one context):
//   piqa        valid.jsonl + valid-labels.lst   "Question: {goal}\nAnswer:"      " " + sol
//   arc_easy    ARC-Easy_test.jsonl              "Question: {question}\nAnswer:"  " " + choice
//   arc_challenge  the same for ARC-Challenge
//   hellaswag   hellaswag_val_full.txt.zst       preprocess(label: ctx)          " " + preprocess(ending)
//               (our copy has ctx_b not capitalised: the first letter after the last ". " is
//               upper-cased, and the item counted when that changes the text)
//   winogrande  dev.jsonl (partial scoring)      sentence[:blank] + option      " " + strip(sentence[blank+1:])
//               (one context per choice, one shared continuation)
//   mmlu        mmlu_data.tar.zst, test split    description + 5 dev examples + question   " A" .. " D"
// acc_norm divides by the choice's length in characters (Unicode code points, as Python's len).
// Every reader reports a malformed file as one error naming the file and its line.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace lolcats {

struct EvalItem {
  std::vector<std::string> contexts;       // 1 (shared by every choice) or one per choice
  std::vector<std::string> continuations;  // (choices) what is scored: " " + choice
  std::vector<int> choice_chars;           // (choices) acc_norm's divisor: len(choice) in code points
  int gold = 0;                            // index of the right choice
  int subject = -1;                        // MMLU: index into EvalTask::subjects
  const std::string& context(size_t k) const { return contexts[contexts.size() == 1 ? 0 : k]; }
};

struct EvalTask {
  std::string name;
  std::vector<EvalItem> items;
  std::vector<std::string> subjects;  // MMLU: the 57 subjects, sorted by name
  std::vector<std::string> notes;     // facts about the data worth a line on stderr
};

// The tasks ./eval knows, in the order it runs them (ppl: the Alpaca perplexity of apps/eval.cpp;
// passkey: nn/eval/passkey.h; neither is read by load_eval_task).
const std::vector<std::string>& eval_task_names();
// Reads task `name` from eval_dir (the layout of ../shared/data/eval/).
EvalTask load_eval_task(const std::string& name, const std::string& eval_dir);

// ---- one item, from its raw fields, as the harness builds it -------------------------------------
EvalItem piqa_item(const std::string& goal, const std::string& sol1, const std::string& sol2, int label);
EvalItem arc_item(const std::string& question, const std::vector<std::string>& choices, int gold);
// `ctx_line` is our copy's first line ("label: ctx"); *capitalised tells whether it changed.
EvalItem hellaswag_item(const std::string& ctx_line, const std::vector<std::string>& endings, int gold,
                        bool* capitalised = nullptr);
EvalItem winogrande_item(const std::string& sentence, const std::string& option1, const std::string& option2,
                         int answer);  // answer 1 or 2, as in the file
struct MmluRow {
  std::string question;
  std::vector<std::string> choices;  // (4) A-D
  int answer = 0;                    // 0-3
};
// `shots`: the subject's first five dev rows, in order.
EvalItem mmlu_item(const std::string& subject, const std::vector<MmluRow>& shots, const MmluRow& row, int subject_index);

// ---- text rules ---------------------------------------------------------------------------------
std::string python_strip(const std::string& s);  // str.strip(): Unicode whitespace at both ends
int utf8_length(const std::string& s);           // code points (len() of the Python string)
// HellaSwag's preprocess: strip, " [title]" -> ". ", drop "[...]" tags, "  " -> " ".
std::string hellaswag_preprocess(const std::string& s);
// Upper-cases the first letter after the last ". " (our copy's ctx_b.capitalize()).
std::string hellaswag_capitalise(const std::string& ctx, bool* changed = nullptr);

// ---- containers ---------------------------------------------------------------------------------
// RFC 4180 CSV: fields separated by ',', records by LF or CRLF; a field in double quotes may hold
// commas, line breaks (kept verbatim) and "" for a quote. `name` is the file in error messages,
// which give the line of the problem. record_lines (optional): the line where each record starts.
std::vector<std::vector<std::string>> parse_csv(const std::string& text, const std::string& name,
                                                std::vector<int>* record_lines = nullptr);
// The regular files of a tar archive (ustar or plain v7 headers: name, size, data padded to 512
// bytes), in archive order; directories and links are skipped.
struct TarFile {
  std::string name, data;
};
std::vector<TarFile> read_tar(const std::string& bytes, const std::string& name);

// ---- the raw files, from text already in memory (`name` is the file in errors) ------------------
EvalTask parse_piqa(const std::string& jsonl, const std::string& labels, const std::string& name,
                    const std::string& labels_name);
EvalTask parse_arc(const std::string& jsonl, const std::string& name, const std::string& task);
EvalTask parse_hellaswag(const std::string& text, const std::string& name);
EvalTask parse_winogrande(const std::string& jsonl, const std::string& name);
EvalTask parse_mmlu(const std::vector<TarFile>& files, const std::string& name);

// ---- subsets ------------------------------------------------------------------------------------
// The first `limit` of a seeded permutation of [0, n), back in increasing order (Fisher-Yates on
// std::mt19937_64, whose output the standard fixes). limit <= 0 or >= n: all of [0, n).
std::vector<size_t> seeded_subset(size_t n, long limit, uint64_t seed);
constexpr uint64_t kEvalSubsetSeed = 1234;
// Keeps a seeded subset of about `limit` items. MMLU is sampled per subject, in proportion to the
// subject's size (at least one question each), so that its macro average keeps all 57 subjects.
void limit_eval_task(EvalTask& task, long limit, uint64_t seed = kEvalSubsetSeed);

}  // namespace lolcats
