#include "nn/generate.h"

#include "nn/decode.h"
#include "nn/decode_device.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <numeric>

namespace lolcats {

int32_t sample_token(const float* logits, int V, float temperature, float top_p, std::mt19937_64& rng) {
  if (temperature <= 0.0f) return int32_t(std::max_element(logits, logits + V) - logits);
  float mx = *std::max_element(logits, logits + V);
  std::vector<double> p(V);
  double sum = 0;
  for (int i = 0; i < V; i++) sum += (p[i] = std::exp(double(logits[i] - mx) / temperature));
  std::vector<int32_t> order(V);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int a, int b) { return p[a] > p[b]; });
  // Keep the most likely tokens until their mass reaches top_p (always at least one).
  double kept = 0;
  int n = 0;
  while (n < V && (n == 0 || kept < top_p * sum)) kept += p[order[n++]];
  double u = std::uniform_real_distribution<double>(0.0, kept)(rng);
  for (int i = 0; i < n; i++) {
    u -= p[order[i]];
    if (u <= 0) return order[i];
  }
  return order[n - 1];
}

std::vector<int32_t> generate_with(const StepFn& step, int V, const std::vector<int32_t>& prompt,
                                   const SamplingConfig& cfg,
                                   const std::function<bool(int32_t)>& on_token) {
  ENSURE(!prompt.empty(), "generate: the prompt is empty");
  std::mt19937_64 rng(cfg.seed);
  std::vector<int32_t> out;
  // Prefill: the whole prompt at once; only the last position's logits matter.
  // Logits come back to the host (from any device) for sampling.
  Tensor logits = step(Tensor::from_i32(prompt, {1, int64_t(prompt.size())}))->value.to(Device::cpu, DType::f32);
  const float* last = logits.f32() + (logits.numel() / V - 1) * size_t(V);  // the last row returned
  for (int n = 0; n < cfg.max_new_tokens; n++) {
    int32_t next = sample_token(last, V, cfg.temperature, cfg.top_p, rng);
    out.push_back(next);
    bool stop = std::find(cfg.stop_ids.begin(), cfg.stop_ids.end(), next) != cfg.stop_ids.end();
    if ((on_token && !on_token(next)) || stop || n + 1 == cfg.max_new_tokens) break;
    logits = step(Tensor::from_i32({next}, {1, 1}))->value.to(Device::cpu, DType::f32);
    last = logits.f32();
  }
  return out;
}

BatchDecoder llama_decoder(const Llama& model, int batch, int max_len) {
  if (model.device() == Device::cpu) {
    auto state = std::make_shared<LlamaDecodeState>(model.cfg, batch, max_len);
    return BatchDecoder{batch, model.cfg.vocab,
                        [&model, state](const int32_t* t, const int* n, float* l) { llama_decode_step(model, *state, t, n, l); },
                        [state](int b) { state->reset(b); }};
  }
  auto state = std::make_shared<DeviceDecodeState>(model, batch, max_len);
  return BatchDecoder{batch, model.cfg.vocab,
                      [&model, state](const int32_t* t, const int* n, float* l) {
                        llama_decode_step_device(model, *state, t, n, l);
                      },
                      [state](int b) { state->reset(b); }};
}

std::vector<int32_t> generate_one(const BatchDecoder& dec, const std::vector<int32_t>& prompt,
                                  const SamplingConfig& cfg, const std::function<bool(int32_t)>& on_token) {
  ENSURE(dec.batch >= 1, "generate: a decoder of at least one sequence is needed");
  Tensor last = Tensor::empty({dec.batch, dec.vocab});
  std::vector<int> n(size_t(dec.batch), 0);
  return generate_with(
      [&](const Tensor& ids) {
        n[0] = int(ids.numel());
        dec.step(ids.i32(), n.data(), last.f32());
        return leaf(last.rows(0, 1));
      },
      dec.vocab, prompt, cfg, on_token);
}

std::vector<int32_t> generate(const Llama& model, const std::vector<int32_t>& prompt, const SamplingConfig& cfg,
                              const std::function<bool(int32_t)>& on_token) {
  return generate_one(llama_decoder(model, 1, int(prompt.size()) + cfg.max_new_tokens), prompt, cfg, on_token);
}

int longest_sequence(const std::vector<std::vector<int32_t>>& prompts, const SamplingConfig& cfg) {
  size_t longest = 0;
  for (size_t i = 0; i < prompts.size(); i++) {
    ENSURE(!prompts[i].empty(), "generate_batch: prompt %zu is empty", i);
    longest = std::max(longest, prompts[i].size());
  }
  return int(longest) + cfg.max_new_tokens;
}

void generate_batch(const Llama& model, const std::vector<std::vector<int32_t>>& prompts, int batch,
                    const SamplingConfig& cfg,
                    const std::function<void(size_t, const std::vector<int32_t>&)>& on_done) {
  ENSURE(batch > 0, "generate_batch: batch must be positive, got %d", batch);
  const int B = int(std::min<size_t>(size_t(batch), std::max<size_t>(prompts.size(), 1)));
  generate_batch(llama_decoder(model, B, longest_sequence(prompts, cfg)), prompts, cfg, on_done);
}

void generate_batch(const BatchDecoder& dec, const std::vector<std::vector<int32_t>>& prompts,
                    const SamplingConfig& cfg,
                    const std::function<void(size_t, const std::vector<int32_t>&)>& on_done) {
  const int B = dec.batch, V = dec.vocab;
  ENSURE(B > 0, "generate_batch: batch must be positive, got %d", B);
  longest_sequence(prompts, cfg);  // checks that no prompt is empty
  struct Slot {
    long prompt = -1;           // which prompt it serves, -1: idle
    std::vector<int32_t> out;   // tokens made so far
    bool prefilled = false;
    std::mt19937_64 rng;
  };
  std::vector<Slot> slots(static_cast<size_t>(B));
  size_t next = 0, done = 0;
  std::vector<float> logits(size_t(B) * V);
  std::vector<int32_t> tokens;
  std::vector<int> n(static_cast<size_t>(B));
  while (done < prompts.size()) {
    tokens.clear();
    for (int b = 0; b < B; b++) {  // refill idle slots; gather this step's tokens
      Slot& sl = slots[size_t(b)];
      if (sl.prompt < 0 && next < prompts.size()) {
        sl = Slot{long(next), {}, false, std::mt19937_64(cfg.seed + next)};
        dec.reset(b);
        next++;
      }
      n[size_t(b)] = 0;
      if (sl.prompt < 0) continue;
      if (!sl.prefilled) {
        const std::vector<int32_t>& p = prompts[size_t(sl.prompt)];
        tokens.insert(tokens.end(), p.begin(), p.end());
        n[size_t(b)] = int(p.size());
      } else {
        tokens.push_back(sl.out.back());
        n[size_t(b)] = 1;
      }
    }
    dec.step(tokens.data(), n.data(), logits.data());
    for (int b = 0; b < B; b++) {  // sample; finish what is finished
      Slot& sl = slots[size_t(b)];
      if (sl.prompt < 0 || n[size_t(b)] == 0) continue;
      sl.prefilled = true;
      int32_t id = sample_token(logits.data() + size_t(b) * V, V, cfg.temperature, cfg.top_p, sl.rng);
      sl.out.push_back(id);
      bool stop = std::find(cfg.stop_ids.begin(), cfg.stop_ids.end(), id) != cfg.stop_ids.end();
      if (stop || int(sl.out.size()) >= cfg.max_new_tokens) {
        on_done(size_t(sl.prompt), sl.out);
        sl.prompt = -1;
        done++;
      }
    }
  }
}

}  // namespace lolcats
