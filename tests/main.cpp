// Test runner: Catch2 with a listener that ends the output with the line CI reads,
//   "N passed, N failed, N skipped"
// counted in test cases. A test case that calls SKIP_TEST (e.g. a GPU test on a machine without a
// GPU) counts as skipped, not passed.
#define CATCH_CONFIG_RUNNER
#include <cstdio>
#include <cstdlib>

#include "tensor/parallel.h"
#include "tests/helpers.h"

namespace {
int g_passed = 0, g_failed = 0, g_skipped = 0;
}
namespace lolcats_test {
bool g_skip_current = false;
}

struct CountingListener : Catch::TestEventListenerBase {
  using TestEventListenerBase::TestEventListenerBase;
  void testCaseStarting(const Catch::TestCaseInfo&) override { lolcats_test::g_skip_current = false; }
  void testCaseEnded(const Catch::TestCaseStats& stats) override {
    if (stats.totals.assertions.failed > 0)
      g_failed++;
    else if (lolcats_test::g_skip_current)
      g_skipped++;
    else
      g_passed++;
  }
};
CATCH_REGISTER_LISTENER(CountingListener)

int main(int argc, char** argv) {
  const char* threads = std::getenv("LOLCATS_THREADS");
  lolcats::set_num_threads(threads ? std::atoi(threads) : 0);
  int rc = Catch::Session().run(argc, argv);
  std::printf("%d passed, %d failed, %d skipped\n", g_passed, g_failed, g_skipped);
  return rc != 0 || g_failed > 0 ? 1 : 0;
}
