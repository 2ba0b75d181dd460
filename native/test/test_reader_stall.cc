// The reader engine when it, not its peer, is late: the IO thread (or the
// whole process: SIGSTOP, a frozen cgroup, swapping) held up past a timeout
// must not cut a connection whose bytes are already in the kernel; and the
// malloc_trim() promised after a flood must not wait for an unrelated event.
// Both reproduced on the previous engine (review of the memory-bound change).
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "check.h"
#include "listening.h"
#include "core/reader_engine.h"
#include "core/socket_util.h"

using namespace udsipc;


// The reader's IO thread is held up (here: its notify callback blocks, standing
// in for SIGSTOP / a cgroup freeze / heavy swapping of the reader process) for
// longer than frame_timeout_ms while the rest of a frame is ALREADY in the
// socket buffer. The peer did nothing wrong; the frame should be delivered.
TEST(frame_timeout_after_reader_stall_with_frame_in_kernel) {
  const std::string path = temp_socket();
  std::atomic<bool> arm{false}, stalled{false};
  std::mutex mu;
  std::condition_variable cv;
  bool ready = false;
  ReaderConfig cfg = listening_config(path);
  cfg.frame_timeout_ms = 200;
  ReaderEngine reader(std::move(cfg), [&] {
    // The first notification after `arm` (the batch of the whole frame, the
    // next frame half read) stalls the IO thread 600 ms: 3 frame timeouts.
    if (arm.exchange(false)) {
      stalled = true;
      std::this_thread::sleep_for(std::chrono::milliseconds(600));
    }
    std::lock_guard<std::mutex> lk(mu);
    ready = true;
    cv.notify_one();
  });
  reader.start();
  UniqueFd c;
  CHECK_EQ(connect_unix(path, &c), 0);
  std::vector<ReaderItem> first;
  for (int i = 0; i < 500 && first.empty(); ++i) {  // the open item
    std::unique_lock<std::mutex> lk(mu);
    cv.wait_for(lk, std::chrono::milliseconds(20), [&] { return ready; });
    ready = false;
    lk.unlock();
    reader.take(first);
  }
  CHECK_EQ(first.size(), size_t{1});
  // One whole frame and the first half of a 1000-byte frame...
  std::vector<uint8_t> a = {1, 'x', 0xe8, 0x07};
  a.resize(a.size() + 500, 'y');
  arm = true;
  CHECK_EQ(::send(c.get(), a.data(), a.size(), MSG_NOSIGNAL), static_cast<ssize_t>(a.size()));
  // ...and, while the IO thread is stalled, the rest of it.
  for (int i = 0; i < 5000 && !stalled; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  CHECK(stalled.load());
  std::vector<uint8_t> b(500, 'z');
  CHECK_EQ(::send(c.get(), b.data(), b.size(), MSG_NOSIGNAL), static_cast<ssize_t>(b.size()));
  uint64_t frames = 0;
  std::string close_code;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  std::vector<ReaderItem> items;
  while (std::chrono::steady_clock::now() < deadline && frames < 2 && close_code.empty()) {
    {
      std::unique_lock<std::mutex> lk(mu);
      cv.wait_for(lk, std::chrono::milliseconds(20), [&] { return ready; });
      ready = false;
    }
    items.clear();
    reader.take(items);
    for (auto& it : items) {
      if (it.type == ReaderItem::kBatch) {
        frames += it.batch.count();
        reader.ack(it.conn_id, it.batch.length);
      }
      if (it.type == ReaderItem::kClose) close_code = it.error ? it.error.code : "clean";
    }
  }
  std::printf("  frames delivered: %llu; close: %s\n", static_cast<unsigned long long>(frames),
              close_code.empty() ? "(none)" : close_code.c_str());
  CHECK_EQ(frames, uint64_t{2});
  CHECK(close_code.empty());
  reader.close();
}


static std::atomic<int> g_trims{0};
extern "C" int malloc_trim(size_t) noexcept { g_trims.fetch_add(1); return 0; }

// After a flood that paused a connection, the last acks arrive when no
// connection is paused: they must still wake the IO thread for the promised
// malloc_trim (with frame_timeout_ms = 0 and inactivity off there is no
// periodic scan to do it; the previous engine trimmed only after some
// unrelated event). malloc_trim is replaced by a counter in this binary.
TEST(trim_after_flood_needs_no_unrelated_wakeup) {
  const std::string path = temp_socket();
  std::mutex mu;
  std::condition_variable cv;
  bool ready = false;
  ReaderConfig cfg = listening_config(path);
  cfg.max_pending_bytes = 256 * 1024;
  cfg.frame_timeout_ms = 0;
  ReaderEngine reader(std::move(cfg), [&] {
    std::lock_guard<std::mutex> lk(mu);
    ready = true;
    cv.notify_one();
  });
  auto wait = [&](int ms) {
    std::unique_lock<std::mutex> lk(mu);
    cv.wait_for(lk, std::chrono::milliseconds(ms), [&] { return ready; });
    ready = false;
  };
  const int trims0 = g_trims.load();
  reader.start();
  UniqueFd c;
  CHECK_EQ(connect_unix(path, &c), 0);
  std::thread flood([&] {
    // 400 frames of 1000 bytes: one pause at 256 KiB, then the rest fits.
    std::vector<uint8_t> buf;
    for (int i = 0; i < 400; ++i) { buf.push_back(0xe8); buf.push_back(0x07); buf.resize(buf.size() + 1000, 'm'); }
    size_t off = 0;
    while (off < buf.size()) {
      ssize_t n = ::send(c.get(), buf.data() + off, buf.size() - off, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) off += n;
      else { pollfd p{c.get(), POLLOUT, 0}; ::poll(&p, 1, 50); }
    }
    c.reset();  // peer done: EOF after the flood
  });
  std::vector<ReaderItem> held, items;
  // Phase 1: hold everything until the connection is paused.
  for (int i = 0; i < 200 && reader.metrics().pauses == 0; ++i) { wait(20); reader.take(held); }
  CHECK(reader.metrics().pauses > 0);
  reader.take(held);
  // Phase 2: ack what was held (resumes it); keep the rest until the close.
  for (auto& it : held) if (it.type == ReaderItem::kBatch) reader.ack(it.conn_id, it.batch.length);
  held.clear();
  bool closed = false;
  for (int i = 0; i < 500 && !closed; ++i) {
    wait(20);
    items.clear();
    reader.take(items);
    for (auto& it : items) {
      if (it.type == ReaderItem::kBatch) held.push_back(std::move(it));
      if (it.type == ReaderItem::kClose) closed = true;
    }
  }
  flood.join();
  CHECK(closed);
  for (auto& h : held) reader.ack(h.conn_id, h.batch.length);  // the last acks: nothing paused now
  std::printf("  pauses %llu; last acks: %zu batches\n", (unsigned long long)reader.metrics().pauses, held.size());
  held.clear();
  // The trim is rate-limited to one a second: wait for it, up to 10 s.
  for (int i = 0; i < 1000 && g_trims.load() == trims0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  std::printf("  malloc_trim calls after the flood: %d\n", g_trims.load() - trims0);
  CHECK(g_trims.load() > trims0);
  reader.close();
}

TEST_MAIN()
