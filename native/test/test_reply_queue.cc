// ReplyQueue: direct sends, queueing what the socket does not take, flushing
// in order, a consumer thread offering while another thread flushes, and
// close()/discard() dropping what waits (counted).
#include <sys/socket.h>
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "check.h"
#include "core/reply_queue.h"
#include "core/socket_util.h"
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

namespace {
// A pipe whose write end the test dups into frames: once every dup is
// closed and the test closes its own, the read end sees EOF.
struct Probe {
  UniqueFd r, w;
  Probe() {
    int pf[2];
    ::pipe2(pf, O_CLOEXEC | O_NONBLOCK);
    r = UniqueFd(pf[0]);
    w = UniqueFd(pf[1]);
  }
  std::vector<UniqueFd> dups(int n) const {
    std::vector<UniqueFd> v;
    for (int i = 0; i < n; ++i) v.emplace_back(::fcntl(w.get(), F_DUPFD_CLOEXEC, 0));
    return v;
  }
  // After the test's own end is closed: no dup of it is left open anywhere.
  bool all_closed() const {
    char c;
    return ::read(r.get(), &c, 1) == 0;
  }
};

// Reads what the socket holds, descriptors included (closed, counted).
void drain_with_fds(int fd, std::vector<uint8_t>& out, int* fds) {
  uint8_t buf[65536];
  for (;;) {
    iovec iov{buf, sizeof buf};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 16)];
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    const ssize_t n = ::recvmsg(fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n <= 0) return;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      const size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < k; ++i) {
        int one;
        std::memcpy(&one, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        ::close(one);
        ++*fds;
      }
    }
    out.insert(out.end(), buf, buf + n);
  }
}
}  // namespace

// A writer whose socket refuses descriptors (SO_PASSRIGHTS off, Linux
// 6.16+): a reply with descriptors gets EPERM. That frame alone is dropped
// (its dups closed, its bytes counted as dropped, reported in Refused), the
// frames around it go, and the queue keeps working -- both when it is sent
// at once (offer() on an empty queue) and from the queue (flush()). Before,
// the whole queue was dropped. On an older kernel everything is delivered.
TEST(refused_descriptors_drop_only_their_frame) {
  Pair p;
  const bool refuses = refuse_rights(p.b.get()) == 0;
  ReplyStats st;
  ReplyQueue q(p.a.get(), &st);
  Probe probe;
  const uint8_t a[] = {1, 'a'}, b[] = {2, 'b', 'b'}, c[] = {1, 'c'};
  // At once.
  CHECK_EQ(q.offer(a, sizeof a, 1).queued, 0);
  auto fds = probe.dups(2);
  auto r = q.offer(b, sizeof b, 1, &fds);
  CHECK_EQ(r.refused.frames, refuses ? 1u : 0u);
  CHECK_EQ(r.refused.fds, refuses ? 2u : 0u);
  CHECK_EQ(r.queued, 0);
  CHECK_EQ(q.offer(c, sizeof c, 1).queued, 0);
  std::vector<uint8_t> got;
  int fds_got = 0;
  drain_with_fds(p.b.get(), got, &fds_got);
  std::vector<uint8_t> want(a, a + sizeof a);
  if (!refuses) want.insert(want.end(), b, b + sizeof b);
  want.insert(want.end(), c, c + sizeof c);
  CHECK(got == want);
  CHECK_EQ(fds_got, refuses ? 0 : 2);
  CHECK_EQ(st.bytes_dropped.load(), refuses ? sizeof b : 0u);
  // From the queue: a large frame fills the socket, the one with
  // descriptors waits behind it, a plain one behind that.
  std::vector<uint8_t> big(256 * 1024, 7);
  r = q.offer(big.data(), big.size(), 2);
  CHECK(r.queued > 0);
  fds = probe.dups(3);
  r = q.offer(b, sizeof b, 2, &fds);
  CHECK_EQ(r.refused.frames, 0u);  // queued, not tried yet
  q.offer(c, sizeof c, 2);
  got.clear();
  ReplyQueue::Refused refused;
  for (int guard = 0; guard < 100000; ++guard) {
    drain_with_fds(p.b.get(), got, &fds_got);
    const auto f = q.flush(3);
    CHECK_EQ(f.error, 0);
    refused.frames += f.refused.frames;
    refused.fds += f.refused.fds;
    if (f.drained) break;
  }
  drain_with_fds(p.b.get(), got, &fds_got);
  CHECK_EQ(q.queued(), 0u);
  CHECK_EQ(refused.frames, refuses ? 1u : 0u);
  CHECK_EQ(refused.fds, refuses ? 3u : 0u);
  want = big;
  if (!refuses) want.insert(want.end(), b, b + sizeof b);
  want.insert(want.end(), c, c + sizeof c);
  CHECK(got == want);
  CHECK_EQ(fds_got, refuses ? 0 : 5);
  // No dup is left open: not in the queue, not in the socket.
  probe.w.reset();
  CHECK(probe.all_closed());
}

TEST_MAIN()
