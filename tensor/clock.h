// Wall-clock seconds on a steady clock, for progress lines, logs and benchmarks: differences of
// seconds_now() are elapsed times.
#pragma once
#include <chrono>

namespace lolcats {

inline double seconds_now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace lolcats
