// libFuzzer target for udsipc::FrameAssembler (native/core/frame_assembler.h).
//
// Input layout (see native/fuzz/README.md):
//
//   bytes 0..11   configuration header (zero-padded when the input is shorter)
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
//   bytes 12..    the byte stream a peer sent on one connection
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
// Budgets (header byte 1 == 254): every commit() gets a random budget, and
// while the assembler is backlogged() it is resume()d with fresh random
// budgets until it is not, as the reader engine does once acks come back.
// Then also: no batch of two or more messages is charged (Batch::charge())
// budget + its last message or more, and after the resumes every frame
// whose last byte was committed has been handed out, as without budgets.
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
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
    if (n - pos - i < len) break;  // payload incomplete
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
constexpr size_t kHeader = 12;
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

  const int64_t slabs_before = Slab::live();
  SlabPool* pool = nullptr;
  if (use_pool) {
    pool = SlabPool::create(pool_mismatch ? cfg.slab_size + 64 : cfg.slab_size, h[6] & 3);
    cfg.pool = pool;
  }

  const RefResult ref = reference_decode(s, n, limit);
  std::vector<Kept> kept;
  {
    FrameAssembler a(cfg);
    size_t fed = 0, next = 0, step = 0;
    bool ok = true;
    uint64_t budget = kNoBudget;  // of the last commit()/resume()
    auto drain = [&] {
      while (a.has_batch()) {
        Batch b = a.take_batch();
        const size_t first = next;
        next = check_batch(b, ref, s, next, limit, budget);
        if (keep_all || (rng.next() & 7) == 0) kept.push_back({std::move(b), first});
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
      std::memcpy(ptr, s + fed, chunk);
      if (scribble) {
        // A read may leave the rest of the span in any state: nothing handed
        // out may live there, and the span must be writable to its end.
        const size_t extra = cap - chunk < 32 ? cap - chunk : 32;
        std::memset(ptr + chunk, 0xA5, extra);
        if (cap > chunk) ptr[cap - 1] = 0x5A;
      }
      fed += chunk;
      if (budgets) {
        budget = random_budget();
        ok = a.commit(chunk, budget);
        // As the engine: what was cut is handed over; once there is budget
        // again, the backlog is resumed until it is gone.
        while (ok && a.backlogged()) {
          drain();
          budget = random_budget();
          ok = a.resume(budget);
        }
      } else {
        ok = a.commit(chunk);
      }
      if (!ok) {
        FZ_CHECK(ref.err != FrameError::kNone, FAIL_CTX);
        FZ_CHECK(a.error() == ref.err, FAIL_CTX);
        FZ_CHECK(fed >= ref.err_decided, FAIL_CTX);         // not before the bytes prove it
        FZ_CHECK(fed - chunk < ref.err_decided, FAIL_CTX);  // and not later either
        if (ref.err == FrameError::kTooLarge) {
          const uint64_t el = a.error_length();
          FZ_CHECK(el > limit, "error_length %llu, limit %llu", (unsigned long long)el, (unsigned long long)limit);
          FZ_CHECK(el == lower_bound(s + ref.err_frame, fed - ref.err_frame), "error_length %llu, limit %llu", (unsigned long long)el, (unsigned long long)limit);
        }
        FZ_CHECK(!a.commit(0), FAIL_CTX);  // an error is final
        drain();
        FZ_CHECK(next == ref.msgs.size(), "after error: %zu of %zu messages delivered", next, ref.msgs.size());  // every message before the error
        break;
      }
      FZ_CHECK(ref.err == FrameError::kNone || fed < ref.err_decided, OK_CTX);
      FZ_CHECK(a.error() == FrameError::kNone, OK_CTX);
      if (lazy_drain && !budgets && (rng.next() & 1)) continue;
      drain();
      // Every frame whose last byte was committed has been handed out.
      size_t due = next;
      while (due < ref.msgs.size() && ref.msgs[due].end() <= fed) ++due;
      FZ_CHECK(next == due, "fed %zu: %zu messages delivered, %zu complete", fed, next, due);
    }
    if (ok) {
      drain();
      FZ_CHECK(ref.err == FrameError::kNone, END_CTX);
      FZ_CHECK(next == ref.msgs.size(), END_CTX);
      // Bytes consumed: whole frames plus the partial frame buffered = all fed.
      FZ_CHECK(a.partial_bytes() == n - ref.consumed, END_CTX);
      FZ_CHECK(a.at_frame_boundary() == (ref.consumed == n), END_CTX);
    }
  }
  // Kept batches outlived the assembler, later reads and slab recycling:
  // their bytes must be untouched.
  for (const Kept& k : kept) check_batch(k.batch, ref, s, k.first_msg, limit);
  kept.clear();
  if (pool) pool->unref();
  FZ_CHECK(Slab::live() == slabs_before, "live slabs %lld, before %lld", (long long)Slab::live(), (long long)slabs_before);  // every slab freed (pool included)
  return 0;
}
