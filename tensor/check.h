// Always-on checks. Unlike assert(), ENSURE survives -DNDEBUG: a wrong shape in a release build must
// still stop the program with a message that says what was wrong, not corrupt memory silently.
// (Named ENSURE rather than CHECK so that it never collides with Catch2's CHECK in the tests.)
//
//   ENSURE(a.numel() == b.numel(), "add: sizes differ: %lld vs %lld", (long long)a.numel(), ...);
//
// A failed ENSURE throws lolcats::Error (what() = "file:line: message"), so apps can print one clear
// line and exit, and tests can REQUIRE_THROWS on bad input.
#pragma once
#include <cstdio>
#include <stdexcept>
#include <string>

namespace lolcats {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// printf-style formatting into a std::string.
template <typename... Args>
std::string strfmt(const char* fmt, Args... args) {
  int n = std::snprintf(nullptr, 0, fmt, args...);
  std::string s(n > 0 ? n : 0, '\0');
  if (n > 0) std::snprintf(s.data(), s.size() + 1, fmt, args...);
  return s;
}
inline std::string strfmt(const char* s) { return s; }

[[noreturn]] inline void fail(const char* file, int line, const std::string& msg) {
  throw Error(std::string(file) + ":" + std::to_string(line) + ": " + msg);
}

}  // namespace lolcats

#define ENSURE(cond, ...)                                                     \
  do {                                                                       \
    if (!(cond)) ::lolcats::fail(__FILE__, __LINE__, ::lolcats::strfmt(__VA_ARGS__)); \
  } while (0)
