#include "producer.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "core/varint.h"

namespace udsbench {

using namespace udsipc;
namespace ctrl = protocol::ctrl;

Producer::Producer(uint32_t max_bytes, uint32_t max_writes)
    : max_bytes_(max_bytes), max_writes_(max_writes), publish_bytes_(std::min<uint32_t>(1 << 20, max_bytes / 4)) {
  cap_ = 1;
  while (cap_ < max_bytes) cap_ *= 2;
  mem_ = static_cast<uint8_t*>(std::aligned_alloc(64, ctrl::kBytes + cap_));
  if (!mem_) std::abort();
  std::memset(mem_, 0, ctrl::kBytes);
  ctrl_ = reinterpret_cast<uint32_t*>(mem_);
  ring_ = mem_ + ctrl::kBytes;
  mask_ = cap_ - 1;
}

Producer::~Producer() { std::free(mem_); }

uint32_t Producer::load(int w) { return std::atomic_ref<uint32_t>(ctrl_[w]).load(); }
void Producer::store(int w, uint32_t v) { std::atomic_ref<uint32_t>(ctrl_[w]).store(v); }

void Producer::write_run(uint8_t* msgs, uint32_t rotate, uint32_t len, uint64_t count) {
  const uint32_t total = len + static_cast<uint32_t>(uvarint_size(len));
  const uint64_t rmask = rotate > 1 ? rotate - 1 : 0;
  uint8_t* const ring = ring_;
  const uint32_t mask = mask_, cap = cap_;
  uint32_t tail = tail_, accepted = accepted_, payload = payload_, unpublished = unpublished_;
  uint32_t head_cache = head_cache_, sent_cache = sent_cache_;
  for (uint64_t i = 0; i < count; ++i) {
    const uint8_t* p = msgs + (i & rmask) * len;
    if (rotate <= 1 && len) msgs[0] = static_cast<uint8_t>(i);
    const uint32_t pos = tail & mask;
    // The checks of write() and #fits(), all at once: anything due (no room
    // by the cached counts, the ring's end, a publish) takes the full path.
    if (!room(tail, head_cache, accepted, sent_cache, total) || pos + total > cap ||
        unpublished + total >= publish_bytes_) [[unlikely]] {
      tail_ = tail, accepted_ = accepted, payload_ = payload, unpublished_ = unpublished;
      head_cache_ = head_cache, sent_cache_ = sent_cache;
      write_blocking(p, len);
      tail = tail_, accepted = accepted_, payload = payload_, unpublished = unpublished_;
      head_cache = head_cache_, sent_cache = sent_cache_;
      continue;
    }
    const size_t hn = uvarint_encode(len, ring + pos);
    std::memcpy(ring + pos + hn, p, len);
    tail += total;
    ++accepted;
    payload += len;
    unpublished += total;
  }
  tail_ = tail, accepted_ = accepted, payload_ = payload, unpublished_ = unpublished;
  head_cache_ = head_cache, sent_cache_ = sent_cache;
}

void Producer::write_blocking(const uint8_t* p, uint32_t len) {
  while (!write(p, len)) {
    publish();
    wait_drain(len);
  }
}

// As Writer.write(): a full queue first publishes what waits (a direct
// send may empty it) and looks again.
bool Producer::write(const uint8_t* p, uint32_t len) {
  const uint32_t total = len + static_cast<uint32_t>(uvarint_size(len));
  if (!fits(total) && !room_after_all(total)) return false;
  const uint32_t pos = tail_ & mask_;
  if (pos + total <= cap_) {  // the usual case, as in JavaScript: header bytes in place, one copy
    const size_t hn = uvarint_encode(len, ring_ + pos);
    std::memcpy(ring_ + pos + hn, p, len);
  } else {
    uint8_t hdr[kMaxVarintLen];
    const size_t hn = uvarint_encode(len, hdr);
    put(tail_, hdr, hn);
    put(tail_ + static_cast<uint32_t>(hn), p, len);
  }
  tail_ += total;
  ++accepted_;
  payload_ += len;
  unpublished_ += total;
  if (unpublished_ >= publish_bytes_) publish();
  return true;
}

// As Writer.#fits(): by the cached head and sent count.
bool Producer::fits(uint32_t total) const { return room(tail_, head_cache_, accepted_, sent_cache_, total); }

// As Writer.#roomAfterAll(): the shared values, then publish and look again.
bool Producer::room_after_all(uint32_t total) {
  for (;;) {
    head_cache_ = load(ctrl::kHead);
    sent_cache_ = load(ctrl::kSent);
    if (fits(total)) return true;
    if (unpublished_ == 0) return false;
    publish();
  }
}

void Producer::publish() {
  if (unpublished_ == 0) return;
  unpublished_ = 0;
  store(ctrl::kTail, tail_);
  // The IO thread sleeps with nothing in flight: send from this thread.
  if (load(ctrl::kSleep) == protocol::kIdle) {
    uint32_t idle = protocol::kIdle;
    if (std::atomic_ref<uint32_t>(ctrl_[ctrl::kSleep]).compare_exchange_strong(idle, protocol::kProducerSends)) {
      const uint32_t t = engine_->send_direct(WriterEngine::Appended{accepted_, payload_}, true);
      if (t != tail_) tail_ = head_cache_ = t;  // as the addon: an emptied ring rewinds
    }
  }
}

void Producer::put(uint32_t at, const uint8_t* p, size_t n) {
  const uint32_t pos = at & mask_;
  const size_t first = std::min<size_t>(n, cap_ - pos);
  std::memcpy(ring_ + pos, p, first);
  if (first < n) std::memcpy(ring_, p + first, n - first);
}

bool Producer::reached(uint32_t head, uint32_t sent) {
  return static_cast<int32_t>(load(ctrl::kHead) - head) >= 0 && static_cast<int32_t>(load(ctrl::kSent) - sent) >= 0;
}

// The Writer's 'drain': at most half full and the refused message fits.
void Producer::wait_drain(uint32_t len) {
  const uint32_t total = len + static_cast<uint32_t>(uvarint_size(len));
  const uint32_t room = std::min(max_bytes_ / 2, max_bytes_ - total);
  const uint32_t th = tail_ - room, ts = accepted_ - max_writes_ / 2;
  for (;;) {
    // Atomic: the IO thread may still be reading them for the previous
    // request (it saw kArmed before this thread disarmed it).
    store(ctrl::kNotifyHead, th);
    store(ctrl::kNotifySent, ts);
    store(ctrl::kNotifyArmed, protocol::kArmed);
    (void)engine_->take_events();  // re-enables the notify callback
    if (reached(th, ts)) {
      store(ctrl::kNotifyArmed, protocol::kDisarmed);
      return;
    }
    sig_.wait(20);
    if (reached(th, ts)) {
      store(ctrl::kNotifyArmed, protocol::kDisarmed);
      return;
    }
  }
}

}  // namespace udsbench
