// The descriptors a writer sends with its frames (SCM_RIGHTS), held from
// write() until their frame is fully sent.
//
// The producer dups the caller's descriptors (F_DUPFD_CLOEXEC, so the caller
// may close its own at once) and pushes them with the ring span of their
// frame, [start, end), before it publishes a tail that covers the frame. The
// holder of the send state (the IO thread, or the producer inside
// send_direct(): never both, see writer_engine.h) asks plan() before each
// sendmsg, tells mark_sent() when a sendmsg carried a frame's descriptors,
// and release()s the frames that are fully sent (head passed their end),
// which closes the dups. A connection that breaks forgets what was sent on
// it (reset()): a frame it cut goes again, whole, with its descriptors.
//
// The wire rule (docs/wire-format.md): a sendmsg that carries descriptors
// carries exactly one whole frame and nothing else. On a stream socket the
// kernel attaches them to the first bytes of that send and never merges
// those bytes with later sends into one read, so the reader ties them to the
// last frame that starts in the read that brought them.
//
// Positions are ring offsets modulo 2^32, compared by signed difference.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <mutex>
#include <vector>

#include "protocol.h"
#include "unique_fd.h"

namespace udsipc {

class FdOutbox {
 public:
  // What the next sendmsg from `send_pos` may cover.
  struct Plan {
    uint32_t limit;             // send no further than this ring position
    int fds[protocol::limits::kMaxFdsPerMessage];  // with these (borrowed: valid until release())
    int count = 0;              // 0: a plain send
  };

  // Producer thread: the frame at ring span [start, end) goes with `fds`.
  void push(uint32_t start, uint32_t end, std::vector<UniqueFd> fds) {
    const uint32_t n = static_cast<uint32_t>(fds.size());
    std::lock_guard<std::mutex> lk(mu_);
    frames_.push_back({start, end, std::move(fds), false});
    held_.fetch_add(n, std::memory_order_relaxed);
    frames_count_.store(frames_.size());
  }

  // Any thread: no frame with descriptors is waiting (the common case, read
  // without the lock on every send). A producer pushes before it publishes
  // the tail that covers the frame (seq_cst), so a sender that loaded that
  // tail sees the push.
  bool empty() const { return frames_count_.load() == 0; }

  // Send-state holder: how far the next sendmsg from send_pos may go, up to
  // tail. Before a frame with descriptors: up to its start. At its start
  // (descriptors not yet sent on this connection): exactly that frame, with
  // them. Inside it, once they went: on, to the next such frame.
  void plan(uint32_t send_pos, uint32_t tail, Plan* p) {
    p->limit = tail;
    p->count = 0;
    std::lock_guard<std::mutex> lk(mu_);
    for (Frame& f : frames_) {
      if (static_cast<int32_t>(f.end - send_pos) <= 0) continue;  // sent (release() pending)
      if (static_cast<int32_t>(f.start - tail) >= 0) return;       // not published yet
      if (f.start == send_pos && !f.sent) {
        p->limit = f.end;
        for (const UniqueFd& fd : f.fds) p->fds[p->count++] = fd.get();
        return;
      }
      if (static_cast<int32_t>(f.start - send_pos) > 0) {
        p->limit = f.start;
        return;
      }
      // send_pos is inside f, whose descriptors went with its first bytes.
    }
  }

  // Send-state holder: the descriptors of the frame starting at `start` went
  // with a sendmsg on the current connection.
  void mark_sent(uint32_t start) {
    std::lock_guard<std::mutex> lk(mu_);
    for (Frame& f : frames_) {
      if (f.start == start) {
        f.sent = true;
        return;
      }
    }
  }

  // Send-state holder: frames ending at or before `head` are fully sent:
  // closes their descriptors. Returns how many were closed.
  uint32_t release(uint32_t head) {
    std::vector<UniqueFd> done;  // closed after the lock is let go
    uint32_t n = 0;
    {
      std::lock_guard<std::mutex> lk(mu_);
      while (!frames_.empty() && static_cast<int32_t>(frames_.front().end - head) <= 0) {
        for (UniqueFd& fd : frames_.front().fds) done.push_back(std::move(fd));
        frames_.pop_front();
      }
      n = static_cast<uint32_t>(done.size());
      held_.fetch_sub(n, std::memory_order_relaxed);
      frames_count_.store(frames_.size());
    }
    return n;
  }

  // Send-state holder: the connection broke; nothing was sent on the next one.
  void reset() {
    std::lock_guard<std::mutex> lk(mu_);
    for (Frame& f : frames_) f.sent = false;
  }

  // Owner: closes every descriptor held (the writer stopped; what was not
  // sent never will be).
  void clear() {
    std::deque<Frame> done;
    {
      std::lock_guard<std::mutex> lk(mu_);
      done.swap(frames_);
      held_.store(0, std::memory_order_relaxed);
      frames_count_.store(0);
    }
  }

  uint32_t held() const { return held_.load(std::memory_order_relaxed); }  // any thread

 private:
  struct Frame {
    uint32_t start, end;
    std::vector<UniqueFd> fds;
    bool sent;  // on the current connection
  };
  std::mutex mu_;
  std::deque<Frame> frames_;  // guarded by mu_, in ring order
  std::atomic<size_t> frames_count_{0};
  std::atomic<uint32_t> held_{0};
};

}  // namespace udsipc
