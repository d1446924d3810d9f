#include "nn/eval/tasks.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <random>

#include <nlohmann/json.hpp>

#include "data/token_cache.h"
#include "tensor/check.h"

namespace lolcats {

const std::vector<std::string>& eval_task_names() {
  static const std::vector<std::string> names = {"piqa",       "arc_easy",   "arc_challenge", "hellaswag",
                                                 "winogrande", "mmlu",       "ppl",           "passkey"};
  return names;
}

// ---- text rules ---------------------------------------------------------------------------------

namespace {

// Decodes the code point at s[i] (advancing i); malformed bytes count as one code point each.
uint32_t next_code_point(const std::string& s, size_t& i) {
  const unsigned char c = static_cast<unsigned char>(s[i]);
  const int extra = c < 0x80 ? 0 : (c >> 5) == 6 ? 1 : (c >> 4) == 14 ? 2 : (c >> 3) == 30 ? 3 : -1;
  if (extra <= 0 || i + size_t(extra) >= s.size()) return i++, c;
  uint32_t cp = c & (0x3F >> extra);
  for (int k = 1; k <= extra; k++) {
    const unsigned char d = static_cast<unsigned char>(s[i + size_t(k)]);
    if ((d & 0xC0) != 0x80) return i++, c;
    cp = (cp << 6) | (d & 0x3F);
  }
  i += size_t(extra) + 1;
  return cp;
}

// Python's str.isspace() for one code point.
bool is_python_space(uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

std::string replace_all(const std::string& s, const std::string& from, const std::string& to) {
  std::string out;  // left to right, non-overlapping: Python's str.replace
  size_t i = 0;
  for (size_t j; (j = s.find(from, i)) != std::string::npos; i = j + from.size()) out += s.substr(i, j - i) + to;
  return out + s.substr(i);
}

}  // namespace

std::string python_strip(const std::string& s) {
  size_t begin = s.size(), end = 0;
  for (size_t i = 0; i < s.size();) {
    const size_t at = i;
    if (!is_python_space(next_code_point(s, i))) {
      begin = std::min(begin, at);
      end = i;
    }
  }
  return begin >= end ? std::string() : s.substr(begin, end - begin);
}

int utf8_length(const std::string& s) {
  int n = 0;
  for (size_t i = 0; i < s.size(); n++) next_code_point(s, i);
  return n;
}

std::string hellaswag_preprocess(const std::string& text) {
  std::string s = replace_all(python_strip(text), " [title]", ". ");
  std::string out;  // re.sub("\\[.*?\\]", "", s): a '[' up to the nearest ']' on the same line
  for (size_t i = 0; i < s.size(); i++) {
    if (s[i] == '[') {
      const size_t close = s.find_first_of("]\n", i + 1);
      if (close != std::string::npos && s[close] == ']') {
        i = close;
        continue;
      }
    }
    out += s[i];
  }
  return replace_all(out, "  ", " ");
}

std::string hellaswag_capitalise(const std::string& ctx, bool* changed) {
  std::string out = ctx;
  const size_t dot = ctx.rfind(". ");
  const size_t at = dot == std::string::npos ? std::string::npos : dot + 2;
  const bool lower = at < ctx.size() && ctx[at] >= 'a' && ctx[at] <= 'z';
  if (lower) out[at] = char(ctx[at] - 'a' + 'A');
  if (changed) *changed = lower;
  return out;
}

// ---- items --------------------------------------------------------------------------------------

namespace {

EvalItem shared_context_item(const std::string& context, const std::vector<std::string>& choices, int gold) {
  EvalItem it;
  it.contexts = {context};
  for (const std::string& c : choices) {
    it.continuations.push_back(" " + c);
    it.choice_chars.push_back(utf8_length(c));
  }
  it.gold = gold;
  return it;
}

// "{question}\nA. {a}\nB. {b}\nC. {c}\nD. {d}\nAnswer:" (the question stripped, choices as they are)
std::string mmlu_question(const MmluRow& r) {
  std::string s = python_strip(r.question) + "\n";
  for (size_t k = 0; k < r.choices.size(); k++) s += std::string(1, char('A' + k)) + ". " + r.choices[k] + "\n";
  return s + "Answer:";
}

}  // namespace

EvalItem piqa_item(const std::string& goal, const std::string& sol1, const std::string& sol2, int label) {
  return shared_context_item("Question: " + goal + "\nAnswer:", {sol1, sol2}, label);
}

EvalItem arc_item(const std::string& question, const std::vector<std::string>& choices, int gold) {
  return shared_context_item("Question: " + question + "\nAnswer:", choices, gold);
}

EvalItem hellaswag_item(const std::string& ctx_line, const std::vector<std::string>& endings, int gold,
                        bool* capitalised) {
  std::vector<std::string> choices;
  for (const std::string& e : endings) choices.push_back(hellaswag_preprocess(e));
  return shared_context_item(hellaswag_preprocess(hellaswag_capitalise(ctx_line, capitalised)), choices, gold);
}

EvalItem winogrande_item(const std::string& sentence, const std::string& option1, const std::string& option2,
                         int answer) {
  const size_t blank = sentence.find('_');
  ENSURE(blank != std::string::npos, "winogrande: the sentence has no blank '_': %s", sentence.c_str());
  EvalItem it;
  for (const std::string* o : {&option1, &option2}) {
    it.contexts.push_back(sentence.substr(0, blank) + *o);
    it.continuations.push_back(" " + python_strip(sentence.substr(blank + 1)));
    it.choice_chars.push_back(utf8_length(*o));
  }
  it.gold = answer - 1;
  return it;
}

EvalItem mmlu_item(const std::string& subject, const std::vector<MmluRow>& shots, const MmluRow& row,
                   int subject_index) {
  std::string ctx = "The following are multiple choice questions (with answers) about " +
                    replace_all(subject, "_", " ") + ".\n\n";
  for (const MmluRow& s : shots) ctx += mmlu_question(s) + " " + char('A' + s.answer) + "\n\n";
  EvalItem it = shared_context_item(ctx + mmlu_question(row), {"A", "B", "C", "D"}, row.answer);
  it.subject = subject_index;
  return it;
}

// ---- containers ---------------------------------------------------------------------------------

std::vector<std::vector<std::string>> parse_csv(const std::string& t, const std::string& name,
                                                std::vector<int>* record_lines) {
  std::vector<std::vector<std::string>> records;
  std::vector<std::string> rec;
  std::string field;
  int line = 1;
  size_t i = 0;
  while (i < t.size()) {
    const int record_line = line;
    rec.clear();
    for (;;) {  // one field
      field.clear();
      if (i < t.size() && t[i] == '"') {
        const int quote_line = line;
        for (i++;; i++) {
          ENSURE(i < t.size(), "%s:%d: a quoted field never ends (its closing \" is missing)", name.c_str(), quote_line);
          if (t[i] == '"') {
            if (i + 1 < t.size() && t[i + 1] == '"') field += t[i++];
            else break;
          } else {
            line += t[i] == '\n';
            field += t[i];
          }
        }
        i++;  // the closing quote: a separator or the record's end must follow
        ENSURE(i >= t.size() || t[i] == ',' || t[i] == '\n' || (t[i] == '\r' && i + 1 < t.size() && t[i + 1] == '\n'),
               "%s:%d: text after a closing quote (write a quote inside a quoted field as \"\")", name.c_str(), line);
      } else {
        for (; i < t.size() && t[i] != ',' && t[i] != '\n' && !(t[i] == '\r' && i + 1 < t.size() && t[i + 1] == '\n');
             i++) {
          ENSURE(t[i] != '"', "%s:%d: a quote inside an unquoted field", name.c_str(), line);
          field += t[i];
        }
      }
      rec.push_back(field);
      if (i < t.size() && t[i] == ',') {
        i++;
        continue;
      }
      if (i < t.size()) i += t[i] == '\r' ? 2 : 1, line++;  // the record ends (CRLF or LF)
      break;
    }
    records.push_back(rec);
    if (record_lines) record_lines->push_back(record_line);
  }
  return records;
}

std::vector<TarFile> read_tar(const std::string& b, const std::string& name) {
  std::vector<TarFile> files;
  auto octal = [&](size_t at, size_t len, const char* what) {
    uint64_t v = 0;
    size_t i = at;
    while (i < at + len && b[i] == ' ') i++;
    for (; i < at + len && b[i] >= '0' && b[i] <= '7'; i++) v = v * 8 + uint64_t(b[i] - '0');
    ENSURE(i == at + len || b[i] == '\0' || b[i] == ' ', "%s: the tar header at byte %zu has a bad %s field",
           name.c_str(), at - at % 512, what);
    return v;
  };
  for (size_t at = 0;;) {
    ENSURE(at + 512 <= b.size(), "%s: the archive ends inside a header at byte %zu (truncated?)", name.c_str(), at);
    const char* h = b.data() + at;
    if (std::all_of(h, h + 512, [](char c) { return c == 0; })) break;  // the end-of-archive block
    uint64_t sum = 0;  // the checksum counts its own field as 8 spaces
    for (size_t i = 0; i < 512; i++) sum += (i >= 148 && i < 156) ? uint64_t(' ') : uint64_t(static_cast<unsigned char>(h[i]));
    ENSURE(octal(at + 148, 8, "checksum") == sum, "%s: the tar header at byte %zu fails its checksum", name.c_str(), at);
    std::string file(h, strnlen(h, 100));
    if (std::memcmp(h + 257, "ustar", 5) == 0 && h[345] != 0) file = std::string(h + 345, strnlen(h + 345, 155)) + "/" + file;
    const uint64_t size = octal(at + 124, 12, "size");
    const size_t data = at + 512;
    ENSURE(size <= b.size() - data, "%s: %s claims %llu bytes, past the archive's end", name.c_str(), file.c_str(),
           (unsigned long long)size);
    const char type = h[156];
    if (type == '0' || type == '\0') files.push_back({file, b.substr(data, size_t(size))});
    at = data + (size_t(size) + 511) / 512 * 512;
  }
  return files;
}

// ---- the raw files ------------------------------------------------------------------------------

namespace {

using nlohmann::json;

// The non-blank lines of a JSONL text as (line number, object).
std::vector<std::pair<int, json>> jsonl_objects(const std::string& text, const std::string& name) {
  std::vector<std::pair<int, json>> out;
  int line = 0;
  for (size_t i = 0; i < text.size();) {
    size_t end = text.find('\n', i);
    if (end == std::string::npos) end = text.size();
    line++;
    const std::string s = text.substr(i, end - i);
    i = end + 1;
    if (s.find_first_not_of(" \t\r") == std::string::npos) continue;
    json j = json::parse(s, nullptr, false);
    ENSURE(!j.is_discarded() && j.is_object(), "%s:%d: not a JSON object", name.c_str(), line);
    out.emplace_back(line, std::move(j));
  }
  return out;
}

std::string str_field(const json& j, const char* key, const std::string& name, int line) {
  ENSURE(j.contains(key) && j[key].is_string(), "%s:%d: field \"%s\" is missing or not a string", name.c_str(), line,
         key);
  return j[key].get<std::string>();
}

}  // namespace

EvalTask parse_piqa(const std::string& jsonl, const std::string& labels, const std::string& name,
                    const std::string& labels_name) {
  EvalTask t{"piqa", {}, {}, {}};
  std::vector<std::pair<int, json>> docs = jsonl_objects(jsonl, name);
  std::vector<int> gold;
  int line = 0;
  for (size_t i = 0; i < labels.size();) {
    size_t end = labels.find('\n', i);
    if (end == std::string::npos) end = labels.size();
    std::string s = python_strip(labels.substr(i, end - i));
    i = end + 1, line++;
    if (s.empty()) continue;
    ENSURE(s == "0" || s == "1", "%s:%d: a label must be 0 or 1, got \"%s\"", labels_name.c_str(), line, s.c_str());
    gold.push_back(s[0] - '0');
  }
  ENSURE(gold.size() == docs.size(), "%s has %zu labels for the %zu questions of %s", labels_name.c_str(), gold.size(),
         docs.size(), name.c_str());
  for (size_t i = 0; i < docs.size(); i++) {
    const auto& [ln, j] = docs[i];
    t.items.push_back(piqa_item(str_field(j, "goal", name, ln), str_field(j, "sol1", name, ln),
                                str_field(j, "sol2", name, ln), gold[i]));
  }
  return t;
}

EvalTask parse_arc(const std::string& jsonl, const std::string& name, const std::string& task) {
  EvalTask t{task, {}, {}, {}};
  for (const auto& [ln, j] : jsonl_objects(jsonl, name)) {
    ENSURE(j.contains("choices") && j["choices"].is_array() && j["choices"].size() >= 2,
           "%s:%d: \"choices\" must be an array of at least 2 strings", name.c_str(), ln);
    std::vector<std::string> choices;
    for (const json& c : j["choices"]) {
      ENSURE(c.is_string(), "%s:%d: a choice is not a string", name.c_str(), ln);
      choices.push_back(c.get<std::string>());
    }
    ENSURE(j.contains("gold") && j["gold"].is_number_integer() && j["gold"].get<int>() >= 0 &&
               j["gold"].get<size_t>() < choices.size(),
           "%s:%d: \"gold\" must be a choice's index (0..%zu)", name.c_str(), ln, choices.size() - 1);
    t.items.push_back(arc_item(str_field(j, "question", name, ln), choices, j["gold"].get<int>()));
  }
  return t;
}

EvalTask parse_hellaswag(const std::string& text, const std::string& name) {
  EvalTask t{"hellaswag", {}, {}, {}};
  std::vector<std::string> lines;
  for (size_t i = 0; i < text.size();) {
    size_t end = text.find('\n', i);
    if (end == std::string::npos) end = text.size();
    lines.push_back(text.substr(i, end - i));
    i = end + 1;
  }
  ENSURE(lines.size() % 6 == 0, "%s:%zu: %zu lines; the file holds 6 lines per item (context, label, 4 endings)",
         name.c_str(), lines.size(), lines.size());
  int changed = 0;
  for (size_t i = 0; i < lines.size(); i += 6) {
    const std::string& g = lines[i + 1];
    ENSURE(g.size() == 1 && g[0] >= '0' && g[0] <= '3', "%s:%zu: the label must be 0-3, got \"%s\"", name.c_str(),
           i + 2, g.c_str());
    bool cap = false;
    t.items.push_back(hellaswag_item(lines[i], {lines[i + 2], lines[i + 3], lines[i + 4], lines[i + 5]}, g[0] - '0', &cap));
    changed += cap;
  }
  t.notes.push_back(strfmt("hellaswag: ctx_b capitalised (first letter after the last \". \") in %d of %zu items",
                           changed, t.items.size()));
  return t;
}

EvalTask parse_winogrande(const std::string& jsonl, const std::string& name) {
  EvalTask t{"winogrande", {}, {}, {}};
  for (const auto& [ln, j] : jsonl_objects(jsonl, name)) {
    const std::string s = str_field(j, "sentence", name, ln), a = str_field(j, "answer", name, ln);
    ENSURE(s.find('_') != std::string::npos, "%s:%d: the sentence has no blank '_'", name.c_str(), ln);
    ENSURE(a == "1" || a == "2", "%s:%d: \"answer\" must be \"1\" or \"2\", got \"%s\"", name.c_str(), ln, a.c_str());
    t.items.push_back(winogrande_item(s, str_field(j, "option1", name, ln), str_field(j, "option2", name, ln), a[0] - '0'));
  }
  return t;
}

EvalTask parse_mmlu(const std::vector<TarFile>& files, const std::string& name) {
  EvalTask t{"mmlu", {}, {}, {}};
  std::map<std::string, std::vector<MmluRow>> dev, test;  // by subject, sorted
  for (const TarFile& f : files) {
    for (const char* split : {"dev", "test"}) {
      const std::string dir = std::string("data/") + split + "/", suffix = std::string("_") + split + ".csv";
      if (f.name.rfind(dir, 0) != 0 || f.name.size() <= dir.size() + suffix.size() ||
          f.name.compare(f.name.size() - suffix.size(), suffix.size(), suffix) != 0)
        continue;
      const std::string subject = f.name.substr(dir.size(), f.name.size() - dir.size() - suffix.size());
      const std::string where = name + ":" + f.name;
      std::vector<MmluRow>& rows = (std::string(split) == "dev" ? dev : test)[subject];
      std::vector<int> lines;
      const std::vector<std::vector<std::string>> records = parse_csv(f.data, where, &lines);
      for (size_t i = 0; i < records.size(); i++) {
        const std::vector<std::string>& r = records[i];
        const int line = lines[i];
        ENSURE(r.size() == 6, "%s:%d: %zu fields; a row is question, A, B, C, D, answer", where.c_str(), line, r.size());
        ENSURE(r[5].size() == 1 && r[5][0] >= 'A' && r[5][0] <= 'D', "%s:%d: the answer must be A-D, got \"%s\"",
               where.c_str(), line, r[5].c_str());
        rows.push_back({r[0], {r[1], r[2], r[3], r[4]}, r[5][0] - 'A'});
      }
    }
  }
  ENSURE(!test.empty(), "%s holds no data/test/*_test.csv", name.c_str());
  for (const auto& [subject, rows] : test) {
    auto d = dev.find(subject);
    ENSURE(d != dev.end() && d->second.size() >= 5, "%s: subject %s has fewer than 5 dev examples for its 5 shots",
           name.c_str(), subject.c_str());
    const std::vector<MmluRow> shots(d->second.begin(), d->second.begin() + 5);
    t.subjects.push_back(subject);
    for (const MmluRow& r : rows) t.items.push_back(mmlu_item(subject, shots, r, int(t.subjects.size()) - 1));
  }
  return t;
}

EvalTask load_eval_task(const std::string& task, const std::string& dir) {
  if (task == "piqa")
    return parse_piqa(read_file(dir + "/piqa/valid.jsonl"), read_file(dir + "/piqa/valid-labels.lst"),
                      dir + "/piqa/valid.jsonl", dir + "/piqa/valid-labels.lst");
  if (task == "arc_easy") return parse_arc(read_file(dir + "/arc_easy/ARC-Easy_test.jsonl"), dir + "/arc_easy/ARC-Easy_test.jsonl", task);
  if (task == "arc_challenge")
    return parse_arc(read_file(dir + "/arc_challenge/ARC-Challenge_test.jsonl"),
                     dir + "/arc_challenge/ARC-Challenge_test.jsonl", task);
  if (task == "hellaswag") {
    const std::string p = dir + "/hellaswag/hellaswag_val_full.txt.zst";
    return parse_hellaswag(decompress_if_zstd(read_file(p), p), p);
  }
  if (task == "winogrande") return parse_winogrande(read_file(dir + "/winogrande/dev.jsonl"), dir + "/winogrande/dev.jsonl");
  if (task == "mmlu") {
    const std::string p = dir + "/mmlu/mmlu_data.tar.zst";
    return parse_mmlu(read_tar(decompress_if_zstd(read_file(p), p), p), p);
  }
  fail(__FILE__, __LINE__, "unknown task \"" + task + "\" (piqa, arc_easy, arc_challenge, hellaswag, winogrande, mmlu, ppl)");
}

// ---- subsets ------------------------------------------------------------------------------------

std::vector<size_t> seeded_subset(size_t n, long limit, uint64_t seed) {
  std::vector<size_t> idx(n);
  for (size_t i = 0; i < n; i++) idx[i] = i;
  if (limit <= 0 || size_t(limit) >= n) return idx;
  std::mt19937_64 rng(seed);
  for (size_t i = n - 1; i > 0; i--) std::swap(idx[i], idx[size_t(rng() % (i + 1))]);
  idx.resize(size_t(limit));
  std::sort(idx.begin(), idx.end());
  return idx;
}

void limit_eval_task(EvalTask& t, long limit, uint64_t seed) {
  if (limit <= 0 || size_t(limit) >= t.items.size()) return;
  std::vector<EvalItem> kept;
  if (t.subjects.empty()) {
    for (size_t i : seeded_subset(t.items.size(), limit, seed)) kept.push_back(std::move(t.items[i]));
  } else {  // per subject, in proportion to its size (items are grouped by subject, in order)
    const double share = double(limit) / double(t.items.size());
    for (size_t s = 0, begin = 0; s < t.subjects.size(); s++) {
      size_t end = begin;
      while (end < t.items.size() && t.items[end].subject == int(s)) end++;
      const long quota = std::max(1L, std::lround(share * double(end - begin)));
      for (size_t i : seeded_subset(end - begin, quota, seed + s)) kept.push_back(std::move(t.items[begin + i]));
      begin = end;
    }
  }
  t.items = std::move(kept);
}

}  // namespace lolcats
