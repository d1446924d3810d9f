// ./bench generate: decode speed of the plain-code step (nn/decode.h) against context length and
// batch, f32 and bf16 weights, on the CPU. Each case prefills every sequence of the batch to the
// context length (chunks of 512), then times decode steps that add one token to every sequence:
// tokens/s = batch x steps / seconds. The KV cache's bytes are reported beside (they grow with the
// context; the weights' do not). SmolLM2-135M (random weights when the GGUF is absent).
#pragma once
#include <random>

#include "nn/decode.h"

namespace {

int bench_generate(int threads, const std::string& model_path, const std::vector<int>& contexts,
                   const std::vector<int>& batches, int steps) {
  using namespace lolcats;
  for (DType dtype : {DType::f32, DType::bf16}) {
    std::unique_ptr<Llama> model = smollm2_or_random(model_path);
    if (dtype == DType::bf16) model->to(Device::cpu, DType::bf16);
    const int V = model->cfg.vocab;
    for (int batch : batches)
      for (int ctx : contexts) {
        LlamaDecodeState state(model->cfg, batch, ctx + steps);
        std::vector<float> logits(size_t(batch) * V);
        std::mt19937 rng(1);
        double t_prefill = now();
        for (int done = 0; done < ctx;) {  // prefill: every sequence, 512 tokens a step
          int chunk = std::min(512, ctx - done);
          std::vector<int> n(size_t(batch), chunk);
          std::vector<int32_t> ids(size_t(batch) * chunk);
          for (int32_t& t : ids) t = int32_t(rng() % uint32_t(V));
          llama_decode_step(*model, state, ids.data(), n.data(), logits.data());
          done += chunk;
        }
        t_prefill = now() - t_prefill;
        std::vector<int> one(size_t(batch), 1);
        std::vector<int32_t> next(static_cast<size_t>(batch));
        double t0 = now();
        for (int s = 0; s < steps; s++) {
          for (int b = 0; b < batch; b++)  // greedy: the argmax of each sequence's logits
            next[size_t(b)] = int32_t(std::max_element(logits.begin() + size_t(b) * V, logits.begin() + size_t(b + 1) * V) -
                                      (logits.begin() + size_t(b) * V));
          llama_decode_step(*model, state, next.data(), one.data(), logits.data());
        }
        double sec = now() - t0;
        double kv_mib = double(state.k.size() + state.v.size()) * 4 / 1048576.0;
        json j = {{"bench", "generate"}, {"model", "SmolLM2-135M"}, {"device", "cpu"},
                  {"weights", dtype_name(dtype)}, {"threads", threads}, {"batch", batch},
                  {"context", ctx}, {"steps", steps}, {"seconds", sec},
                  {"tokens_per_s", batch * steps / sec}, {"ms_per_step", 1e3 * sec / steps},
                  {"prefill_tokens_per_s", batch * ctx / t_prefill}, {"kv_cache_mib", kv_mib},
                  {"peak_rss_mib", peak_rss_mib()}};
        std::printf("%s\n", j.dump().c_str());
        std::fflush(stdout);
      }
  }
  return 0;
}

}  // namespace
