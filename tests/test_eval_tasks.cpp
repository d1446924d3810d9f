// ./eval's tasks (nn/eval/tasks.h, nn/eval/loglik.h, nn/eval/harness.h):
//   - prompts built from hand-written items, spelled out here from the harness's rules;
//   - the CSV and tar readers (the tar written by Python's tarfile), and one clear error line
//     naming the file and line for malformed task files;
//   - the decode step's every-row logits and copied sequences, and the prefix-sharing scorer,
//     against the parallel forward (softmax and linearized);
//   - per-choice log-likelihoods on SmolLM2-135M-Instruct against Hugging Face transformers on
//     prompts tests/reference/ref_eval.py builds itself from the raw files.
#include <set>
#include <nlohmann/json.hpp>
#include <random>
#include <sys/stat.h>

#include "autograd/gradcheck.h"
#include "autograd/ops.h"
#include "data/defaults.h"
#include "data/token_cache.h"
#include "lolcats/recurrent.h"
#include "nn/eval/harness.h"
#include "nn/eval/loglik.h"
#include "nn/eval/tasks.h"
#include "nn/generate.h"
#include "nn/llama.h"
#include "tests/helpers.h"

using namespace lolcats;
using lolcats_test::fixture_dir;
using nlohmann::json;

namespace {

const std::string kEvalDir = kDefaultEvalDir;
const std::string kSmol = kDefaultModel;

bool exists(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0;
}

// The message of the error `f` throws ("" if none).
template <typename F>
std::string error_of(F f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

// One line that names `where` (file:line).
void check_error_line(const std::string& msg, const std::string& where) {
  INFO(msg);
  CHECK(msg.find(where) != std::string::npos);
  CHECK(msg.find('\n') == std::string::npos);
}

}  // namespace

// ---- prompts ------------------------------------------------------------------------------------

TEST_CASE("eval tasks: prompts of hand-written items follow the harness", "[eval]") {
  EvalItem p = piqa_item("Dry a wet phone?", "Put it in rice.", "Put it in water. ", 1);
  CHECK(p.contexts == std::vector<std::string>{"Question: Dry a wet phone?\nAnswer:"});
  CHECK(p.continuations == std::vector<std::string>{" Put it in rice.", " Put it in water. "});  // not stripped
  CHECK(p.choice_chars == std::vector<int>{15, 17});
  CHECK(p.gold == 1);

  EvalItem a = arc_item("Which is a liquid?", {"ice", "na\xc3\xafve water", "steam"}, 1);
  CHECK(a.context(2) == "Question: Which is a liquid?\nAnswer:");
  CHECK(a.continuations[1] == " na\xc3\xafve water");
  CHECK(a.choice_chars == std::vector<int>{3, 11, 5});  // characters, not bytes (12)

  // ctx_b gets its capital back; [title] becomes ". ", other tags go, then double spaces collapse
  // once (strip first: a leading space left by a removed tag stays).
  bool cap = false;
  EvalItem h = hellaswag_item("Roof shingle removal: A man is sitting on a roof. he",
                              {"is using wrap [title] to wrap.", "[header] How to x [step] Do y", "a  b   c", " d "}, 3,
                              &cap);
  CHECK(cap);
  CHECK(h.contexts == std::vector<std::string>{"Roof shingle removal: A man is sitting on a roof. He"});
  CHECK(h.continuations ==
        std::vector<std::string>{" is using wrap. to wrap.", "  How to x Do y", " a b  c", " d"});
  CHECK(h.choice_chars == std::vector<int>{23, 14, 6, 1});
  CHECK(hellaswag_capitalise("Label: no period here", &cap) == "Label: no period here");
  CHECK_FALSE(cap);
  CHECK(hellaswag_capitalise("A: One. Two. \"quoted", &cap) == "A: One. Two. \"quoted");
  CHECK_FALSE(cap);

  // Partial scoring: one context per option, the rest of the sentence as the shared continuation.
  EvalItem w = winogrande_item("The trophy doesn't fit into the suitcase because _ is too large. ", "the trophy",
                               "the suitcase", 1);
  CHECK(w.contexts == std::vector<std::string>{"The trophy doesn't fit into the suitcase because the trophy",
                                               "The trophy doesn't fit into the suitcase because the suitcase"});
  CHECK(w.continuations == std::vector<std::string>{" is too large.", " is too large."});
  CHECK(w.gold == 0);

  std::vector<MmluRow> shots;
  for (int i = 0; i < 5; i++) shots.push_back({" Q" + std::to_string(i) + "?\n", {"a", "b ", "c", "d"}, i % 4});
  EvalItem m = mmlu_item("high_school_physics", shots, {"What?", {"1", "2", "3", "4"}, 2}, 7);
  std::string want = "The following are multiple choice questions (with answers) about high school physics.\n\n";
  for (int i = 0; i < 5; i++)
    want += "Q" + std::to_string(i) + "?\nA. a\nB. b \nC. c\nD. d\nAnswer: " + std::string(1, char('A' + i % 4)) + "\n\n";
  want += "What?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer:";
  CHECK(m.contexts == std::vector<std::string>{want});
  CHECK(m.continuations == std::vector<std::string>{" A", " B", " C", " D"});
  CHECK(m.gold == 2);
  CHECK(m.subject == 7);
}

TEST_CASE("eval tasks: Python's strip and len", "[eval]") {
  CHECK(python_strip("\xc2\xa0 \t x  y\n\r\x0b\x0c\xe3\x80\x80") == "x  y");  // NBSP, ideographic space
  CHECK(python_strip(" \n ") == "");
  CHECK(python_strip("\xc3\xa9") == "\xc3\xa9");
  CHECK(utf8_length("na\xc3\xafve") == 5);
  CHECK(utf8_length("\xf0\x9f\x98\x80!") == 2);  // an emoji is one character
  CHECK(hellaswag_preprocess("  [a]b[c]  d ") == "b d");
  CHECK(hellaswag_preprocess("x [unclosed y") == "x [unclosed y");
}

// ---- readers ------------------------------------------------------------------------------------

TEST_CASE("eval tasks: CSV with quotes, CRLF and line breaks inside fields", "[eval]") {
  std::vector<int> lines;
  auto r = parse_csv("a,\"b,c\",\"d\"\"e\"\r\n\"multi\r\nline\",x,\nlast,\"\"", "f.csv", &lines);
  REQUIRE(r.size() == 3);
  CHECK(r[0] == std::vector<std::string>{"a", "b,c", "d\"e"});
  CHECK(r[1] == std::vector<std::string>{"multi\r\nline", "x", ""});
  CHECK(r[2] == std::vector<std::string>{"last", ""});
  CHECK(lines == std::vector<int>{1, 2, 4});
  check_error_line(error_of([] { parse_csv("a,b\nc,\"never closed\n\n", "f.csv"); }), "f.csv:2");
  check_error_line(error_of([] { parse_csv("a,b\n\nc,\"q\"x\n", "f.csv"); }), "f.csv:3");
  check_error_line(error_of([] { parse_csv("a,b\"c\n", "f.csv"); }), "f.csv:1");
}

TEST_CASE("eval tasks: a tar written by Python's tarfile", "[eval]") {
  const std::string dir = fixture_dir() + "/eval";
  (void)lolcats_test::fixture("ref_eval");  // written last: the side files are complete
  std::vector<TarFile> files = read_tar(read_file(dir + "/small.tar"), "small.tar");
  json want = json::parse(read_file(dir + "/small_tar.json"));
  REQUIRE(files.size() == want.size());  // the directory entry is skipped
  for (size_t i = 0; i < files.size(); i++) {
    CHECK(files[i].name == want[i]["name"].get<std::string>());  // incl. one split into prefix + name
    CHECK(files[i].data == want[i]["data"].get<std::string>());
  }
  std::string bytes = read_file(dir + "/small.tar");
  CHECK(error_of([&] { read_tar(bytes.substr(0, 700), "cut.tar"); }).find("cut.tar") != std::string::npos);
  std::string bad = bytes;
  bad[10] ^= 1;  // a name byte: the checksum no longer matches
  CHECK(error_of([&] { read_tar(bad, "bad.tar"); }).find("checksum") != std::string::npos);
}

TEST_CASE("eval tasks: a malformed task file is one error naming the file and line", "[eval]") {
  const std::string ok = "{\"goal\": \"g\", \"sol1\": \"a\", \"sol2\": \"b\"}\n";
  check_error_line(error_of([&] { parse_piqa(ok + "{\"goal\": \n", "0\n1\n", "p.jsonl", "p.lst"); }), "p.jsonl:2");
  check_error_line(error_of([&] { parse_piqa(ok + "\n{\"goal\": 3, \"sol1\": \"a\", \"sol2\": \"b\"}\n", "0\n1\n",
                                             "p.jsonl", "p.lst"); }),
                   "p.jsonl:3");
  check_error_line(error_of([&] { parse_piqa(ok + ok, "0\n2\n", "p.jsonl", "p.lst"); }), "p.lst:2");
  CHECK(error_of([&] { parse_piqa(ok + ok, "0\n", "p.jsonl", "p.lst"); }).find("1 labels for the 2") != std::string::npos);
  check_error_line(error_of([] { parse_arc("{\"question\": \"q\", \"choices\": [\"a\", \"b\"], \"gold\": 2}\n", "a.jsonl",
                                           "arc_easy"); }),
                   "a.jsonl:1");
  check_error_line(error_of([] { parse_hellaswag("c: x\n0\na\nb\nc\nd\nc: y\nz\na\nb\nc\nd\n", "h.txt"); }), "h.txt:8");
  check_error_line(error_of([] { parse_hellaswag("c: x\n0\na\nb\n", "h.txt"); }), "h.txt");
  check_error_line(error_of([] { parse_winogrande("{\"sentence\": \"a _ b\", \"option1\": \"x\", \"option2\": \"y\", "
                                                  "\"answer\": \"3\"}\n", "w.jsonl"); }),
                   "w.jsonl:1");
  check_error_line(error_of([] { parse_winogrande("{\"sentence\": \"no blank\", \"option1\": \"x\", \"option2\": "
                                                  "\"y\", \"answer\": \"1\"}\n", "w.jsonl"); }),
                   "w.jsonl:1");
  const std::string dev = "q,a,b,c,d,A\nq,a,b,c,d,B\nq,a,b,c,d,C\nq,a,b,c,d,D\nq,a,b,c,d,A\n";
  check_error_line(error_of([&] { parse_mmlu({{"data/dev/x_dev.csv", dev}, {"data/test/x_test.csv", "q,a,b,c,d,A\n\"q\n2\",a,b,c,E\n"}},
                                             "m.tar"); }),
                   "m.tar:data/test/x_test.csv:2");
  check_error_line(error_of([&] { parse_mmlu({{"data/dev/x_dev.csv", dev}, {"data/test/x_test.csv", "q,a,b,c,d\n"}},
                                             "m.tar"); }),
                   "m.tar:data/test/x_test.csv:1");
  CHECK(error_of([&] { parse_mmlu({{"data/dev/x_dev.csv", "q,a,b,c,d,A\n"}, {"data/test/x_test.csv", "q,a,b,c,d,A\n"}},
                                  "m.tar"); })
            .find("fewer than 5 dev") != std::string::npos);
  EvalTask t = parse_mmlu({{"data/dev/x_dev.csv", dev}, {"data/test/x_test.csv", "q,a,b,c,d,A\n"}}, "m.tar");
  CHECK(t.subjects == std::vector<std::string>{"x"});
}

TEST_CASE("eval tasks: our copies hold the known sizes; seeded subsets", "[eval]") {
  if (!exists(kEvalDir)) SKIP_TEST(kEvalDir << " is missing");
  // Sizes from the datasets' publications (../shared/data/SOURCES.md), not from our reader.
  const std::vector<std::pair<std::string, size_t>> sizes = {{"piqa", 1838}, {"arc_easy", 2376}, {"arc_challenge", 1172},
                                                             {"hellaswag", 10042}, {"winogrande", 1267}, {"mmlu", 14042}};
  for (const auto& [name, n] : sizes) {
    EvalTask t = load_eval_task(name, kEvalDir);
    INFO(name);
    CHECK(t.items.size() == n);
    if (name == "mmlu") {
      CHECK(t.subjects.size() == 57);
      EvalTask l = t;
      limit_eval_task(l, 500);
      CHECK(std::abs(long(l.items.size()) - 500) <= 30);  // rounding per subject
      std::vector<bool> seen(57, false);
      for (const EvalItem& it : l.items) seen[size_t(it.subject)] = true;
      CHECK(std::count(seen.begin(), seen.end(), true) == 57);
    }
  }
  std::vector<size_t> a = seeded_subset(1000, 50, 1), b = seeded_subset(1000, 50, 1), c = seeded_subset(1000, 50, 2);
  CHECK(a == b);
  CHECK(a != c);
  CHECK(a.size() == 50);
  CHECK(std::is_sorted(a.begin(), a.end()));
  CHECK(std::adjacent_find(a.begin(), a.end()) == a.end());
  CHECK(seeded_subset(10, 0, 1).size() == 10);
  CHECK(seeded_subset(10, 20, 1).size() == 10);
}

// ---- the decode step's additions and the scorer, against the parallel forward -------------------

namespace {

// log p(full[t] | full[:t]) for t in [from, T), summed, from a parallel forward's logits (T, V).
double direct_loglik(const std::vector<float>& logits, int V, const std::vector<int32_t>& full, size_t from) {
  double s = 0;
  for (size_t t = from; t < full.size(); t++) {
    const float* l = logits.data() + (t - 1) * size_t(V);
    double mx = *std::max_element(l, l + V), z = 0;
    for (int v = 0; v < V; v++) z += std::exp(double(l[v]) - mx);
    s += double(l[full[t]]) - mx - std::log(z);
  }
  return s;
}

std::vector<int32_t> random_ids(std::mt19937& rng, int n, int V) {
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (int32_t& t : ids) t = int32_t(rng() % uint32_t(V));
  return ids;
}

// Items that exercise every path of score_loglik: a shared context with choices of different
// lengths; one context per choice sharing a prefix (WinoGrande); contexts that differ from the
// first token (no shared prefix); a run of items sharing a 40-token prefix (an anchor).
std::vector<std::vector<LoglikRequest>> scorer_items(int V) {
  std::mt19937 rng(21);
  std::vector<std::vector<LoglikRequest>> items;
  std::vector<int32_t> shots = random_ids(rng, 40, V);
  for (int i = 0; i < 9; i++) {
    std::vector<LoglikRequest> item;
    std::vector<int32_t> ctx = random_ids(rng, 5 + i % 4, V);
    if (i >= 5) ctx.insert(ctx.begin(), shots.begin(), shots.end());  // items 5-8: the anchor run
    if (i == 2) {  // partial scoring: two contexts, one continuation
      std::vector<int32_t> cont = random_ids(rng, 4, V), c2 = ctx;
      c2.back() = (c2.back() + 1) % V;
      item = {{ctx, cont}, {c2, cont}};
    } else if (i == 3) {  // nothing shared
      std::vector<int32_t> c2 = random_ids(rng, 6, V);
      c2[0] = (ctx[0] + 1) % V;
      item = {{ctx, random_ids(rng, 3, V)}, {c2, random_ids(rng, 2, V)}};
    } else {
      for (int k = 0; k < 2 + i % 3; k++) item.push_back({ctx, random_ids(rng, 1 + (k * 3 + i) % 6, V)});
    }
    items.push_back(item);
  }
  return items;
}

template <typename Forward>
void check_scorer(Decoder& dec, int V, Forward forward) {
  std::vector<std::vector<LoglikRequest>> items = scorer_items(V);
  // Small bounds: several batches, the anchor reused across them.
  for (LoglikOptions o : {LoglikOptions{}, LoglikOptions{5, size_t(1) << 30, 12, 32}}) {
    std::vector<std::vector<Loglik>> got = score_loglik(dec, items, o);
    std::vector<double> g, want;
    for (size_t i = 0; i < items.size(); i++)
      for (size_t k = 0; k < items[i].size(); k++) {
        std::vector<int32_t> full = items[i][k].context;
        full.insert(full.end(), items[i][k].continuation.begin(), items[i][k].continuation.end());
        g.push_back(got[i][k].logprob);
        want.push_back(direct_loglik(forward(full), V, full, items[i][k].context.size()));
        CHECK(got[i][k].tokens == int(items[i][k].continuation.size()));
      }
    // f32 logits in another summation order, summed over <= 6 tokens of magnitude ~log V.
    CHECK_CLOSE("score_loglik = full forward", g, want, 1e-4, 1e-5);
  }
}

}  // namespace

TEST_CASE("eval tasks: every-row logits and copied sequences equal the parallel forward", "[eval][decode]") {
  auto model = Llama::load(fixture_dir() + "/tiny_llama");
  const int V = model->cfg.vocab;
  std::mt19937 rng(3);
  std::vector<int32_t> prefix = random_ids(rng, 17, V), a = random_ids(rng, 6, V), b = random_ids(rng, 9, V);
  std::unique_ptr<Decoder> s = make_decoder(*model);
  s->reserve(3, 40);
  std::vector<float> last(size_t(3) * V);
  const std::vector<int> n0 = {0, int(prefix.size()), 0};
  s->step(prefix.data(), n0.data(), last.data());
  s->copy(1, 0);
  s->copy(1, 2);
  CHECK(std::vector<int>{s->length(0), s->length(1), s->length(2)} == std::vector<int>{17, 17, 17});
  std::vector<int32_t> tokens = a;
  tokens.insert(tokens.end(), b.begin(), b.end());
  const std::vector<int> n1 = {int(a.size()), 0, int(b.size())};
  std::vector<float> rows(tokens.size() * size_t(V));
  s->step(tokens.data(), n1.data(), rows.data(), Logits::every_row);
  size_t r0 = 0;
  for (const std::vector<int32_t>* cont : {&a, &b}) {
    std::vector<int32_t> full = prefix;
    full.insert(full.end(), cont->begin(), cont->end());
    NoGrad ng;
    std::vector<float> want = model->forward(Tensor::from_i32(full, {1, int(full.size())}))->value.to_vector();
    std::vector<double> w(want.begin() + ptrdiff_t(prefix.size() * V), want.end());
    CHECK_CLOSE("copied prefix + every row", rows.data() + r0 * V, w, 1e-5, 1e-5);
    r0 += cont->size();
  }
  check_scorer(*make_decoder(*model), V, [&](const std::vector<int32_t>& full) {
    NoGrad ng;
    return model->forward(Tensor::from_i32(full, {1, int(full.size())}))->value.to_vector();
  });
}

TEST_CASE("eval tasks: a linearized model's copied states score as its parallel forward", "[eval][decode][lolcats]") {
  auto base = Llama::load(fixture_dir() + "/tiny_llama");
  for (HybridVariant var : {HybridVariant::terrace, HybridVariant::sw}) {
    LolcatsConfig cfg;
    cfg.variant = var;
    cfg.softmax_layers = {1};  // a kept KV cache is copied too
    LolcatsModel m(*base, cfg);
    for (const Var& p : m.parameters()) {  // away from the init, so every part carries signal
      std::vector<double> r = random_normal(p->value.numel(), 5, 0.3);
      for (int64_t i = 0; i < p->value.numel(); i++) p->value.f32()[i] += float(r[size_t(i)]);
    }
    INFO(variant_name(var));
    check_scorer(*make_decoder(m, DecodeMode::exact), base->cfg.vocab, [&](const std::vector<int32_t>& full) {
      NoGrad ng;
      return m.forward(Tensor::from_i32(full, {1, int(full.size())}))->value.to_vector();
    });
  }
}

TEST_CASE("eval tasks: whole-sequence scoring is one forward of (context + continuation)[:-1] per input",
          "[eval][lolcats]") {
  auto base = Llama::load(fixture_dir() + "/tiny_llama");
  const int V = base->cfg.vocab;
  LolcatsConfig cfg;
  LolcatsModel m(*base, cfg);
  for (const Var& p : m.parameters()) {
    std::vector<double> r = random_normal(p->value.numel(), 6, 0.3);
    for (int64_t i = 0; i < p->value.numel(); i++) p->value.f32()[i] += float(r[size_t(i)]);
  }
  std::vector<std::vector<LoglikRequest>> items = scorer_items(V);
  std::mt19937 rng(8);
  // Past two blocks, so the reference mask's end-aligned blocks differ from the paper's (from 65 to
  // 128 tokens all keys are window keys under both): choices of different lengths, and MMLU's form
  // (one context, one-token letters: one forward for all four).
  std::vector<int32_t> ctx = random_ids(rng, 150, V);
  items.push_back({{ctx, random_ids(rng, 3, V)}, {ctx, random_ids(rng, 7, V)}});
  items.push_back({{ctx, {1}}, {ctx, {2}}, {ctx, {3}}, {ctx, {4}}});
  size_t distinct = 0;
  for (const auto& item : items) {
    std::set<std::vector<int32_t>> inputs;
    for (const LoglikRequest& r : item) {
      std::vector<int32_t> in = r.context;
      in.insert(in.end(), r.continuation.begin(), r.continuation.end() - 1);
      inputs.insert(in);
    }
    distinct += inputs.size();
  }
  std::vector<double> by_mask[2];
  for (AttentionMask mask : {AttentionMask::paper, AttentionMask::reference}) {
    m.cfg.mask = mask;
    INFO((mask == AttentionMask::paper ? "paper" : "reference") << " mask");
    size_t calls = 0;
    std::vector<std::vector<Loglik>> got = score_loglik_whole(
        [&](const std::vector<int32_t>& ids, int rows) { calls++; return m.tail_logits(ids, rows); }, V, items);
    CHECK(calls == distinct);
    std::vector<double> g, want;
    for (size_t i = 0; i < items.size(); i++)
      for (size_t k = 0; k < items[i].size(); k++) {
        std::vector<int32_t> full = items[i][k].context;
        full.insert(full.end(), items[i][k].continuation.begin(), items[i][k].continuation.end());
        NoGrad ng;  // the harness's input: everything but the last token, alone
        std::vector<float> logits = m.forward(Tensor::from_i32(std::vector<int32_t>(full.begin(), full.end() - 1),
                                                               {1, int(full.size()) - 1}))->value.to_vector();
        g.push_back(got[i][k].logprob);
        want.push_back(direct_loglik(logits, V, full, items[i][k].context.size()));
        CHECK(got[i][k].tokens == int(items[i][k].continuation.size()));
      }
    // The same f32 forward, the LM head on fewer rows: measured 6e-8 on sums of <= 7 log-probs of
    // about -5.6 (the tiny model's near-uniform distributions).
    CHECK_CLOSE("whole-sequence scores = direct forward", g, want, 1e-6, 1e-7);
    by_mask[mask == AttentionMask::reference] = g;
    if (mask == AttentionMask::paper) {  // the paper's mask: the recurrent decoder gives the same
      std::vector<std::vector<Loglik>> stepped = score_loglik(*make_decoder(m, DecodeMode::exact), items);
      std::vector<double> s;
      for (const auto& item : stepped)
        for (const Loglik& l : item) s.push_back(l.logprob);
      CHECK_CLOSE("whole-sequence = decode step (paper mask)", g, s, 1e-6, 1e-7);  // measured 9e-8
    }
  }
  // Every input here has <= 64 tokens (window and linear overlap) or more than 128, not a multiple
  // of 64: the reference mask changes every score, by far more than the 1e-7 noise above (measured
  // 4e-5 to 3e-2: the tiny random model's distributions are nearly flat).
  double largest = 0;
  for (size_t i = 0; i < by_mask[0].size(); i++) {
    const double d = std::abs(by_mask[0][i] - by_mask[1][i]);
    CHECK(d > 1e-5);
    largest = std::max(largest, d);
  }
  CHECK(largest > 1e-2);
}

// ---- SmolLM2-135M-Instruct against transformers ---------------------------------------------------

TEST_CASE("eval tasks: per-choice log-likelihoods match transformers on SmolLM2-135M", "[eval][smollm2]") {
  if (!exists(kSmol)) SKIP_TEST(kSmol << " is missing (make model)");
  if (!exists(kEvalDir)) SKIP_TEST(kEvalDir << " is missing");
  const char* F = "ref_eval";
  (void)lolcats_test::fixture(F);
  json ref = json::parse(read_file(fixture_dir() + "/eval/ref_eval.json"));
  static std::unique_ptr<Llama> model = Llama::load(kSmol);
  Tokenizer tok = Tokenizer::from_model(kSmol);
  std::unique_ptr<Decoder> dec = make_decoder(*model);
  for (const std::string name : {"piqa", "arc_easy", "arc_challenge", "hellaswag", "winogrande", "mmlu"}) {
    INFO(name);
    EvalTask all = load_eval_task(name, kEvalDir);
    const std::vector<int32_t> index = lolcats_test::fx_i32(F, name + ".index");
    const std::vector<double> want = lolcats_test::fx<double>(F, name + ".logprob");
    const std::vector<int32_t> greedy = lolcats_test::fx_i32(F, name + ".greedy");
    REQUIRE(index.size() >= 20);
    // Our prompts and tokens for the same items: identical strings and ids.
    std::vector<std::vector<LoglikRequest>> reqs;
    EvalTask task{name, {}, all.subjects, {}};
    for (size_t j = 0; j < index.size(); j++) {
      const EvalItem& it = all.items[size_t(index[j])];
      const json& r = ref[name][j];
      REQUIRE(r["index"] == index[j]);
      CHECK(it.contexts == r["contexts"].get<std::vector<std::string>>());
      CHECK(it.continuations == r["continuations"].get<std::vector<std::string>>());
      reqs.push_back(item_requests(it, tok, false));
      for (size_t k = 0; k < reqs.back().size(); k++) {
        CHECK(reqs.back()[k].context == r["context_ids"][k].get<std::vector<int32_t>>());
        CHECK(reqs.back()[k].continuation == r["continuation_ids"][k].get<std::vector<int32_t>>());
      }
      task.items.push_back(it);
    }
    // Scored together, as ./eval does (shared prefixes, MMLU's 5-shot anchor, batches).
    std::vector<std::vector<Loglik>> got = score_loglik(*dec, reqs);
    std::vector<double> g;
    int multi_token = 0, greedy_same = 0, n = 0;
    for (const std::vector<Loglik>& item : got)
      for (const Loglik& l : item) {
        g.push_back(l.logprob);
        multi_token += l.tokens > 1;
        greedy_same += int(l.greedy) == greedy[size_t(n++)];
      }
    REQUIRE(g.size() == want.size());
    // Both sides compute in float32 from the same dequantised weights, in different summation
    // orders (test_llama holds the logits to 2e-3). A continuation's log-likelihood sums up to ~70
    // token log-probabilities (totals of O(10-100)); measured: at most 9e-5 apart (2e-6 relative).
    // 5e-4 + 1e-5 relative leaves 5x room, while a wrong token, position or prompt moves a sum by
    // far more (one token's log-probability alone differs by > 0.1 between plausible choices).
    CHECK_CLOSE(name + " log-likelihoods", g, want, 5e-4, 1e-5);
    CHECK(greedy_same == n);
    if (name != "mmlu") CHECK(multi_token > 0);
  }
}
