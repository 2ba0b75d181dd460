#include "reply_queue.h"

#include <errno.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <cstring>

namespace udsipc {

ReplyQueue::Offer ReplyQueue::offer(const uint8_t* data, size_t len, int64_t now_ms) {
  std::lock_guard<std::mutex> lk(mu_);
  Offer r;
  if (fd_ < 0) return r;
  if (len > 0) {
    size_t done = 0;
    if (queued_ == 0) {
      // Nothing queued: straight to the socket, on this thread.
      progress_ms_ = now_ms;
      while (done < len) {
        const ssize_t n = ::send(fd_, data + done, len - done, MSG_NOSIGNAL | MSG_DONTWAIT);
        stats_->send_calls.fetch_add(1, std::memory_order_relaxed);
        if (n > 0) {
          done += static_cast<size_t>(n);
          stats_->bytes_sent.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
          continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        // The peer is gone (EPIPE, ECONNRESET): the read side reports the
        // close; what was offered is lost with the connection.
        stats_->bytes_dropped.fetch_add(len - done, std::memory_order_relaxed);
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
    iovec iov[kMaxIov];
    int cnt = 0;
    size_t off = head_off_;
    for (auto it = chunks_.begin(); it != chunks_.end() && cnt < kMaxIov; ++it) {
      iov[cnt++] = {it->data() + off, it->size() - off};
      off = 0;
    }
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = static_cast<size_t>(cnt);
    const ssize_t n = ::sendmsg(fd_, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    stats_->send_calls.fetch_add(1, std::memory_order_relaxed);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
      return static_cast<size_t>(errno);
    }
    progress_ms_ = now_ms;
    stats_->bytes_sent.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
    size_t left = static_cast<size_t>(n);
    queued_ -= left;
    while (left > 0) {
      const size_t in_front = chunks_.front().size() - head_off_;
      if (left < in_front) {
        head_off_ += left;
        break;
      }
      left -= in_front;
      chunks_.pop_front();
      head_off_ = 0;
    }
  }
  return 0;
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
  return r;
}

uint64_t ReplyQueue::drop_locked() {
  const uint64_t n = queued_;
  chunks_.clear();
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
