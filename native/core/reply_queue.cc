#include "reply_queue.h"

#include <errno.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <cstring>

#include "socket_util.h"

namespace udsipc {

ReplyQueue::Offer ReplyQueue::offer(const uint8_t* data, size_t len, int64_t now_ms, std::vector<UniqueFd>* fds) {
  std::lock_guard<std::mutex> lk(mu_);
  Offer r;
  if (fd_ < 0) return r;
  if (len > 0 && fds && !fds->empty()) {
    // Queued first, then sent by send_locked(), which sends it alone with them.
    const bool was_empty = queued_ == 0;
    fds_.push(offered_, offered_ + static_cast<uint32_t>(len), std::move(*fds));
    append_locked(data, len);
    offered_ += static_cast<uint32_t>(len);
    if (was_empty) {
      progress_ms_ = now_ms;
      if (send_locked(now_ms) != 0) stats_->bytes_dropped.fetch_add(drop_locked(), std::memory_order_relaxed);
    }
    if (queued_ > 0 && !out_requested_) {
      out_requested_ = true;
      r.want_out = true;
    }
  } else if (len > 0) {
    offered_ += static_cast<uint32_t>(len);
    size_t done = 0;
    if (queued_ == 0) {
      // Nothing queued: straight to the socket, on this thread.
      progress_ms_ = now_ms;
      while (done < len) {
        const ssize_t n = ::send(fd_, data + done, len - done, MSG_NOSIGNAL | MSG_DONTWAIT);
        stats_->send_calls.fetch_add(1, std::memory_order_relaxed);
        if (n > 0) {
          done += static_cast<size_t>(n);
          sent_pos_ += static_cast<uint32_t>(n);
          stats_->bytes_sent.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
          continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        // The peer is gone (EPIPE, ECONNRESET): the read side reports the
        // close; what was offered is lost with the connection.
        stats_->bytes_dropped.fetch_add(len - done, std::memory_order_relaxed);
        sent_pos_ = offered_;
        done = len;
        break;
      }
    }
    if (done < len) {
      append_locked(data + done, len - done);
      if (!out_requested_) {
        out_requested_ = true;
        r.want_out = true;
      }
    }
  }
  r.queued = static_cast<int64_t>(queued_);
  r.refused = refused_;
  refused_ = {};
  return r;
}

void ReplyQueue::append_locked(const uint8_t* data, size_t len) {
  while (len > 0) {
    if (chunks_.empty() || chunks_.back().size() == chunks_.back().capacity()) {
      chunks_.emplace_back();
      chunks_.back().reserve(std::max(kChunk, len));
    }
    std::vector<uint8_t>& c = chunks_.back();
    const size_t k = std::min(len, c.capacity() - c.size());
    c.insert(c.end(), data, data + k);
    data += k;
    len -= k;
    queued_ += k;
  }
}

size_t ReplyQueue::send_locked(int64_t now_ms) {
  while (queued_ > 0) {
    // Frames with descriptors go alone, with them (fd_outbox.h).
    size_t budget = SIZE_MAX;
    const bool with_fds = !fds_.empty();
    if (with_fds) {
      fds_.plan(sent_pos_, offered_, &plan_);
      budget = plan_.limit - sent_pos_;
    }
    iovec iov[kMaxIov];
    int cnt = 0;
    size_t off = head_off_;
    for (auto it = chunks_.begin(); it != chunks_.end() && cnt < kMaxIov && budget > 0; ++it) {
      const size_t k = std::min(it->size() - off, budget);
      iov[cnt++] = {it->data() + off, k};
      budget -= k;
      off = 0;
    }
    if (cnt == 0) return 0;  // nothing the plan allows (cannot happen: a plan always allows a byte)
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = static_cast<size_t>(cnt);
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * protocol::limits::kMaxFdsPerMessage)];
    if (with_fds && plan_.count > 0) put_rights(&msg, control, plan_.fds, plan_.count);
    const ssize_t n = ::sendmsg(fd_, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    stats_->send_calls.fetch_add(1, std::memory_order_relaxed);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
      if (errno == EPERM && with_fds && plan_.count > 0) {
        // The writer refuses descriptors: nothing of this frame went, and it
        // never could. Dropped with its dups; the next frames go on.
        const uint32_t len = plan_.limit - sent_pos_;
        fds_.mark_sent(sent_pos_);
        fds_.release(plan_.limit);
        ++refused_.frames;
        refused_.fds += static_cast<uint32_t>(plan_.count);
        stats_->bytes_dropped.fetch_add(len, std::memory_order_relaxed);
        sent_pos_ += len;
        consume_locked(len);
        continue;
      }
      return static_cast<size_t>(errno);
    }
    if (with_fds) {
      if (plan_.count > 0) {
        fds_.mark_sent(sent_pos_);  // they went with the first bytes
        stats_->fds_sent.fetch_add(static_cast<uint64_t>(plan_.count), std::memory_order_relaxed);
      }
      fds_.release(sent_pos_ + static_cast<uint32_t>(n));  // frames now fully sent: close the dups
    }
    sent_pos_ += static_cast<uint32_t>(n);
    progress_ms_ = now_ms;
    stats_->bytes_sent.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
    consume_locked(static_cast<size_t>(n));
  }
  return 0;
}

void ReplyQueue::consume_locked(size_t n) {
  queued_ -= n;
  while (n > 0) {
    const size_t in_front = chunks_.front().size() - head_off_;
    if (n < in_front) {
      head_off_ += n;
      break;
    }
    n -= in_front;
    chunks_.pop_front();
    head_off_ = 0;
  }
}

ReplyQueue::Flush ReplyQueue::flush(int64_t now_ms) {
  std::lock_guard<std::mutex> lk(mu_);
  Flush r;
  if (fd_ >= 0 && queued_ > 0) {
    if (const size_t err = send_locked(now_ms)) {
      r.error = static_cast<int>(err);
      stats_->bytes_dropped.fetch_add(drop_locked(), std::memory_order_relaxed);
    }
  }
  if (queued_ == 0) {
    r.drained = true;
    out_requested_ = false;
  }
  r.refused = refused_;
  refused_ = {};
  return r;
}

uint64_t ReplyQueue::drop_locked() {
  const uint64_t n = queued_;
  chunks_.clear();
  fds_.clear();
  sent_pos_ = offered_;
  head_off_ = 0;
  queued_ = 0;
  out_requested_ = false;
  return n;
}

uint64_t ReplyQueue::discard() {
  std::lock_guard<std::mutex> lk(mu_);
  const uint64_t n = drop_locked();
  stats_->bytes_dropped.fetch_add(n, std::memory_order_relaxed);
  return n;
}

uint64_t ReplyQueue::close() {
  std::lock_guard<std::mutex> lk(mu_);
  fd_ = -1;
  const uint64_t n = drop_locked();
  stats_->bytes_dropped.fetch_add(n, std::memory_order_relaxed);
  return n;
}

uint64_t ReplyQueue::queued() {
  std::lock_guard<std::mutex> lk(mu_);
  return queued_;
}

int64_t ReplyQueue::last_progress_ms() {
  std::lock_guard<std::mutex> lk(mu_);
  return progress_ms_;
}

}  // namespace udsipc
