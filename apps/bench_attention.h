// ./bench attention: one attention layer, forward + backward, on the CPU, batch 1, f32:
//   softmax  attention_forward + attention_backward (causal GQA, tensor/attention.h)
//   hybrid   LoLCATs stage-2 layer (terrace): hedgehog maps phi_q(q), phi_k(k), hybrid attention
//            forward, hybrid attention backward (all gradients), both hedgehog backwards, and the
//            map gradients added into dq, dk (lolcats/feature_map.h, lolcats/hybrid_attention.h)
// for H=9/Hkv=3/D=64 (SmolLM2-135M) and H=32/Hkv=8/D=128 (Llama 3 8B), F = 128 (Fh = 64),
// at each requested sequence length. One JSON line per measurement, then one summary line per
// config (crossover length, memory-per-token ratio of the hybrid between the largest and the
// smallest length).
//
// Every measurement runs in a forked child: it allocates, runs, sends its seconds through a pipe
// and exits, and the parent reads the child's peak RSS from wait4's rusage, so each peak belongs
// to one measurement. The child's RSS right after the fork (pages it shares with the parent) is
// reported as base_rss_mib; net_peak_mib = peak_rss_mib - base_rss_mib.
//
// libgomp's thread pool does not survive fork() (a child that enters a parallel region after the
// parent did waits forever on the parent's threads), so the parent must not have run any OpenMP
// (or threaded Eigen) code before calling bench_attention: `./bench all` runs it first. A child
// that hangs anyway is killed by an alarm and reported as an error line.
//
// A run is skipped (a JSON line with "skipped") when its estimated time, extrapolated from the
// last measured length of the same kind (softmax ~ T^2, hybrid ~ T), exceeds max_seconds
// (--max-seconds), or its estimated memory exceeds 90% of MemAvailable.
//
// Per measurement: fwd_seconds, fwd_bwd_seconds (fastest of the runs that fit in ~1 s, at least
// one), peak_rss_mib, tensor_mib (analytic bytes of inputs, outputs, saved tensors and gradients),
// workspace_mib (analytic scratch of the kernels), and for the hybrid phase_seconds (feature maps
// forward, attention forward, attention backward, feature maps backward).
#pragma once
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "lolcats/feature_map.h"
#include "lolcats/hybrid_attention.h"
#include "tensor/attention.h"
#include "tensor/clock.h"

namespace attn_bench {

struct Config {
  const char* model;
  int H, Hkv, D, Fh;
};

constexpr double kMiB = 1024.0 * 1024.0;

// Deterministic uniform values in [-a, a] (xorshift; only the speed matters, not the values).
inline void fill_uniform(std::vector<float>& x, uint64_t seed, float a) {
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  for (float& v : x) {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    v = a * (float((s >> 40) & 0xFFFFFF) / float(0x800000) - 1.0f);
  }
}

// Bytes of the tensors alive over one forward+backward: inputs, outputs, saved tensors, gradients.
inline double tensor_bytes(const Config& c, bool hybrid, int64_t T) {
  const int64_t qd = T * c.H * c.D, kd = T * c.Hkv * c.D, F = 2 * c.Fh;
  if (!hybrid)  // q, k, v, y, lse, dy, dq, dk, dv
    return 4.0 * (qd + 2 * kd + qd + T * c.H + qd + qd + 2 * kd);
  const int64_t phi = T * c.H * F, w = int64_t(c.H) * c.D * c.Fh;
  return 4.0 * (qd + 2 * kd              // q, k, v
                + 2 * w + c.H            // Wq, Wk, window logits
                + 2 * phi                // phi_q, phi_k
                + qd + T * c.H           // y, Z
                + qd                     // dy
                + qd + 2 * kd            // dq, dk, dv
                + 2 * phi                // dphi_q, dphi_k
                + qd + kd                // dq, dk through the maps
                + 2 * w + c.H);          // dWq, dWk, dwlogit
}

// Scratch the kernels allocate themselves (per thread where they run in parallel).
inline double workspace_bytes(const Config& c, bool hybrid, int64_t T, int threads) {
  const int64_t F = 2 * c.Fh;
  if (!hybrid)  // attention_backward: dk, dv accumulators (T x D) and two 64 x T tiles per thread
    return 4.0 * threads * (2 * T * c.D + 2 * 64 * T);
  // hybrid backward: dk, dv, dN, dq (T x D), dphi_q, dphi_k (T x F) per thread; hedgehog dz
  return std::max(4.0 * threads * (4 * T * c.D + 2 * T * F + T), 4.0 * T * c.H * c.Fh);
}

inline double mem_available_bytes() {
  std::ifstream f("/proc/meminfo");
  std::string key, unit;
  double kb;
  while (f >> key >> kb >> unit)
    if (key == "MemAvailable:") return kb * 1024.0;
  return 1e18;  // unknown: do not skip for memory
}

inline double current_rss_bytes() {
  std::ifstream f("/proc/self/statm");
  double size = 0, resident = 0;
  f >> size >> resident;
  return resident * double(sysconf(_SC_PAGESIZE));
}

struct ChildResult {
  double fwd_seconds, fwd_bwd_seconds, base_rss_bytes;
  double phase[4];  // hybrid, of the fastest run: maps fwd, attention fwd, attention bwd, maps bwd
  int reps;
};

// Runs fn (which returns its forward seconds and fills phase) once; if that was quick, repeats it until about one
// second has passed. Keeps the fastest run (the first one also pays for first-touch page faults).
template <typename Fn>
ChildResult time_runs(Fn fn) {
  ChildResult r{1e30, 1e30, 0, {0, 0, 0, 0}, 0};
  double start = lolcats::seconds_now();
  do {
    double phase[4] = {0, 0, 0, 0};
    double t0 = lolcats::seconds_now();
    double fwd = fn(phase);
    double total = lolcats::seconds_now() - t0;
    if (total < r.fwd_bwd_seconds) {
      r.fwd_bwd_seconds = total, r.fwd_seconds = fwd;
      std::copy(phase, phase + 4, r.phase);
    }
    r.reps++;
  } while (lolcats::seconds_now() - start < 1.0 && r.reps < 50);
  return r;
}

inline ChildResult run_softmax(const Config& c, int T) {
  const int64_t qd = int64_t(T) * c.H * c.D, kd = int64_t(T) * c.Hkv * c.D;
  std::vector<float> q(qd), k(kd), v(kd), dy(qd), y(qd), lse(int64_t(T) * c.H), dq(qd), dk(kd),
      dv(kd);
  fill_uniform(q, 1, 1.0f), fill_uniform(k, 2, 1.0f), fill_uniform(v, 3, 1.0f);
  fill_uniform(dy, 4, 1.0f);
  return time_runs([&](double*) {
    double t0 = lolcats::seconds_now();
    lolcats::attention_forward(y.data(), lse.data(), q.data(), k.data(), v.data(), 1, T, c.H,
                               c.Hkv, c.D);
    double fwd = lolcats::seconds_now() - t0;
    lolcats::attention_backward(dq.data(), dk.data(), dv.data(), dy.data(), y.data(), lse.data(),
                                q.data(), k.data(), v.data(), 1, T, c.H, c.Hkv, c.D);
    return fwd;
  });
}

inline ChildResult run_hybrid(const Config& c, int T) {
  using lolcats::HybridVariant;
  const int F = 2 * c.Fh;
  const int64_t qd = int64_t(T) * c.H * c.D, kd = int64_t(T) * c.Hkv * c.D;
  const int64_t phi = int64_t(T) * c.H * F, w = int64_t(c.H) * c.D * c.Fh;
  std::vector<float> q(qd), k(kd), v(kd), Wq(w), Wk(w), wlogit(c.H, -2.1972f);
  std::vector<float> phiq(phi), phik(phi), y(qd), Z(int64_t(T) * c.H);
  std::vector<float> dy(qd), dq(qd), dk(kd), dv(kd), dphiq(phi), dphik(phi), dq_map(qd),
      dk_map(kd), dWq(w), dWk(w), dwlogit(c.H);
  fill_uniform(q, 1, 1.0f), fill_uniform(k, 2, 1.0f), fill_uniform(v, 3, 1.0f);
  fill_uniform(dy, 4, 1.0f);
  lolcats::hedgehog_identity_init(Wq.data(), c.H, c.D, c.Fh);
  lolcats::hedgehog_identity_init(Wk.data(), c.H, c.D, c.Fh);
  const HybridVariant var = HybridVariant::terrace;
  return time_runs([&](double* phase) {
    double t0 = lolcats::seconds_now();
    lolcats::hedgehog_forward(phiq.data(), q.data(), Wq.data(), 1, T, c.H, c.H, c.D, c.Fh);
    lolcats::hedgehog_forward(phik.data(), k.data(), Wk.data(), 1, T, c.H, c.Hkv, c.D, c.Fh);
    double t1 = lolcats::seconds_now();
    lolcats::hybrid_attention_forward(y.data(), Z.data(), q.data(), k.data(), v.data(),
                                      phiq.data(), phik.data(), wlogit.data(), 1, T, c.H, c.Hkv,
                                      c.D, F, var);
    double t2 = lolcats::seconds_now(), fwd = t2 - t0;
    lolcats::hybrid_attention_backward(dq.data(), dk.data(), dv.data(), dphiq.data(), dphik.data(),
                                       dwlogit.data(), dy.data(), y.data(), Z.data(),
                                       q.data(), k.data(), v.data(), phiq.data(), phik.data(),
                                       wlogit.data(), 1, T, c.H, c.Hkv, c.D, F, var);
    double t3 = lolcats::seconds_now();
    lolcats::hedgehog_backward(dq_map.data(), dWq.data(), dphiq.data(), phiq.data(), q.data(),
                               Wq.data(), 1, T, c.H, c.H, c.D, c.Fh);
    lolcats::hedgehog_backward(dk_map.data(), dWk.data(), dphik.data(), phik.data(), k.data(),
                               Wk.data(), 1, T, c.H, c.Hkv, c.D, c.Fh);
#pragma omp parallel for
    for (int64_t i = 0; i < qd; i++) dq[i] += dq_map[i];
#pragma omp parallel for
    for (int64_t i = 0; i < kd; i++) dk[i] += dk_map[i];
    double t4 = lolcats::seconds_now();
    phase[0] = t1 - t0, phase[1] = t2 - t1, phase[2] = t3 - t2, phase[3] = t4 - t3;
    return fwd;
  });
}

struct Measured {
  bool ok = false;
  double seconds = 0, fwd_seconds = 0, peak_bytes = 0, base_bytes = 0, phase[4] = {0, 0, 0, 0};
  int reps = 0;
  std::string error;
};

// Forks a child that runs one measurement; the child's peak RSS comes from wait4.
inline Measured measure(const Config& c, bool hybrid, int T, double alarm_seconds) {
  Measured out;
  int fds[2];
  if (pipe(fds) != 0) {
    out.error = std::string("pipe: ") + std::strerror(errno);
    return out;
  }
  std::fflush(stdout);
  std::fflush(stderr);
  pid_t pid = fork();
  if (pid < 0) {
    close(fds[0]), close(fds[1]);
    out.error = std::string("fork: ") + std::strerror(errno);
    return out;
  }
  if (pid == 0) {  // child: measure, report through the pipe, leave without running atexit
    close(fds[0]);
    alarm(unsigned(std::min(alarm_seconds, 1e6)));
    double base = current_rss_bytes();
    ChildResult r{};
    try {
      r = hybrid ? run_hybrid(c, T) : run_softmax(c, T);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "bench attention: %s\n", e.what());
      _exit(2);
    }
    r.base_rss_bytes = base;
    ssize_t n = write(fds[1], &r, sizeof r);
    _exit(n == ssize_t(sizeof r) ? 0 : 3);
  }
  close(fds[1]);
  ChildResult r{};
  size_t got = 0;
  while (got < sizeof r) {
    ssize_t n = read(fds[0], reinterpret_cast<char*>(&r) + got, sizeof r - got);
    if (n > 0) got += size_t(n);
    else if (n < 0 && errno == EINTR) continue;
    else break;
  }
  close(fds[0]);
  int status = 0;
  struct rusage ru;
  std::memset(&ru, 0, sizeof ru);
  while (wait4(pid, &status, 0, &ru) < 0 && errno == EINTR) {
  }
  out.peak_bytes = double(ru.ru_maxrss) * 1024.0;  // Linux: KiB
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    const char* why = sig == SIGALRM ? ", time limit" : sig == SIGKILL ? ", out of memory?" : "";
    out.error = std::string("child killed by signal ") + std::to_string(sig) + " (" +
                strsignal(sig) + why + ")";
  } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || got != sizeof r) {
    out.error = "child failed (exit status " + std::to_string(WEXITSTATUS(status)) + ")";
  } else {
    out.ok = true;
    out.seconds = r.fwd_bwd_seconds, out.fwd_seconds = r.fwd_seconds;
    out.base_bytes = r.base_rss_bytes, out.reps = r.reps;
    std::copy(r.phase, r.phase + 4, out.phase);
  }
  return out;
}

inline void emit(const nlohmann::json& j) {
  std::printf("%s\n", j.dump().c_str());
  std::fflush(stdout);
}

}  // namespace attn_bench

inline int bench_attention(int threads, const std::vector<int>& seqs, double max_seconds) {
  using namespace attn_bench;
  using nlohmann::json;
  const std::vector<Config> configs = {{"SmolLM2-135M", 9, 3, 64, 64}, {"Llama-3-8B", 32, 8, 128, 64}};
  std::vector<int> Ts = seqs;
  std::sort(Ts.begin(), Ts.end());
  Ts.erase(std::unique(Ts.begin(), Ts.end()), Ts.end());
  // The child's own time limit: well beyond what the estimate let through, but not forever.
  const double alarm_seconds = std::max(60.0, 4.0 * max_seconds);
  int failures = 0;
  for (const Config& c : configs) {
    struct Last { int T = 0; double seconds = 0, net_bytes = 0; };
    Last last[2];                     // [0] softmax, [1] hybrid
    std::vector<std::pair<int, double>> got[2];  // measured (T, seconds)
    std::vector<std::pair<int, double>> net[2];  // measured (T, net peak bytes)
    for (int T : Ts) {
      for (int kind = 0; kind < 2; kind++) {
        const bool hybrid = kind == 1;
        json j = {{"bench", "attention"}, {"kind", hybrid ? "hybrid" : "softmax"},
                  {"model", c.model}, {"H", c.H}, {"Hkv", c.Hkv}, {"D", c.D}, {"F", 2 * c.Fh},
                  {"seq", T}, {"batch", 1}, {"dtype", "f32"}, {"threads", threads}};
        if (hybrid) j["variant"] = "terrace";
        const double tb = tensor_bytes(c, hybrid, T), wb = workspace_bytes(c, hybrid, T, threads);
        j["tensor_mib"] = tb / kMiB;
        j["workspace_mib"] = wb / kMiB;
        // Estimates from the last measured length of this kind.
        double est_sec = -1, est_bytes = 1.1 * (tb + wb);
        if (last[kind].T > 0) {
          double r = double(T) / last[kind].T;
          est_sec = last[kind].seconds * (hybrid ? r : r * r);
          est_bytes = std::max(est_bytes, last[kind].net_bytes * r);
        }
        const double avail = mem_available_bytes();
        if (est_sec > max_seconds) {
          j["skipped"] = "estimated " + std::to_string(int(est_sec)) + " s > --max-seconds " +
                         std::to_string(int(max_seconds)) + " (from " +
                         std::to_string(last[kind].T) + (hybrid ? ", ~T)" : ", ~T^2)");
          j["estimated_seconds"] = est_sec;
          emit(j);
          continue;
        }
        if (est_bytes > 0.9 * avail) {
          j["skipped"] = "estimated " + std::to_string(int(est_bytes / kMiB)) +
                         " MiB > 90% of MemAvailable " + std::to_string(int(avail / kMiB)) + " MiB";
          j["estimated_mib"] = est_bytes / kMiB;
          emit(j);
          continue;
        }
        Measured m = measure(c, hybrid, T, alarm_seconds);
        if (!m.ok) {
          j["error"] = m.error;
          if (m.peak_bytes > 0) j["peak_rss_mib"] = m.peak_bytes / kMiB;
          emit(j);
          failures++;
          continue;
        }
        const double net_bytes = std::max(0.0, m.peak_bytes - m.base_bytes);
        j["fwd_seconds"] = m.fwd_seconds;
        j["fwd_bwd_seconds"] = m.seconds;
        j["tokens_per_s"] = T / m.seconds;
        if (hybrid)
          j["phase_seconds"] = {{"maps_fwd", m.phase[0]}, {"attn_fwd", m.phase[1]},
                                {"attn_bwd", m.phase[2]}, {"maps_bwd", m.phase[3]}};
        j["reps"] = m.reps;
        j["peak_rss_mib"] = m.peak_bytes / kMiB;
        j["base_rss_mib"] = m.base_bytes / kMiB;
        j["net_peak_mib"] = net_bytes / kMiB;
        j["net_peak_kib_per_token"] = net_bytes / 1024.0 / T;
        if (est_sec >= 0) j["estimated_seconds"] = est_sec;
        emit(j);
        last[kind] = {T, m.seconds, net_bytes};
        got[kind].push_back({T, m.seconds});
        net[kind].push_back({T, net_bytes});
      }
    }
    // Summary: crossover (smallest length measured on both sides where the hybrid is faster),
    // speedups, and how the memory per token moves from the smallest to the largest length.
    json s = {{"bench", "attention"}, {"summary", true}, {"model", c.model}, {"H", c.H},
              {"Hkv", c.Hkv}, {"D", c.D}, {"F", 2 * c.Fh}, {"threads", threads}};
    json crossover = nullptr, speedup = json::object();
    for (auto [T, hs] : got[1])
      for (auto [Ts_, ss] : got[0])
        if (Ts_ == T) {
          speedup[std::to_string(T)] = ss / hs;
          if (hs < ss && crossover.is_null()) crossover = T;
        }
    s["crossover_seq"] = crossover;
    s["hybrid_speedup_vs_softmax"] = speedup;
    for (int kind = 0; kind < 2; kind++) {
      const char* key = kind ? "hybrid_mem_per_token_ratio" : "softmax_mem_per_token_ratio";
      const auto& n = net[kind];
      if (n.size() >= 2 && n.front().second > 0) {
        double lo = n.front().second / n.front().first, hi = n.back().second / n.back().first;
        s[key] = hi / lo;
        s[std::string(kind ? "hybrid" : "softmax") + "_mem_seqs"] = {n.front().first, n.back().first};
      } else {
        s[key] = nullptr;
      }
    }
    emit(s);
  }
  return failures ? 1 : 0;
}
