// ./bench generate: decode speed and memory of the softmax model (nn/decoder.h, KV cache) and of its
// linearized version (lolcats/recurrent.h, recurrent state) against context length and batch, f32
// and bf16 weights, on the CPU; transformers' decode (tests/reference/bench_generate.py) in the
// same invocation, with the ratio.
//
// Each case takes every sequence of the batch to `context` tokens already held, with random keys,
// values and state in place of a prefill (a step's time depends on the length, not on the values;
// a real prefill of 32k tokens would take minutes here), then times `steps` greedy decode steps
// that add one token to every sequence: tokens/s = batch x steps / seconds. The state's memory is
// reported beside: the KV cache grows with the context, the recurrent state does not. A softmax
// case whose KV cache would pass --max-cache-gib is reported skipped (out of memory). The
// linearized model is SmolLM2 with every layer converted (terrace window, Hedgehog maps at their
// identity init: speed does not depend on training). Charts: runs/bench/generate_b{batch}.svg.
// With --device cuda: a published shape on the GPU instead (bench_generate_device below).
#pragma once
#include <filesystem>
#include <map>
#include <random>

#include "apps/svg_plot.h"
#include "lolcats/recurrent.h"
#include "lolcats/sparse_cache.h"
#include "nn/decoder.h"
#include "nn/kv_cache.h"

namespace {

// Random keys and values (or state) everywhere: what the buffers hold stands for a prefill.
void fill_random(std::vector<float>& v, float lo, float hi, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  for (float& x : v) x = u(rng);
}

// Random values in a CPU f32 tensor.
void fill_random(lolcats::Tensor& t, float lo, float hi, uint32_t seed) {
  std::vector<float> v(size_t(t.numel()));
  fill_random(v, lo, hi, seed);
  std::copy(v.begin(), v.end(), t.f32());
}

// Times `steps` greedy decode steps of a batch of sequences of `context` tokens; seconds.
double time_decode(lolcats::Decoder& dec, int context, int steps) {
  const int batch = dec.batch(), V = dec.vocab();
  for (int b = 0; b < batch; b++) dec.assume_length(b, context);
  std::vector<int> one(size_t(batch), 1);
  std::vector<int32_t> next(static_cast<size_t>(batch));
  std::vector<float> logits(size_t(batch) * V);
  for (int b = 0; b < batch; b++) next[size_t(b)] = int32_t((b * 7919) % V);
  auto greedy = [&] {
    for (int b = 0; b < batch; b++)
      next[size_t(b)] = int32_t(std::max_element(logits.begin() + size_t(b) * V, logits.begin() + size_t(b + 1) * V) -
                                (logits.begin() + size_t(b) * V));
  };
  dec.step(next.data(), one.data(), logits.data());  // warm-up: the scratch buffers grow here
  double t0 = lolcats::seconds_now();
  for (int s = 0; s < steps; s++) {
    greedy();
    dec.step(next.data(), one.data(), logits.data());
  }
  return lolcats::seconds_now() - t0;
}

// --device cuda: the published shape `config` (default llama3-8b) with zero bf16 weights on the
// device (a step's time does not depend on them), softmax (KV cache) and linearized (recurrent
// state), every batch and context. The memory a case may take is what the card has free once the
// weights are in, less a margin (the step's activations and logits, cuBLASLt's workspace), and at
// most --max-cache-gib when that is given: a case whose KV cache or recurrent state would pass it is
// reported skipped, and so is one the card still cannot fit (out of memory), case by case, so the
// rows after it still run. Tokens/s include the step's uploads and the logits' download: what
// ./generate gets.
// The decoders a run compares: softmax (-1), then linearized without a sparse cache (0) and, when
// --sparse-cache G is given, with one (G).
std::vector<int> decoders_compared(const lolcats::SparseCacheConfig& cache) {
  std::vector<int> kinds = {-1, 0};
  if (cache.pairs > 0) kinds.push_back(cache.pairs);
  return kinds;
}

std::string linearized_name(int sparse_cache) {
  return sparse_cache > 0 ? " linearized + sparse cache " + std::to_string(sparse_cache) : " linearized";
}

int bench_generate_device(const std::string& config, const std::vector<int>& contexts,
                          const std::vector<int>& batches, int steps, double max_cache_gib,
                          lolcats::SparseCacheConfig sparse_cache) {
  using namespace lolcats;
  const LlamaConfig c = named_config(config);
  Llama base(c, Device::cuda, DType::bf16);
  for (const Var& p : base.parameters()) p->value.zero_();
  LolcatsModel linearized(base, LolcatsConfig{});
  const DeviceMemoryInfo card = device_memory_info();
  const int max_batch = *std::max_element(batches.begin(), batches.end());
  // The margin: a step's logits (f32, every sequence) and activations, twice over, and 1 GiB.
  const double margin = 2.0 * max_batch * (double(c.vocab) * 4 + 16.0 * c.d_model * 2) + 1073741824.0;
  double cap = double(card.free) - margin;
  if (max_cache_gib > 0) cap = std::min(cap, max_cache_gib * 1073741824.0);
  std::fprintf(stderr, "bench generate: %.1f GiB free of %.1f GiB with the weights in; cases take up to %.1f GiB\n",
               card.free / 1073741824.0, card.total / 1073741824.0, std::max(cap, 0.0) / 1073741824.0);
  for (int G : decoders_compared(sparse_cache)) {
    const bool soft = G < 0;
    for (int batch : batches)
      for (int ctx : contexts) {
        json j = {{"bench", "generate"}, {"model", config + (soft ? "" : linearized_name(G))}, {"device", "cuda"},
                  {"gpu", gpu_summary()}, {"weights", "bf16"}, {"batch", batch}, {"context", ctx}, {"steps", steps}};
        if (!soft) j["sparse_cache"] = G, j["cache_sinks"] = G > 0 ? sparse_cache.sinks : 0;
        const double kv = 2.0 * c.n_layers * batch * double(ctx + steps + 1) * c.n_kv_heads * c.head_dim * 2;
        const double rec = double(c.n_layers) * batch *
                           (double(c.n_heads) * linearized.F * (c.head_dim + 1) * 4 +
                            2.0 * LolcatsMemory::kRing * c.n_kv_heads * c.head_dim * 2 +
                            double(c.n_heads) * std::max(G, 0) * (2.0 * c.head_dim * 2 + (linearized.F + 1) * 4.0));
        const char* state_key = soft ? "kv_cache_mib" : "state_mib";
        j[state_key] = (soft ? kv : rec) / 1048576.0;
        if ((soft ? kv : rec) > cap) {
          j["skipped"] = strfmt("needs %.1f GiB, over the %.1f GiB this card has for it (out of memory)",
                                (soft ? kv : rec) / 1073741824.0, std::max(cap, 0.0) / 1073741824.0);
        } else {
          try {
            device_memory_reset_peak();
            std::unique_ptr<Decoder> dec = soft ? make_decoder(base) : make_decoder(linearized, DecodeMode::exact, {G, sparse_cache.sinks});
            dec->reserve(batch, ctx + steps + 1);
            const double sec = time_decode(*dec, ctx, steps);
            j[state_key] = dec->state_bytes() / 1048576.0;
            j["seconds"] = sec;
            j["tokens_per_s"] = batch * steps / sec;
            j["ms_per_step"] = 1e3 * sec / steps;
            j["peak_device_mib"] = device_memory_stats().peak / 1048576.0;
          } catch (const Error& e) {  // out of memory after all: this case only
            j["skipped"] = std::string("out of memory: ") + e.what();
          }
        }
        std::printf("%s\n", j.dump().c_str());
        std::fflush(stdout);
      }
  }
  return 0;
}

int bench_generate(int threads, const std::string& model_path, const std::vector<int>& contexts,
                   const std::vector<int>& batches, int steps, double max_cache_gib,
                   lolcats::SparseCacheConfig sparse_cache) {
  using namespace lolcats;
  // transformers first (one process, every case), keyed "dtype/batch/context".
  std::string args = "bench_generate.py --threads " + std::to_string(threads) + " --steps " + std::to_string(steps) +
                     " --max-cache-gib " + std::to_string(max_cache_gib) + " --contexts";
  for (int c : contexts) args += " " + std::to_string(c);
  args += " --batches";
  for (int b : batches) args += " " + std::to_string(b);
  std::map<std::string, json> theirs;
  for (const json& j : run_torch(args))
    theirs[j["dtype"].get<std::string>() + "/" + std::to_string(j["batch"].get<int>()) + "/" +
           std::to_string(j["context"].get<int>())] = j;

  std::map<int, std::vector<Series>> charts;  // per batch: ms per step against context
  for (DType dtype : {DType::f32, DType::bf16}) {
    std::unique_ptr<Llama> base = smollm2_or_random(model_path);
    if (dtype == DType::bf16) base->to(Device::cpu, DType::bf16);
    LolcatsModel linearized(*base, LolcatsConfig{});
    const LlamaConfig& c = base->cfg;
    for (int G : decoders_compared(sparse_cache)) {
      const bool soft = G < 0;
      for (int batch : batches) {
        Series series{std::string(soft ? "softmax " : G > 0 ? "LoLCATs + cache " + std::to_string(G) + " " : "LoLCATs ") +
                          dtype_name(dtype),
                      {}, {}};
        for (int ctx : contexts) {
          json j = {{"bench", "generate"}, {"model", std::string("SmolLM2-135M") + (soft ? "" : linearized_name(G))},
                    {"device", "cpu"}, {"weights", dtype_name(dtype)}, {"threads", threads}, {"batch", batch},
                    {"context", ctx}, {"steps", steps}};
          if (!soft) j["sparse_cache"] = G, j["cache_sinks"] = G > 0 ? sparse_cache.sinks : 0;
          double sec = 0, state_mib = 0;
          if (soft) {
            const double cache_bytes = 2.0 * c.n_layers * batch * double(ctx + steps + 1) * c.n_kv_heads * c.head_dim * 4;
            if (cache_bytes > max_cache_gib * 1073741824.0) {
              j["kv_cache_mib"] = cache_bytes / 1048576.0;
              j["skipped"] = "KV cache over --max-cache-gib (out of memory)";
              std::printf("%s\n", j.dump().c_str());
              continue;
            }
            std::unique_ptr<Decoder> dec = make_decoder(*base);
            dec->reserve(batch, ctx + steps + 1);
            KvCache& cache = dynamic_cast<KvCache&>(dec->memory());
            fill_random(cache.k, -1, 1, 1), fill_random(cache.v, -1, 1, 2);
            sec = time_decode(*dec, ctx, steps);
            state_mib = dec->state_bytes() / 1048576.0;
            j["kv_cache_mib"] = state_mib;
          } else {
            std::unique_ptr<Decoder> dec = make_decoder(linearized, DecodeMode::exact, {G, sparse_cache.sinks});
            dec->reserve(batch, 1);  // (every layer converted: no KV cache, no bound)
            for (LolcatsMemory::Layer& st : dynamic_cast<LolcatsMemory&>(dec->memory()).layers) {
              fill_random(st.S, 0, 1, 3), fill_random(st.z, 1, 2, 4);
              fill_random(st.ring_k, -1, 1, 5), fill_random(st.ring_v, -1, 1, 6);
              fill_random(st.cache_k, -1, 1, 7), fill_random(st.cache_v, -1, 1, 8), fill_random(st.cache_phi, 0, 1, 9);
            }
            sec = time_decode(*dec, ctx, steps);
            state_mib = dec->state_bytes() / 1048576.0;
            j["state_mib"] = state_mib;
          }
          j["seconds"] = sec;
          j["tokens_per_s"] = batch * steps / sec;
          j["ms_per_step"] = 1e3 * sec / steps;
          j["peak_rss_mib"] = peak_rss_mib();
          const std::string key = std::string(dtype_name(dtype)) + "/" + std::to_string(batch) + "/" + std::to_string(ctx);
          if (theirs.count(key) && theirs[key].contains("tokens_per_s")) {
            j["transformers_tokens_per_s"] = theirs[key]["tokens_per_s"];
            j["speedup_vs_transformers"] = j["tokens_per_s"].get<double>() / theirs[key]["tokens_per_s"].get<double>();
          } else if (theirs.count(key)) {
            j["transformers"] = "out of memory (skipped)";
          }
          std::printf("%s\n", j.dump().c_str());
          std::fflush(stdout);
          series.x.push_back(ctx);
          series.y.push_back(1e3 * sec / steps);
        }
        charts[batch].push_back(series);
      }
    }
  }
  for (const char* dt : {"f32", "bf16"})  // transformers' own curves beside ours
    for (int batch : batches) {
      Series t{std::string("transformers ") + dt, {}, {}};
      for (int ctx : contexts) {
        auto it = theirs.find(std::string(dt) + "/" + std::to_string(batch) + "/" + std::to_string(ctx));
        if (it == theirs.end() || !it->second.contains("ms_per_step")) continue;
        t.x.push_back(ctx);
        t.y.push_back(it->second["ms_per_step"].get<double>());
      }
      if (!t.x.empty()) charts[batch].push_back(t);
    }
  std::error_code ec;
  std::filesystem::create_directories("runs/bench", ec);
  ENSURE(!ec, "cannot create runs/bench: %s", ec.message().c_str());
  for (auto& [batch, series] : charts) {
    const std::string path = "runs/bench/generate_b" + std::to_string(batch) + ".svg";
    write_svg_chart(path, "Decode step, batch " + std::to_string(batch) + " (SmolLM2-135M, CPU)", "context (tokens)",
                    "ms per step", series);
    std::fprintf(stderr, "bench generate: chart %s\n", path.c_str());
  }
  return 0;
}

}  // namespace
