// Passkey retrieval (nn/eval/passkey.h, ./eval --tasks passkey):
//   - the scoring rule on written-out replies, and the keys;
//   - prompts: the needle where the depth says (spelled out here from the rule), the length filled to
//     within one filler sentence, and on SmolLM2 the very ids transformers' tokenizer gives for the
//     prompt tests/reference/ref_passkey.py builds itself;
//   - decoding with a shared anchor against generating each prompt alone (softmax and linearized);
//   - SmolLM2-135M-Instruct retrieving at 256 tokens, with transformers' greedy replies;
//   - lengths past the model's positions refused in one line; the heatmap SVG; ./eval end to end.
#include <sys/stat.h>
#include <sys/wait.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "apps/svg_heatmap.h"
#include "autograd/gradcheck.h"
#include "data/defaults.h"
#include "lolcats/recurrent.h"
#include "nn/eval/passkey.h"
#include "nn/generate.h"
#include "tests/helpers.h"

using namespace lolcats;
using lolcats_test::fixture_dir;
using lolcats_test::fx_i32;

namespace {

const std::string kSmol = kDefaultModel;
const char* F = "ref_passkey";

bool exists(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0;
}

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

template <typename Fn>
std::string error_of(Fn f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

// The filler sentences from..to-1 as the rule says: the five sentences in turn, joined by spaces.
std::string filler(int from, int to) {
  const char* s[5] = {"The grass is green.", "The sky is blue.", "The sun is yellow.", "Here we go.",
                      "There and back again."};
  std::string r;
  for (int i = from; i < to; i++) r += std::string(i > from ? " " : "") + s[i % 5];
  return r;
}

const std::string kInstruction =
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. I will quiz you "
    "about the important information there.";
const std::string kQuestion = "What is the pass key? The pass key is";

std::string needle(int key) {
  return "The pass key is " + std::to_string(key) + ". Remember it. " + std::to_string(key) + " is the pass key.";
}

// Every property the builder promises, checked on one prompt.
void check_prompt(const Tokenizer& tok, const PasskeyPrompt& p, bool bos) {
  INFO("length " << p.length << ", depth " << p.depth << ", key " << p.key << ", filler " << p.filler);
  const int extra = bos ? 1 : 0;
  // The length: at most the target, and one more filler sentence would pass it.
  CHECK(int(p.ids.size()) <= p.length);
  const int before1 = (2 * p.depth * (p.filler + 1) + 100) / 200;
  CHECK(extra + int(tok.encode(passkey_text(p.filler + 1, before1, p.key)).size()) > p.length);
  // The needle after floor(depth * N / 100 + 1/2) sentences, the text as the rule spells it.
  CHECK(p.before == (2 * p.depth * p.filler + 100) / 200);
  std::string want = kInstruction;
  if (p.before > 0) want += "\n" + filler(0, p.before);
  want += "\n" + needle(p.key);
  if (p.before < p.filler) want += "\n" + filler(p.before, p.filler);
  want += "\n" + kQuestion;
  CHECK(p.text == want);
  if (p.depth == 0) CHECK(p.text.rfind(kInstruction + "\n" + needle(p.key) + "\n", 0) == 0);
  if (p.depth == 100) CHECK(p.text.size() >= kQuestion.size());
  if (p.depth == 100) CHECK(p.text.substr(p.text.size() - needle(p.key).size() - kQuestion.size() - 1) ==
                            needle(p.key) + "\n" + kQuestion);
  // What the model reads is the text's tokens, after BOS when asked.
  std::vector<int32_t> ids = tok.encode(p.text);
  if (bos) ids.insert(ids.begin(), tok.bos_id());
  CHECK(p.ids == ids);
}

// The tiny trained model of tests/reference/ref_apps.py: a Llama folder with its own tokenizer.
std::string tiny() { return fixture_dir() + "/tiny_app_llama"; }

}  // namespace

TEST_CASE("passkey: the scoring rule: the first run of digits is the key", "[passkey]") {
  CHECK(passkey_correct(" 12345.", 12345));
  CHECK(passkey_correct("12345", 12345));
  CHECK(passkey_correct(" **12345**\nThe pass key is 99999", 12345));
  CHECK(passkey_correct(" The pass key is 12345. Remember", 12345));
  CHECK(!passkey_correct(" 123456.", 12345));       // a longer number is not the key
  CHECK(!passkey_correct(" 1234", 12345));          // cut short
  CHECK(!passkey_correct(" 12,345", 12345));        // the first run is 12
  CHECK(!passkey_correct(" 54321. No: 12345", 12345));  // the first number given counts
  CHECK(!passkey_correct(" green.", 12345));
  CHECK(!passkey_correct("", 12345));
}

TEST_CASE("passkey: keys are five digits, fixed per seed and cell", "[passkey]") {
  std::set<int> seen;
  for (int L : {512, 1024})
    for (int d = 0; d <= 100; d += 10)
      for (int t = 0; t < 5; t++) {
        const int k = passkey_key(1234, L, d, t);
        CHECK(k >= 10000);
        CHECK(k <= 99999);
        CHECK(k == passkey_key(1234, L, d, t));
        seen.insert(k);
      }
  CHECK(seen.size() >= 105);  // 110 draws from 90,000 values: a few repeats at most
  CHECK(passkey_key(1234, 512, 0, 0) != passkey_key(1235, 512, 0, 0));
}

TEST_CASE("passkey: the needle sits at its depth and the prompt fills its length", "[passkey]") {
  Tokenizer tiny_tok = Tokenizer::from_model(tiny());
  for (int L : {300, 450})
    for (int d : {0, 10, 33, 50, 100}) check_prompt(tiny_tok, build_passkey_prompt(tiny_tok, L, d, 31337, false), false);
  check_prompt(tiny_tok, build_passkey_prompt(tiny_tok, 300, 70, 45678, true), true);
  const std::string e = error_of([&] { build_passkey_prompt(tiny_tok, 40, 50, 12345, false); });
  CHECK(e.find("--passkey-len 40") != std::string::npos);
  CHECK(e.find('\n') == std::string::npos);
  if (!exists(kSmol)) SKIP_TEST(kSmol << " is missing (make model)");
  Tokenizer tok = Tokenizer::from_model(kSmol);
  for (int L : {512, 1024, 2048, 4096})
    for (int d : {0, 10, 50, 90, 100}) {
      PasskeyPrompt p = build_passkey_prompt(tok, L, d, passkey_key(9, L, d, 0), false);
      check_prompt(tok, p, false);
      CHECK(int(p.ids.size()) >= L - 8);  // a filler sentence is at most 6 tokens here
    }
}

TEST_CASE("passkey: SmolLM2 prompts are transformers' tokens of ref_passkey.py's prompts", "[passkey][smollm2]") {
  if (!exists(kSmol)) SKIP_TEST(kSmol << " is missing (make model)");
  Tokenizer tok = Tokenizer::from_model(kSmol);
  CHECK(!tok.adds_bos());
  const int cases = fx_i32(F, "cases")[0];
  REQUIRE(cases >= 15);
  for (int i = 0; i < cases; i++) {
    const std::string c = "case." + std::to_string(i) + ".";
    const int L = fx_i32(F, c + "length")[0], d = fx_i32(F, c + "depth")[0], key = fx_i32(F, c + "key")[0];
    INFO("case " << i << ": length " << L << ", depth " << d);
    PasskeyPrompt p = build_passkey_prompt(tok, L, d, key, false);
    CHECK(p.filler == fx_i32(F, c + "filler")[0]);
    CHECK(p.before == fx_i32(F, c + "before")[0]);
    CHECK(p.ids == fx_i32(F, c + "ids"));
  }
}

TEST_CASE("passkey: SmolLM2-135M retrieves at 256 tokens, its replies are transformers'", "[passkey][smollm2]") {
  if (!exists(kSmol)) SKIP_TEST(kSmol << " is missing (make model)");
  std::unique_ptr<Llama> model = Llama::load(kSmol);
  Tokenizer tok = Tokenizer::from_model(kSmol);
  std::vector<std::vector<int32_t>> prompts, want;
  std::vector<int> keys, depths;
  for (int i = 0, cases = fx_i32(F, "cases")[0]; i < cases; i++) {
    const std::string c = "case." + std::to_string(i) + ".";
    if (!lolcats_test::fixture(F).has(c + "greedy")) continue;
    PasskeyPrompt p = build_passkey_prompt(tok, fx_i32(F, c + "length")[0], fx_i32(F, c + "depth")[0],
                                           fx_i32(F, c + "key")[0], false);
    prompts.push_back(p.ids);
    want.push_back(fx_i32(F, c + "greedy"));
    keys.push_back(p.key);
    depths.push_back(p.depth);
  }
  REQUIRE(prompts.size() == 8);
  PasskeyGenOptions o;
  o.stop_ids = {tok.eos_id()};
  std::vector<std::vector<int32_t>> got = passkey_generate(*make_decoder(*model), prompts, o);
  int right_at_50 = 0, at_50 = 0;
  for (size_t i = 0; i < prompts.size(); i++) {
    const std::string text = tok.decode(got[i], true);
    INFO("prompt " << i << " (depth " << depths[i] << "%, key " << keys[i] << "): ours \"" << text
                   << "\", transformers' \"" << tok.decode(want[i], true) << "\"");
    CHECK(got[i] == want[i]);
    if (depths[i] == 50) at_50++, right_at_50 += passkey_correct(text, keys[i]);
  }
  // Measured: transformers and we retrieve all five keys at depth 50; a model that cannot read its
  // context (or a prompt that lost its needle) gets none right.
  CHECK(at_50 == 5);
  CHECK(right_at_50 >= 4);
}

TEST_CASE("passkey: decoding from a shared anchor equals generating each prompt alone", "[passkey][decode]") {
  auto base = Llama::load(tiny());
  Tokenizer tok = Tokenizer::from_model(tiny());
  std::vector<std::vector<int32_t>> prompts;
  size_t prompt_tokens = 0;
  for (int d : {0, 20, 50, 50, 80, 100}) {
    prompts.push_back(build_passkey_prompt(tok, 420, d, passkey_key(3, 420, d, int(prompts.size())), false).ids);
    prompt_tokens += prompts.back().size();
  }
  PasskeyGenOptions o;
  o.new_tokens = 6;
  o.max_rows = 37;  // prompts fed in pieces, interleaved with the anchor and with replies
  o.max_slots = 3;  // the anchor and two prompts: slots are reused
  SamplingConfig sc;
  sc.max_new_tokens = o.new_tokens;
  auto check_same = [&](Decoder& dec, const std::function<std::vector<int32_t>(const std::vector<int32_t>&)>& alone,
                        bool share) {
    o.share_prefix = share;
    size_t fed = 0;
    std::vector<std::vector<int32_t>> got = passkey_generate(dec, prompts, o, [&](size_t, size_t f) { fed = f; });
    for (size_t i = 0; i < prompts.size(); i++) {
      INFO("prompt " << i);
      CHECK(got[i] == alone(prompts[i]));
    }
    // Shared: the anchor feeds the filler once, so far fewer tokens than the prompts hold.
    if (share) CHECK(fed < prompt_tokens * 7 / 10);
    else CHECK(fed == prompt_tokens + prompts.size() * size_t(o.new_tokens - 1));
  };
  {
    INFO("softmax");
    check_same(*make_decoder(*base), [&](const std::vector<int32_t>& p) { return generate(*make_decoder(*base), p, sc); },
               true);
  }
  LolcatsConfig cfg;
  cfg.softmax_layers = {1};  // a kept KV cache is copied too
  LolcatsModel m(*base, cfg);
  for (const Var& p : m.parameters()) {  // away from the init, so every part carries signal
    std::vector<double> r = random_normal(p->value.numel(), 5, 0.3);
    for (int64_t i = 0; i < p->value.numel(); i++) p->value.f32()[i] += float(r[size_t(i)]);
  }
  for (DecodeMode mode : {DecodeMode::exact, DecodeMode::reference}) {
    INFO("linearized, " << (mode == DecodeMode::exact ? "exact" : "reference") << " mode");
    check_same(*make_decoder(m, mode), [&](const std::vector<int32_t>& p) { return generate(*make_decoder(m, mode), p, sc); },
               mode == DecodeMode::exact);
  }
}

TEST_CASE("passkey: lengths past the model's positions are refused in one line", "[passkey]") {
  auto base = Llama::load(tiny());
  Tokenizer tok = Tokenizer::from_model(tiny());
  std::unique_ptr<Decoder> dec = make_decoder(*base);
  PasskeyOptions o;
  o.lengths = {400, 1020};
  o.max_position = base->cfg.max_position;
  REQUIRE(o.max_position == 1024);
  o.progress = false;
  const std::string e = error_of([&] { run_passkey(*dec, tok, o); });
  INFO(e);
  CHECK(e.find("--passkey-len 1020") != std::string::npos);
  CHECK(e.find("1024 positions") != std::string::npos);
  CHECK(e.find("up to 1014") != std::string::npos);  // 1024 - the 10 generated tokens
  CHECK(e.find('\n') == std::string::npos);
}

namespace {

// Tags balance (every <x ...> closed by </x> in order, or written <x .../>), attribute values are
// quoted, and no raw '&' or '<' sits in text. Returns "" or what is wrong.
std::string xml_problem(const std::string& s) {
  std::vector<std::string> open;
  for (size_t i = 0; i < s.size();) {
    if (s[i] == '&') {
      const size_t semi = s.find(';', i);
      const std::string ent = semi == std::string::npos ? "" : s.substr(i, semi - i + 1);
      if (ent != "&amp;" && ent != "&lt;" && ent != "&gt;" && ent != "&quot;") return "raw & at " + std::to_string(i);
      i = semi + 1;
      continue;
    }
    if (s[i] != '<') {
      i++;
      continue;
    }
    const size_t end = s.find('>', i);
    if (end == std::string::npos) return "unclosed tag at " + std::to_string(i);
    std::string tag = s.substr(i + 1, end - i - 1);
    i = end + 1;
    if (tag.find('<') != std::string::npos) return "'<' inside a tag: " + tag;
    if (std::count(tag.begin(), tag.end(), '"') % 2) return "odd quotes in " + tag;
    if (tag[0] == '/') {
      if (open.empty() || open.back() != tag.substr(1)) return "</" + tag.substr(1) + "> closes nothing open";
      open.pop_back();
    } else if (tag.back() != '/') {
      open.push_back(tag.substr(0, tag.find(' ')));
    }
  }
  return open.empty() ? "" : "<" + open.back() + "> never closed";
}

}  // namespace

TEST_CASE("passkey: the heatmap SVG is well formed, one coloured cell per value, labelled", "[passkey][plot]") {
  Heatmap h;
  h.title = "Passkey retrieval, runs/a&b/<x>.safetensors";
  h.xlabel = "prompt length (tokens)";
  h.ylabel = "needle depth (%)";
  h.columns = {"512", "1024", "4096"};
  h.rows = {"0%", "50%"};
  h.values = {{1.0, 0.5, 0.0}, {0.25, NAN, 1.0}};
  const std::string svg = svg_heatmap(h);
  INFO(svg);
  CHECK(xml_problem(svg) == "");
  CHECK(svg.rfind("<svg ", 0) == 0);
  CHECK(svg.find("runs/a&amp;b/&lt;x&gt;.safetensors") != std::string::npos);
  size_t cells = 0;
  for (size_t at = 0; (at = svg.find("class=\"cell\"", at)) != std::string::npos; at++) cells++;
  CHECK(cells == 6);
  for (const char* text : {">512<", ">1024<", ">4096<", ">0%<", ">50%<", ">prompt length (tokens)<", ">needle depth (%)<",
                           ">100<", ">25<", ">-<", ">0<"})
    CHECK(svg.find(text) != std::string::npos);
  // Colours: 0 red, 0.5 yellow, 1 green; the missing cell grey.
  CHECK(heat_color(0.0) == "#e67c73");
  CHECK(heat_color(0.5) == "#ffd666");
  CHECK(heat_color(1.0) == "#57bb8a");
  CHECK(svg.find("fill=\"#dddddd\"") != std::string::npos);
  h.values.pop_back();
  CHECK(error_of([&] { svg_heatmap(h); }).find("heatmap: 1 rows of values for 2 row labels") != std::string::npos);
}

TEST_CASE("passkey: ./eval --tasks passkey prints the grid, writes the JSON and the heatmap", "[passkey][apps]") {
#if defined(__SANITIZE_ADDRESS__)
  SKIP_TEST("sanitizer build: the apps are not rebuilt");  // as tests/test_apps.cpp
#endif
  if (!exists("./eval")) FAIL("./eval is missing: `make test` (or `make eval`) builds it before the tests");
  const std::string dir = "build/test_passkey";
  std::system(("rm -rf " + dir + " && mkdir -p " + dir).c_str());
  const std::string cmd = "./eval --model " + tiny() + " --tasks passkey --passkey-len 300,420 --passkey-depths 0,50,100 " +
                          "--passkey-trials 2 --out " + dir + "/r.json --threads 1 > " + dir + "/out 2> " + dir + "/err";
  int rc = std::system(cmd.c_str());
  INFO("$ " << cmd << "\n" << read_text(dir + "/out") << read_text(dir + "/err"));
  REQUIRE(WIFEXITED(rc));
  REQUIRE(WEXITSTATUS(rc) == 0);
  const nlohmann::json j = nlohmann::json::parse(read_text(dir + "/r.json"))["tasks"]["passkey"];
  CHECK(j["lengths"] == nlohmann::json({300, 420}));
  CHECK(j["depths"] == nlohmann::json({0, 50, 100}));
  CHECK(j["cells"].size() == 6);
  for (const nlohmann::json& c : j["cells"]) CHECK(c["n"] == 2);
  CHECK(j["trials"].size() == 12);
  int correct = 0;
  for (const nlohmann::json& t : j["trials"]) {
    CHECK(t["prompt_tokens"].get<int>() <= t["length"].get<int>());
    CHECK(t["correct"] == passkey_correct(t["output"], t["key"]));
    correct += t["correct"].get<bool>();
  }
  CHECK(j["metrics"][0]["value"].get<double>() == Approx(correct / 12.0));
  const std::string out = read_text(dir + "/out");
  CHECK(out.find("passkey retrieval accuracy") != std::string::npos);
  CHECK(out.find("\n300 ") != std::string::npos);
  CHECK(out.find("\n420 ") != std::string::npos);
  const std::string svg = read_text(dir + "/r.passkey.svg");
  CHECK(xml_problem(svg) == "");
  CHECK(svg.find(">420<") != std::string::npos);
  // Past the model's 1024 positions: one line, exit 1, nothing written.
  rc = std::system(("./eval --model " + tiny() + " --tasks passkey --passkey-len 2048 --out " + dir +
                    "/big.json --threads 1 > " + dir + "/out2 2> " + dir + "/err2").c_str());
  const std::string err = read_text(dir + "/err2");
  INFO(err);
  CHECK(WEXITSTATUS(rc) == 1);
  CHECK(err.find("--passkey-len 2048") != std::string::npos);
  CHECK(!exists(dir + "/big.json"));
}
