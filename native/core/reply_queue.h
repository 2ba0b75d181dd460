// A reader connection's outgoing side: the replies JavaScript writes back to
// the writer on the other end (connection.write()/send()).
//
// Two threads use it, serialized by its own mutex, once per flush of many
// frames (never once per message):
//   - the consumer (JavaScript's thread), in offer(): the bytes of every
//     frame written in one tick. With nothing queued it sends them at once on
//     its own thread (no thread hop when the socket has room, like the
//     writer's direct send); what the socket does not take is copied into the
//     queue, and the IO thread is asked to watch for EPOLLOUT.
//   - the thread that owns the reader's event loop, in flush() on EPOLLOUT,
//     and in close()/discard().
// The socket stays owned by the connection (ReaderEngine::Conn): close()
// runs before the connection closes its descriptor, so no send can reach a
// descriptor number reused for something else.
//
// Memory: the queue grows only by what a send could not take, in chunks of
// at least kChunk bytes, and is freed as it drains. Its bound (maxReplyBytes)
// is kept by the caller, who knows the size of each frame before offering it
// and learns the queued byte count from offer()'s result.
//
// Descriptors (SCM_RIGHTS): a frame offered with descriptors is queued and
// sent alone, with them, by the FdOutbox rule (fd_outbox.h); positions are
// offsets in the connection's outgoing byte stream (mod 2^32). Their dups are
// closed once the frame is fully sent, or dropped with the queue.
//
// Plain C++, no Node headers.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <mutex>
#include <vector>

#include "fd_outbox.h"
#include "unique_fd.h"

namespace udsipc {

struct ReplyStats {
  std::atomic<uint64_t> bytes_sent{0}, send_calls{0}, bytes_dropped{0}, fds_sent{0};
};

class ReplyQueue {
 public:
  static constexpr size_t kChunk = 64 * 1024;
  static constexpr int kMaxIov = 64;  // iovecs per sendmsg (well below IOV_MAX)

  ReplyQueue(int fd, ReplyStats* stats) : fd_(fd), stats_(stats) {}
  ReplyQueue(const ReplyQueue&) = delete;
  ReplyQueue& operator=(const ReplyQueue&) = delete;

  // Frames with descriptors that the writer refused (EPERM: its socket has
  // SO_PASSRIGHTS off, as a uds-ipc Writer without acceptFds has on Linux
  // 6.16+). Nothing of such a frame went: it is dropped (its bytes counted
  // in bytes_dropped, its dups closed), never retried, and the frames after
  // it go on. The caller reports them.
  struct Refused {
    uint32_t frames = 0, fds = 0;
  };
  struct Offer {
    int64_t queued = -1;     // bytes left queued after this call; -1: closed
    bool want_out = false;   // the queue just became non-empty: the owner of the loop must watch EPOLLOUT
    Refused refused;         // during this call
  };
  // Consumer thread. Sends or queues `len` bytes (whole frames); len 0 only
  // reports the queued byte count. With `fds` (not empty), data is exactly
  // one frame, which carries them (taken; closed once it is sent).
  Offer offer(const uint8_t* data, size_t len, int64_t now_ms, std::vector<UniqueFd>* fds = nullptr);

  struct Flush {
    bool drained = false;  // the queue is empty now (EPOLLOUT no longer needed)
    int error = 0;         // a send failed with this errno: the queue was discarded
    Refused refused;       // during this call
  };
  // Loop owner, on EPOLLOUT: sends what it can.
  Flush flush(int64_t now_ms);
  // Loop owner: drops everything queued (reply timeout); returns the bytes dropped.
  uint64_t discard();
  // Loop owner, before the connection's descriptor closes: no send after
  // this; drops what is queued and returns its bytes.
  uint64_t close();

  uint64_t queued();           // any thread
  int64_t last_progress_ms();  // any thread: when a send last took bytes (or the queue started)

 private:
  // All below guarded by mu_.
  // Sends from the queue; returns 0 on EAGAIN (or all sent), else errno.
  // Frames refused are dropped and added to refused_.
  size_t send_locked(int64_t now_ms);
  void append_locked(const uint8_t* data, size_t len);
  void consume_locked(size_t n);  // the first n queued bytes are done with (sent or dropped)
  uint64_t drop_locked();

  std::mutex mu_;
  int fd_;                                // the connection's socket; -1 once closed
  ReplyStats* const stats_;               // the engine's counters (outlive every queue)
  std::deque<std::vector<uint8_t>> chunks_;
  size_t head_off_ = 0;                   // bytes of chunks_.front() already sent
  uint64_t queued_ = 0;
  bool out_requested_ = false;            // EPOLLOUT asked for and not yet drained
  int64_t progress_ms_ = 0;
  uint32_t offered_ = 0;   // stream position after the last byte offered (mod 2^32)
  uint32_t sent_pos_ = 0;  // stream position of the first byte not sent
  FdOutbox fds_;           // frames with descriptors not fully sent (its own lock, taken under mu_)
  FdOutbox::Plan plan_;
  Refused refused_;        // since offer()/flush() last took it
};

}  // namespace udsipc
