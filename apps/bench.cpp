// ./bench: speed measurements, one JSON object per line.
//   ./bench matmul   our CPU matmul (the packed kernel, and Eigen) vs PyTorch's on the linear-layer
//                    shapes of SmolLM2-135M
//                    (--blas LIB.so: and a CBLAS library's cblas_sgemm, apps/bench_blas.h)
//   ./bench llama    SmolLM2-135M forward and forward+backward, batch 1, T = 1024, f32, vs PyTorch
//   ./bench attention  one attention layer forward+backward, LoLCATs hybrid vs softmax, T = 1k..64k
//   ./bench linearize  one LoLCATs stage-1 and stage-2 training step, SmolLM2-135M, T = 1024, vs PyTorch
//   ./bench generate  decode tokens/s and memory of the softmax and the linearized model against
//                    context length and batch, f32 and bf16 weights, vs transformers (CPU;
//                    --contexts, --batches, --steps, --max-cache-gib; charts in runs/bench/)
//   ./bench gpu-ops  every CUDA kernel and cuBLASLt on Llama 3 8B shapes, against the device's
//                    measured copy and GEMM ceilings (--smoke: toy sizes, e.g. under the emulator)
//   ./bench linearize-8b --device cuda  both LoLCATs stages at Llama 3 8B's shape (random bf16
//                    weights), T = 1024: tokens/s, peak memory, MFU, hours for the paper's 20M + 20M tokens
// Where a comparison is claimed, both sides run in this one invocation with the same shapes and
// threads: PyTorch through tests/reference/bench_*.py in the project's .venv. matmul, llama and
// linearize alternate the two sides call by call and report medians and spreads
// (apps/bench_interleave.h); every line names the host's CPU and vector extensions.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include <sys/resource.h>

#include "apps/bench_attention.h"
#include "autograd/ops.h"
#include "apps/bench_blas.h"
#include "data/defaults.h"
#include "nn/llama.h"
#include "tensor/activations.h"
#include "tensor/clock.h"
#include "tensor/gemm.h"
#include "tensor/matmul.h"
#include "tensor/device.h"
#include "tensor/parallel.h"
#ifdef LOLCATS_CUDA
#include "cuda/bench_kernels.h"
#endif

using namespace lolcats;
using json = nlohmann::json;

namespace {

// Warm-up once, then the best of `reps` timed calls (seconds): the steady state, without noise
// from other processes inflating the figure.
template <typename Fn>
double best_of(int reps, Fn fn) {
  fn();
  double best = 1e30;
  for (int r = 0; r < reps; r++) {
    double t0 = seconds_now();
    fn();
    best = std::min(best, seconds_now() - t0);
  }
  return best;
}

// A published shape with zero weights (a step's speed does not depend on them).
std::unique_ptr<Llama> zero_model(const std::string& config) {
  auto model = std::make_unique<Llama>(named_config(config));
  for (const Var& p : model->parameters()) p->value.zero_();
  return model;
}

// SmolLM2-135M: the real weights when `path` exists, else zero ones (speed is the same).
std::unique_ptr<Llama> smollm2_or_random(const std::string& path) {
  if (FILE* f = std::fopen(path.c_str(), "rb")) {
    std::fclose(f);
    return Llama::load(path);
  }
  return zero_model("smollm2-135m");
}

// Token ids and next-token targets (1, T), (T) that touch the whole vocabulary.
std::pair<Tensor, Tensor> bench_tokens(int T, int vocab) {
  std::vector<int32_t> ids(T), tg(T);
  for (int t = 0; t < T; t++) ids[t] = (t * 7919) % vocab, tg[t] = (t * 104729 + 1) % vocab;
  return {Tensor::from_i32(ids, {1, T}), Tensor::from_i32(tg, {T})};
}

// Prints our measurement of one model step over T tokens as a JSON line (no PyTorch side).
void emit_step(json ours, double seconds, int T) {
  ours["seconds"] = seconds;
  ours["tokens_per_s"] = T / seconds;
  std::printf("%s\n", ours.dump().c_str());
  std::fflush(stdout);
}

}  // namespace
#include "apps/bench_interleave.h"  // after seconds_now(), which it uses
namespace {

// An interleaved measurement with the activations its steps needed (tensor/activations.h): the
// highest step peak above what was live before, in "activation_peak_mib".
json with_activations(Device device, const std::function<json()>& measure) {
  begin_step(device);
  json m = measure();
  m["activation_peak_mib"] = activation_stats(device).step_peak() / 1048576.0;
  return m;
}

// Prints one interleaved measurement (bench_interleave.h) of a step over `tokens` tokens as a JSON
// line: the medians as the headline figures (seconds, tokens_per_s, and PyTorch's beside them with
// speedup_vs_torch, the median of the per-pair ratios), the spreads under "interleaved", the host.
void emit_interleaved(json line, const json& m, int tokens) {
  const double sec = m["seconds"]["median"].get<double>();
  line["seconds"] = sec;
  line["tokens_per_s"] = tokens / sec;
  if (m.contains("torch_seconds")) {
    const double theirs = m["torch_seconds"]["median"].get<double>();
    line["torch_seconds"] = theirs;
    line["torch_tokens_per_s"] = tokens / theirs;
    line["speedup_vs_torch"] = m["speedup_vs_torch"]["median"];
  }
  line["interleaved"] = m;
  line["host"] = host_info();
  if (m.contains("activation_peak_mib")) line["activation_peak_mib"] = m["activation_peak_mib"];
  std::printf("%s\n", line.dump().c_str());
  std::fflush(stdout);
}

struct MatmulShape { int M, K, N; };  // y (M, N) = x (M, K) @ W^T, W (N, K): a linear layer

// Runs a PyTorch reference script from tests/reference/ in the project's venv and returns the
// JSON objects it prints, one per line (none when the venv is missing: `make venv`).
std::vector<json> run_torch(const std::string& script_and_args) {
  std::vector<json> out;
  FILE* p = popen((".venv/bin/python tests/reference/" + script_and_args + " 2>/dev/null").c_str(), "r");
  if (!p) return out;
  char line[8192];
  while (fgets(line, sizeof line, p)) {
    try {
      out.push_back(json::parse(line));
    } catch (const json::exception&) {  // a stray non-JSON line: not a measurement
    }
  }
  pclose(p);
  if (out.empty()) std::fprintf(stderr, "bench: PyTorch side unavailable (run `make venv` to create .venv)\n");
  return out;
}

double peak_rss_mib() {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss / 1024.0;  // Linux reports KiB
}

// Each shape: a case of n calls (n chosen so that it takes about 0.25 s), timed interleaved with
// PyTorch's n calls of F.linear on the same shape; GFLOP/s from the medians.
// With --blas, the library's cblas_sgemm is a third side of each round (apps/bench_blas.h).
int bench_matmul(int threads, int reps, const std::string& blas_path) {
  const std::vector<MatmulShape> shapes = {{1024, 576, 576}, {1024, 576, 1536}, {1024, 1536, 576},
                                           {1024, 576, 49152}};
  std::unique_ptr<BlasLibrary> blas;
  if (!blas_path.empty()) blas = std::make_unique<BlasLibrary>(blas_path, threads);
  TorchServer torch("bench_matmul.py --threads " + std::to_string(threads));
  const double ceiling = fma_ceiling_gflops(threads);  // what the vector units can do at most
  for (auto s : shapes) {
    std::vector<float> x(size_t(s.M) * s.K, 0.01f), w(size_t(s.N) * s.K, 0.02f), y(size_t(s.M) * s.N);
    auto once = [&] { matmul_forward(y.data(), x.data(), w.data(), 1, s.M, s.N, s.K, Transpose::b); };
    const int n = std::max(1, int(0.25 / best_of(1, once)));
    std::string key = std::to_string(s.M) + "x" + std::to_string(s.K) + "x" + std::to_string(s.N);
    // The simple version the packed kernel is tested against, as a side of every round.
    std::vector<float> ye(y.size());
    std::vector<Side> others = {{"eigen", [&] {
                                   const double t0 = seconds_now();
                                   for (int i = 0; i < n; i++)
                                     matmul_eigen(ye.data(), x.data(), w.data(), s.M, s.N, s.K, Transpose::b);
                                   return seconds_now() - t0;
                                 }}};
    std::vector<float> yb(blas ? y.size() : 0);
    if (blas)
      others.push_back({"blas", [&] {
                          const double t0 = seconds_now();
                          for (int i = 0; i < n; i++) blas->linear(yb.data(), x.data(), w.data(), s.M, s.N, s.K);
                          return seconds_now() - t0;
                        }});
    json m = interleaved(reps, [&] { for (int i = 0; i < n; i++) once(); }, &torch,
                         std::to_string(n) + ":" + key, n, others);
    const double flop = 2.0 * s.M * s.N * s.K, sec = m["seconds"]["median"].get<double>();
    json j = {{"bench", "matmul"}, {"shape", key}, {"op", "x @ W^T (f32, cpu)"}, {"threads", threads},
              {"calls_per_rep", n}, {"seconds", sec}, {"gflops", flop / sec / 1e9}};
    if (m.contains("torch_seconds")) {
      j["torch_gflops"] = flop / m["torch_seconds"]["median"].get<double>() / 1e9;
      j["ratio_vs_torch"] = m["speedup_vs_torch"]["median"];
    }
    j["fma_ceiling_gflops"] = ceiling;
    j["share_of_ceiling"] = flop / sec / 1e9 / ceiling;
    j["eigen_gflops"] = flop / m["eigen_seconds"]["median"].get<double>() / 1e9;
    j["ratio_vs_eigen"] = m["speedup_vs_eigen"]["median"];
    j["kernel"] = use_packed_gemm(s.M, s.N) ? "packed" : "eigen";
    if (m.contains("blas_seconds")) {
      j["blas"] = blas->path();
      j["blas_gflops"] = flop / m["blas_seconds"]["median"].get<double>() / 1e9;
      j["ratio_vs_blas"] = m["speedup_vs_blas"]["median"];
    }
    j["interleaved"] = m;
    j["host"] = host_info();
    std::printf("%s\n", j.dump().c_str());
    std::fflush(stdout);
  }
  return 0;
}

std::string gpu_summary() {
#ifdef LOLCATS_CUDA
  return cuda::bench::device_summary();
#else
  return "none";
#endif
}

// SmolLM2-135M forward and forward+backward over every weight, batch 1; on the cuda device in bf16
// (f32 weight gradients), the loss through the fused LM-head cross-entropy. `config` (cuda only):
// that published shape with zero weights instead.
int bench_llama(int threads, int T, const std::string& model_path, Device device, int reps,
                const std::string& config) {
  ENSURE(config.empty() || device == Device::cuda, "bench llama: --config is for --device cuda (the CPU side "
         "compares with PyTorch on SmolLM2)");
  std::unique_ptr<Llama> model = config.empty() ? smollm2_or_random(model_path) : zero_model(config);
  const std::string name = config.empty() ? "SmolLM2-135M" : config;
  if (device == Device::cuda) model->to(Device::cuda, DType::bf16);
  std::fprintf(stderr, "bench llama: memory: %s (%s)\n", model->memory_report().c_str(), device_name(device));
  auto [x, targets] = bench_tokens(T, model->cfg.vocab);
  auto forward = [&] {
    NoGrad ng;
    model->forward(x);
    device_synchronize();
  };
  auto forward_backward = [&] {
    for (const Var& p : model->parameters()) zero_grad(p);
    backward(device == Device::cuda ? model->forward_loss(x, targets)
                                    : cross_entropy(model->forward(x), targets));
    device_synchronize();
  };
  if (device == Device::cpu) {  // interleaved with PyTorch's same steps
    TorchServer torch("bench_llama.py --threads " + std::to_string(threads) + " --seq " + std::to_string(T));
    json f = with_activations(device, [&] { return interleaved(reps, forward, &torch, "forward"); });
    model->set_requires_grad(true);
    json fb = with_activations(device, [&] { return interleaved(reps, forward_backward, &torch, "forward_backward"); });
    for (auto [what, m] : {std::pair{"forward", f}, std::pair{"forward_backward", fb}})
      emit_interleaved({{"bench", "llama"}, {"model", "SmolLM2-135M"}, {"what", what}, {"batch", 1}, {"seq", T},
                        {"dtype", "f32"}, {"threads", threads}, {"peak_rss_mib", peak_rss_mib()},
                        {"torch_peak_rss_mib", torch.peak_rss_mib()}},
                       m, T);
    return 0;
  }
  double fwd = best_of(3, forward);
  model->set_requires_grad(true);
  double fwd_bwd = best_of(3, forward_backward);
  {
    DeviceMemoryStats mem = device_memory_stats();
    for (auto [what, sec] : {std::pair{"forward", fwd}, std::pair{"forward_backward", fwd_bwd}})
      emit_step({{"bench", "llama"}, {"model", name}, {"what", what}, {"batch", 1}, {"seq", T},
                 {"dtype", "bf16"}, {"device", "cuda"}, {"gpu", gpu_summary()},
                 {"peak_device_mib", mem.peak / 1048576.0}},
                sec, T);
    return 0;
  }
}

}  // namespace

#include "apps/bench_generate.h"   // after the helpers above, which these use
#include "apps/bench_linearize.h"
#ifdef LOLCATS_CUDA
#include "apps/bench_gpu.h"
#include "apps/bench_linearize_gpu.h"
#endif

int main(int argc, char** argv) {
  CLI::App app{"bench: speed and memory measurements, one JSON object per line"};
  std::string what = "all", model = kDefaultModel;
  int threads = 0, seq = 1024;
  std::vector<int> seqs = {1024, 4096, 16384, 65536};
  double max_seconds = 300;
  bool smoke = false;
  std::string device_flag = "cpu";
  app.add_option("what", what,
                 "which benchmark: matmul, llama, attention, linearize, all (these four), generate, gpu-ops, or "
                 "linearize-8b (both LoLCATs stages at --config's shape on the cuda device)")
      ->check(CLI::IsMember({"matmul", "llama", "attention", "linearize", "all", "gpu-ops", "generate", "linearize-8b"}))
      ->capture_default_str();
  app.add_option("--device", device_flag, "`llama`, `generate`: cpu, cuda or auto (cuda when a GPU is visible)")
      ->capture_default_str();
  std::string config = "llama3-8b";
  CLI::Option* config_opt =
      app.add_option("--config", config,
                     "`generate --device cuda` (zero bf16 weights), `linearize-8b` (random bf16 weights) and `llama "
                     "--device cuda` (zero weights, instead of --model): the model shape: smollm2-135m, llama3.2-1b, "
                     "llama3-8b, llama3.1-8b, mistral-7b, llama3-70b, toy (smoke runs)")
          ->capture_default_str();
  app.add_flag("--smoke", smoke, "`gpu-ops`: toy sizes (a check that it runs, e.g. under the emulator)");
  app.add_option("--seq", seq, "sequence length for `llama` and `linearize`")->capture_default_str();
  app.add_option("--model", model,
                 "model for `llama` and `linearize` (random SmolLM2-shaped weights if absent)")
      ->capture_default_str();
  app.add_option("--seqs", seqs, "sequence lengths for `attention`")->capture_default_str();
  std::vector<int> contexts = {512, 2048, 8192, 32768}, batches = {1, 8, 64};
  int steps = 16;
  double max_cache_gib = 0;
  app.add_option("--contexts", contexts, "`generate`: context lengths")->capture_default_str();
  app.add_option("--batches", batches, "`generate`: batch sizes")->capture_default_str();
  app.add_option("--steps", steps, "`generate`: decode steps timed per case")->capture_default_str();
  lolcats::SparseCacheConfig sparse_cache;
  app.add_option("--sparse-cache", sparse_cache.pairs, "`generate`: also time the linearized model with a sparse cache "
                 "of G pairs per head (lolcats/sparse_cache.h) beside the one without")
      ->check(CLI::Range(0, lolcats::kMaxSparseCache))
      ->capture_default_str();
  app.add_option("--cache-sinks", sparse_cache.sinks, "`generate`: of which the first N tokens (attention sinks)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--max-cache-gib", max_cache_gib,
                 "`generate`: skip (as out of memory) cases whose KV cache or state would be larger (0: 8 GiB on "
                 "the CPU; on the cuda device what the card has free with the weights in, less a margin)")
      ->capture_default_str();
  app.add_option("--max-seconds", max_seconds, "`attention`: skip runs estimated to take longer")
      ->capture_default_str();
  int train_steps = 3, layers = 0, reps = 7;
  app.add_option("--reps", reps,
                 "`matmul`, `llama`, `linearize`: interleaved repetitions (ours, PyTorch, ours, ...) after one "
                 "warm-up each; medians and spreads are reported")
      ->capture_default_str();
  app.add_option("--train-steps", train_steps, "`linearize-8b`: timed optimizer steps per stage")->capture_default_str();
  app.add_option("--layers", layers, "`linearize-8b`: keep only the first N layers (0 = all; smoke runs)")
      ->capture_default_str();
  app.add_option("--threads", threads, "CPU threads (0 = all cores)")->capture_default_str();
  std::string blas;
  app.add_option("--blas", blas, "`matmul`: also time this CBLAS library's cblas_sgemm (a .so loaded at run "
                 "time, e.g. OpenBLAS or BLIS), interleaved with ours and PyTorch's");
  CLI11_PARSE(app, argc, argv);
  const bool config_given = config_opt->count() > 0;
  set_num_threads(threads);
  threads = num_threads();
  try {
    // attention first: it forks, and libgomp's thread pool does not survive a fork.
    if (what == "attention" || what == "all") bench_attention(threads, seqs, max_seconds);
    if (what == "matmul" || what == "all") bench_matmul(threads, reps, blas);
    if (what == "llama" || what == "all")
      bench_llama(threads, seq, model, parse_device(device_flag), reps, config_given ? config : "");
    if (what == "linearize" || what == "all") bench_linearize(threads, seq, model, reps);
    if (what == "generate") {
      if (parse_device(device_flag) == Device::cuda)
        return bench_generate_device(config, contexts, batches, steps, max_cache_gib, sparse_cache);
      bench_generate(threads, model, contexts, batches, steps, max_cache_gib > 0 ? max_cache_gib : 8.0, sparse_cache);
    }
    if (what == "linearize-8b") {
#ifdef LOLCATS_CUDA
      ENSURE(parse_device(device_flag) == Device::cuda, "linearize-8b runs on the cuda device: add --device cuda");
      return bench_linearize_device(config, seq, train_steps, layers);
#else
      std::fprintf(stderr, "bench: linearize-8b needs a build with CUDA (CUDA=nvcc, or CUDA=emu)\n");
      return 1;
#endif
    }
    if (what == "gpu-ops") {
#ifdef LOLCATS_CUDA
      return bench_gpu_ops(smoke);
#else
      std::fprintf(stderr, "bench: gpu-ops needs a build with CUDA (CUDA=nvcc, or CUDA=emu with --smoke)\n");
      return 1;
#endif
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
