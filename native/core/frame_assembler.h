// Turns a byte stream read from one connection into batches of whole frames.
//
// The IO thread asks prepare_read() where to read, reads there, and calls
// commit(n). Small frames are parsed in place inside a large slab; a batch is
// one contiguous region of a slab plus a table of (start, end) payload offsets
// relative to the region. A frame whose payload is at least large_threshold
// (kLargeThreshold) bytes is read straight into a buffer of its own (one copy
// of what was already read, then reads land in place). That buffer grows as
// the frame's bytes arrive (see prepare_read()), never to more than twice
// what has arrived (or kLargeChunk): a prefix announcing 10 MiB reserves
// nothing like 10 MiB until the bytes come.
//
// Memory budget: commit() and resume() take a budget in bytes, counted as
// Batch::charge() counts them, and stop cutting frames once the batch being
// built has reached it; the rest waits in the slab (backlogged()) until
// resume() is called with a new budget. So one read of 512 KiB of empty
// frames cannot become 512 Ki messages (4 MiB of offsets) against a
// connection's limit.
//
// Plain C++, single-threaded: used by whichever thread holds the reader's
// loop (the IO thread, or the JS thread while it polls; see reader_engine.h),
// never by two at once. Batches it hands out hold slab references and may
// travel to any thread.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <mutex>
#include <utility>
#include <vector>

#include "protocol.h"
#include "slab.h"
#include "unique_fd.h"
#include "varint.h"

namespace udsipc {

// The fixed part of Batch::charge(): the bookkeeping that comes with every
// batch besides its bytes and its offsets table: the hand-off queue's item,
// and in JavaScript the batch's ArrayBuffer(s) and their backing stores, its
// entry in the Reader's queue and its Batch object. An upper bound of what a
// reader's RSS grows by per batch of a few empty messages, so that a flood
// of empty frames is bounded by what it really occupies.
constexpr uint64_t kBatchCharge = 1024;
// "No budget" for commit()/resume().
constexpr uint64_t kNoBudget = UINT64_MAX;
// The first chunk reserved for a large frame (see FrameAssembler).
constexpr size_t kLargeChunk = 64 * 1024;
// Reads go to a fresh slab once less than this is left in the current one.
constexpr size_t kMinRead = 64 * 1024;
// Payloads at least this big are read into a buffer of their own.
constexpr size_t kLargeThreshold = 128 * 1024;
// With the default slab size neither is clamped (see FrameAssembler's
// constructor): a frame below the threshold always fits a fresh slab.
static_assert(kMinRead + kMaxVarintLen + kLargeThreshold <= protocol::defaults::kSlabSize);

// Descriptors that came with one message of a batch (SCM_RIGHTS): closed
// with the batch unless someone takes them.
struct MessageFds {
  uint32_t index = 0;           // the message's index in its batch
  std::vector<UniqueFd> fds;
};

struct Batch {
  SlabRef slab;            // keeps the memory below alive
  const uint8_t* base = nullptr;  // first byte of the region
  size_t length = 0;       // bytes in the region (headers included)
  std::vector<uint32_t> offsets;  // 2 per message: start, end (relative)
  uint64_t payload_bytes = 0;
  uint32_t conn_id = 0;
  std::vector<MessageFds> fds;  // messages that carried descriptors, in index order (usually none)
  // SOCK_DGRAM with credentials: (pid, uid, gid) per message, as int32 bits
  // (-1 when a datagram carried none); empty otherwise.
  std::vector<int32_t> creds;
  // Acked delivery (a reader's acked connection): the writer's sequence
  // number of the first message, and how many of the first messages were
  // sent before on an earlier connection (see acked.h).
  bool acked = false;
  uint64_t first_seq = 0;
  uint64_t redelivered = 0;
  size_t count() const { return offsets.size() / 2; }
  size_t fd_count() const {
    size_t n = 0;
    for (const auto& m : fds) n += m.fds.size();
    return n;
  }
  // What this batch holds of its connection's max_pending_bytes: its bytes
  // (payloads and length prefixes), its offsets table (8 bytes per message),
  // and kBatchCharge. Memory, not payload: a flood of empty frames costs
  // what it occupies.
  uint64_t charge() const { return length + offsets.size() * sizeof(uint32_t) + kBatchCharge; }
};

// Drops the first `n` messages of a batch (a prefix: the acked hello, copies,
// or an acked reader's greeting): their offsets go, the region (and the
// length acks count) stays as cut. Descriptors those messages carried are
// closed (returns how many); the others' indexes move down with them.
inline size_t drop_first_messages(Batch& b, size_t n) {
  n = std::min(n, b.count());
  for (size_t i = 0; i < n; ++i) b.payload_bytes -= b.offsets[2 * i + 1] - b.offsets[2 * i];
  b.offsets.erase(b.offsets.begin(), b.offsets.begin() + static_cast<std::ptrdiff_t>(2 * n));
  size_t closed = 0;
  if (!b.fds.empty()) {
    std::vector<MessageFds> kept;
    for (MessageFds& m : b.fds) {
      if (m.index < n) {
        closed += m.fds.size();  // closed with m
        continue;
      }
      m.index -= static_cast<uint32_t>(n);
      kept.push_back(std::move(m));
    }
    b.fds = std::move(kept);
  }
  return closed;
}

// Batches handed over and not fully acknowledged, in hand-over order: for
// each, its length not yet acked and the rest of its charge (released with
// the last byte of its length). Used by every receiver (reader connections,
// the writer's receive path on either thread).
using UnackedBatches = std::deque<std::pair<uint64_t, uint64_t>>;

// Acks count batch lengths, in the order the batches were handed over; a
// batch's whole charge goes once its whole length is acked. Returns the
// charge released.
inline uint64_t release_acked(UnackedBatches& fifo, uint64_t bytes) {
  uint64_t released = 0;
  while (bytes > 0 && !fifo.empty()) {
    auto& [len, rest] = fifo.front();
    const uint64_t k = std::min(bytes, len);
    len -= k;
    bytes -= k;
    released += k;
    if (len == 0) {
      released += rest;
      fifo.pop_front();
    }
  }
  return released;
}

// A free list of offsets tables. The assembler takes one per batch and the
// consumer gives it back once it has copied the offsets out, so a steady
// stream reuses a table's capacity instead of growing a fresh vector (and
// faulting in its pages on the IO thread) for every batch.
// Any thread; owned by whoever owns the assemblers, and outlives them.
// Tables above max_entries (default 64 Ki entries, 256 KiB: the most
// close_batch() reserves) are freed, not kept, so that a burst of tiny
// messages does not leave megabytes pinned in idle connections and the pool.
class OffsetsPool {
 public:
  explicit OffsetsPool(size_t max_free = 8, size_t max_entries = size_t{64} * 1024)
      : max_free_(max_free), max_entries_(max_entries) {}

  // An empty table, with the capacity of one given back if there is one.
  std::vector<uint32_t> get() {
    std::lock_guard<std::mutex> lk(mu_);
    if (free_.empty()) return {};
    std::vector<uint32_t> v = std::move(free_.back());
    free_.pop_back();
    return v;
  }
  // Keeps `v`'s capacity for reuse (up to max_free tables of at most
  // max_entries entries: a one-off burst must not pin memory).
  void put(std::vector<uint32_t>&& v) {
    if (v.capacity() == 0 || v.capacity() > max_entries_) return;
    v.clear();
    std::lock_guard<std::mutex> lk(mu_);
    if (free_.size() < max_free_) free_.push_back(std::move(v));
  }
  size_t free_count() {
    std::lock_guard<std::mutex> lk(mu_);
    return free_.size();
  }

 private:
  const size_t max_free_, max_entries_;
  std::mutex mu_;
  std::vector<std::vector<uint32_t>> free_;  // guarded by mu_
};

enum class FrameError {
  kNone,
  kTooLarge,   // announced length above max_message_size
  kInvalid,    // varint overflow (10th byte > 1 or prefix longer than 10)
  kUnexpectedFds,  // descriptors came with a read in which no frame starts
};

struct AssemblerConfig {
  size_t slab_size = protocol::defaults::kSlabSize;  // bytes per slab
  uint64_t max_message_size = protocol::defaults::kMaxMessageSize;
  // Not options: the engine always uses kMinRead and kLargeThreshold; the
  // tests and the fuzzer vary them to reach every path with small inputs.
  size_t min_read = kMinRead;                // rotate to a new slab below this space
  size_t large_threshold = kLargeThreshold;  // payloads this big get their own buffer
  SlabPool* pool = nullptr;  // where slabs come from (not owned); null = malloc
  OffsetsPool* offsets_pool = nullptr;  // where offsets tables come from (not owned); may be null
};

class FrameAssembler {
 public:
  // Largest message a batch can describe (offsets are 32-bit).
  static constexpr uint64_t kMaxMessage = UINT32_MAX;

  explicit FrameAssembler(const AssemblerConfig& cfg) : cfg_(cfg) {
    if (cfg_.slab_size < 64) cfg_.slab_size = 64;
    if (cfg_.min_read == 0) cfg_.min_read = 1;
    if (cfg_.min_read > cfg_.slab_size) cfg_.min_read = cfg_.slab_size;
    if (cfg_.max_message_size > kMaxMessage) cfg_.max_message_size = kMaxMessage;
    // A frame below the threshold must always fit a fresh slab (compared
    // without overflow: large_threshold may be anything up to SIZE_MAX).
    const size_t reserve = std::min(cfg_.slab_size, cfg_.min_read + kMaxVarintLen);
    if (cfg_.large_threshold > cfg_.slab_size - reserve) cfg_.large_threshold = cfg_.slab_size - reserve;
    if (cfg_.large_threshold == 0) cfg_.large_threshold = 1;
  }

  // Where the next read should land; the span is never empty. Precondition:
  // !backlogged(). In a large frame, grows its buffer when it is full (to
  // twice its size, at most the frame's length): throws std::bad_alloc if
  // that fails.
  std::pair<uint8_t*, size_t> prepare_read() {
    if (large_) {
      Slab* s = large_.get();
      if (large_got_ == s->capacity()) s->grow(std::min<size_t>(large_len_, std::max(2 * s->capacity(), kLargeChunk)));
      return {s->data() + large_got_, s->capacity() - large_got_};
    }
    if (!slab_ || slab_space() < cfg_.min_read ||
        (need_total_ && parse_pos_ + need_total_ > slab_.get()->capacity())) {
      rotate();
    }
    return {slab_.get()->data() + write_pos_, slab_space()};
  }

  // `n` bytes were written where prepare_read() pointed. Frames are cut until
  // the batch being built reaches `budget` (Batch::charge(); at least one
  // frame is cut): whatever follows stays backlogged. Returns false on a
  // framing error; messages completed before the error stay available.
  //
  // `fds` (may be null or empty): descriptors that came with these n bytes
  // (one recvmsg). They belong to the last frame that starts in these bytes
  // (a sender puts descriptors on a sendmsg of one whole frame, and the
  // kernel ends a read right after the data they came with): they are tied
  // to that message once it is cut. If no frame starts in these bytes the
  // peer broke the rule: FrameError::kUnexpectedFds (and they are closed).
  bool commit(size_t n, uint64_t budget = kNoBudget, std::vector<UniqueFd>* fds = nullptr) {
    if (error_ != FrameError::kNone) return false;
    const uint64_t start = committed_;
    committed_ += n;
    if (fds && !fds->empty() && n > 0) attach_.push_back({start, start + n - 1, std::move(*fds)});
    if (large_) {
      // Every read of a large frame after the one it started in is mid-frame.
      if (!attach_.empty()) return fail_fds();
      large_got_ += n;
      if (large_got_ == large_len_) {
        Batch b;
        b.base = large_.get()->data();
        b.length = large_len_;
        b.offsets = {0, static_cast<uint32_t>(large_len_)};
        b.payload_bytes = large_len_;
        b.slab = std::move(large_);
        if (!large_fds_.empty()) b.fds.push_back({0, std::move(large_fds_)});
        large_fds_.clear();
        ready_.push_back(std::move(b));
        large_len_ = large_got_ = 0;
      }
      return true;
    }
    write_pos_ += n;
    return parse(budget);
  }

  // True when commit() or resume() stopped at its budget with bytes left in
  // the slab that may hold whole frames: call resume() (not prepare_read())
  // once there is budget again.
  bool backlogged() const { return backlog_; }

  // Cuts the backlogged frames, up to `budget` as commit() does. Returns
  // false on a framing error.
  bool resume(uint64_t budget = kNoBudget) {
    if (error_ != FrameError::kNone) return false;
    if (!backlog_) return true;
    return parse(budget);
  }

  bool has_batch() const { return !ready_.empty() || !offsets_.empty(); }

  // Oldest complete batch. Precondition: has_batch().
  Batch take_batch() {
    close_batch();
    Batch b = std::move(ready_.front());
    ready_.pop_front();
    return b;
  }

  // True when no partial frame is buffered (a clean place for EOF).
  bool at_frame_boundary() const { return !large_ && parse_pos_ == write_pos_; }
  // Bytes of a partial frame (header and payload) received so far.
  size_t partial_bytes() const {
    return large_ ? large_got_ + large_hdr_ : write_pos_ - parse_pos_;
  }

  FrameError error() const { return error_; }
  uint64_t error_length() const { return error_length_; }  // for kTooLarge
  // Bytes reserved for the large frame being received (0 if none).
  size_t large_reserved() const { return large_ ? large_.get()->capacity() : 0; }
  // Descriptors closed because they came where no frame starts (kUnexpectedFds).
  uint64_t refused_fds() const { return refused_fds_; }

 private:
  size_t slab_space() const { return slab_.get()->capacity() - write_pos_; }

  // The slab offset of the last byte of the oldest read that brought
  // descriptors not yet tied to a message (SIZE_MAX: none).
  size_t fd_mark() const {
    return attach_.empty() ? SIZE_MAX : static_cast<size_t>(attach_.front().last - slab_abs_);
  }

  // The peer broke the descriptor rule: everything not yet in a cut
  // message is refused (closed, counted), including what was already tied
  // to the frame that will now never be cut (a large frame's, or those
  // tie_fds() put on the message being cut when a later read failed).
  bool fail_fds() {
    error_ = FrameError::kUnexpectedFds;
    for (const FdAttach& a : attach_) refused_fds_ += a.fds.size();
    attach_.clear();  // closes them
    refused_fds_ += large_fds_.size();
    large_fds_.clear();
    return false;
  }

  // The frame at slab offset `pos` (its last byte at or past the oldest
  // attachment's last byte) is the last frame starting in that read, unless
  // it started before the read: then no frame started in it. Ties the
  // descriptors to message `index` of the batch being built (or to the large
  // frame being received when `large`). False on the peer's error.
  bool tie_fds(size_t pos, uint32_t index, bool large) {
    FdAttach& a = attach_.front();
    if (a.start > slab_abs_ + pos) {
      // An earlier read's descriptors may already be tied to this message,
      // which is not cut now: they go with the rest.
      while (!large && !fds_.empty() && fds_.back().index == index) {
        refused_fds_ += fds_.back().fds.size();
        fds_.pop_back();  // closes them
      }
      return fail_fds();
    }
    if (large) {
      for (auto& fd : a.fds) large_fds_.push_back(std::move(fd));
    } else {
      fds_.push_back({index, std::move(a.fds)});
    }
    attach_.pop_front();
    return true;
  }

  bool parse(uint64_t budget) {
    uint8_t* data = slab_.get()->data();
    need_total_ = 0;
    backlog_ = false;
    // The hot loop works on locals (written back below): member updates
    // would be stores and reloads per frame around push_back's slow path.
    size_t pos = parse_pos_;
    const size_t end = write_pos_;
    const size_t begin = batch_begin_;
    const uint64_t limit = cfg_.max_message_size;
    uint64_t payload = payload_bytes_;
    bool ok = true;
    size_t mark = fd_mark();
    while (pos < end) {
      // The batch's charge so far (Batch::charge()); the first frame of a
      // batch is always cut, so that every call makes progress.
      if (!offsets_.empty() && (pos - begin) + offsets_.size() * sizeof(uint32_t) + kBatchCharge >= budget) {
        backlog_ = true;
        break;
      }
      const size_t avail = end - pos;
      uint64_t len = data[pos];
      size_t h = 1;
      if (len >= 0x80 || len > limit) {
        const VarintStatus st = uvarint_decode(data + pos, avail, limit, &len, &h);
        if (st == VarintStatus::kNeedMore) break;
        if (st == VarintStatus::kOverflow) {
          error_ = FrameError::kInvalid;
          ok = false;
          break;
        }
        if (st == VarintStatus::kTooLarge) {
          error_ = FrameError::kTooLarge;
          // the full length may not have arrived: report what is known
          error_length_ = decode_lower_bound(data + pos, avail);
          ok = false;
          break;
        }
      }
      if (avail - h >= len) {
        while (pos + h + len > mark) {  // this message carries descriptors
          if (!tie_fds(pos, static_cast<uint32_t>(offsets_.size() / 2), false)) {
            ok = false;
            break;
          }
          mark = fd_mark();
        }
        if (!ok) break;
        const uint32_t start = static_cast<uint32_t>(pos + h - begin);
        if (offsets_.capacity() - offsets_.size() < 2) offsets_.reserve(std::max<size_t>(64, 2 * offsets_.capacity()));
        offsets_.push_back(start);
        offsets_.push_back(start + static_cast<uint32_t>(len));
        payload += len;
        pos += h + len;
        continue;
      }
      if (len >= cfg_.large_threshold) {
        // Descriptors that came with its first bytes are its own.
        while (mark != SIZE_MAX) {
          if (!tie_fds(pos, 0, true)) {
            parse_pos_ = pos;
            payload_bytes_ = payload;
            return false;
          }
          mark = fd_mark();
        }
        // Give this frame its own buffer of the announced length.
        parse_pos_ = pos;
        payload_bytes_ = payload;
        close_batch();
        // Room for what has arrived, twice over (at least kLargeChunk): the
        // buffer grows as the rest arrives (prepare_read()).
        const size_t have = avail - h;
        large_ = SlabRef(Slab::create_growable(std::min<size_t>(len, std::max(2 * have, kLargeChunk))));
        large_len_ = len;
        large_hdr_ = h;
        large_got_ = have;
        std::memcpy(large_.get()->data(), data + pos + h, large_got_);
        // Those slab bytes were never handed out: reuse them (for the bytes
        // after this frame).
        slab_abs_ += pos + h + len - parse_pos_;
        write_pos_ = parse_pos_;
        batch_begin_ = parse_pos_;
        return true;
      }
      need_total_ = h + len;
      break;
    }
    parse_pos_ = pos;
    payload_bytes_ = payload;
    // A read that brings descriptors ends the frames before it (the kernel
    // ends a read right after the send that carried them, and a sender puts
    // them on a send of one whole frame): once everything read is cut, at
    // most the last such read may still wait for the rest of its frame. More
    // means descriptors inside a frame, and would let a peer pile up
    // descriptors here without end (one frame, a byte per send).
    if (ok && !backlog_ && attach_.size() > 1) return fail_fds();
    // One read still waiting: it belongs to the partial frame at parse_pos_
    // (the last one), which is fine only if that frame starts in the read.
    // If it started before, the descriptors came mid-frame: refused now,
    // not when (if ever) the frame completes.
    if (ok && !backlog_ && attach_.size() == 1 && parse_pos_ < write_pos_ && attach_.front().start > slab_abs_ + parse_pos_)
      return fail_fds();
    return ok;
  }

  static uint64_t decode_lower_bound(const uint8_t* p, size_t n) {
    uint64_t x = 0;
    for (size_t i = 0; i < n && i < kMaxVarintLen; ++i) {
      x |= static_cast<uint64_t>(p[i] & 0x7f) << (7 * i);
      if (p[i] < 0x80) break;
    }
    return x;
  }

  void close_batch() {
    if (offsets_.empty()) return;
    Batch b;
    b.slab = slab_.share();
    b.base = slab_.get()->data() + batch_begin_;
    b.length = parse_pos_ - batch_begin_;
    const size_t used = offsets_.size();
    b.offsets = std::move(offsets_);
    b.payload_bytes = payload_bytes_;
    if (!fds_.empty()) {
      b.fds = std::move(fds_);
      fds_.clear();
    }
    ready_.push_back(std::move(b));
    // The next batch is likely about as large: one allocation instead of a
    // doubling series (capped: a burst of tiny messages must not pin memory).
    offsets_ = cfg_.offsets_pool ? cfg_.offsets_pool->get() : std::vector<uint32_t>{};
    offsets_.reserve(std::min<size_t>(used, 64 * 1024));
    payload_bytes_ = 0;
    batch_begin_ = parse_pos_;
  }

  // Starts a new slab, carrying over the partial frame (always small: large
  // frames have their own buffer).
  void rotate() {
    close_batch();
    SlabRef next(cfg_.pool && cfg_.pool->slab_size() == cfg_.slab_size ? cfg_.pool->get()
                                                                       : Slab::create(cfg_.slab_size));
    const size_t partial = slab_ ? write_pos_ - parse_pos_ : 0;
    if (partial) std::memcpy(next.get()->data(), slab_.get()->data() + parse_pos_, partial);
    if (slab_) slab_abs_ += parse_pos_;  // the partial frame moves to offset 0
    slab_ = std::move(next);
    write_pos_ = partial;
    parse_pos_ = 0;
    batch_begin_ = 0;
  }

  AssemblerConfig cfg_;
  SlabRef slab_;
  size_t write_pos_ = 0;    // bytes filled in slab_
  size_t parse_pos_ = 0;    // first byte not yet part of a complete frame
  size_t batch_begin_ = 0;  // first byte of the batch being built
  size_t need_total_ = 0;   // header+payload of the pending frame, if known
  bool backlog_ = false;    // parse() stopped at its budget (see backlogged())
  std::vector<uint32_t> offsets_;
  uint64_t payload_bytes_ = 0;
  SlabRef large_;
  size_t large_len_ = 0, large_got_ = 0, large_hdr_ = 0;
  std::deque<Batch> ready_;
  // Descriptors (see commit()). Stream offsets count every byte committed.
  struct FdAttach {
    uint64_t start, last;  // stream offsets of the read's first and last byte
    std::vector<UniqueFd> fds;
  };
  uint64_t committed_ = 0;  // bytes committed so far
  uint64_t slab_abs_ = 0;   // stream offset of slab_'s byte 0 (outside a large frame)
  std::deque<FdAttach> attach_;      // reads with descriptors not yet tied to a message
  std::vector<MessageFds> fds_;      // the batch being built's
  std::vector<UniqueFd> large_fds_;  // the large frame's
  uint64_t refused_fds_ = 0;
  FrameError error_ = FrameError::kNone;
  uint64_t error_length_ = 0;
};

}  // namespace udsipc
