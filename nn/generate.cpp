#include "nn/generate.h"

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

std::vector<int32_t> generate(Decoder& dec, const std::vector<int32_t>& prompt, const SamplingConfig& cfg,
                              const std::function<bool(int32_t)>& on_token) {
  ENSURE(!prompt.empty(), "generate: the prompt is empty");
  dec.reserve(1, int(prompt.size()) + cfg.max_new_tokens);
  std::mt19937_64 rng(cfg.seed);
  std::vector<float> logits(size_t(dec.vocab()));
  std::vector<int32_t> out;
  int n = int(prompt.size());  // prefill: the whole prompt at once; only the last position's logits matter
  dec.step(prompt.data(), &n, logits.data());
  for (int i = 0; i < cfg.max_new_tokens; i++) {
    const int32_t next = sample_token(logits.data(), dec.vocab(), cfg.temperature, cfg.top_p, rng);
    out.push_back(next);
    const bool stop = std::find(cfg.stop_ids.begin(), cfg.stop_ids.end(), next) != cfg.stop_ids.end();
    if ((on_token && !on_token(next)) || stop || i + 1 == cfg.max_new_tokens) break;
    n = 1;
    dec.step(&next, &n, logits.data());
  }
  return out;
}

int longest_sequence(const std::vector<std::vector<int32_t>>& prompts, const SamplingConfig& cfg) {
  size_t longest = 0;
  for (size_t i = 0; i < prompts.size(); i++) {
    ENSURE(!prompts[i].empty(), "generate_batch: prompt %zu is empty", i);
    longest = std::max(longest, prompts[i].size());
  }
  return int(longest) + cfg.max_new_tokens;
}

void generate_batch(Decoder& dec, const std::vector<std::vector<int32_t>>& prompts, int batch,
                    const SamplingConfig& cfg,
                    const std::function<void(size_t, const std::vector<int32_t>&)>& on_done) {
  ENSURE(batch > 0, "generate_batch: batch must be positive, got %d", batch);
  const int B = int(std::min<size_t>(size_t(batch), std::max<size_t>(prompts.size(), 1))), V = dec.vocab();
  dec.reserve(B, longest_sequence(prompts, cfg));  // (which checks that no prompt is empty)
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
