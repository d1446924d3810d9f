// The CUDA programming model as the SIMT emulator runs it, checked against the CUDA
// documentation's description of each primitive (never against the emulator's own formulas): the
// results a real GPU gives. On a GPU build the same tests ask the hardware ([cuda] tests); the
// fault reports are emulator-only ([emu]).
#ifdef LOLCATS_CUDA  // these tests call the cuda launchers, absent from a CUDA=0 build
#include <sys/wait.h>
#include <unistd.h>

#include <numeric>

#include "tensor/parallel.h"
#include "tensor/tensor.h"
#include "tests/emu_kernels.h"
#include "tests/helpers.h"
#ifdef LOLCATS_CUDA_EMU
#include "cuda/emu/scheduler.h"
#include "tests/cuda_shared_limit.h"
#endif

using namespace lolcats;

namespace {

bool have_cuda() { return cuda_available(); }

#ifdef LOLCATS_CUDA_EMU
struct OrderScope {  // runs a block's threads in another order for the scope's lifetime
  explicit OrderScope(emu::ThreadOrder o) : prev(emu::thread_order()) { emu::set_thread_order(o); }
  ~OrderScope() { emu::set_thread_order(prev); }
  emu::ThreadOrder prev;
};
#endif

}  // namespace

TEST_CASE("cuda model: block reduction through shared memory and __syncthreads", "[cuda]") {
  if (!have_cuda()) SKIP_TEST("no cuda device in this build");
  std::vector<float> x(3000);
  for (size_t i = 0; i < x.size(); i++) x[i] = float(i % 97);  // sums stay exact in f32
  for (int block : {32, 256, 1024}) {
    std::vector<float> got = emu_test::run_block_sum(x, block, true);
    for (size_t b = 0; b < got.size(); b++) {
      float want = 0;
      for (size_t i = b * size_t(block); i < std::min(x.size(), (b + 1) * size_t(block)); i++) want += x[i];
      REQUIRE(got[b] == want);
    }
  }
}

#ifdef LOLCATS_CUDA_EMU
TEST_CASE("emulator: every thread order gives the same answer when the barriers are right", "[emu]") {
  std::vector<float> x(2048);
  for (size_t i = 0; i < x.size(); i++) x[i] = float(i % 13);
  std::vector<float> forward = emu_test::run_block_sum(x, 512, true);
  for (auto order : {emu::ThreadOrder::reverse, emu::ThreadOrder::shuffled}) {
    OrderScope scope(order);
    CHECK(emu_test::run_block_sum(x, 512, true) == forward);
  }
}

TEST_CASE("emulator: reversed thread order exposes a missing __syncthreads", "[emu]") {
  std::vector<float> x(512, 1.0f);
  // In forward order each thread happens to find its partner's value already summed... or not:
  // what matters is that some order gives the wrong sum, as a GPU may.
  bool some_order_wrong = false;
  for (auto order : {emu::ThreadOrder::forward, emu::ThreadOrder::reverse, emu::ThreadOrder::shuffled}) {
    OrderScope scope(order);
    some_order_wrong |= emu_test::run_block_sum(x, 512, false)[0] != 512.0f;
  }
  CHECK(some_order_wrong);
}
#endif

TEST_CASE("cuda model: __shfl_*_sync follow the CUDA documentation for every width", "[cuda]") {
  if (!have_cuda()) SKIP_TEST("no cuda device in this build");
  auto val = [](int lane) { return 100 * lane + 7; };
  for (int width : {1, 2, 4, 8, 16, 32}) {
    for (int arg : {0, 1, 3, 5, 8, 16, 31, 37}) {
      std::vector<int> idx = emu_test::run_shuffle(0, arg, width);
      std::vector<int> up = emu_test::run_shuffle(1, arg % 32, width);
      std::vector<int> down = emu_test::run_shuffle(2, arg % 32, width);
      std::vector<int> bfly = emu_test::run_shuffle(3, arg % 32, width);
      for (int lane = 0; lane < 32; lane++) {
        INFO("width " << width << " arg " << arg << " lane " << lane);
        // "__shfl_sync: ... srcLane outside [0, width) returns the value of srcLane modulo width,
        // within the same subsection" of `width` consecutive lanes.
        CHECK(idx[size_t(lane)] == val(lane / width * width + arg % width));
        // "__shfl_up_sync: the source lane index is lane - delta; if it falls below the start of
        // the subsection, var is unchanged."
        int d = arg % 32;
        CHECK(up[size_t(lane)] == val(lane % width >= d ? lane - d : lane));
        // "__shfl_down_sync: lane + delta; beyond the end of the subsection, unchanged."
        CHECK(down[size_t(lane)] == val(lane % width + d < width ? lane + d : lane));
        // "__shfl_xor_sync: lane ^ laneMask; a group may read earlier groups, but reading a later
        // group returns its own value."
        int j = lane ^ d;
        CHECK(bfly[size_t(lane)] == val(j / width > lane / width ? lane : j));
      }
    }
  }
}

TEST_CASE("cuda model: butterfly warp sums of float and double", "[cuda]") {
  if (!have_cuda()) SKIP_TEST("no cuda device in this build");
  std::vector<float> f;
  std::vector<double> d;
  emu_test::run_warp_sums(f, d);
  for (int l = 0; l < 32; l++) {
    CHECK(f[size_t(l)] == 32 * 31 / 2 + 16.0f);  // sum of (l + 0.5), exact
    CHECK(d[size_t(l)] == 496e10 + 32.0);        // 64-bit values survive the shuffle
  }
}

TEST_CASE("cuda model: ballot, any and all over a partial mask", "[cuda]") {
  if (!have_cuda()) SKIP_TEST("no cuda device in this build");
  std::vector<int> pred(256);
  for (size_t i = 0; i < pred.size(); i++) pred[i] = (i * 7 + i / 64) % 3 == 0;
  for (size_t w = 0; w < 8; w++) pred[w * 32] = w % 2;  // lane 0 varies per warp
  for (size_t i = 128; i < 160; i += 2) pred[i] = 1;      // warp 4: every voter says yes
  std::vector<unsigned> ballot;
  std::vector<int> any, all;
  emu_test::run_votes(pred, ballot, any, all);
  for (size_t w = 0; w < 8; w++) {
    unsigned want = 0;
    for (int l = 0; l < 32; l += 2) want |= unsigned(pred[w * 32 + size_t(l)] != 0) << l;
    for (int l = 0; l < 32; l += 2) {
      size_t t = w * 32 + size_t(l);
      INFO("warp " << w << " lane " << l);
      CHECK(ballot[t] == want);  // only the lanes in the mask vote
      CHECK(any[t] == (want != 0));
      CHECK(all[t] == (want == 0x55555555u));
    }
  }
  CHECK(all[128] == 1);
}

TEST_CASE("cuda model: 3-D blocks are numbered x fastest, and warps are taken in that order", "[cuda]") {
  if (!have_cuda()) SKIP_TEST("no cuda device in this build");
  std::vector<int> linear;
  std::vector<unsigned> ballot;
  emu_test::run_block_3d(linear, ballot);
  for (size_t i = 0; i < linear.size(); i++) {
    int l = int(i % 64);
    REQUIRE(linear[i] == l);
    // threads (x, y, z) with y == 1: linear 8..15 and 40..47, i.e. lanes 8..15 of both warps.
    CHECK(ballot[i] == 0x0000ff00u);
  }
}

TEST_CASE("cuda model: atomics from many blocks add up exactly", "[cuda]") {
  if (!have_cuda()) SKIP_TEST("no cuda device in this build");
  int count = 0;
  float fsum = 0;
  emu_test::run_atomics(97, 256, count, fsum);
  CHECK(count == 97 * 256);
  CHECK(fsum == 97.0f * 256.0f);  // integers below 2^24: every partial sum is exact
}

TEST_CASE("cuda model: dynamic shared memory and its 48 KiB default limit", "[cuda]") {
  if (!have_cuda()) SKIP_TEST("no cuda device in this build");
  std::vector<float> x(1024);
  std::iota(x.begin(), x.end(), 0.0f);
  std::vector<float> got = emu_test::run_reverse_blocks(x, 128);
  for (size_t i = 0; i < x.size(); i++) CHECK(got[i] == x[i / 128 * 128 + 127 - i % 128]);
  CHECK(emu_test::run_big_shared(12 * 1024, false) == 12 * 1024.0f);  // exactly 48 KiB: allowed
  // 64 KiB needs cudaFuncSetAttribute, on a GPU and here alike.
  CHECK_THROWS_WITH(emu_test::run_big_shared(16 * 1024, false), Catch::Contains("CUDA error"));
  CHECK(emu_test::run_big_shared(16 * 1024, true) == 16 * 1024.0f);
}

#ifdef LOLCATS_CUDA_EMU
TEST_CASE("emulator: the per-block shared memory limit is a parameter, reported and enforced", "[emu][cuda]") {
  using lolcats_test::SharedLimitGuard;
  const size_t prev = emu::shared_memory_optin(), k = 1024;
  {
    SharedLimitGuard sm86(99 * k);  // an RTX 3090's limit
    CHECK(emu_test::shared_optin_reported(false) == 99 * k);
    CHECK(emu_test::shared_optin_reported(true) == 99 * k);
    CHECK(emu_test::run_big_shared(99 * 256, true) == 99 * 256.0f);  // exactly the limit: allowed
    // cudaFuncSetAttribute above the limit is refused, as on a GPU.
    CHECK_THROWS_WITH(emu_test::run_big_shared(99 * 256 + 1, true), Catch::Contains("cudaErrorInvalidValue"));
  }
  {
    SharedLimitGuard sm90(227 * k);
    CHECK(emu_test::shared_optin_reported(true) == 227 * k);
    CHECK(emu_test::run_big_shared(200 * 256, true) == 200 * 256.0f);  // the attribute now allows 200 KiB
    SharedLimitGuard sm80(163 * k);
    // A launch above the device's limit is refused even though the kernel's attribute allowed it.
    CHECK_THROWS_WITH(emu_test::run_big_shared(200 * 256, false), Catch::Contains("cudaErrorInvalidValue"));
    CHECK(emu_test::run_big_shared(163 * 256, true) == 163 * 256.0f);
  }
  CHECK(emu::shared_memory_optin() == prev);  // the guards put it back
}

TEST_CASE("emulator: faults are reported with block and thread, never hang", "[emu]") {
  using emu_test::Faulty;
  using Catch::Contains;
  CHECK_THROWS_WITH(emu_test::run_faulty(Faulty::divergent_barrier),
                    Contains("different __syncthreads") && Contains("block (0,0,0)") &&
                        Contains("thread (0,0,0)") && Contains("thread (16,0,0)"));
  CHECK_THROWS_WITH(emu_test::run_faulty(Faulty::exit_before_barrier),
                    Contains("thread (5,0,0) has exited") && Contains("__syncthreads"));
  CHECK_THROWS_WITH(emu_test::run_faulty(Faulty::shuffle_missing_lane),
                    Contains("deadlock") && Contains("__shfl_xor_sync") && Contains("thread (3,0,0) has exited"));
  CHECK_THROWS_WITH(emu_test::run_faulty(Faulty::shuffle_mask_without_self),
                    Contains("does not name its own lane"));
  // The emulator is usable again after a fault.
  std::vector<float> x(64, 2.0f);
  CHECK(emu_test::run_block_sum(x, 64, true)[0] == 128.0f);
}

TEST_CASE("emulator: a crash inside a kernel names the block and thread", "[emu]") {
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {  // child: crash, with stderr into the pipe
    dup2(fds[1], 2);
    close(fds[0]);
    if (FILE* null = std::fopen("/dev/null", "w")) dup2(fileno(null), 1);  // the framework's report
    set_num_threads(1);
    emu_test::run_faulty(emu_test::Faulty::crash);
    _exit(0);  // not reached
  }
  close(fds[1]);
  std::string err;
  char buf[4096];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof buf)) > 0) err.append(buf, size_t(n));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  INFO(err);
  CHECK(!(WIFEXITED(status) && WEXITSTATUS(status) == 0));
  CHECK(err.find("crash in kernel crash") != std::string::npos);
  CHECK(err.find("at block (1,0,0), thread (3,0,0)") != std::string::npos);
}
#endif

#endif  // LOLCATS_CUDA
