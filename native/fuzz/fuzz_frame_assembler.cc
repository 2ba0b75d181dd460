// libFuzzer target for udsipc::FrameAssembler (native/core/frame_assembler.h).
//
// Input layout (see native/fuzz/README.md):
//
//   bytes 0..13   configuration header (zero-padded when the input is shorter)
//     [0]  slab size        kSlab[h & 15] + (h >> 4)          (16 B .. 512 KiB)
//     [1]  min_read         255: 2 * slab (clamped by the ctor); 254: slab, and
//                           budgets (below); else slab * h / 254
//     [2]  large_threshold  254: 0; 255: 2^62 (or SIZE_MAX with UDS_FUZZ_EXTREME);
//                           else 2 * slab * h / 253 (the ctor clamps it)
//     [3],[4] max_message_size, see limit_of()
//     [5]  flags: bits 0-1 chunking mode, bit 2 use a SlabPool, bit 3 pool of a
//          different slab size (the assembler must not use it), bit 4 keep
//          every batch alive to the end, bit 5 sometimes do not drain after a
//          commit, bit 6 sometimes call prepare_read() without a commit (EAGAIN),
//          bit 7 scribble over the unused part of every read span
//     [6..11] chunk table / PRNG seed
//     [12] descriptors (0: none, the layout before descriptors): bits 0-1 which
//          reads carry some (0 none, 1 PRNG with probability ([13]+1)/256,
//          2 the k-th read (from 1) iff bit k%8 of [13], 3 every read); bit 2
//          align: a read carrying some ends where the last frame starting in
//          it ends (if the span allows), as the kernel ends a read after the
//          send that brought them; bit 3 strict: reads in which no frame
//          starts carry none;
//          bits 4-5 how many per read (1, 2, 4, PRNG 1..4); bits 6-7 unused
//     [13] probability / step mask for [12]
//   bytes 14..    the byte stream a peer sent on one connection
//
// The stream is fed in chunks through prepare_read()/commit() exactly as the
// reader engine does, and everything the assembler hands out is compared with
// a deliberately naive reference decoder run over the whole stream at once:
// the same messages in the same order, delivered as soon as their last byte
// was committed, the same error kind detected as soon as it was decidable,
// and every invariant of the batches (offsets inside the region, region
// inside the slab, ordered and non-overlapping messages, none longer than the
// limit, header bytes accounted for). Batches kept alive are re-checked at the
// end, after later reads and slab recycling, and every slab must be freed.
//
// Descriptors (header byte 12): reads carry real descriptors (duplicates of
// one /dev/null descriptor), and a model of the wire rule (docs/wire-format.md:
// they belong to the last frame that starts in the read; on a read in which no
// frame starts they are a protocol error) predicts, after every commit step,
// whether the assembler has failed with kUnexpectedFds (and refused_fds()),
// which message of which batch each set is tied to (Batch::fds), and that
// every descriptor is closed exactly once: refused ones by the failing call,
// delivered ones with their batch, held ones with the assembler; none leaks
// (the count of /proc/self/fd is the same before and after), none is closed
// behind its owner's back (a new duplicate must never get the number of one
// that should be open).
//
// Budgets (header byte 1 == 254): every commit() gets a random budget, and
// while the assembler is backlogged() it is resume()d with fresh random
// budgets until it is not, as the reader engine does once acks come back.
// Then also: no batch of two or more messages is charged (Batch::charge())
// budget + its last message or more, and after the resumes every frame
// whose last byte was committed has been handed out, as without budgets.
#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <vector>

#include "core/frame_assembler.h"

using namespace udsipc;

namespace {

// Invariant checks: the detail is formatted only when the check fails (the
// hot loop must stay cheap for the fuzzer's sake).
[[noreturn]] __attribute__((format(printf, 3, 4))) void fail(const char* what, int line, const char* fmt, ...) {
  std::fprintf(stderr, "fuzz_frame_assembler: invariant violated (line %d): %s -- ", line, what);
  va_list ap;
  va_start(ap, fmt);
  std::vfprintf(stderr, fmt, ap);
  va_end(ap);
  std::fputc('\n', stderr);
  std::abort();
}
#define FZ_CHECK(cond, ...)                              \
  do {                                                   \
    if (__builtin_expect(!(cond), 0)) fail(#cond, __LINE__, __VA_ARGS__); \
  } while (0)

// Context printed with a failed check.
#define BATCH_CTX "batch of %zu offsets, length %zu, next message #%zu of %zu", b.offsets.size(), b.length, next, ref.msgs.size()
#define MSG_CTX "message #%zu (batch item %zu): offsets [%u, %u) in region of %zu; reference len %zu at stream offset %zu", next + i, i, st, en, b.length, m.len, m.start
#define REGION_CTX "region of %zu bytes for frames [%zu, %zu)", b.length, first.frame, last.end()
#define SPAN_CTX "step %zu: span %zu bytes, fed %zu of %zu", step, cap, fed, n
#define FAIL_CTX "commit failed at fed=%zu (chunk %zu); reference error %d decided at %zu, frame at %zu", fed, chunk, static_cast<int>(ref.err), ref.err_decided, ref.err_frame
#define OK_CTX "commit ok at fed=%zu; reference error %d decided at %zu", fed, static_cast<int>(ref.err), ref.err_decided
#define END_CTX "end: %zu of %zu messages, fed %zu, partial %zu, reference consumed %zu", next, ref.msgs.size(), fed, a.partial_bytes(), ref.consumed

// ─── reference decoder ─────────────────────────────────────────────────────
// Byte by byte over the whole stream, with a 128-bit accumulator so that it
// shares no code (and no shortcut) with varint.h. Rules (DESIGN.md):
//   - unsigned LEB128, at most 10 bytes; a 10th byte must be 0 or 1, judged
//     as soon as it arrives, otherwise ERR_INVALID_FRAME;
//   - a length above the limit is an error as soon as the bytes seen so far
//     prove it (later bytes can only add to the value);
//   - zero-length messages are messages.
struct RefMsg {
  size_t frame;   // stream offset of the length prefix
  size_t hdr;     // prefix length
  size_t start;   // payload offset
  size_t len;     // payload length
  size_t end() const { return start + len; }
};
struct RefResult {
  std::vector<RefMsg> msgs;
  FrameError err = FrameError::kNone;
  size_t err_frame = 0;    // where the bad prefix starts
  size_t err_decided = 0;  // stream bytes needed to decide the error
  size_t consumed = 0;     // bytes of whole frames (no error: the rest is a partial frame)
  // No error: the partial frame after the whole ones, if its prefix is whole.
  size_t tail_hdr = 0;     // 0: no partial frame, or its prefix is not whole
  uint64_t tail_len = 0;
  // Where the frames end: the partial frame, or the bad prefix, starts here.
  size_t tail_start() const { return msgs.empty() ? 0 : msgs.back().end(); }
};

RefResult reference_decode(const uint8_t* s, size_t n, uint64_t limit) {
  RefResult r;
  size_t pos = 0;
  for (;;) {
    unsigned __int128 v = 0;
    size_t i = 0;
    bool complete = false;
    for (;; ++i) {
      if (i == 10) {  // cannot happen (byte 10 either ends or fails) but spelled out
        r.err = FrameError::kInvalid;
        r.err_frame = pos;
        r.err_decided = pos + i;
        return r;
      }
      if (pos + i >= n) break;  // prefix incomplete
      const uint8_t b = s[pos + i];
      v += static_cast<unsigned __int128>(b & 0x7f) << (7 * i);
      if (i == 9 && (v >> 64 != 0 || (b & 0x80))) {
        r.err = FrameError::kInvalid;
        r.err_frame = pos;
        r.err_decided = pos + i + 1;
        return r;
      }
      if (v > limit) {
        r.err = FrameError::kTooLarge;
        r.err_frame = pos;
        r.err_decided = pos + i + 1;
        return r;
      }
      if (!(b & 0x80)) {
        complete = true;
        ++i;
        break;
      }
    }
    if (!complete) break;
    const uint64_t len = static_cast<uint64_t>(v);
    if (n - pos - i < len) {  // payload incomplete
      r.tail_hdr = i;
      r.tail_len = len;
      break;
    }
    r.msgs.push_back({pos, i, pos + i, static_cast<size_t>(len)});
    pos += i + len;
  }
  r.consumed = pos;
  return r;
}

// What FrameAssembler::error_length() must say for a kTooLarge prefix at
// `frame` when `avail` bytes of it have arrived: the value of the bytes seen
// (up to the terminator or 10 bytes), mod 2^64.
uint64_t lower_bound(const uint8_t* s, size_t avail) {
  uint64_t x = 0;
  for (size_t i = 0; i < avail && i < 10; ++i) {
    x |= static_cast<uint64_t>(s[i] & 0x7f) << (7 * i);
    if (!(s[i] & 0x80)) break;
  }
  return x;
}

// ─── configuration from the header ─────────────────────────────────────────
constexpr size_t kHeader = 14;
constexpr size_t kSlab[16] = {16, 17, 24, 32, 48, 64, 100, 128, 256, 512, 1000, 1024, 4096, 16384, 65536, 524288};

uint64_t limit_of(uint8_t a, uint8_t b) {
  switch (a & 7) {
    case 0: return b;
    case 1: return uint64_t{b} * 256 + (a >> 3);
    case 2: return uint64_t{1} << (b % 21);          // up to 1 MiB
    case 3: return (uint64_t{1} << (b % 25)) - 1;    // up to 16 MiB - 1
    case 4: return 10 * 1024 * 1024;                 // the Reader's default
    case 5:
#ifdef UDS_FUZZ_EXTREME
      return UINT64_MAX;  // "no limit": allocations of whatever a peer announces
#else
      return 0;
#endif
    case 6: return uint64_t{b} * 4096 + (a >> 3);    // up to ~1 MiB
    default: {
      static const uint64_t edges[] = {127, 128, 16383, 16384, 2097151, 2097152, 1, 1023};
      return edges[b & 7];
    }
  }
}

struct Rng {  // xorshift64*, seeded from the header
  uint64_t s;
  uint64_t next() {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 0x2545F4914F6CDD1Dull;
  }
};

struct Kept {
  Batch batch;
  size_t first_msg;  // index in the reference message list
};

// Checks one batch against the reference; returns the index of the next
// expected message. `budget`: what the call that cut it was given.
size_t check_batch(const Batch& b, const RefResult& ref, const uint8_t* s, size_t next, uint64_t limit,
                   uint64_t budget = kNoBudget) {
  FZ_CHECK(b.offsets.size() % 2 == 0, BATCH_CTX);
  FZ_CHECK(b.count() >= 1, BATCH_CTX);  // no empty batches
  FZ_CHECK(b.slab, BATCH_CTX);
  const Slab* slab = b.slab.get();
  FZ_CHECK(b.base >= slab->data(), BATCH_CTX);
  FZ_CHECK(b.length <= slab->capacity(), BATCH_CTX);
  FZ_CHECK(static_cast<size_t>(b.base - slab->data()) <= slab->capacity() - b.length, BATCH_CTX);
  FZ_CHECK(next + b.count() <= ref.msgs.size(), BATCH_CTX);  // no invented messages
  const bool own_buffer = b.count() == 1 && b.offsets[0] == 0 && b.length == ref.msgs[next].len &&
                          b.offsets[1] == b.length && ref.msgs[next].hdr != 0;
  uint64_t payload = 0;
  uint32_t prev_end = 0;
  for (size_t i = 0; i < b.count(); ++i) {
    const uint32_t st = b.offsets[2 * i], en = b.offsets[2 * i + 1];
    const RefMsg& m = ref.msgs[next + i];
    FZ_CHECK(st <= en, MSG_CTX);
    FZ_CHECK(en <= b.length, MSG_CTX);
    FZ_CHECK(i == 0 || st >= prev_end, MSG_CTX);  // in order, not overlapping
    FZ_CHECK(en - st <= limit, MSG_CTX);
    FZ_CHECK(en - st == m.len, MSG_CTX);
    FZ_CHECK(m.len == 0 || std::memcmp(b.base + st, s + m.start, m.len) == 0, MSG_CTX);
    if (!own_buffer) {
      // In-slab batches: the region is exactly the frames, headers included.
      FZ_CHECK(st - (i == 0 ? 0 : prev_end) == m.hdr, MSG_CTX);
    }
    payload += en - st;
    prev_end = en;
  }
  if (!own_buffer) {
    const RefMsg& first = ref.msgs[next];
    const RefMsg& last = ref.msgs[next + b.count() - 1];
    FZ_CHECK(b.length == last.end() - first.frame, REGION_CTX);
    FZ_CHECK(prev_end == b.length, REGION_CTX);
    FZ_CHECK(std::memcmp(b.base, s + first.frame, b.length) == 0, REGION_CTX);
    // Frames are cut while the charge so far is below the budget: at most
    // the last one goes past it.
    if (b.count() >= 2 && budget != kNoBudget) {
      const uint64_t last_charge = last.hdr + last.len + 2 * sizeof(uint32_t);
      FZ_CHECK(b.charge() < budget + last_charge,
               "charge %llu, budget %llu, last message %llu; region of %zu bytes for frames [%zu, %zu)",
               (unsigned long long)b.charge(), (unsigned long long)budget, (unsigned long long)last_charge, b.length,
               first.frame, last.end());
    }
  }
  FZ_CHECK(b.payload_bytes == payload, "payload_bytes %llu, sum %llu", (unsigned long long)b.payload_bytes, (unsigned long long)payload);
  return next + b.count();
}

// ─── descriptors ───────────────────────────────────────────────────────────
// Every descriptor a read carries is a duplicate of this one (opened once,
// never handed to the assembler): cheap, real, and closing one is visible.
int null_fd() {
  static const int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  return fd;
}

bool fd_open(int fd) { return ::fcntl(fd, F_GETFD) != -1 || errno != EBADF; }

// Entries of /proc/self/fd (the directory's own descriptor included: the
// same before and after).
size_t count_open_fds() {
  DIR* d = ::opendir("/proc/self/fd");
  if (!d) return 0;
  size_t n = 0;
  while (::readdir(d)) ++n;
  ::closedir(d);
  return n;
}

// The large_threshold the assembler's constructor settles on (its clamps,
// restated): a frame at least this long that is not whole once its prefix
// is gets a buffer of its own. Checked against large_reserved() every step.
size_t effective_threshold(const AssemblerConfig& c) {
  const size_t slab = c.slab_size < 64 ? 64 : c.slab_size;
  const size_t min_read = c.min_read == 0 ? 1 : c.min_read > slab ? slab : c.min_read;
  const size_t reserve = std::min(slab, min_read + kMaxVarintLen);
  size_t t = c.large_threshold;
  if (t > slab - reserve) t = slab - reserve;
  return t == 0 ? 1 : t;
}

// One read that carried descriptors, and what the wire rule says of it.
struct FdRead {
  size_t start, last;     // stream offsets of the read's first and last byte
  std::vector<int> nums;  // its descriptors, in order
  size_t frame;           // index in ref.msgs of the frame holding `last` (msgs.size(): the
                          // partial frame or bad prefix after the whole ones)
  bool valid;             // that frame starts in this read
  size_t resolve_at;      // once this many bytes are fed the assembler has tied them to
                          // the frame (valid) or failed (not); SIZE_MAX: not by itself
};

// The frame model the descriptor rule needs, over the reference's frames.
struct FrameModel {
  const RefResult& ref;
  size_t thr;  // effective_threshold()
  size_t n;    // stream length

  // Index of the frame holding stream byte `pos` (msgs.size(): the tail).
  size_t frame_of(size_t pos) const {
    if (pos >= ref.tail_start()) return ref.msgs.size();
    auto it = std::upper_bound(ref.msgs.begin(), ref.msgs.end(), pos,
                               [](size_t p, const RefMsg& m) { return p < m.frame; });
    return static_cast<size_t>(it - ref.msgs.begin()) - 1;
  }
  size_t frame_start(size_t i) const { return i < ref.msgs.size() ? ref.msgs[i].frame : ref.tail_start(); }
  // When the assembler decides about descriptors whose read ends in frame i:
  // when the frame is whole (cut in the slab), or, for a frame that gets a
  // buffer of its own, as soon as its prefix is whole. The tail: only if it
  // is a partial frame that gets its own buffer (a bad prefix fails first).
  size_t resolve_at(size_t i) const {
    if (i < ref.msgs.size()) {
      const RefMsg& m = ref.msgs[i];
      return m.len >= thr ? m.start : m.end();
    }
    if (ref.err == FrameError::kNone && ref.tail_hdr != 0 && ref.tail_len >= thr) return ref.tail_start() + ref.tail_hdr;
    return SIZE_MAX;
  }
  // True when the first frame not whole after `fed` bytes (`done` frames
  // whole) has its own buffer now.
  bool in_large(size_t fed, size_t done) const {
    if (done < ref.msgs.size()) {
      const RefMsg& m = ref.msgs[done];
      return m.len >= thr && fed >= m.start;
    }
    return ref.err == FrameError::kNone && ref.tail_hdr != 0 && ref.tail_len >= thr &&
           fed >= ref.tail_start() + ref.tail_hdr;
  }
  // The last frame (or tail) starting in [from, to): its index and end
  // (the tail ends with the stream); false if none starts there.
  bool last_start_in(size_t from, size_t to, size_t* idx, size_t* end) const {
    const size_t ts = ref.tail_start();
    if (ts >= from && ts < to && ts < n) {
      *idx = ref.msgs.size();
      *end = n;
      return true;
    }
    auto it = std::lower_bound(ref.msgs.begin(), ref.msgs.end(), to,
                               [](const RefMsg& m, size_t t) { return m.frame < t; });
    if (it == ref.msgs.begin()) return false;
    --it;
    if (it->frame < from) return false;
    *idx = static_cast<size_t>(it - ref.msgs.begin());
    *end = it->end();
    return true;
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  uint8_t h[kHeader] = {};
  std::memcpy(h, data, size < kHeader ? size : kHeader);
  const uint8_t* s = size > kHeader ? data + kHeader : nullptr;
  const size_t n = size > kHeader ? size - kHeader : 0;

  AssemblerConfig cfg;
  cfg.slab_size = kSlab[h[0] & 15] + (h[0] >> 4);
  cfg.min_read = h[1] == 255 ? cfg.slab_size * 2 : cfg.slab_size * h[1] / 254;
  if (h[2] == 254) cfg.large_threshold = 0;
#ifdef UDS_FUZZ_EXTREME
  else if (h[2] == 255) cfg.large_threshold = SIZE_MAX;
#else
  else if (h[2] == 255) cfg.large_threshold = size_t{1} << 62;
#endif
  else cfg.large_threshold = 2 * cfg.slab_size * h[2] / 253;
  cfg.max_message_size = limit_of(h[3], h[4]);
  const uint64_t limit = cfg.max_message_size;
  const uint8_t flags = h[5];
  const int mode = flags & 3;
  const bool use_pool = flags & 4, pool_mismatch = flags & 8, keep_all = flags & 16;
  const bool lazy_drain = flags & 32, eagain = flags & 64, scribble = flags & 128;
  const bool budgets = h[1] == 254;
  uint64_t seed = 0x9E3779B97F4A7C15ull;
  for (int i = 6; i < 12; ++i) seed = (seed ^ h[i]) * 0x100000001B3ull;
  Rng rng{seed | 1};
  // Descriptors: their own PRNG, so that the chunking is what it is without them.
  const uint8_t fd_flags = h[12], fd_param = h[13];
  const int fd_select = fd_flags & 3;
  const bool fd_align = fd_flags & 4, fd_strict = fd_flags & 8;
  const int fd_per_read = (fd_flags >> 4) & 3;
  Rng fd_rng{(seed ^ (uint64_t{fd_flags} << 8 | fd_param) * 0xD1B54A32D192ED03ull) | 1};
  constexpr size_t kMaxFds = 128;  // per input: kept batches hold theirs to the end

  const int64_t slabs_before = Slab::live();
  SlabPool* pool = nullptr;
  if (use_pool) {
    pool = SlabPool::create(pool_mismatch ? cfg.slab_size + 64 : cfg.slab_size, h[6] & 3);
    cfg.pool = pool;
  }

  const RefResult ref = reference_decode(s, n, limit);
  const FrameModel model{ref, effective_threshold(cfg), n};
  std::vector<Kept> kept;
  // UDS_FUZZ_TRACE=1: one line per input (what a seed exercises).
  static const bool trace = std::getenv("UDS_FUZZ_TRACE") != nullptr;
  size_t trace_fd_msgs = 0, trace_batches = 0;
  FrameError trace_err = FrameError::kNone;
  uint64_t trace_refused = 0;
  // Descriptor bookkeeping (only when byte 12 asks for descriptors).
  std::vector<FdRead> reads;
  std::vector<int32_t> msg_read;  // per reference message: the read whose descriptors it carries, or -1
  std::vector<int> open_fds;      // descriptors that must be open (held by the assembler or a batch)
  size_t fds_made = 0;
  size_t open_before = 0;
  if (fd_select != 0) {
    FZ_CHECK(null_fd() >= 0, "cannot open /dev/null: errno %d", errno);
    msg_read.assign(ref.msgs.size(), -1);
    open_before = count_open_fds();
  }
  // A descriptor that must now be closed (by whoever owned it): it is.
  auto expect_closed = [&](int fd, const char* who) {
    FZ_CHECK(!fd_open(fd), "descriptor %d still open after %s", fd, who);
    auto it = std::find(open_fds.begin(), open_fds.end(), fd);
    FZ_CHECK(it != open_fds.end(), "descriptor %d closed twice (%s)", fd, who);
    open_fds.erase(it);
  };
  // The descriptors of batch `b` (first message: reference message `first`):
  // in index order, each set exactly that of the read tied to its message,
  // still open; and every message that should carry some does.
  auto check_fds = [&](const Batch& b, size_t first) {
    size_t expected = 0, seen = 0;
    if (!msg_read.empty())
      for (size_t i = 0; i < b.count(); ++i) expected += msg_read[first + i] >= 0;
    for (size_t j = 0; j < b.fds.size(); ++j) {
      const MessageFds& m = b.fds[j];
      ++seen;
      FZ_CHECK(m.index < b.count(), "batch of messages [%zu, %zu): descriptors on its index %u", first,
               first + b.count(), m.index);
      FZ_CHECK(j == 0 || m.index > b.fds[j - 1].index, "descriptor entries out of index order at %zu", j);
      const int32_t rid = msg_read[first + m.index];
      FZ_CHECK(rid >= 0, "message #%zu carries %zu descriptors, none expected", first + m.index, m.fds.size());
      const FdRead& r = reads[static_cast<size_t>(rid)];
      FZ_CHECK(m.fds.size() == r.nums.size(), "message #%zu carries %zu descriptors, its read [%zu, %zu] brought %zu",
               first + m.index, m.fds.size(), r.start, r.last, r.nums.size());
      for (size_t k = 0; k < m.fds.size(); ++k) {
        FZ_CHECK(m.fds[k].get() == r.nums[k], "message #%zu descriptor %zu is %d, its read brought %d", first + m.index,
                 k, m.fds[k].get(), r.nums[k]);
        FZ_CHECK(fd_open(r.nums[k]), "message #%zu descriptor %d closed before its batch", first + m.index, r.nums[k]);
      }
    }
    FZ_CHECK(seen == expected, "batch of messages [%zu, %zu): %zu messages carry descriptors, expected %zu", first,
             first + b.count(), seen, expected);
  };
  // A batch's descriptors are closed with it.
  auto destroy_batch = [&](Batch&& b) {
    std::vector<int> nums;
    for (const MessageFds& m : b.fds)
      for (const UniqueFd& fd : m.fds) nums.push_back(fd.get());
    { Batch dead = std::move(b); }
    for (int fd : nums) expect_closed(fd, "its batch was destroyed");
  };
  {
    FrameAssembler a(cfg);
    size_t fed = 0, next = 0, step = 0;
    size_t done = 0;  // reference messages whose last byte was committed
    bool ok = true;
    uint64_t budget = kNoBudget;  // of the last commit()/resume()
    std::deque<size_t> pending;   // reads whose descriptors the assembler has not decided about
    auto drain = [&] {
      while (a.has_batch()) {
        Batch b = a.take_batch();
        const size_t first = next;
        next = check_batch(b, ref, s, next, limit, budget);
        check_fds(b, first);
        trace_fd_msgs += b.fds.size();
        ++trace_batches;
        if (keep_all || (rng.next() & 7) == 0) {
          kept.push_back({std::move(b), first});
        } else {
          destroy_batch(std::move(b));
        }
      }
    };
    // 1 byte to ~1 MiB, small values most often.
    auto random_budget = [&] {
      const uint64_t r = rng.next();
      return 1 + (r >> 8) % (uint64_t{1} << (r % 21));
    };
    while (fed < n && ok) {
      ++step;
      if (eagain && (rng.next() & 3) == 0) {
        // The read found nothing (EAGAIN): the span is asked for and unused.
        auto [p0, c0] = a.prepare_read();
        FZ_CHECK(p0 != nullptr && c0 > 0, "step %zu: empty span after EAGAIN", step);
      }
      auto [ptr, cap] = a.prepare_read();
      FZ_CHECK(ptr != nullptr, SPAN_CTX);
      FZ_CHECK(cap > 0, SPAN_CTX);  // "the span is never empty"
      size_t want;
      switch (mode) {
        case 0: {
          const uint8_t t = h[6 + step % 6];
          want = t == 0 ? SIZE_MAX : t < 128 ? t : size_t{t - 127u} * 64;
          break;
        }
        case 1: want = 1; break;
        case 2: want = SIZE_MAX; break;
        default: {
          const uint64_t r = rng.next();
          want = 1 + (r >> 8) % (size_t{1} << (r % 15));
        }
      }
      size_t chunk = n - fed;
      if (want < chunk) chunk = want;
      if (cap < chunk) chunk = cap;
      // Does this read bring descriptors?
      bool carry = false;
      if (fd_select != 0 && fds_made < kMaxFds) {
        switch (fd_select) {
          case 1: carry = (fd_rng.next() & 255) <= fd_param; break;
          case 2: carry = (fd_param >> (step % 8)) & 1; break;
          default: carry = true;
        }
        size_t idx, end;
        const bool starts = model.last_start_in(fed, fed + chunk, &idx, &end);
        if (fd_strict && !starts) carry = false;
        if (carry && fd_align && starts) chunk = std::min(end - fed, cap);
      }
      std::vector<UniqueFd> fds;
      if (carry) {
        static const size_t kCount[4] = {1, 2, 4, 0};
        size_t k = fd_per_read == 3 ? 1 + fd_rng.next() % 4 : kCount[fd_per_read];
        if (k > kMaxFds - fds_made) k = kMaxFds - fds_made;
        FdRead r;
        r.start = fed;
        r.last = fed + chunk - 1;
        for (size_t i = 0; i < k; ++i) {
          const int fd = ::fcntl(null_fd(), F_DUPFD_CLOEXEC, 0);
          FZ_CHECK(fd >= 0, "dup failed: errno %d", errno);
          // The kernel gives the lowest free number: one that should be open
          // means someone closed it behind its owner's back.
          FZ_CHECK(std::find(open_fds.begin(), open_fds.end(), fd) == open_fds.end(),
                   "step %zu: a new descriptor got number %d, which should still be open", step, fd);
          open_fds.push_back(fd);
          fds.emplace_back(fd);
          r.nums.push_back(fd);
        }
        fds_made += k;
        r.frame = model.frame_of(r.last);
        r.valid = model.frame_start(r.frame) >= r.start;
        r.resolve_at = model.resolve_at(r.frame);
        // Descriptors where no frame starts fail the read that brought them
        // (the frame holding its last byte began before it): at once, unless
        // a bad prefix in the tail is decided first (the framing error wins).
        if (!r.valid && !(r.frame == ref.msgs.size() && ref.err != FrameError::kNone && ref.err_decided <= r.last + 1))
          r.resolve_at = std::min(r.resolve_at, r.last + 1);
        if (r.valid && r.frame < ref.msgs.size()) msg_read[r.frame] = static_cast<int32_t>(reads.size());
        pending.push_back(reads.size());
        reads.push_back(std::move(r));
      }
      std::memcpy(ptr, s + fed, chunk);
      if (scribble) {
        // A read may leave the rest of the span in any state: nothing handed
        // out may live there, and the span must be writable to its end.
        const size_t extra = cap - chunk < 32 ? cap - chunk : 32;
        std::memset(ptr + chunk, 0xA5, extra);
        if (cap > chunk) ptr[cap - 1] = 0x5A;
      }
      fed += chunk;
      std::vector<UniqueFd>* fdp = carry ? &fds : nullptr;
      if (budgets) {
        budget = random_budget();
        ok = a.commit(chunk, budget, fdp);
        // As the engine: what was cut is handed over; once there is budget
        // again, the backlog is resumed until it is gone.
        while (ok && a.backlogged()) {
          drain();
          budget = random_budget();
          ok = a.resume(budget);
        }
      } else {
        ok = a.commit(chunk, kNoBudget, fdp);
      }
      FZ_CHECK(fds.empty(), "step %zu: commit() left %zu of the read's descriptors with the caller", step, fds.size());
      while (done < ref.msgs.size() && ref.msgs[done].end() <= fed) ++done;

      // What the assembler must have decided by now. Descriptors first, in
      // the order their reads came: each set is tied (valid) or fails the
      // connection (not) once the frame holding the read's last byte is
      // decided (resolve_at()); a frame error is found once decidable (it
      // lies after every frame decided before it); and at most one read's
      // descriptors may wait for the rest of their frame.
      FrameError want_err = FrameError::kNone;
      size_t want_delivered = done;
      while (!pending.empty()) {
        const FdRead& r = reads[pending.front()];
        if (fed < r.resolve_at) break;
        if (!r.valid) {
          want_err = FrameError::kUnexpectedFds;
          want_delivered = r.frame;  // not the frame it failed on
          break;
        }
        pending.pop_front();
      }
      if (want_err == FrameError::kNone && ref.err != FrameError::kNone && fed >= ref.err_decided) {
        want_err = ref.err;
        want_delivered = ref.msgs.size();
      }
      if (want_err == FrameError::kNone && pending.size() > 1) want_err = FrameError::kUnexpectedFds;
      uint64_t want_refused = 0;
      // Refused: the reads still waiting, and those already tied to a frame
      // that will now never be cut (the frame the failure stops at: a large
      // frame's first read, or a read tied just before a later one failed).
      std::vector<size_t> refused_reads;
      if (want_err == FrameError::kUnexpectedFds) {
        refused_reads.assign(pending.begin(), pending.end());
        for (size_t k = 0; k < reads.size(); ++k)
          if (reads[k].valid && reads[k].frame >= want_delivered &&
              std::find(pending.begin(), pending.end(), k) == pending.end())
            refused_reads.push_back(k);
        for (size_t p : refused_reads) want_refused += reads[p].nums.size();
      }

      if (!ok) {
        trace_err = a.error();
        trace_refused = a.refused_fds();
        FZ_CHECK(want_err != FrameError::kNone, FAIL_CTX);
        FZ_CHECK(a.error() == want_err, "commit failed at fed=%zu with error %d, expected %d (reference error %d decided at %zu)",
                 fed, static_cast<int>(a.error()), static_cast<int>(want_err), static_cast<int>(ref.err), ref.err_decided);
        if (want_err == FrameError::kUnexpectedFds) {
          FZ_CHECK(a.refused_fds() == want_refused, "refused_fds %llu, expected %llu (%zu reads waiting)",
                   (unsigned long long)a.refused_fds(), (unsigned long long)want_refused, pending.size());
          for (size_t p : refused_reads)
            for (int fd : reads[p].nums) expect_closed(fd, "being refused");
          pending.clear();
        } else {
          FZ_CHECK(a.refused_fds() == 0, "refused_fds %llu after a framing error", (unsigned long long)a.refused_fds());
          FZ_CHECK(fed >= ref.err_decided, FAIL_CTX);         // not before the bytes prove it
          FZ_CHECK(fed - chunk < ref.err_decided, FAIL_CTX);  // and not later either
          if (ref.err == FrameError::kTooLarge) {
            const uint64_t el = a.error_length();
            FZ_CHECK(el > limit, "error_length %llu, limit %llu", (unsigned long long)el, (unsigned long long)limit);
            FZ_CHECK(el == lower_bound(s + ref.err_frame, fed - ref.err_frame), "error_length %llu, limit %llu", (unsigned long long)el, (unsigned long long)limit);
          }
        }
        FZ_CHECK(!a.commit(0), FAIL_CTX);  // an error is final
        drain();
        // every message before the error (the one descriptors failed on excluded)
        FZ_CHECK(next == want_delivered, "after error %d: %zu messages delivered, expected %zu of %zu",
                 static_cast<int>(want_err), next, want_delivered, ref.msgs.size());
        break;
      }
      FZ_CHECK(want_err == FrameError::kNone, "commit ok at fed=%zu, expected error %d (refusing %llu descriptors; reference error %d decided at %zu)",
               fed, static_cast<int>(want_err), (unsigned long long)want_refused, static_cast<int>(ref.err), ref.err_decided);
      FZ_CHECK(a.error() == FrameError::kNone, OK_CTX);
      FZ_CHECK((a.large_reserved() > 0) == model.in_large(fed, done),
               "fed %zu: large_reserved %zu, model says %s (frame #%zu, threshold %zu)", fed, a.large_reserved(),
               model.in_large(fed, done) ? "own buffer" : "in the slab", done, model.thr);
      if (lazy_drain && !budgets && (rng.next() & 1)) continue;
      drain();
      // Every frame whose last byte was committed has been handed out.
      FZ_CHECK(next == done, "fed %zu: %zu messages delivered, %zu complete", fed, next, done);
    }
    if (ok) {
      drain();
      FZ_CHECK(ref.err == FrameError::kNone, END_CTX);
      FZ_CHECK(next == ref.msgs.size(), END_CTX);
      // Bytes consumed: whole frames plus the partial frame buffered = all fed.
      FZ_CHECK(a.partial_bytes() == n - ref.consumed, END_CTX);
      FZ_CHECK(a.at_frame_boundary() == (ref.consumed == n), END_CTX);
      FZ_CHECK(a.refused_fds() == 0, "refused_fds %llu without an error", (unsigned long long)a.refused_fds());
    }
  }
  // Kept batches outlived the assembler, later reads and slab recycling:
  // their bytes must be untouched, their descriptors open.
  std::vector<int> in_kept;
  for (const Kept& k : kept) {
    check_batch(k.batch, ref, s, k.first_msg, limit);
    check_fds(k.batch, k.first_msg);
    for (const MessageFds& m : k.batch.fds)
      for (const UniqueFd& fd : m.fds) in_kept.push_back(fd.get());
  }
  // The assembler is gone: whatever it held (a partial frame's, a large
  // frame's) is closed.
  for (size_t i = 0; i < open_fds.size();) {
    if (std::find(in_kept.begin(), in_kept.end(), open_fds[i]) != in_kept.end()) {
      ++i;
      continue;
    }
    FZ_CHECK(!fd_open(open_fds[i]), "descriptor %d still open after the assembler was destroyed", open_fds[i]);
    open_fds.erase(open_fds.begin() + static_cast<std::ptrdiff_t>(i));
  }
  for (Kept& k : kept) destroy_batch(std::move(k.batch));
  kept.clear();
  FZ_CHECK(open_fds.empty(), "%zu descriptors unaccounted for", open_fds.size());
  if (fd_select != 0) {
    const size_t open_after = count_open_fds();
    FZ_CHECK(open_after == open_before, "open descriptors: %zu before, %zu after (%zu made)", open_before, open_after,
             fds_made);
    FZ_CHECK(fd_open(null_fd()), "the /dev/null descriptor was closed");
  }
  if (trace) {
    size_t valid = 0;
    for (const FdRead& r : reads) valid += r.valid;
    std::fprintf(stderr,
                 "trace: %zu bytes, %zu messages (ref error %d), threshold %zu; %zu batches; %zu reads with %zu "
                 "descriptors (%zu valid), %zu messages delivered with some; error %d, refused %llu\n",
                 n, ref.msgs.size(), static_cast<int>(ref.err), model.thr, trace_batches, reads.size(), fds_made, valid,
                 trace_fd_msgs, static_cast<int>(trace_err), (unsigned long long)trace_refused);
  }
  if (pool) pool->unref();
  FZ_CHECK(Slab::live() == slabs_before, "live slabs %lld, before %lld", (long long)Slab::live(), (long long)slabs_before);  // every slab freed (pool included)
  return 0;
}
