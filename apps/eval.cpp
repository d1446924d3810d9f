// ./eval: a model (or a linearized export) on the paper's evaluation (LOLCATS.md section 8), and
// validation perplexity on the Alpaca data exactly as ./linearize measures it.
//   ./eval                                                       Alpaca val perplexity, one JSON line
//   ./eval --linearized runs/default/lolcats_params.safetensors  the same for a model made by ./linearize
//   ./eval --model BASE --linearized A_distill.pt,B_ft.pt       the same for the reference implementation's
//                                                                checkpoints (lolcats/reference_checkpoint.h);
//                                                                --attention-mask reference scores them
//                                                                under its mask, as its authors did
//   ./eval --tasks piqa,arc_easy,arc_challenge,hellaswag,winogrande,mmlu,ppl --limit 500 --out r.json
//                                                                zero-shot (MMLU 5-shot) accuracies: a
//                                                                table on stdout, JSON in --out
//   ./eval --compare teacher.json linearized.json                side by side, with the paper's numbers
//   ./eval --tasks passkey --passkey-len 512,1024,2048,4096 --out r.json
//                                                                passkey retrieval by length and needle
//                                                                depth: a table, r.json and r.passkey.svg
// Without --tasks, one JSON line on stdout: {"model", "val_loss", "val_ppl", "chunks", "label_tokens",
// "seq_len", "device"}. The tasks' data: ../shared/data/eval/ (nn/eval/tasks.h); scoring:
// nn/eval/harness.h on the model's decoder (nn/eval/loglik.h, nn/decoder.h: CPU or cuda device; under the
// reference mask one whole forward per request, CPU only); passkey: nn/eval/passkey.h on the same decoder.
#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "apps/reference_flags.h"
#include "apps/svg_heatmap.h"
#include "autograd/ops.h"
#include "data/alpaca.h"
#include "data/defaults.h"
#include "data/safetensors.h"
#include "data/token_cache.h"
#include "data/tokenizer.h"
#include "lolcats/export.h"
#include "lolcats/recurrent.h"
#include "lolcats/stages.h"
#include "lolcats/trainer.h"
#include "nn/eval/harness.h"
#include "nn/eval/passkey.h"
#include "nn/eval/tasks.h"
#include "tensor/device.h"
#include "tensor/parallel.h"

using namespace lolcats;

namespace {

struct PplOptions {
  std::string data_path;
  int seq_len, val_rows, chunks;
  Decoder* decoder = nullptr;  // through it rather than the parallel forward (a sparse cache is the decoder's)
};

// Alpaca validation loss, as ./linearize measures it (response tokens only, the same chunks).
nlohmann::json validation_ppl(const LinearizedModel& m, const Tokenizer& tok, const PplOptions& o) {
  AlpacaOptions ao;
  ao.T = o.seq_len;
  ao.val_rows = o.val_rows;
  ao.need_train = false;  // a file of validation rows only is a valid evaluation set
  AlpacaData data = load_alpaca(o.data_path, tok, ao);
  // Both losses fuse the LM head (on the GPU the logits are never whole in memory).
  EvalChunk chunk_loss = [&](const Tensor& ids, const Tensor& targets) {
    if (o.decoder) return decoder_chunk_loss(*o.decoder, ids, targets);
    return m.model ? lora_eval_chunk(*m.model, ids, targets) : double(item(m.base->forward_loss(ids, targets)));
  };
  ENSURE(data.val.count() > 0, "%s: its first %d rows fill no chunk of %d tokens: lower --seq-len or raise --val-rows",
         o.data_path.c_str(), o.val_rows, o.seq_len);
  int64_t n = o.chunks > 0 ? std::min<int64_t>(o.chunks, data.val.count()) : data.val.count();
  std::fprintf(stderr, "evaluating %lld validation chunks of %d tokens\n", (long long)n, o.seq_len);
  double loss = evaluate(data.val, int(n), chunk_loss);
  return {{"val_loss", loss}, {"val_ppl", std::exp(loss)}, {"chunks", n}, {"label_tokens", data.val.label_tokens(n)},
          {"seq_len", o.seq_len}, {"through", o.decoder ? "decoder" : "forward"}};
}

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  for (size_t i = 0; i <= s.size();) {
    size_t j = s.find(',', i);
    if (j == std::string::npos) j = s.size();
    if (j > i) out.push_back(s.substr(i, j - i));
    i = j + 1;
  }
  return out;
}

// "512,1024" -> {512, 1024}.
std::vector<int> int_list(const std::string& flag, const std::string& s) {
  std::vector<int> out;
  for (const std::string& x : split_list(s)) {
    size_t used = 0;
    int v = 0;
    try {
      v = std::stoi(x, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    ENSURE(used == x.size() && used > 0, "%s: \"%s\" is not a whole number (expected e.g. %s)", flag.c_str(),
           x.c_str(), flag == "--passkey-len" ? "512,1024,2048,4096" : "0,25,50,75,100");
    out.push_back(v);
  }
  ENSURE(!out.empty(), "%s: no values", flag.c_str());
  return out;
}

// The passkey heatmap beside the results JSON: teacher.json -> teacher.passkey.svg.
std::string passkey_svg_beside(const std::string& json_path) {
  const size_t slash = json_path.rfind('/'), dot = json_path.rfind('.');
  const bool ext = dot != std::string::npos && (slash == std::string::npos || dot > slash);
  return (ext ? json_path.substr(0, dot) : json_path) + ".passkey.svg";
}

// Depth down, length across, as needle-in-a-haystack charts are drawn.
// --passkey-report: where the needle went. For each length, one prompt (depth 50) fed to a fresh CPU
// decoder with the sparse cache; then, per layer, the share of query heads whose cache holds every
// digit of the key, and the share holding at least one (the rest were folded into the state).
nlohmann::json passkey_cache_report(const LolcatsModel& model, SparseCacheConfig cache, const Tokenizer& tok,
                                    const PasskeyOptions& o) {
  ENSURE(model.base.device() == Device::cpu && cache.pairs > 0,
         "--passkey-report: a linearized model on the CPU with --sparse-cache");
  nlohmann::json out = nlohmann::json::array();
  for (int L : o.lengths) {
    PasskeyPrompt p = build_passkey_prompt(tok, L, 50, passkey_key(o.seed, L, 50, 0), o.bos);
    const std::string key = std::to_string(p.key);
    // The key's digit tokens: the first run of all-digit tokens after the needle line's start.
    int at = (o.bos && tok.bos_id() >= 0 ? 1 : 0) + int(tok.encode(p.text.substr(0, p.text.find("The pass key is"))).size());
    std::vector<int> digits;
    for (; at < int(p.ids.size()) && digits.size() < key.size(); at++) {
      const std::string t = tok.decode({p.ids[size_t(at)]}, true);
      const bool all_digits = !t.empty() && t.find_first_not_of("0123456789") == std::string::npos;
      if (all_digits) digits.push_back(at);
      else if (!digits.empty()) break;
    }
    Decoder dec(model.base, std::make_unique<LolcatsMemory>(model, DecodeMode::exact, cache));
    const LolcatsMemory& memory = dynamic_cast<const LolcatsMemory&>(dec.memory());
    dec.reserve(1, int(p.ids.size()));
    std::vector<float> logits(size_t(dec.vocab()));
    const int n = int(p.ids.size());
    dec.step(p.ids.data(), &n, logits.data());
    nlohmann::json layers = nlohmann::json::array();
    const int H = model.base.cfg.n_heads, G = cache.pairs;
    for (const LolcatsMemory::Layer& st : memory.layers) {
      if (st.cache_n.empty()) continue;
      int every = 0, some = 0;
      for (int h = 0; h < H; h++) {
        int held = 0;
        for (int d : digits)
          for (int i = 0; i < st.cache_n[size_t(h)]; i++) held += st.cache_pos[size_t(h) * G + i] == d;
        every += held == int(digits.size()), some += held > 0;
      }
      layers.push_back({{"every_digit", double(every) / H}, {"some_digit", double(some) / H}});
    }
    out.push_back({{"length", L}, {"prompt_tokens", n}, {"digit_tokens", digits}, {"layers", layers}});
  }
  return out;
}

void write_passkey_svg(const std::string& path, const nlohmann::json& pk, const std::string& model) {
  Heatmap h;
  h.title = "Passkey retrieval: " + model;
  const int trials = pk["trials_per_cell"];
  h.subtitle = strfmt("accuracy in %%, %d prompt%s per cell (greedy; the first number of the reply must be the key)",
                      trials, trials == 1 ? "" : "s");
  h.xlabel = "prompt length (tokens)";
  h.ylabel = "needle depth (%)";
  const std::vector<int> lengths = pk["lengths"], depths = pk["depths"];
  for (int L : lengths) h.columns.push_back(std::to_string(L));
  for (size_t d = 0; d < depths.size(); d++) {
    h.rows.push_back(std::to_string(depths[d]) + "%");
    h.values.emplace_back();
    for (size_t l = 0; l < lengths.size(); l++) h.values.back().push_back(pk["accuracy"][l][d].get<double>());
  }
  write_svg_heatmap(path, h);
}

std::string folder_of(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"eval: zero-shot tasks and validation perplexity of a model or of a linearized model"};
  std::string model_path = kDefaultModel, linearized;
  std::string device_flag = "auto", dtype_flag = "bf16", tasks_flag, eval_dir = kDefaultEvalDir, out_path;
  std::string bos_flag = "off", mode_flag = "exact";
  std::vector<std::string> compare;
  PplOptions ppl{kDefaultAlpaca, 512, 200, 0};
  int threads = 0;
  long limit = 0;
  uint64_t seed = kEvalSubsetSeed;
  HarnessOptions ho;
  PasskeyOptions po;
  std::string passkey_len = "512,1024,2048,4096", passkey_depths = "0,10,20,30,40,50,60,70,80,90,100", passkey_svg;
  app.add_option("--model", model_path, "Hugging Face folder or .gguf file (with --linearized: its base)")
      ->capture_default_str();
  app.add_option("--linearized", linearized, "a model exported by ./linearize (lolcats_params.safetensors), or "
                 "the LoLCATs reference implementation's checkpoints A_distill.pt[,B_ft.pt] on the base in --model");
  ReferenceOptions ref;
  add_reference_flags(app, ref);
  app.add_option("--tasks", tasks_flag,
                 "comma-separated: piqa, arc_easy, arc_challenge, hellaswag, winogrande, mmlu (5-shot), "
                 "ppl (the Alpaca validation perplexity), passkey (retrieval by length and needle depth, "
                 "--passkey-*); without it, ppl alone as one JSON line");
  app.add_option("--passkey-len", passkey_len, "passkey: prompt lengths in tokens (each with the reply within "
                 "the model's positions)")->capture_default_str();
  app.add_option("--passkey-depths", passkey_depths, "passkey: needle depths in % of the filler")->capture_default_str();
  app.add_option("--passkey-trials", po.trials, "passkey: prompts (keys) per length and depth")->capture_default_str();
  bool passkey_report = false;
  app.add_flag("--passkey-report", passkey_report, "passkey with --sparse-cache (CPU): per length and layer, the share "
               "of heads whose cache holds the key's digits at the end of a depth-50 prompt (in the results JSON)");
  app.add_option("--passkey-svg", passkey_svg, "passkey: the heatmap (default: beside the results JSON, "
                 "NAME.json -> NAME.passkey.svg)");
  app.add_option("--eval-dir", eval_dir, "the evaluation sets (layout of ../shared/data/eval)")->capture_default_str();
  app.add_option("--limit", limit, "at most N items per task: a seeded subset (MMLU: per subject in proportion)")
      ->capture_default_str();
  app.add_option("--seed", seed, "seed of the --limit subset and of the passkeys")->capture_default_str();
  app.add_option("--bos", bos_flag, "prepend BOS to each context (the paper's harness does not; passkey prompts "
                 "get it anyway when the tokenizer adds it by default)")
      ->check(CLI::IsMember({"on", "off"}))
      ->capture_default_str();
  app.add_option("--decode-mode", mode_flag, "linearized models: exact (= the parallel forward) or reference")
      ->check(CLI::IsMember({"exact", "reference"}))
      ->capture_default_str();
  SparseCacheConfig sparse_cache;
  add_sparse_cache_flags(app, sparse_cache);
  app.add_option("--max-slots", ho.loglik.max_slots, "sequences scored together in one decode step")
      ->capture_default_str();
  app.add_option("--out", out_path, "results JSON (default with --linearized: eval_results.json beside the export)");
  app.add_option("--compare", compare, "A.json B.json: two results files side by side (teacher, linearized)")
      ->expected(2);
  app.add_option("--data", ppl.data_path, "Alpaca data: JSON array or JSONL, optionally zstd")->capture_default_str();
  app.add_option("--seq-len", ppl.seq_len, "tokens per chunk (as the run being compared)")->capture_default_str();
  app.add_option("--val-rows", ppl.val_rows, "first rows of the data used for validation")->capture_default_str();
  app.add_option("--chunks", ppl.chunks, "validation chunks to evaluate (0 = all)")->capture_default_str();
  app.add_option("--threads", threads, "CPU threads (0 = all cores)")->capture_default_str();
  app.add_option("--device", device_flag,
                 "cpu, cuda (weights and activations in --dtype), or auto: cuda when a GPU is visible. "
                 "Every task runs on either, for the base and the linearized model")
      ->capture_default_str();
  app.add_option("--dtype", dtype_flag, "weights and activations on the cuda device: bf16 or f32")
      ->check(CLI::IsMember({"bf16", "f32"}))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  set_num_threads(threads);
  try {
    if (!compare.empty()) {
      print_comparison(nlohmann::json::parse(read_file(compare[0])), nlohmann::json::parse(read_file(compare[1])), stdout);
      return 0;
    }
    const std::vector<std::string> tasks = split_list(tasks_flag);
    for (const std::string& t : tasks)
      ENSURE(std::find(eval_task_names().begin(), eval_task_names().end(), t) != eval_task_names().end(),
             "--tasks: unknown task \"%s\" (piqa, arc_easy, arc_challenge, hellaswag, winogrande, mmlu, ppl, passkey)", t.c_str());
    if (std::find(tasks.begin(), tasks.end(), "passkey") != tasks.end()) {  // flag errors before loading
      po.lengths = int_list("--passkey-len", passkey_len);
      po.depths = int_list("--passkey-depths", passkey_depths);
    }
    LinearizedModel m = load_for_inference(linearized, model_path, app.count("--model") > 0, ref);
    const Device device = parse_device(device_flag);
    ENSURE(device == Device::cpu || !m.model || ref.mask == AttentionMask::paper,
           "--attention-mask reference scores on the CPU only (the cuda hybrid kernel takes the paper's mask); "
           "use --device cpu");
    place_weights(m, device, device == Device::cuda && dtype_flag == "bf16" ? DType::bf16 : DType::f32);
    Tokenizer tok = Tokenizer::from_model(m.base_model);
    const std::string model_name = linearized.empty() ? m.base_model : linearized;
    ENSURE(sparse_cache.pairs == 0 || ref.mask == AttentionMask::paper,
           "--sparse-cache lives in the decoder, and --attention-mask reference scores by whole forwards: give one");
    const DecodeMode mode = resolve_decode_mode(ref, mode_flag, app.count("--decode-mode") > 0);
    std::unique_ptr<Decoder> decoder = make_decoder(m, mode, sparse_cache);
    if (sparse_cache.pairs > 0) ppl.decoder = decoder.get();  // the sparse cache's perplexity: through the decoder
    if (tasks.empty()) {  // the original ./eval: one JSON line
      nlohmann::json out = {{"model", model_name}};
      out.update(validation_ppl(m, tok, ppl));
      out["device"] = device_name(device);
      std::printf("%s\n", out.dump().c_str());
      return 0;
    }
    ho.bos = bos_flag == "on";
    // Under the reference mask a position's output depends on the sequence's length: each request
    // is scored by a whole forward of its own (the decode step cannot share prefixes then).
    const bool whole = m.model && ref.mask == AttentionMask::reference;
    LoglikScorer whole_scorer = [&](const std::vector<std::vector<LoglikRequest>>& reqs,
                                    const std::function<void(size_t, size_t)>& progress) {
      return score_loglik_whole([&](const std::vector<int32_t>& ids, int rows) { return m.model->tail_logits(ids, rows); },
                                m.base->cfg.vocab, reqs, progress);
    };
    nlohmann::json results = {{"model", model_name}, {"bos", ho.bos}, {"limit", limit}, {"seed", seed},
                              {"device", device_name(device)}, {"tasks", nlohmann::json::object()}};
    if (m.model) {
      results["attention_mask"] = ref.mask == AttentionMask::reference ? "reference" : "paper";
      results["decode_mode"] = mode == DecodeMode::reference ? "reference" : "exact";
      results["sparse_cache"] = sparse_cache.pairs;
      results["cache_sinks"] = sparse_cache.sinks;
    }
    for (const std::string& name : tasks) {
      if (name == "ppl") {
        nlohmann::json p = validation_ppl(m, tok, ppl);
        results["tasks"]["ppl"] = {{"metrics", {{{"name", "val_ppl"}, {"value", p["val_ppl"]}, {"n", p["chunks"]}},
                                                {{"name", "val_loss"}, {"value", p["val_loss"]}, {"n", p["chunks"]}}}},
                                   {"paper_metric", ""}, {"detail", p}};
        continue;
      }
      if (name == "passkey") {
        po.seed = seed;
        // The prompt is plain text (no chat template), BOS when asked or when the tokenizer adds it.
        po.bos = ho.bos || tok.adds_bos();
        po.max_position = m.base->cfg.max_position;
        po.gen.stop_ids = {tok.eos_id()};
        // Reference mode's chunked prefill differs from its whole-prompt prefill: no shared anchor.
        po.gen.share_prefix = !m.model || mode == DecodeMode::exact;
        std::fprintf(stderr, "passkey: lengths %s, depths %s, %d trial%s per cell\n", passkey_len.c_str(),
                     passkey_depths.c_str(), po.trials, po.trials == 1 ? "" : "s");
        PasskeyResult r = run_passkey(*decoder, tok, po);
        std::fprintf(stderr, "passkey: %zu tokens in %.1f s (%.0f tokens/s)\n", r.tokens, r.seconds,
                     double(r.tokens) / std::max(r.seconds, 1e-9));
        results["tasks"]["passkey"] = passkey_json(r);
        if (passkey_report) {
          ENSURE(m.model, "--passkey-report: a linearized model (--linearized)");
          results["tasks"]["passkey"]["needle_in_cache"] = passkey_cache_report(*m.model, sparse_cache, tok, po);
        }
        continue;
      }
      EvalTask task = load_eval_task(name, eval_dir);
      const size_t all = task.items.size();
      limit_eval_task(task, limit, seed);
      for (const std::string& note : task.notes) std::fprintf(stderr, "note: %s\n", note.c_str());
      std::fprintf(stderr, "%s: %zu of %zu items\n", name.c_str(), task.items.size(), all);
      TaskResult r = whole ? evaluate_task(task, tok, whole_scorer, ho) : evaluate_task(task, tok, *decoder, ho);
      std::fprintf(stderr, "%s: %zu tokens in %.1f s (%.0f tokens/s)\n", name.c_str(), r.tokens, r.seconds,
                   double(r.tokens) / std::max(r.seconds, 1e-9));
      results["tasks"][name] = result_json(r);
    }
    print_results_table(results["tasks"], stdout);
    if (results["tasks"].contains("passkey")) print_passkey_table(results["tasks"]["passkey"], stdout);
    if (out_path.empty() && !linearized.empty())  // beside the export (the first file of a list)
      out_path = folder_of(linearized.substr(0, linearized.find(','))) + "/eval_results.json";
    if (!out_path.empty()) {
      write_file_atomic(out_path, results.dump(2) + "\n");
      std::fprintf(stderr, "wrote %s\n", out_path.c_str());
    }
    if (results["tasks"].contains("passkey")) {
      if (passkey_svg.empty() && !out_path.empty()) passkey_svg = passkey_svg_beside(out_path);
      if (passkey_svg.empty()) {
        std::fprintf(stderr, "passkey: no heatmap written (give --out or --passkey-svg)\n");
      } else {
        write_passkey_svg(passkey_svg, results["tasks"]["passkey"], model_name);
        std::fprintf(stderr, "wrote %s\n", passkey_svg.c_str());
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "eval: %s\n", e.what());
    return 1;
  }
  return 0;
}
