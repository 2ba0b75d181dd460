// ReplyQueue: direct sends, queueing what the socket does not take, flushing
// in order, a consumer thread offering while another thread flushes, and
// close()/discard() dropping what waits (counted).
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <thread>
#include <vector>

#include "check.h"
#include "core/reply_queue.h"
#include "core/unique_fd.h"

using namespace udsipc;

namespace {
struct Pair {
  UniqueFd a, b;
  Pair() {
    int sv[2];
    ::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv);
    a = UniqueFd(sv[0]);
    b = UniqueFd(sv[1]);
    int small = 4096;  // make the socket fill quickly
    ::setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    ::setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  }
};

// Reads everything available from fd into out.
void drain(int fd, std::vector<uint8_t>& out) {
  uint8_t buf[65536];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) return;
    out.insert(out.end(), buf, buf + n);
  }
}
}  // namespace

TEST(direct_send_when_empty) {
  Pair p;
  ReplyStats st;
  ReplyQueue q(p.a.get(), &st);
  const uint8_t msg[] = {3, 'a', 'b', 'c'};
  auto r = q.offer(msg, sizeof msg, 1);
  CHECK_EQ(r.queued, 0);
  CHECK(!r.want_out);
  std::vector<uint8_t> got;
  drain(p.b.get(), got);
  CHECK(got == std::vector<uint8_t>(msg, msg + sizeof msg));
  CHECK_EQ(st.bytes_sent.load(), 4u);
  CHECK_EQ(q.offer(nullptr, 0, 2).queued, 0);  // len 0: asks only
}

TEST(queues_what_the_socket_refuses_and_flushes_in_order) {
  Pair p;
  ReplyStats st;
  ReplyQueue q(p.a.get(), &st);
  std::vector<uint8_t> sent;
  bool asked = false;
  for (int i = 0; i < 200; ++i) {
    std::vector<uint8_t> chunk(3000, static_cast<uint8_t>(i));
    auto r = q.offer(chunk.data(), chunk.size(), 10);
    CHECK(r.queued >= 0);
    if (r.want_out) {
      CHECK(!asked);  // asked once, when the queue became non-empty
      asked = true;
    }
    sent.insert(sent.end(), chunk.begin(), chunk.end());
  }
  CHECK(asked);
  CHECK(q.queued() > 0);
  std::vector<uint8_t> got;
  for (int guard = 0; guard < 100000 && got.size() < sent.size(); ++guard) {
    drain(p.b.get(), got);
    const auto f = q.flush(20);
    CHECK_EQ(f.error, 0);
    if (f.drained) {
      drain(p.b.get(), got);
      break;
    }
  }
  drain(p.b.get(), got);
  CHECK_EQ(got.size(), sent.size());
  CHECK(got == sent);
  CHECK_EQ(q.queued(), 0u);
  CHECK_EQ(q.last_progress_ms(), 20);
}

TEST(concurrent_offer_and_flush_keep_order) {
  Pair p;
  ReplyStats st;
  ReplyQueue q(p.a.get(), &st);
  constexpr int kMsgs = 20000;
  std::atomic<bool> done{false};
  std::vector<uint8_t> got;
  std::thread flusher([&] {
    while (!done.load() || q.queued() > 0) {
      q.flush(1);
      drain(p.b.get(), got);
    }
    drain(p.b.get(), got);
  });
  for (int i = 0; i < kMsgs; ++i) {
    const uint8_t m[4] = {static_cast<uint8_t>(i), static_cast<uint8_t>(i >> 8), 0xAA, 0x55};
    CHECK(q.offer(m, 4, 1).queued >= 0);
  }
  done.store(true);
  flusher.join();
  drain(p.b.get(), got);
  CHECK_EQ(got.size(), static_cast<size_t>(kMsgs) * 4);
  bool ordered = true;
  for (int i = 0; i < kMsgs && ordered; ++i)
    ordered = got[4 * i] == static_cast<uint8_t>(i) && got[4 * i + 1] == static_cast<uint8_t>(i >> 8);
  CHECK(ordered);
}

TEST(close_and_discard_drop_and_count) {
  Pair p;
  ReplyStats st;
  ReplyQueue q(p.a.get(), &st);
  std::vector<uint8_t> big(1 << 20, 1);
  auto r = q.offer(big.data(), big.size(), 1);
  CHECK(r.queued > 0);
  const uint64_t dropped = q.discard();
  CHECK_EQ(dropped, static_cast<uint64_t>(r.queued));
  CHECK_EQ(q.queued(), 0u);
  // A discard re-arms want_out for the next backlog.
  r = q.offer(big.data(), big.size(), 2);
  CHECK(r.want_out);
  const uint64_t left = static_cast<uint64_t>(r.queued);
  CHECK_EQ(q.close(), left);
  CHECK_EQ(st.bytes_dropped.load(), dropped + left);
  CHECK_EQ(q.offer(big.data(), 1, 3).queued, -1);  // closed
  CHECK(q.flush(4).drained);
}

TEST(peer_gone_drops_what_was_offered) {
  Pair p;
  ReplyStats st;
  ReplyQueue q(p.a.get(), &st);
  p.b.reset();
  const uint8_t m[] = {1, 'x'};
  auto r = q.offer(m, 2, 1);
  CHECK_EQ(r.queued, 0);
  CHECK_EQ(st.bytes_dropped.load(), 2u);
}

TEST_MAIN()
