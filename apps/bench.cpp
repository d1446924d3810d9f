// ./bench: speed measurements, one JSON object per line.
//   ./bench matmul   our CPU matmul (Eigen) vs PyTorch's on the linear-layer shapes of SmolLM2-135M
// Where a comparison is claimed, both sides run in this one invocation with the same shapes and
// threads: PyTorch through tests/reference/bench_matmul.py in the project's .venv.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tensor/matmul.h"
#include "tensor/parallel.h"

using namespace lolcats;
using json = nlohmann::json;

namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Runs fn once to warm up, then repeats it until at least `min_seconds` have passed; seconds per call.
template <typename Fn>
double time_it(Fn fn, double min_seconds = 1.0) {
  fn();
  int reps = 0;
  double t0 = now(), t;
  do {
    fn();
    reps++;
    t = now();
  } while (t - t0 < min_seconds);
  return (t - t0) / reps;
}

struct MatmulShape { int M, K, N; };  // y (M, N) = x (M, K) @ W^T, W (N, K): a linear layer

// PyTorch's numbers for the same shapes and threads, keyed "MxKxN"; empty when unavailable.
std::map<std::string, double> torch_matmul(const std::vector<MatmulShape>& shapes, int threads) {
  std::string cmd = ".venv/bin/python tests/reference/bench_matmul.py --threads " +
                    std::to_string(threads) + " --shapes";
  for (auto s : shapes) cmd += " " + std::to_string(s.M) + "x" + std::to_string(s.K) + "x" + std::to_string(s.N);
  cmd += " 2>/dev/null";
  std::map<std::string, double> out;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return out;
  char line[4096];
  while (fgets(line, sizeof line, p)) {
    try {
      json j = json::parse(line);
      out[j["shape"].get<std::string>()] = j["gflops"].get<double>();
    } catch (...) {
    }
  }
  pclose(p);
  return out;
}

int bench_matmul(int threads) {
  const std::vector<MatmulShape> shapes = {{1024, 576, 576}, {1024, 576, 1536}, {1024, 1536, 576},
                                           {1024, 576, 49152}};
  auto theirs = torch_matmul(shapes, threads);
  if (theirs.empty())
    std::fprintf(stderr, "bench: PyTorch side unavailable (run `make venv` to create .venv)\n");
  for (auto s : shapes) {
    std::vector<float> x(size_t(s.M) * s.K, 0.01f), w(size_t(s.N) * s.K, 0.02f), y(size_t(s.M) * s.N);
    double sec = time_it([&] {
      matmul_forward(y.data(), x.data(), w.data(), 1, s.M, s.N, s.K, false, true, false);
    });
    std::string key = std::to_string(s.M) + "x" + std::to_string(s.K) + "x" + std::to_string(s.N);
    double gflops = 2.0 * s.M * s.N * s.K / sec / 1e9;
    json j = {{"bench", "matmul"}, {"shape", key}, {"op", "x @ W^T (f32, cpu)"},
              {"threads", threads}, {"seconds", sec}, {"gflops", gflops}};
    if (theirs.count(key)) {
      j["torch_gflops"] = theirs[key];
      j["ratio_vs_torch"] = gflops / theirs[key];
    }
    std::printf("%s\n", j.dump().c_str());
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bench: speed and memory measurements, one JSON object per line"};
  std::string what = "all";
  int threads = 0;
  app.add_option("what", what, "which benchmark: matmul, or all")
      ->check(CLI::IsMember({"matmul", "all"}))
      ->capture_default_str();
  app.add_option("--threads", threads, "CPU threads (0 = all cores)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  set_num_threads(threads);
  threads = num_threads();
  try {
    if (what == "matmul" || what == "all") bench_matmul(threads);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
