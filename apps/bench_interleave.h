// Interleaved measurement against PyTorch, so that a ratio can be trusted on a machine whose speed
// drifts (other processes, turbo, thermal): ours and PyTorch's call of the same case alternate
// (ours, torch, ours, torch, ...) after one warm-up call each, and each side's median and spread
// (min, max over the repetitions) are reported, with the median and spread of the per-pair ratio.
// A drift then moves both sides of a pair alike instead of one whole side.
//
// PyTorch runs as one long-lived process (tests/reference/bench_*.py --serve, bench_common.serve):
// ./bench writes a case name on its stdin, it answers with one timed call. Between the two sides
// ./bench sleeps 20 ms, so that neither side's idle OpenMP threads, still spinning, take cores from
// the other's timed call.
//
// Included by apps/bench.cpp after its helpers (lolcats::seconds_now()).
#pragma once
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

// The host's CPU: model name, the vector extensions that matter to a GEMM, and the cores Linux
// reports (every line of ./bench carries it, so that a figure names its machine).
inline nlohmann::json host_info() {
  std::ifstream f("/proc/cpuinfo");
  std::string line, model = "unknown";
  std::set<std::string> flags;
  int cores = 0;
  while (std::getline(f, line)) {
    auto value = [&] { return line.substr(line.find(':') + 2); };
    if (line.rfind("model name", 0) == 0) model = value(), cores++;
    if (line.rfind("flags", 0) == 0 && flags.empty()) {
      std::istringstream in(value());
      for (std::string w; in >> w;) flags.insert(w);
    }
  }
  std::vector<std::string> isa;
  for (const char* x : {"avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "amx_bf16",
                        "amx_tile"})
    if (flags.count(x)) isa.push_back(x);
  return {{"cpu", model}, {"isa", isa}, {"cores", cores}};
}

// One PyTorch --serve process. Unavailable (ok() false) when the venv or the script is missing.
class TorchServer {
 public:
  explicit TorchServer(const std::string& script_and_args) {
    int to_child[2], from_child[2];
    if (pipe(to_child) != 0) return;
    if (pipe(from_child) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      dup2(to_child[0], 0);
      dup2(from_child[1], 1);
      close(to_child[1]);
      close(from_child[0]);
      const std::string cmd = "exec .venv/bin/python tests/reference/" + script_and_args + " --serve 2>/dev/null";
      execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    close(to_child[0]);
    close(from_child[1]);
    to_ = fdopen(to_child[1], "w");
    from_ = fdopen(from_child[0], "r");
    nlohmann::json hello = read_line();
    ok_ = hello.contains("ready");
    if (ok_) torch_version_ = hello.value("torch", "");
    else std::fprintf(stderr, "bench: PyTorch side unavailable (run `make venv` to create .venv)\n");
  }
  ~TorchServer() {
    if (to_) std::fclose(to_);
    if (from_) std::fclose(from_);
    if (pid_ > 0) waitpid(pid_, nullptr, 0);
  }
  TorchServer(const TorchServer&) = delete;
  TorchServer& operator=(const TorchServer&) = delete;

  bool ok() const { return ok_; }
  const std::string& torch_version() const { return torch_version_; }
  // One timed call of `name` there: its seconds (NaN if the process failed).
  double call(const std::string& name) {
    if (!ok_) return NAN;
    std::fprintf(to_, "%s\n", name.c_str());
    std::fflush(to_);
    nlohmann::json j = read_line();
    if (!j.contains("seconds")) {
      ok_ = false;
      std::fprintf(stderr, "bench: PyTorch failed on %s\n", name.c_str());
      return NAN;
    }
    peak_rss_mib_ = j.value("peak_rss_mib", 0.0);
    return j["seconds"].get<double>();
  }
  double peak_rss_mib() const { return peak_rss_mib_; }

 private:
  nlohmann::json read_line() {
    char buf[8192];
    if (!from_ || !std::fgets(buf, sizeof buf, from_)) return nlohmann::json::object();
    try {
      return nlohmann::json::parse(buf);
    } catch (const nlohmann::json::exception&) {
      return nlohmann::json::object();
    }
  }
  pid_t pid_ = -1;
  FILE* to_ = nullptr;
  FILE* from_ = nullptr;
  bool ok_ = false;
  std::string torch_version_;
  double peak_rss_mib_ = 0;
};

// Median, min and max of a sample.
inline nlohmann::json spread(std::vector<double> v) {
  if (v.empty()) return nullptr;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  const double median = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
  return {{"median", median}, {"min", v.front()}, {"max", v.back()}};
}

// A side measured against ours: one timed call of the case, in seconds (NaN: it failed).
struct Side {
  std::string name;  // "torch", "blas": the keys NAME_seconds and speedup_vs_NAME
  std::function<double()> call;
};

// `reps` interleaved rounds (ours, then each side in turn), after one warm-up call each.
// `per_call` divides each measured time (a case that repeats its work n times). Returns
// {"reps", "seconds": spread, and per side "NAME_seconds": spread, "speedup_vs_NAME": spread of
// NAME / ours per round}.
inline nlohmann::json interleaved(int reps, const std::function<void()>& ours, const std::vector<Side>& sides,
                                  double per_call = 1) {
  auto pause = [] { std::this_thread::sleep_for(std::chrono::milliseconds(20)); };
  ours();
  for (const Side& s : sides) pause(), s.call(), pause();
  std::vector<double> mine;
  std::vector<std::vector<double>> theirs(sides.size()), ratio(sides.size());
  for (int r = 0; r < reps; r++) {
    const double t0 = lolcats::seconds_now();
    ours();
    mine.push_back((lolcats::seconds_now() - t0) / per_call);
    for (size_t i = 0; i < sides.size(); i++) {
      pause();
      const double t = sides[i].call() / per_call;
      pause();
      if (std::isnan(t)) continue;
      theirs[i].push_back(t);
      ratio[i].push_back(t / mine.back());
    }
  }
  nlohmann::json j = {{"reps", reps}, {"seconds", spread(mine)}};
  for (size_t i = 0; i < sides.size(); i++) {
    if (theirs[i].empty()) continue;
    j[sides[i].name + "_seconds"] = spread(theirs[i]);
    j["speedup_vs_" + sides[i].name] = spread(ratio[i]);
  }
  return j;
}

// Ours against PyTorch's call of `name` (without a PyTorch side, only ours), plus any other sides.
inline nlohmann::json interleaved(int reps, const std::function<void()>& ours, TorchServer* torch,
                                  const std::string& name, double per_call = 1, std::vector<Side> others = {}) {
  if (torch && torch->ok()) others.insert(others.begin(), Side{"torch", [torch, name] { return torch->call(name); }});
  nlohmann::json j = interleaved(reps, ours, others, per_call);
  if (j.contains("torch_seconds")) j["torch"] = torch->torch_version();
  return j;
}
