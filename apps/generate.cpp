// ./generate: text generation, streamed to stdout, from a Llama-family model (KV cache) or from a
// model linearized by ./linearize (recurrent state of constant size, LOLCATS.md 2.3).
//   ./generate --prompt "What is the capital of France?"            (default model, chat template)
//   ./generate --model DIR_OR_GGUF --prompt "Once upon" --raw --temperature 0.8 --top-p 0.9
//   ./generate --linearized runs/default/lolcats_params.safetensors --prompt "..."
//   ./generate --model BASE --linearized A_distill.pt,B_ft.pt --attention-mask reference --prompt "..."
//                                                  the reference's checkpoints, run as it runs them
//   ./generate --prompts prompts.jsonl --batch 8     many prompts, batched; results as JSONL lines
// Instruct models get their chat template (read from the checkpoint) unless --raw is given.
// Statistics (prompt tokens, generated tokens, tokens/s) go to stderr.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "apps/reference_flags.h"
#include "data/chat_template.h"
#include "data/defaults.h"
#include "data/tokenizer.h"
#include "lolcats/export.h"
#include "nn/generate.h"
#include "tensor/clock.h"
#include "tensor/device.h"
#include "tensor/parallel.h"

using namespace lolcats;

namespace {

// The chat-templated (unless raw) token ids of one prompt.
std::vector<int32_t> encode_prompt(const Tokenizer& tok, const std::string& tmpl, const std::string& prompt,
                                   const std::string& system, bool raw) {
  std::string text = prompt;
  if (!raw && !tmpl.empty()) {
    std::vector<ChatMessage> msgs;
    if (!system.empty()) msgs.push_back({"system", system});
    msgs.push_back({"user", prompt});
    text = apply_chat_template(chat_format_for(tmpl), msgs, true);
  }
  // A chat template writes its own BOS where the model wants one.
  return tok.encode(text, raw && tok.adds_bos());
}

void add_stop_ids(const Tokenizer& tok, SamplingConfig& sc) {
  for (const char* stop : {"<|im_end|>", "<|eot_id|>", "<|end_of_text|>"})
    if (tok.id_of(stop) >= 0) sc.stop_ids.push_back(tok.id_of(stop));
  if (tok.eos_id() >= 0) sc.stop_ids.push_back(tok.eos_id());
}

// --dtype: f32, bf16, or auto (bf16 on cuda, f32 on the CPU).
DType weight_dtype(const std::string& flag, Device device) {
  if (flag == "f32") return DType::f32;
  if (flag == "bf16") return DType::bf16;
  return device == Device::cuda ? DType::bf16 : DType::f32;
}

// --prompts: every prompt of a JSONL file, batched (nn/generate.h generate_batch).
int serve_prompts(const std::string& path, int batch, const std::string& model_path, const std::string& linearized,
                  bool raw, const std::string& system, SamplingConfig sc, bool model_given,
                  const std::string& device_flag, const std::string& dtype_flag, DecodeMode mode,
                  SparseCacheConfig sparse_cache, const ReferenceOptions& ref) {
  ENSURE(batch > 0, "--batch must be positive, got %d", batch);
  std::ifstream in(path);
  ENSURE(in, "cannot read %s", path.c_str());
  std::vector<std::string> texts;
  std::vector<nlohmann::json> ids;
  std::string line;
  for (int lineno = 1; std::getline(in, line); lineno++) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception&) {
      fail(__FILE__, __LINE__, strfmt("%s:%d: not a JSON line", path.c_str(), lineno));
    }
    ENSURE(j.is_string() || (j.is_object() && j.contains("prompt") && j["prompt"].is_string()),
           "%s:%d: expected a string or an object with a \"prompt\" string", path.c_str(), lineno);
    texts.push_back(j.is_string() ? j.get<std::string>() : j["prompt"].get<std::string>());
    ids.push_back(j.is_object() && j.contains("id") ? j["id"] : nlohmann::json(texts.size() - 1));
  }
  ENSURE(!texts.empty(), "%s holds no prompts", path.c_str());
  LinearizedModel m = load_for_inference(linearized, model_path, model_given, ref);
  const Device device = parse_device(device_flag);
  place_weights(m, device, weight_dtype(dtype_flag, device));
  Tokenizer tok = Tokenizer::from_model(m.base_model);
  std::string tmpl = load_chat_template(m.base_model);
  std::vector<std::vector<int32_t>> prompts;
  for (const std::string& t : texts) prompts.push_back(encode_prompt(tok, tmpl, t, system, raw));
  add_stop_ids(tok, sc);
  size_t new_tokens = 0;
  double t0 = seconds_now();
  auto on_done = [&](size_t i, const std::vector<int32_t>& out) {
    new_tokens += out.size();
    nlohmann::json j = {{"id", ids[i]}, {"completion", tok.decode(out, true)}, {"new_tokens", out.size()}};
    // A completion cut at --max-new-tokens may end inside a UTF-8 character: replace, not throw.
    std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    std::fflush(stdout);
  };
  generate_batch(*make_decoder(m, mode, sparse_cache), prompts, batch, sc, on_done);
  double sec = seconds_now() - t0;
  std::fprintf(stderr, "[%zu prompts, %zu new tokens in %.2f s: %.1f tokens/s, batch %d]\n", prompts.size(),
               new_tokens, sec, new_tokens / sec, batch);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"generate: text from a Llama-family model (KV cache) or a linearized one (recurrent state), streamed"};
  std::string model_path = kDefaultModel, prompt, system;
  SamplingConfig sc;
  int threads = 0;
  bool raw = false;
  std::string linearized, decode = "exact";
  app.add_option("--model", model_path, "Hugging Face folder or .gguf file")->capture_default_str();
  app.add_option("--linearized", linearized,
                 "a model exported by ./linearize (lolcats_params.safetensors); its base model is the "
                 "one it records unless --model is given. Or the LoLCATs reference implementation's "
                 "checkpoints A_distill.pt[,B_ft.pt] on the base in --model (--decode-mode reference decodes as "
                 "the reference does)");
  ReferenceOptions ref;
  add_reference_flags(app, ref);
  SparseCacheConfig sparse_cache;
  add_sparse_cache_flags(app, sparse_cache);
  app.add_option("--decode-mode,--decode", decode, "recurrent decoding of a linearized model: exact or reference (the CPU only)")
      ->check(CLI::IsMember({"exact", "reference"}))->capture_default_str();
  app.add_option("--prompt", prompt, "the prompt (read from stdin when absent)");
  std::string prompts_file;
  int batch = 8;
  app.add_option("--prompts", prompts_file,
                 "a JSONL file of prompts (each line a string or {\"prompt\": ..., \"id\": ...}): "
                 "generated in batches, one JSON line out per prompt as it finishes");
  app.add_option("--batch", batch, "with --prompts: sequences decoded together")->capture_default_str();
  app.add_option("--system", system, "system message for chat models");
  app.add_flag("--raw", raw, "feed the prompt as is, without the chat template");
  app.add_option("--max-new-tokens", sc.max_new_tokens, "tokens to generate at most")->capture_default_str();
  app.add_option("--temperature", sc.temperature, "0 = greedy")->capture_default_str();
  app.add_option("--top-p", sc.top_p, "nucleus sampling mass (with temperature > 0)")->capture_default_str();
  app.add_option("--seed", sc.seed, "random seed for sampling")->capture_default_str();
  app.add_option("--threads", threads, "CPU threads (0 = all cores)")->capture_default_str();
  std::string device_flag = "auto", dtype_flag = "auto";
  app.add_option("--device", device_flag,
                 "cpu, cuda (bf16 weights; KV cache, or the recurrent state of a linearized model, on the "
                 "device), or auto: cuda when a GPU is visible")
      ->capture_default_str();
  app.add_option("--dtype", dtype_flag,
                 "weight storage: f32, bf16, or auto (bf16 on cuda, f32 on the CPU). On the CPU, bf16 "
                 "halves the bytes each decoded token reads (arithmetic stays f32)")
      ->check(CLI::IsMember({"auto", "bf16", "f32"}))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  set_num_threads(threads);
  try {
    if (!prompts_file.empty()) return serve_prompts(prompts_file, batch, model_path, linearized, raw, system, sc,
                                                    app.count("--model") > 0, device_flag, dtype_flag,
                                                    resolve_decode_mode(ref, decode, app.count("--decode-mode") > 0), sparse_cache, ref);
    if (prompt.empty()) prompt.assign(std::istreambuf_iterator<char>(std::cin), {});
    ENSURE(!prompt.empty(), "no prompt: pass --prompt TEXT or pipe text on stdin");
    // A linearized model brings its base (for weights, tokenizer and template) along.
    LinearizedModel m = load_for_inference(linearized, model_path, app.count("--model") > 0, ref);
    const Device device = parse_device(device_flag);
    place_weights(m, device, weight_dtype(dtype_flag, device));
    const Llama& model = *m.base;
    Tokenizer tok = Tokenizer::from_model(m.base_model);
    std::string tmpl = load_chat_template(m.base_model);
    ENSURE(tok.vocab_size() <= model.cfg.vocab, "tokenizer has %d tokens but the model only %d",
           tok.vocab_size(), model.cfg.vocab);
    std::vector<int32_t> ids = encode_prompt(tok, tmpl, prompt, system, raw);
    add_stop_ids(tok, sc);

    std::vector<int32_t> out;
    size_t printed = 0;
    double t0 = seconds_now(), t_first = 0;
    auto on_token = [&](int32_t id) {
      if (out.empty()) t_first = seconds_now();
      out.push_back(id);
      std::string s = tok.decode(out, true);  // whole text each time: multi-token characters join
      std::fwrite(s.data() + printed, 1, s.size() - printed, stdout);
      std::fflush(stdout);
      printed = s.size();
      return true;
    };
    generate(*make_decoder(m, resolve_decode_mode(ref, decode, app.count("--decode-mode") > 0), sparse_cache), ids, sc,
             on_token);
    double t1 = seconds_now();
    std::printf("\n");
    std::fflush(stdout);
    std::fprintf(stderr, "[%zu prompt tokens in %.2f s, %zu new tokens at %.1f tokens/s]\n", ids.size(),
                 t_first - t0, out.size(), out.size() > 1 ? (out.size() - 1) / (t1 - t_first) : 0.0);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "generate: %s\n", e.what());
    return 1;
  }
  return 0;
}
