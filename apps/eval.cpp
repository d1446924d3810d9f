// ./eval: validation perplexity of a model on the Alpaca data, exactly as ./linearize measures it
// (response tokens only, the same packed validation chunks):
//   ./eval                                                       the default model (the teacher)
//   ./eval --linearized runs/default/lolcats_params.safetensors  a model made by ./linearize
//   ./eval --device cuda                                         the teacher on the GPU (bf16)
// One JSON line on stdout: {"model", "val_loss", "val_ppl", "chunks", "label_tokens", "seq_len"}.
// Zero-shot tasks (PiQA, ARC, HellaSwag, WinoGrande, MMLU) are not built yet.
#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "autograd/ops.h"
#include "data/alpaca.h"
#include "data/tokenizer.h"
#include "lolcats/export.h"
#include "lolcats/trainer.h"
#include "tensor/device.h"
#include "tensor/parallel.h"

using namespace lolcats;

int main(int argc, char** argv) {
  CLI::App app{"eval: validation perplexity of a model or of a linearized model on Alpaca data"};
  std::string model_path = "models/SmolLM2-135M-Instruct.Q4_1.gguf", linearized;
  std::string data_path = "../shared/data/alpaca_original_52k.jsonl.zst";
  std::string device_flag = "auto", dtype_flag = "bf16";
  int seq_len = 512, val_rows = 200, chunks = 0, threads = 0;
  app.add_option("--model", model_path, "Hugging Face folder or .gguf file (with --linearized: its base)")
      ->capture_default_str();
  app.add_option("--linearized", linearized, "a model exported by ./linearize (lolcats_params.safetensors)");
  app.add_option("--data", data_path, "Alpaca data: JSON array or JSONL, optionally zstd")->capture_default_str();
  app.add_option("--seq-len", seq_len, "tokens per chunk (as the run being compared)")->capture_default_str();
  app.add_option("--val-rows", val_rows, "first rows of the data used for validation")->capture_default_str();
  app.add_option("--chunks", chunks, "validation chunks to evaluate (0 = all)")->capture_default_str();
  app.add_option("--threads", threads, "CPU threads (0 = all cores)")->capture_default_str();
  app.add_option("--device", device_flag,
                 "cpu, cuda (bf16 weights and activations), or auto: cuda when a GPU is visible. "
                 "Linearized models run on the CPU so far")
      ->capture_default_str();
  app.add_option("--dtype", dtype_flag, "weights and activations on the cuda device: bf16 or f32")
      ->check(CLI::IsMember({"bf16", "f32"}))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  set_num_threads(threads);
  try {
    LinearizedModel m = load_for_inference(linearized, model_path, app.count("--model") > 0);
    Device device = parse_device(device_flag);
    if (device == Device::cuda) {
      ENSURE(!m.model, "--device cuda: linearized models run on the CPU until the LoLCATs kernels "
             "are on the GPU; use --device cpu");
      m.base->to(Device::cuda, dtype_flag == "f32" ? DType::f32 : DType::bf16);
    }
    Tokenizer tok = Tokenizer::from_model(m.base_model);
    AlpacaOptions ao;
    ao.T = seq_len;
    ao.val_rows = val_rows;
    ao.need_train = false;  // a file of validation rows only is a valid evaluation set
    AlpacaData data = load_alpaca(data_path, tok, ao);
    std::function<Var(const Tensor&)> forward = [&](const Tensor& ids) {
      return m.model ? m.model->forward(ids) : m.base->forward(ids);
    };
    // The plain model's loss fuses the LM head (on the GPU the logits are never whole in memory).
    ChunkLoss chunk_loss = m.model ? next_token_loss(forward) : ChunkLoss([&](const Tensor& ids, const Tensor& targets, float) {
      return double(item(m.base->forward_loss(ids, targets)));
    });
    ENSURE(data.val.count() > 0, "%s: its first %d rows fill no chunk of %d tokens: lower --seq-len or raise --val-rows",
           data_path.c_str(), val_rows, seq_len);
    int64_t n = chunks > 0 ? std::min<int64_t>(chunks, data.val.count()) : data.val.count();
    std::fprintf(stderr, "evaluating %lld validation chunks of %d tokens\n", (long long)n, seq_len);
    double loss = evaluate(data.val, int(n), chunk_loss);
    nlohmann::json out = {{"model", linearized.empty() ? m.base_model : linearized},
                          {"val_loss", loss},
                          {"val_ppl", std::exp(loss)},
                          {"chunks", n},
                          {"label_tokens", data.val.label_tokens(n)},
                          {"seq_len", seq_len},
                          {"device", device_name(device)}};
    std::printf("%s\n", out.dump().c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "eval: %s\n", e.what());
    return 1;
  }
  return 0;
}
