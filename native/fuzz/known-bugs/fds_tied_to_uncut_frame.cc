// Not built: readable reproducer of bug 1/2 in /work/spec/fuzz-fds-bugs.md.
// g++ -std=c++20 -Inative native/fuzz/known-bugs/fds_tied_to_uncut_frame.cc && ./a.out
// Reproducer: descriptors tied to a frame that is never cut stay in the batch.
#include <fcntl.h>
#include <unistd.h>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include "core/frame_assembler.h"
using namespace udsipc;

// Not CHECK(): the calls must happen with NDEBUG too.
#define CHECK(x) do { if (!(x)) { std::printf("CHECK failed: %s\n", #x); std::abort(); } } while (0)

static std::vector<UniqueFd> fds(int k) {
  std::vector<UniqueFd> v;
  for (int i = 0; i < k; ++i) v.emplace_back(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  return v;
}
static bool feed(FrameAssembler& a, const char* bytes, size_t n, int k) {
  auto [p, cap] = a.prepare_read();
  std::memcpy(p, bytes, n);
  auto v = fds(k);
  return a.commit(n, kNoBudget, k ? &v : nullptr);
}

int main() {
  // Frames: "" and "t" (00 01 74). Read 1: 00 01 (frame 0 whole, frame 1
  // starts: its descriptors, valid). Read 2: 74 with descriptors: mid-frame.
  {
    FrameAssembler a(AssemblerConfig{});
    CHECK(feed(a, "\x00\x01", 2, 1));  // batch not taken yet (legal: take_batch() later)
    CHECK(!feed(a, "t", 1, 1));
    CHECK(a.error() == FrameError::kUnexpectedFds);
    std::printf("case 1: refused_fds %llu\n", (unsigned long long)a.refused_fds());
    Batch b = a.take_batch();
    std::printf("case 1: batch of %zu messages, fds entries:", b.count());
    for (auto& m : b.fds) std::printf(" {index %u, %zu fds}", m.index, m.fds.size());
    std::printf("\n");
  }
  // Same, the way the engine drives it (batch taken after every commit): the
  // first read's descriptors are closed silently, counted neither delivered nor refused.
  {
    FrameAssembler a(AssemblerConfig{});
    CHECK(feed(a, "\x01", 1, 2));  // frame "t" starts here: valid, waits
    CHECK(!feed(a, "t", 1, 1));    // mid-frame, completes it
    std::printf("case 2: refused_fds %llu (3 descriptors closed)\n", (unsigned long long)a.refused_fds());
  }
  {
    FrameAssembler a(AssemblerConfig{});
    CHECK(feed(a, "\x02", 1, 2));  // frame of 2 starts here: valid, waits
    CHECK(!feed(a, "t", 1, 1));    // mid-frame, does not complete it
    std::printf("case 3: refused_fds %llu (3 descriptors closed)\n", (unsigned long long)a.refused_fds());
  }
}
