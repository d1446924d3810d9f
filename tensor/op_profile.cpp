#include "tensor/op_profile.h"

#include <mutex>
#include <vector>

namespace lolcats {

namespace {

struct Bracket {
  OpKind kind;
  void* start = nullptr;
  void* end = nullptr;
};

struct Profiler {
  std::mutex mu;
  bool on = false;
  int depth = 0;  // open timers: only the outermost records
  std::vector<Bracket> brackets;
  OpProfile counts;
};
Profiler& profiler() {
  static Profiler p;
  return p;
}

}  // namespace

const char* op_kind_name(OpKind kind) {
  static const char* names[kOpKinds] = {"gemm", "hybrid_attention", "feature_map", "teacher_attention",
                                        "norm_rope_swiglu", "loss", "optimizer", "other"};
  return names[int(kind)];
}

void op_profile_begin() {
  Profiler& p = profiler();
  std::lock_guard<std::mutex> lock(p.mu);
  p.on = true;
  p.depth = 0;
  p.brackets.clear();
  p.counts = OpProfile{};
}

OpProfile op_profile_end() {
  Profiler& p = profiler();
  std::lock_guard<std::mutex> lock(p.mu);
  p.on = false;
  for (Bracket& b : p.brackets) {
    if (b.end) p.counts.ms[int(b.kind)] += device_event_ms(b.start, b.end);  // (no end: still open)
    device_event_free(b.start);
    if (b.end) device_event_free(b.end);
  }
  p.brackets.clear();
  return p.counts;
}

bool op_profile_on() { return profiler().on; }

OpTimer::OpTimer(OpKind kind, double flops, double bytes) {
  Profiler& p = profiler();
  if (!p.on) return;
  std::lock_guard<std::mutex> lock(p.mu);
  nested_ = p.depth++ > 0;
  if (nested_) return;  // inside another op: its bracket covers this one
  p.counts.flops[int(kind)] += flops;
  p.counts.bytes[int(kind)] += bytes;
  p.counts.calls[int(kind)]++;
  slot_ = int(p.brackets.size());
  p.brackets.push_back({kind, device_event_record(), nullptr});
}

OpTimer::~OpTimer() {
  Profiler& p = profiler();
  if (slot_ < 0 && !nested_) return;  // opened nothing
  std::lock_guard<std::mutex> lock(p.mu);
  if (p.depth > 0) p.depth--;
  // (a bracket still open at op_profile_end was dropped there)
  if (slot_ >= 0 && slot_ < int(p.brackets.size())) p.brackets[size_t(slot_)].end = device_event_record();
}

}  // namespace lolcats
