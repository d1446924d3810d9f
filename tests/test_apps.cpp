// The apps end to end, as a user runs them: ./linearize on the tiny model folder of
// tests/reference/ref_apps.py (a trained 2-layer Llama with its own tokenizer) and its Alpaca
// records, then ./generate and ./eval on what it exported. The binaries are spawned from the
// repository root (`make test` builds them first); each case takes seconds.
#include <sys/stat.h>
#include <sys/wait.h>

#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <nlohmann/json.hpp>

#include "data/safetensors.h"
#include "tests/helpers.h"

using namespace lolcats;
using json = nlohmann::json;

namespace {

std::string fixtures() {
  const char* d = std::getenv("LOLCATS_FIXTURES");
  return d ? d : "build/fixtures";
}
const std::string kWork = "build/test_apps";

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}
bool exists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}
void write_text(const std::string& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }

struct Result {
  int rc = -1;
  std::string out, err;
};

// Runs ./APP ARGS from the repository root, stdout and stderr captured (stdin from `input`).
Result run(const std::string& app, const std::string& args, const std::string& input = "") {
  if (!exists("./" + app)) FAIL("./" << app << " is missing: `make test` builds it before the tests");
  std::system(("mkdir -p " + kWork).c_str());
  const std::string base = kWork + "/" + app;
  write_text(base + ".in", input);
  // One thread: the model is tiny, and idle OpenMP threads spinning on a busy machine cost seconds.
  std::string cmd = "./" + app + " " + args + " --threads 1 < " + base + ".in > " + base + ".out 2> " + base + ".err";
  int status = std::system(cmd.c_str());
  Result r;
  r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = read_text(base + ".out");
  r.err = read_text(base + ".err");
  UNSCOPED_INFO("$ " << cmd << "\n[exit " << r.rc << "]\n--- stdout ---\n" << r.out << "--- stderr (end) ---\n"
                     << (r.err.size() > 3000 ? r.err.substr(r.err.size() - 3000) : r.err));
  return r;
}

std::string model_dir() { return fixtures() + "/tiny_app_llama"; }
std::string data_file() { return fixtures() + "/tiny_app_alpaca.jsonl"; }

// The flags every ./linearize run here shares: 160-token chunks (T > 128, so the hybrid's linear
// part is used), 8 validation rows, 2 validation chunks per evaluation.
std::string linearize_args(const std::string& out, int steps1, int steps2, const std::string& more = "") {
  return "--model " + model_dir() + " --data " + data_file() + " --out " + out + " --seq-len 160 --val-rows 8" +
         " --eval-chunks 2 --sample-tokens 8 --stage1-steps " + std::to_string(steps1) + " --stage2-steps " +
         std::to_string(steps2) + " " + more;
}
std::string eval_args() { return " --data " + data_file() + " --seq-len 160 --val-rows 8 --chunks 2"; }

json read_json(const std::string& path) { return json::parse(read_text(path)); }

// The JSON objects of a JSONL text, one per line.
std::vector<json> json_lines(const std::string& text) {
  std::istringstream in(text);
  std::vector<json> out;
  for (std::string line; std::getline(in, line);) out.push_back(json::parse(line));
  return out;
}

struct GreedyText {
  std::string prompt, text;  // the prompt and transformers' greedy continuation of it
  int tokens;                // how many tokens that continuation is
};

// tests/reference/ref_apps.py: transformers' greedy text for a prompt on the tiny app model.
GreedyText transformers_greedy() {
  const SafeTensorsFile& f = lolcats_test::fixture("ref_apps");
  GreedyText g;
  for (double c : f.load_f64("prompt_utf8")) g.prompt += char(int(c));
  for (double c : f.load_f64("greedy_text_utf8")) g.text += char(int(c));
  g.tokens = int(f.load_f64("greedy_ids").size());
  return g;
}

// Every line of log.jsonl as JSON.
std::vector<json> log_lines(const std::string& run) {
  std::vector<json> out;
  std::istringstream in(read_text(run + "/log.jsonl"));
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(json::parse(line));
  return out;
}
// The last logged training loss of (stage, step), as the exact double that was written.
double logged_loss(const std::vector<json>& lines, const std::string& stage, int64_t step) {
  double v = NAN;
  for (const json& j : lines)
    if (j["stage"] == stage && j["step"] == step && j.contains("loss")) v = j["loss"].get<double>();
  return v;
}

void fresh(const std::string& dir) { std::system(("rm -rf " + dir + " && mkdir -p " + kWork).c_str()); }

// A sanitizer build of the tests (make test SANITIZE=1) leaves the apps at the root as they are
// (the normal build, perhaps stale), so their end-to-end tests skip there.
#if defined(__SANITIZE_ADDRESS__)
#define APPS_BUILT_WITH_THESE_TESTS false
#else
#define APPS_BUILT_WITH_THESE_TESTS true
#endif
#define REQUIRE_APPS()                                                                        \
  do {                                                                                        \
    if (!APPS_BUILT_WITH_THESE_TESTS) SKIP_TEST("sanitizer build: the apps are not rebuilt"); \
  } while (0)

}  // namespace

TEST_CASE("apps: ./linearize runs both stages end to end; ./generate and ./eval read its export", "[apps]") {
  REQUIRE_APPS();
  const std::string out = kWork + "/full";
  fresh(out);
  Result r = run("linearize", linearize_args(out, 2, 2, "--eval-every 1"));
  REQUIRE(r.rc == 0);
  for (const char* f : {"config.ini", "log.jsonl", "stage1.ckpt", "stage2.ckpt", "stage1_params.safetensors",
                        "stage1_loss.svg", "stage2_loss.svg", "attention_mse_per_layer.svg", "summary.json",
                        "lolcats_params.safetensors"}) {
    INFO(f);
    CHECK(exists(out + "/" + f));
    CHECK_FALSE(exists(out + "/" + f + ".tmp"));
  }
  CHECK(r.out.find("after stage 2 (LoRA)") != std::string::npos);

  json s = read_json(out + "/summary.json");
  for (const char* key : {"teacher_val_ppl", "stage1_val_ppl", "stage2_val_ppl", "attn_mse_init", "attn_mse_final",
                          "tokens_stage1", "tokens_stage2", "seconds", "attn_mse_per_layer_init",
                          "attn_mse_per_layer_final", "sample_prompt", "sample_teacher", "sample_linearized",
                          "run_folder"}) {
    INFO(key);
    CHECK(s.contains(key));
  }
  CHECK(s["tokens_stage1"] == 2 * 160);
  CHECK(s["tokens_stage2"] == 2 * 160);
  CHECK(s["attn_mse_per_layer_final"].size() == 2);
  for (const char* key : {"teacher_val_ppl", "stage1_val_ppl", "stage2_val_ppl"}) {
    INFO(key);
    CHECK(std::isfinite(s[key].get<double>()));
    CHECK(s[key].get<double>() > 1.0);
  }
  // The log: every step and every evaluation of both stages, and each stage's activations (its
  // first step's, tensor/activations.h).
  std::vector<json> lines = log_lines(out);
  CHECK(lines.size() == 10);
  int activation_lines = 0;
  for (const json& j : lines)
    if (j.contains("activation_peak_mib")) activation_lines += j["activation_peak_mib"].get<double>() > 0;
  CHECK(activation_lines == 2);
  for (const char* stage : {"stage1", "stage2"})
    for (int step : {1, 2}) {
      INFO(stage << " step " << step);
      CHECK(std::isfinite(logged_loss(lines, stage, step)));
    }

  // The export: reference names and the LoRA, with the metadata that rebuilds the model.
  const std::string exported = out + "/lolcats_params.safetensors";
  {
    SafeTensorsFile f(exported);
    CHECK(f.metadata().at("feature_map") == "hedgehog");
    CHECK(f.metadata().at("lora") == "separate");
    CHECK(f.metadata().at("lora_rank") == "8");
    CHECK(f.has("model.layers.1.self_attn.feature_map_k.mlp.layer"));
    CHECK(f.has("model.layers.1.self_attn.o_proj.lora_B.weight"));
  }

  // ./eval of the export measures what ./linearize measured after stage 2 (same chunks), and of
  // the base model what it measured for the teacher.
  Result e = run("eval", "--linearized " + exported + eval_args());
  REQUIRE(e.rc == 0);
  json ej = json::parse(e.out);
  CHECK(ej["chunks"] == 2);
  CHECK(ej["val_ppl"].get<double>() == Approx(s["stage2_val_ppl"].get<double>()).epsilon(1e-6));
  Result t = run("eval", "--model " + model_dir() + eval_args());
  REQUIRE(t.rc == 0);
  CHECK(json::parse(t.out)["val_ppl"].get<double>() == Approx(s["teacher_val_ppl"].get<double>()).epsilon(1e-6));

  // ./generate of the export continues the sample prompt as ./linearize's own sample did
  // (greedy, recurrent exact decoding, 8 tokens).
  Result g = run("generate", "--linearized " + exported + " --raw --max-new-tokens 8",
                 s["sample_prompt"].get<std::string>());
  REQUIRE(g.rc == 0);
  CHECK(g.out == s["sample_linearized"].get<std::string>() + "\n");
  CHECK(g.err.find("8 new tokens") != std::string::npos);
  // Batched, beside another prompt (recurrent states of sequences at different positions in one
  // step): the same text.
  std::string jsonl = json{{"prompt", "Hi"}, {"id", "other"}}.dump() + "\n";
  for (const char* id : {"a", "b"}) jsonl += json{{"prompt", s["sample_prompt"]}, {"id", id}}.dump() + "\n";
  write_text(kWork + "/lin_prompts.jsonl", jsonl);
  Result gb = run("generate", "--linearized " + exported + " --raw --max-new-tokens 8 --batch 2 --prompts " + kWork +
                                  "/lin_prompts.jsonl");
  REQUIRE(gb.rc == 0);
  int same = 0;
  for (const json& j : json_lines(gb.out))
    if (j["id"] != "other") same += j["completion"] == s["sample_linearized"];
  CHECK(same == 2);
  // On the (emulated) cuda device, f32: the fused recurrent kernel gives the same text.
  Result gd = run("generate", "--linearized " + exported + " --raw --max-new-tokens 8 --device cuda --dtype f32",
                  s["sample_prompt"].get<std::string>());
  REQUIRE(gd.rc == 0);
  CHECK(gd.out == s["sample_linearized"].get<std::string>() + "\n");
}

TEST_CASE("apps: ./linearize --device cuda trains both stages there and ends where the CPU run ends", "[apps][cuda]") {
  REQUIRE_APPS();
  // The same run on the CPU (f32) and on the cuda device (the emulator here: bf16 frozen weights,
  // f32 LoLCATs parameters, stage 2 with recomputed layers). bf16 weights move every figure by
  // their rounding: the perplexities and the attention MSE agree to 1% (measured: 0.1%, 0.02%).
  const std::string cpu = kWork + "/on_cpu", gpu = kWork + "/on_cuda";
  fresh(cpu);
  fresh(gpu);
  REQUIRE(run("linearize", linearize_args(cpu, 2, 2, "--eval-every 1")).rc == 0);
  Result r = run("linearize", linearize_args(gpu, 2, 2, "--eval-every 1 --device cuda"));
  REQUIRE(r.rc == 0);
  CHECK(r.err.find("memory plan:") != std::string::npos);
  CHECK(r.err.find("(cuda)") != std::string::npos);  // the trainers' arenas live there
  json a = read_json(cpu + "/summary.json"), b = read_json(gpu + "/summary.json");
  for (const char* key : {"teacher_val_ppl", "stage1_val_ppl", "stage2_val_ppl", "attn_mse_init", "attn_mse_final"}) {
    INFO(key << ": cpu " << a[key].get<double>() << ", cuda " << b[key].get<double>());
    CHECK(b[key].get<double>() == Approx(a[key].get<double>()).epsilon(0.01));
  }
  CHECK(a["attn_mse_final"].get<double>() < a["attn_mse_init"].get<double>());  // stage 1 learned
  // The export of the GPU run is an ordinary one: ./eval reads it on the CPU (its base model's
  // fingerprint taken over bf16-rounded norms, the same from both runs).
  Result e = run("eval", "--linearized " + gpu + "/lolcats_params.safetensors" + eval_args());
  REQUIRE(e.rc == 0);
  json j = json::parse(e.out);
  CHECK(j["val_ppl"].get<double>() == Approx(b["stage2_val_ppl"].get<double>()).epsilon(0.01));
}

TEST_CASE("apps: ./eval --device cuda scores tasks and passkey as the CPU does, both models", "[apps][cuda]") {
  REQUIRE_APPS();
  const std::string out = kWork + "/eval_cuda", exported = out + "/lolcats_params.safetensors";
  fresh(out);
  REQUIRE(run("linearize", linearize_args(out, 1, 1)).rc == 0);
  for (const std::string& model : {"--model " + model_dir(), "--linearized " + exported}) {
    INFO(model);
    json results[2];
    for (int d = 0; d < 2; d++) {
      const std::string device = d ? "cuda" : "cpu", path = out + "/" + device + ".json";
      Result e = run("eval", model + " --tasks arc_easy,passkey --limit 6 --passkey-len 300 --passkey-depths 0,100 " +
                                 "--device " + device + " --dtype f32 --out " + path);
      REQUIRE(e.rc == 0);
      results[d] = read_json(path);
      CHECK(results[d]["device"] == device);
    }
    // Per-choice log-likelihoods: f32 on both, the same arithmetic in other orders (1e-5, as the
    // library test of the cuda scorer, tests/test_cuda_decode.cpp).
    std::vector<double> cpu_ll, cuda_ll;
    for (int d = 0; d < 2; d++)
      for (const json& item : results[d]["tasks"]["arc_easy"]["logliks"])
        for (const json& l : item) (d ? cuda_ll : cpu_ll).push_back(l.get<double>());
    REQUIRE(cpu_ll.size() >= 6 * 3);
    CHECK_CLOSE("arc_easy log-likelihoods", cuda_ll, cpu_ll, 1e-5, 1e-5);
    // Passkey: the same greedy replies.
    const json& a = results[0]["tasks"]["passkey"]["trials"];
    const json& b = results[1]["tasks"]["passkey"]["trials"];
    REQUIRE(a.size() == 2);
    REQUIRE(b.size() == 2);
    for (size_t i = 0; i < a.size(); i++) {
      CHECK_FALSE(a[i]["output"].get<std::string>().empty());  // replies to compare, not empty ones
      CHECK(b[i]["output"] == a[i]["output"]);
    }
  }
}

TEST_CASE("apps: ./generate continues a prompt as transformers does", "[apps]") {
  REQUIRE_APPS();
  const auto [prompt, want, n] = transformers_greedy();
  for (const char* device : {"cpu", "cuda"}) {  // cuda: the emulated device, f32, its KV cache
    INFO(device);
    Result g = run("generate", "--model " + model_dir() + " --raw --max-new-tokens " + std::to_string(n) +
                                   " --device " + device + " --dtype f32 --prompt \"" + prompt + "\"");
    REQUIRE(g.rc == 0);
    CHECK(g.out == want + "\n");
  }
}

TEST_CASE("apps: ./generate --prompts serves a JSONL file in batches, each as transformers continues it",
          "[apps]") {
  REQUIRE_APPS();
  const auto [prompt, want, n] = transformers_greedy();
  // The transformers prompt three times (with ids), batched two at a time: every completion is
  // transformers' greedy text; a malformed line is one error naming the file and line.
  std::string jsonl;
  for (const char* id : {"a", "b", "c"}) jsonl += json{{"prompt", prompt}, {"id", id}}.dump() + "\n";
  write_text(kWork + "/prompts.jsonl", jsonl);
  Result g = run("generate", "--model " + model_dir() + " --raw --max-new-tokens " + std::to_string(n) +
                                 " --batch 2 --prompts " + kWork + "/prompts.jsonl");
  REQUIRE(g.rc == 0);
  std::set<std::string> seen;
  for (const json& j : json_lines(g.out)) {
    CHECK(j["completion"] == want);
    seen.insert(j["id"].get<std::string>());
  }
  CHECK(seen == std::set<std::string>{"a", "b", "c"});
  write_text(kWork + "/bad.jsonl", jsonl + "{oops\n");
  Result bad = run("generate", "--model " + model_dir() + " --raw --prompts " + kWork + "/bad.jsonl");
  CHECK(bad.rc != 0);
  CHECK(bad.err.find("bad.jsonl:4: not a JSON line") != std::string::npos);
}

TEST_CASE("apps: ./linearize killed mid-stage resumes to the same losses; more steps extend a finished stage",
          "[apps]") {
  REQUIRE_APPS();
  const std::string whole = kWork + "/whole", killed = kWork + "/killed";
  fresh(whole);
  fresh(killed);
  const std::string args = "--eval-every 2";
  REQUIRE(run("linearize", linearize_args(whole, 4, 2, args)).rc == 0);

  // Killed after its third optimizer step: the last checkpoint is the one of step 2.
  Result k = run("linearize", linearize_args(killed, 4, 2, args + " --kill-after-steps 3"));
  CHECK(k.rc == 137);
  CHECK(exists(killed + "/stage1.ckpt"));
  CHECK_FALSE(exists(killed + "/summary.json"));
  Result res = run("linearize", linearize_args(killed, 4, 2, args + " --resume"));
  REQUIRE(res.rc == 0);
  CHECK(res.err.find("resumed from " + killed + "/stage1.ckpt at step 2") != std::string::npos);
  // Bit for bit the run that was never stopped: every step's loss, and the final measurements.
  std::vector<json> a = log_lines(whole), b = log_lines(killed);
  for (auto [stage, steps] : {std::pair<const char*, int>{"stage1", 4}, {"stage2", 2}})
    for (int step = 1; step <= steps; step++) {
      INFO(stage << " step " << step);
      CHECK(logged_loss(b, stage, step) == logged_loss(a, stage, step));
    }
  json sa = read_json(whole + "/summary.json"), sb = read_json(killed + "/summary.json");
  for (const char* key : {"stage1_val_ppl", "stage2_val_ppl", "attn_mse_final", "tokens_stage1", "tokens_stage2",
                          "sample_linearized"}) {
    INFO(key);
    CHECK(sb[key] == sa[key]);
  }

  // A larger --stage1-steps continues the finished stage 1 from its checkpoint; stage 2, whose
  // LoRA was trained on the old feature maps, starts again.
  Result ext = run("linearize", linearize_args(killed, 6, 2, args + " --resume"));
  REQUIRE(ext.rc == 0);
  CHECK(ext.err.find("resumed from " + killed + "/stage1.ckpt at step 4") != std::string::npos);
  CHECK(ext.err.find("[stage2] starting afresh") != std::string::npos);
  json se = read_json(killed + "/summary.json");
  CHECK(se["tokens_stage1"] == 6 * 160);
  CHECK(se["tokens_stage2"] == 2 * 160);
  std::vector<json> c = log_lines(killed);
  CHECK(std::isfinite(logged_loss(c, "stage1", 6)));
  CHECK(logged_loss(c, "stage1", 4) == logged_loss(a, "stage1", 4));
}

TEST_CASE("apps: ./linearize --stage 2 without stage-1 parameters stops and names the file", "[apps][errors]") {
  REQUIRE_APPS();
  const std::string out = kWork + "/no_stage1";
  fresh(out);
  Result r = run("linearize", linearize_args(out, 1, 1, "--stage 2"));
  CHECK(r.rc == 1);
  CHECK(r.err.find(out + "/stage1_params.safetensors, which do not exist") != std::string::npos);
  CHECK_FALSE(exists(out + "/log.jsonl"));  // stopped before any work
}

TEST_CASE("apps: --stage 1 reports no stage 2; --stage 2 then continues from its parameters", "[apps][errors]") {
  REQUIRE_APPS();
  const std::string out = kWork + "/stages";
  fresh(out);
  Result r1 = run("linearize", linearize_args(out, 1, 1, "--stage 1"));
  REQUIRE(r1.rc == 0);
  CHECK(r1.out.find("after stage 1") != std::string::npos);
  CHECK(r1.out.find("after stage 2") == std::string::npos);
  json s1 = read_json(out + "/summary.json");
  CHECK_FALSE(s1.contains("stage2_val_ppl"));
  CHECK(s1["tokens_stage2"] == 0);
  CHECK(SafeTensorsFile(out + "/lolcats_params.safetensors").metadata().at("lora") == "none");

  Result r2 = run("linearize", linearize_args(out, 1, 1, "--stage 2"));
  REQUIRE(r2.rc == 0);
  CHECK(r2.out.find("after stage 2") != std::string::npos);
  json s2 = read_json(out + "/summary.json");
  CHECK(s2["stage1_val_ppl"] == s1["stage1_val_ppl"]);  // the same stage-1 parameters, loaded
  CHECK(s2["tokens_stage1"] == 160);
  CHECK(s2["tokens_stage2"] == 160);
}

TEST_CASE("apps: config.ini is written to a temporary name and renamed", "[apps][errors]") {
  REQUIRE_APPS();
  // A symlink at config.ini tells the two apart: writing in place goes through the link and
  // changes its target; a rename replaces the link and leaves the target alone.
  const std::string out = kWork + "/config";
  fresh(out);
  std::system(("mkdir -p " + out).c_str());
  write_text(kWork + "/config_target.ini", "untouched\n");
  REQUIRE(symlink("../config_target.ini", (out + "/config.ini").c_str()) == 0);
  REQUIRE(run("linearize", linearize_args(out, 1, 1, "--stage 1")).rc == 0);
  CHECK(read_text(kWork + "/config_target.ini") == "untouched\n");
  struct stat st;
  REQUIRE(lstat((out + "/config.ini").c_str(), &st) == 0);
  CHECK(S_ISREG(st.st_mode));
  CHECK(read_text(out + "/config.ini").find("stage1-steps=1") != std::string::npos);
  CHECK_FALSE(exists(out + "/config.ini.tmp"));
}

TEST_CASE("apps: a damaged checkpoint is one error that names the file", "[apps][errors]") {
  REQUIRE_APPS();
  const std::string out = kWork + "/damaged", ckpt = out + "/stage1.ckpt";
  fresh(out);
  REQUIRE(run("linearize", linearize_args(out, 1, 1, "--stage 1")).rc == 0);
  const std::string good = read_text(ckpt);
  REQUIRE(good.size() > 1000);
  const std::string resume = linearize_args(out, 2, 1, "--stage 1 --resume");

  write_text(ckpt, good.substr(0, good.size() / 2));  // cut short, as by a full disk
  Result r = run("linearize", resume);
  CHECK(r.rc == 1);
  CHECK(r.err.find(ckpt) != std::string::npos);

  // A well-formed file whose training record is damaged or incomplete.
  save_safetensors(ckpt, {}, {{"lolcats_checkpoint", "{\"step\": 1, \"tok"}});
  r = run("linearize", resume);
  CHECK(r.rc == 1);
  CHECK(r.err.find(ckpt + ": the checkpoint record is not a JSON object") != std::string::npos);
  save_safetensors(ckpt, {}, {{"lolcats_checkpoint", "{\"step\": 1, \"seconds\": 2.0}"}});
  r = run("linearize", resume);
  CHECK(r.rc == 1);
  CHECK(r.err.find(ckpt + ": the checkpoint record has no integer") != std::string::npos);
}

TEST_CASE("apps: ./eval evaluates a file whose rows are all validation rows", "[apps][errors]") {
  REQUIRE_APPS();
  // The first 6 records: fewer than --val-rows (200 by default), so every row is validation.
  std::istringstream all(read_text(data_file()));
  std::string small, line;
  for (int i = 0; i < 6 && std::getline(all, line); i++) small += line + "\n";
  const std::string path = kWork + "/six_rows.jsonl";
  std::system(("mkdir -p " + kWork).c_str());
  write_text(path, small);
  Result e = run("eval", "--model " + model_dir() + " --data " + path + " --seq-len 160");
  REQUIRE(e.rc == 0);
  json j = json::parse(e.out);
  CHECK(j["chunks"].get<int>() >= 3);
  CHECK(std::isfinite(j["val_ppl"].get<double>()));
  // Training on it is what has nothing to work with, and says so.
  Result l = run("linearize", "--model " + model_dir() + " --data " + path + " --out " + kWork +
                                  "/six_rows --seq-len 160 --stage1-steps 1 --stage2-steps 1");
  CHECK(l.rc == 1);
  CHECK(l.err.find(path + ": ") != std::string::npos);
  CHECK(l.err.find("nothing left to train on") != std::string::npos);
}

TEST_CASE("apps: --feature-map t2r is recorded in the export and read back by ./eval and ./generate",
          "[apps][t2r]") {
  REQUIRE_APPS();
  const std::string out = kWork + "/t2r", exported = out + "/lolcats_params.safetensors";
  fresh(out);
  Result r = run("linearize", linearize_args(out, 1, 1, "--feature-map t2r"));
  REQUIRE(r.rc == 0);
  {
    SafeTensorsFile f(exported);
    CHECK(f.metadata().at("feature_map") == "t2r");
    CHECK(f.has("model.layers.0.self_attn.feature_map_q.mlp.bias"));
  }
  json s = read_json(out + "/summary.json");
  Result e = run("eval", "--linearized " + exported + eval_args());
  REQUIRE(e.rc == 0);
  CHECK(json::parse(e.out)["val_ppl"].get<double>() == Approx(s["stage2_val_ppl"].get<double>()).epsilon(1e-6));
  Result g = run("generate", "--linearized " + exported + " --raw --max-new-tokens 8",
                 s["sample_prompt"].get<std::string>());
  REQUIRE(g.rc == 0);
  CHECK(g.out == s["sample_linearized"].get<std::string>() + "\n");
  // Resuming the run with the other feature map is refused by name, not loaded into the wrong shapes.
  Result wrong = run("linearize", linearize_args(out, 1, 1, "--resume"));
  CHECK(wrong.rc == 1);
  CHECK(wrong.err.find("holds t2r feature maps, but this model uses hedgehog") != std::string::npos);
}

TEST_CASE("apps: ./eval and ./generate under the reference implementation's attention mask", "[apps][eval]") {
  REQUIRE_APPS();
  const std::string out = kWork + "/refmask", exported = out + "/lolcats_params.safetensors";
  fresh(out);
  REQUIRE(run("linearize", linearize_args(out, 1, 1)).rc == 0);
  // Zero-shot scoring under either mask; the results say which (and the decoder it implies).
  for (const char* mask : {"paper", "reference"}) {
    INFO(mask);
    const std::string json_path = out + "/" + mask + ".json";
    Result e = run("eval", "--linearized " + exported + " --tasks arc_easy --limit 6 --attention-mask " + mask +
                               " --out " + json_path);
    REQUIRE(e.rc == 0);
    json j = read_json(json_path);
    CHECK(j["attention_mask"] == mask);
    CHECK(j["decode_mode"] == (std::string(mask) == "reference" ? "reference" : "exact"));
    CHECK(j["tasks"]["arc_easy"]["metrics"][0]["n"] == 6);
  }
  Result g = run("generate", "--linearized " + exported + " --attention-mask reference --raw --max-new-tokens 4", "Hello");
  CHECK(g.rc == 0);
  CHECK(g.err.find("4 new tokens") != std::string::npos);
  // One line for what cannot be: a softmax model has no blocks; exact decoding cannot follow blocks
  // that end where the sequence ends.
  Result plain = run("eval", "--model " + model_dir() + " --tasks arc_easy --limit 2 --attention-mask reference");
  CHECK(plain.rc == 1);
  CHECK(plain.err.find("only a linearized model has terrace blocks") != std::string::npos);
  Result exact = run("generate", "--linearized " + exported + " --attention-mask reference --decode-mode exact --raw",
                     "Hello");
  CHECK(exact.rc == 1);
  CHECK(exact.err.find("cannot follow its blocks") != std::string::npos);
}

TEST_CASE("apps: --sparse-cache in ./eval and ./generate; refused for a softmax model", "[apps][eval][sparse_cache]") {
  REQUIRE_APPS();
  const std::string out = kWork + "/sparse", exported = out + "/lolcats_params.safetensors";
  fresh(out);
  REQUIRE(run("linearize", linearize_args(out, 1, 1)).rc == 0);
  const std::string json_path = out + "/sparse.json";
  Result e = run("eval", "--linearized " + exported + " --tasks ppl,passkey --passkey-len 300 --passkey-depths 0,100 " +
                             "--sparse-cache 16 --cache-sinks 2 --passkey-report --out " + json_path);
  REQUIRE(e.rc == 0);
  json j = read_json(json_path);
  CHECK(j["sparse_cache"] == 16);
  CHECK(j["cache_sinks"] == 2);
  CHECK(j["tasks"]["ppl"]["detail"]["through"] == "decoder");  // the cache lives in the decoder only
  CHECK(std::isfinite(j["tasks"]["ppl"]["metrics"][0]["value"].get<double>()));
  CHECK(j["tasks"]["passkey"]["trials"].size() == 2);
  // Where the needle went: per length, a share of heads per converted layer (2), of 5 digit tokens.
  const json& report = j["tasks"]["passkey"]["needle_in_cache"];
  REQUIRE(report.size() == 1);
  CHECK(report[0]["digit_tokens"].size() == 5);
  REQUIRE(report[0]["layers"].size() == 2);
  for (const json& l : report[0]["layers"])
    CHECK((0 <= l["every_digit"].get<double>() && l["every_digit"] <= l["some_digit"] && l["some_digit"] <= 1));
  Result g = run("generate", "--linearized " + exported + " --sparse-cache 8 --raw --max-new-tokens 4", "Hello");
  CHECK(g.rc == 0);
  CHECK(g.err.find("4 new tokens") != std::string::npos);
  Result plain = run("generate", "--model " + model_dir() + " --sparse-cache 8 --raw --max-new-tokens 4", "Hello");
  CHECK(plain.rc == 1);
  CHECK(plain.err.find("a softmax model keeps every key already") != std::string::npos);
}
