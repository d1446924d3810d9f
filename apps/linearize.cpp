// ./linearize: turn a Llama-family model into a LoLCATs linear-attention model (LOLCATS.md 3-5).
//   stage 1 (attention transfer): train feature maps + window factors so every layer's hybrid
//            attention reproduces its softmax attention (teacher-forced MSE);
//   stage 2 (LoRA): freeze them, add LoRA to q/k/v/o and train next-token cross-entropy.
// With no arguments it runs a short budget on the default model (SmolLM2-135M-Instruct) and the
// Alpaca data; the paper's hyperparameters are the defaults of every other flag. It writes a run
// folder (config, JSONL log, checkpoints, exported parameters, summary.json) and prints a table.
// Before training it prints the memory plan (lolcats/memory_plan.h: MiB per arena and stage);
// `--plan-only` prints every tensor of it and exits, for a --model or a named --config, reading
// no weight and touching no GPU.
#include <sys/stat.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "apps/svg_plot.h"
#include "autograd/ops.h"
#include "data/alpaca.h"
#include "data/defaults.h"
#include "data/gguf.h"
#include "data/safetensors.h"
#include "data/tokenizer.h"
#include "lolcats/export.h"
#include "lolcats/memory_plan.h"
#include "lolcats/peft_export.h"
#include "lolcats/recurrent.h"
#include "lolcats/stages.h"
#include "lolcats/trainer.h"
#include "nn/generate.h"
#include "tensor/clock.h"
#include "tensor/device.h"
#include "tensor/parallel.h"

using namespace lolcats;
using json = nlohmann::json;

namespace {

struct Options {
  std::string model = kDefaultModel;
  std::string data = kDefaultAlpaca;
  std::string out = "runs/default";
  std::string stage = "all";
  std::string attention = "terrace";
  std::string feature_map = "hedgehog";
  bool no_transfer = false, resume = false;
  int threads = 0, seq_len = 512, seed = 0, val_rows = 200;
  // stage 1 (LOLCATS.md 3)
  float lr1 = 1e-2f;
  int64_t steps1 = 75;
  // stage 2 (LOLCATS.md 4)
  float lr2 = 1e-4f;
  int64_t steps2 = 30;
  int lora_rank = 8;
  float lora_alpha = 16.0f;
  std::vector<std::string> lora_targets = {"q", "k", "v", "o"};
  std::string export_lora = "separate";
  std::string export_format = "lolcats";
  // both stages
  int grad_accum = 1, eval_every = 25, eval_chunks = 4;
  float plateau_factor = 0.1f, min_lr = 1e-5f;
  int patience = 10;
  int feature_half = 64;
  std::vector<int> softmax_layers;
  int sample_tokens = 40;
  int64_t kill_after = -1;  // tests: stop as if killed after this many optimizer steps of this process
  // memory plan
  bool plan_only = false;
  std::string config;         // a named shape (--plan-only)
  std::string device = "auto";
};

bool exists(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0;
}

void make_dirs(const std::string& path) {
  std::string cur;
  for (size_t i = 0; i <= path.size(); i++) {
    if (i == path.size() || path[i] == '/') {
      if (!cur.empty() && !exists(cur))
        ENSURE(mkdir(cur.c_str(), 0755) == 0, "cannot create the run folder %s", cur.c_str());
    }
    if (i < path.size()) cur += path[i];
  }
}

// Train loss per step and validation loss per evaluation of one stage, as a chart.
void plot_stage(const std::string& path, const std::string& title, const StageLog& log, bool log_y) {
  Series train{"train loss", {}, {}}, val{"validation loss", {}, {}, true};
  for (auto& s : log.steps) train.x.push_back(double(s.step)), train.y.push_back(s.loss);
  for (auto& e : log.evals) val.x.push_back(double(e.step)), val.y.push_back(e.val_loss);
  write_svg_chart(path, title, "optimizer step", "loss", {train, val}, log_y);
}

std::string alpaca_sample_prompt() {
  return alpaca_prompt({"Give three tips for staying healthy.", "", ""});
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"linearize: LoLCATs attention transfer + LoRA on a Llama-family model"};
  app.add_option("--model", o.model, "Hugging Face folder or .gguf file")->capture_default_str();
  app.add_option("--data", o.data, "Alpaca data: JSON array or JSONL, optionally zstd")->capture_default_str();
  app.add_option("--out", o.out, "run folder")->capture_default_str();
  app.add_option("--stage", o.stage, "1, 2 or all")->check(CLI::IsMember({"1", "2", "all"}))->capture_default_str();
  app.add_option("--attention", o.attention, "terrace, sw or linear")
      ->check(CLI::IsMember({"terrace", "sw", "linear"}))->capture_default_str();
  app.add_option("--feature-map", o.feature_map,
                 "hedgehog (the paper's) or t2r (ablation baseline: relu(x W + b), F = D)")
      ->check(CLI::IsMember({"hedgehog", "t2r"}))->capture_default_str();
  app.add_flag("--no-attention-transfer", o.no_transfer, "ablation: skip stage 1 (swap + LoRA only)");
  app.add_flag("--resume", o.resume,
               "continue from the run folder's checkpoints (more --stage1/2-steps extends a finished stage)");
  app.add_option("--threads", o.threads, "CPU threads (0 = all cores)")->capture_default_str();
  app.add_option("--seq-len", o.seq_len, "tokens per chunk (paper: 1024)")->capture_default_str();
  app.add_option("--seed", o.seed, "data shuffle and LoRA init seed")->capture_default_str();
  app.add_option("--val-rows", o.val_rows, "first rows of the data used for validation")->capture_default_str();
  app.add_option("--stage1-lr", o.lr1, "stage 1 AdamW learning rate")->capture_default_str();
  app.add_option("--stage1-steps", o.steps1, "stage 1 optimizer steps (paper: 2 epochs)")->capture_default_str();
  app.add_option("--stage2-lr", o.lr2, "stage 2 AdamW learning rate")->capture_default_str();
  app.add_option("--stage2-steps", o.steps2, "stage 2 optimizer steps")->capture_default_str();
  app.add_option("--lora-rank", o.lora_rank, "LoRA rank r")->capture_default_str();
  app.add_option("--lora-alpha", o.lora_alpha, "LoRA alpha (scale alpha / r)")->capture_default_str();
  app.add_option("--lora-targets", o.lora_targets, "projections with LoRA")->capture_default_str();
  app.add_option("--export-lora", o.export_lora,
                 "LoRA in lolcats_params.safetensors: separate (A, B) or merged (whole model, W + BA)")
      ->check(CLI::IsMember({"separate", "merged"}))->capture_default_str();
  app.add_option("--export-format", o.export_format,
                 "lolcats: lolcats_params.safetensors alone; peft: also RUN/peft/ for PyTorch users "
                 "(adapter_config.json + adapter_model.safetensors in peft's names, and the feature maps "
                 "as the reference saves its stage 1, lolcats_distill.pt)")
      ->check(CLI::IsMember({"lolcats", "peft"}))->capture_default_str();
  app.add_option("--grad-accum", o.grad_accum, "chunks per optimizer step (paper: 8)")->capture_default_str();
  app.add_option("--eval-every", o.eval_every, "steps between evaluations (paper: 100)")->capture_default_str();
  app.add_option("--eval-chunks", o.eval_chunks, "validation chunks per evaluation (0 = all)")->capture_default_str();
  app.add_option("--plateau-factor", o.plateau_factor, "ReduceLROnPlateau factor")->capture_default_str();
  app.add_option("--plateau-patience", o.patience, "ReduceLROnPlateau patience")->capture_default_str();
  app.add_option("--min-lr", o.min_lr, "ReduceLROnPlateau minimum lr")->capture_default_str();
  app.add_option("--feature-dim", o.feature_half, "Hedgehog features per softmax (Fh; F = 2 Fh); T2R uses F = D")->capture_default_str();
  app.add_option("--softmax-layers", o.softmax_layers, "layers kept as softmax attention");
  app.add_option("--sample-tokens", o.sample_tokens, "tokens of the sample generations")->capture_default_str();
  app.add_option("--kill-after-steps", o.kill_after,
                 "testing: stop after N optimizer steps of this process, writing nothing more, as a killed run would")
      ->group("");  // hidden from --help
  app.add_flag("--plan-only", o.plan_only,
               "print the memory plan and exit (every tensor, MiB per arena and stage, the peak) for "
               "--seq-len, batch 1 (chunks are trained one at a time), --device, the feature map, LoRA, "
               "kept softmax layers and --stage; reads no weight and touches no GPU");
  app.add_option("--config", o.config,
                 "with --plan-only, a published shape instead of --model: smollm2-135m, llama3.2-1b, "
                 "llama3-8b, llama3.1-8b, mistral-7b, llama3-70b");
  app.add_option("--device", o.device,
                 "where training runs: cpu (f32), cuda (bf16 frozen weights; f32 feature maps, window "
                 "factors, LoRA masters and AdamW state), or auto: cuda when a GPU is visible. cuda refuses "
                 "when the GPU's free memory is below the memory plan's peak")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}))->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  set_num_threads(o.threads);
  const double t_start = seconds_now();
  try {
    // ---- memory plan (batch 1: chunks are trained one at a time; --grad-accum adds no memory) -----
    ENSURE(o.config.empty() || o.plan_only,
           "--config names a shape without weights: use it with --plan-only (training needs --model)");
    ENSURE(o.config.empty() || app.count("--model") == 0, "give --config or --model, not both");
    LolcatsConfig lc;
    lc.variant = parse_variant(o.attention);
    lc.feature_map = parse_feature_map(o.feature_map);
    lc.feature_half = o.feature_half;
    lc.softmax_layers = o.softmax_layers;
    PlanOptions po;
    po.label = o.config.empty() ? o.model : o.config;
    po.device = o.device == "cuda" || (o.device == "auto" && gpu_visible()) ? Device::cuda : Device::cpu;
    po.lora_targets = o.lora_targets;
    po.stage1 = o.stage != "2" && !o.no_transfer;
    po.stage2 = o.stage != "1";
    const LlamaConfig shape = o.config.empty() ? config_from_model(o.model) : named_config(o.config);
    const MemoryPlan plan = plan_linearize_memory(shape, lc, o.seq_len, 1, o.lora_rank, po);
    if (o.plan_only) {
      std::printf("%s  (batch 1: ./linearize trains one chunk at a time; --grad-accum adds no memory)\n",
                  format_plan(plan).c_str());
      return 0;
    }

    const std::string stage1_params = o.out + "/stage1_params.safetensors";
    // Stage 2 trains LoRA on top of trained feature maps: without them it would quietly train on
    // untrained ones (that ablation is --no-attention-transfer).
    ENSURE(o.stage != "2" || o.no_transfer || exists(stage1_params),
           "--stage 2 needs the stage-1 parameters %s, which do not exist: run --stage 1 (or all) with "
           "--out %s first, or pass --no-attention-transfer for LoRA on untrained feature maps",
           stage1_params.c_str(), o.out.c_str());
    std::fprintf(stderr, "%s", format_plan_summary(plan).c_str());
    if (po.device == Device::cuda) {
      parse_device("cuda");  // a build with CUDA, or one clear line
      DeviceMemoryInfo mem = device_memory_info();
      check_plan_fits(plan, mem.free, device_card_name());
    }
    make_dirs(o.out);
    write_file_atomic(o.out + "/config.ini", app.config_to_str(true, true));
    std::ofstream log_file(o.out + "/log.jsonl", o.resume ? std::ios::app : std::ios::trunc);
    auto log = [&](const std::string& line) { log_file << line << "\n" << std::flush; };
    // What earlier processes of this run recorded, read before this one writes new checkpoints:
    // summary.json's seconds and tokens_stage1 are the whole run's.
    const bool reuse = o.resume || o.stage == "2";
    const CheckpointInfo stage1_ckpt = reuse ? checkpoint_info(o.out + "/stage1.ckpt") : CheckpointInfo{};
    const double seconds_before =
        o.resume ? stage1_ckpt.seconds + checkpoint_info(o.out + "/stage2.ckpt").seconds : 0;

    std::fprintf(stderr, "loading %s\n", o.model.c_str());
    // On the GPU the frozen weights are bf16 (mixed precision: the trainable parameters, their
    // gradients and AdamW's state stay f32).
    auto base = Llama::load(o.model, po.device, po.device == Device::cuda ? DType::bf16 : DType::f32);
    Tokenizer tok = Tokenizer::from_model(o.model);
    std::fprintf(stderr, "%s\n", base->cfg.summary().c_str());
    std::fprintf(stderr, "memory: %s (%s)\n", base->memory_report().c_str(), device_name(base->device()));
    AlpacaOptions ao;
    ao.T = o.seq_len;
    ao.val_rows = o.val_rows;
    ao.seed = uint64_t(o.seed);
    AlpacaData data = load_alpaca(o.data, tok, ao);

    LolcatsModel model(*base, lc);
    // Next-token losses through the fused LM head (the logits are never whole on the GPU).
    EvalChunk student = [&](const Tensor& ids, const Tensor& t) { return lora_eval_chunk(model, ids, t); };
    EvalChunk teacher = eval_chunk_of([&](const Tensor& ids, const Tensor& t) { return base->forward_loss(ids, t); });
    auto ppl = [&](const EvalChunk& loss) { return std::exp(evaluate(data.val, o.eval_chunks, loss)); };

    json summary;
    std::fprintf(stderr, "evaluating the teacher\n");
    summary["teacher_val_ppl"] = ppl(teacher);
    // The teacher's sample now: stage 2 attaches LoRA to the same base weights.
    std::vector<int32_t> prompt = tok.encode(alpaca_sample_prompt(), tok.adds_bos());
    SamplingConfig sc;
    sc.max_new_tokens = o.sample_tokens;
    sc.stop_ids = {tok.eos_id()};
    std::string sample_teacher = tok.decode(generate(*make_decoder(*base), prompt, sc), true);
    std::vector<double> mse_before = transfer_mse_per_layer(model, data.val, o.eval_chunks);
    summary["attn_mse_init"] = converted_mean(model, mse_before);

    auto stage_cfg = [&](const std::string& name, float lr, int64_t steps) {
      StageConfig s;
      s.name = name;
      s.lr = lr;
      s.max_steps = steps;
      s.grad_accum = o.grad_accum;
      s.eval_every = o.eval_every;
      s.eval_chunks = o.eval_chunks;
      s.plateau_factor = o.plateau_factor;
      s.plateau_patience = o.patience;
      s.min_lr = o.min_lr;
      s.checkpoint = o.out + "/" + name + ".ckpt";
      s.resume = o.resume;
      s.stop_after = o.kill_after;  // (what is left of it: see stopped_as_if_killed)
      return s;
    };
    // --kill-after-steps counts the steps of this process over both stages; a stage that used them
    // up ends the process as a kill would, writing nothing more.
    auto stopped_as_if_killed = [&](const StageLog& s) {
      if (s.stopped) {
        log_file.close();
        std::_Exit(137);
      }
      if (o.kill_after >= 0) o.kill_after -= int64_t(s.steps.size());
    };
    // ---- stage 1 ----------------------------------------------------------------------------------
    summary["tokens_stage1"] = 0;
    bool stage1_trained = false;  // in this process: a stage-2 checkpoint from before is stale
    if (o.stage != "2" && !o.no_transfer) {
      // A finished stage 1 is reused, unless --resume asks for more steps than its checkpoint has.
      bool more_steps = stage1_ckpt.step > 0 && stage1_ckpt.step < o.steps1;
      if (o.resume && exists(stage1_params) && !more_steps) {
        model.load(stage1_params);
        summary["tokens_stage1"] = stage1_ckpt.tokens;
        std::fprintf(stderr, "[stage1] done earlier: loaded %s\n", stage1_params.c_str());
      } else {
        StageLog s1 = train_stage(
            stage_cfg("stage1", o.lr1, o.steps1), model.named_parameters(), data.train, data.val,
            [&](const Tensor& ids, const Tensor&, float scale) { return transfer_train_chunk(model, ids, scale); },
            [&](const Tensor& ids, const Tensor&) { return transfer_eval_chunk(model, ids); }, log);
        stopped_as_if_killed(s1);
        stage1_trained = true;
        summary["tokens_stage1"] = s1.tokens;
        plot_stage(o.out + "/stage1_loss.svg", "Stage 1: attention transfer (MSE x1000)", s1, true);
        model.save(stage1_params);
      }
    } else if (o.stage == "2" && exists(stage1_params)) {
      model.load(stage1_params);
      summary["tokens_stage1"] = stage1_ckpt.tokens;
    }
    {
      std::vector<double> mse_after = transfer_mse_per_layer(model, data.val, o.eval_chunks), layer_ids;
      summary["attn_mse_final"] = converted_mean(model, mse_after);
      for (size_t l = 0; l < mse_after.size(); l++) layer_ids.push_back(double(l));
      summary["attn_mse_per_layer_init"] = mse_before;
      summary["attn_mse_per_layer_final"] = mse_after;
      write_svg_chart(o.out + "/attention_mse_per_layer.svg", "Attention MSE per layer (x1000)", "layer",
                      "MSE x1000", {{"before stage 1", layer_ids, mse_before, true},
                                    {"after stage 1", layer_ids, mse_after, true}}, true);
    }
    summary["stage1_val_ppl"] = ppl(student);
    for (const Var& p : model.parameters()) p->requires_grad = false;  // frozen from here on

    // ---- stage 2 ----------------------------------------------------------------------------------
    summary["tokens_stage2"] = 0;
    if (o.stage != "1") {
      auto lora = base->add_lora(o.lora_rank, o.lora_alpha, o.lora_targets, uint64_t(o.seed));
      // On the GPU one layer's activations at a time, as the memory plan counts.
      const Recompute recompute = po.device == Device::cuda ? Recompute::layers : Recompute::no;
      StageConfig s2cfg = stage_cfg("stage2", o.lr2, o.steps2);
      if (stage1_trained && o.resume && exists(s2cfg.checkpoint)) {
        s2cfg.resume = false;  // its LoRA was trained on the feature maps stage 1 just changed
        std::fprintf(stderr, "[stage2] starting afresh: stage 1 changed after %s was written\n",
                     s2cfg.checkpoint.c_str());
      }
      StageLog s2 = train_stage(
          s2cfg, lora, data.train, data.val,
          [&](const Tensor& ids, const Tensor& t, float scale) { return lora_train_chunk(model, ids, t, scale, recompute); },
          student, log);
      stopped_as_if_killed(s2);
      summary["tokens_stage2"] = s2.tokens;
      plot_stage(o.out + "/stage2_loss.svg", "Stage 2: LoRA (next-token cross-entropy)", s2, false);
      summary["stage2_val_ppl"] = ppl(student);
    }
    const std::string exported = o.out + "/lolcats_params.safetensors";
    export_linearized(exported, model, parse_lora_export(o.export_lora), o.model);
    if (o.export_format == "peft") {
      export_peft(o.out + "/peft", model, o.model);
      std::fprintf(stderr, "[export] %s/peft: PeftModel.from_pretrained(base, \"%s/peft\") loads the LoRA; "
                   "lolcats_distill.pt holds the feature maps\n", o.out.c_str(), o.out.c_str());
    }

    // ---- samples and report -----------------------------------------------------------------------
    if (base->device() == Device::cuda) base->merge_loras();  // the GPU's decode step takes plain weights
    std::string sample_student = tok.decode(generate(*make_decoder(model, DecodeMode::exact), prompt, sc), true);
    summary["sample_prompt"] = alpaca_sample_prompt();
    summary["sample_teacher"] = sample_teacher;
    summary["sample_linearized"] = sample_student;
    summary["seconds"] = seconds_now() - t_start + seconds_before;
    summary["run_folder"] = o.out;
    write_file_atomic(o.out + "/summary.json", summary.dump(2) + "\n");

    std::printf("\n%-34s %12s\n", "", "value");
    std::printf("%-34s %12.3f\n", "teacher validation perplexity", summary["teacher_val_ppl"].get<double>());
    std::printf("%-34s %12.3f\n", "after stage 1 (attention transfer)", summary["stage1_val_ppl"].get<double>());
    if (summary.contains("stage2_val_ppl"))
      std::printf("%-34s %12.3f\n", "after stage 2 (LoRA)", summary["stage2_val_ppl"].get<double>());
    std::printf("%-34s %12.4f\n", "attention MSE x1000, initial", summary["attn_mse_init"].get<double>());
    std::printf("%-34s %12.4f\n", "attention MSE x1000, final", summary["attn_mse_final"].get<double>());
    std::printf("\nprompt: Give three tips for staying healthy.\n  teacher:    %s\n  linearized: %s\n",
                sample_teacher.c_str(), sample_student.c_str());
    std::printf("\nrun folder: %s (summary.json, log.jsonl, *.svg plots, checkpoints); %.0f s\n",
                o.out.c_str(), summary["seconds"].get<double>());
    std::printf("linearized model: %s\n  try: ./generate --linearized %s --prompt \"...\"\n"
                "       ./eval --linearized %s\n", exported.c_str(), exported.c_str(), exported.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "\nlinearize: %s\n", e.what());
    return 1;
  }
  return 0;
}
