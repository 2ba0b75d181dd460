#include <cstring>
#include <random>

#include "check.h"
#include "core/frame_assembler.h"

using namespace udsipc;

namespace {

std::vector<uint8_t> frames_of(const std::vector<std::vector<uint8_t>>& msgs) {
  std::vector<uint8_t> out;
  for (auto& m : msgs) {
    uint8_t h[10];
    size_t n = uvarint_encode(m.size(), h);
    out.insert(out.end(), h, h + n);
    out.insert(out.end(), m.begin(), m.end());
  }
  return out;
}

std::vector<std::vector<uint8_t>> mixed_messages(uint32_t seed, int count, size_t max_size) {
  std::mt19937 rng(seed);
  std::vector<std::vector<uint8_t>> msgs;
  for (int i = 0; i < count; ++i) {
    size_t len;
    switch (rng() % 5) {
      case 0: len = 0; break;
      case 1: len = rng() % 128; break;
      case 2: len = 128 + rng() % 20000; break;
      case 3: len = rng() % (max_size + 1); break;
      default: len = rng() % 64;
    }
    std::vector<uint8_t> m(len);
    for (auto& b : m) b = static_cast<uint8_t>(rng());
    msgs.push_back(std::move(m));
  }
  return msgs;
}

// Feeds `stream` to an assembler in chunks chosen by `next_chunk` and collects
// the messages. Returns false on a framing error.
template <typename F>
bool feed(FrameAssembler& a, const std::vector<uint8_t>& stream, F next_chunk,
          std::vector<std::vector<uint8_t>>& out, std::vector<Batch>* keep = nullptr) {
  size_t pos = 0;
  bool ok = true;
  while (pos < stream.size() && ok) {
    auto [ptr, cap] = a.prepare_read();
    CHECK(cap > 0);
    size_t n = std::min({cap, stream.size() - pos, next_chunk()});
    std::memcpy(ptr, stream.data() + pos, n);
    pos += n;
    ok = a.commit(n);
    while (a.has_batch()) {
      Batch b = a.take_batch();
      CHECK(b.offsets.size() % 2 == 0);
      for (size_t i = 0; i < b.count(); ++i) {
        uint32_t s = b.offsets[2 * i], e = b.offsets[2 * i + 1];
        CHECK(s <= e && e <= b.length);
        out.emplace_back(b.base + s, b.base + e);
      }
      if (keep) keep->push_back(std::move(b));
    }
  }
  return ok;
}

AssemblerConfig small_cfg() {
  AssemblerConfig c;
  c.slab_size = 64 * 1024;
  c.min_read = 4 * 1024;
  c.large_threshold = 16 * 1024;
  c.max_message_size = 1 << 20;
  return c;
}

}  // namespace

TEST(split_at_every_byte_boundary) {
  auto msgs = mixed_messages(1, 40, 3000);
  auto stream = frames_of(msgs);
  for (size_t cut = 1; cut < stream.size(); cut += 7) {
    FrameAssembler a(small_cfg());
    std::vector<std::vector<uint8_t>> got;
    bool first = true;
    size_t c = cut;
    CHECK(feed(a, stream, [&] { size_t r = first ? c : SIZE_MAX; first = false; return r; }, got));
    CHECK(got == msgs);
    CHECK(a.at_frame_boundary());
  }
  // One byte at a time.
  FrameAssembler a(small_cfg());
  std::vector<std::vector<uint8_t>> got;
  CHECK(feed(a, stream, [] { return size_t{1}; }, got));
  CHECK(got == msgs);
}

TEST(random_chunks_large_and_small_retained) {
  std::mt19937 rng(7);
  auto msgs = mixed_messages(2, 600, 200000);
  auto stream = frames_of(msgs);
  FrameAssembler a(small_cfg());
  std::vector<std::vector<uint8_t>> got;
  std::vector<Batch> keep;  // batches stay valid after later reads
  CHECK(feed(a, stream, [&] { return size_t{1} + rng() % 70000; }, got, &keep));
  CHECK(got == msgs);
  std::vector<std::vector<uint8_t>> again;
  for (auto& b : keep)
    for (size_t i = 0; i < b.count(); ++i) again.emplace_back(b.base + b.offsets[2 * i], b.base + b.offsets[2 * i + 1]);
  CHECK(again == msgs);
}

TEST(zero_length_frames_delivered) {
  std::vector<std::vector<uint8_t>> msgs(1000);
  auto stream = frames_of(msgs);
  FrameAssembler a(small_cfg());
  std::vector<std::vector<uint8_t>> got;
  CHECK(feed(a, stream, [] { return SIZE_MAX; }, got));
  CHECK_EQ(got.size(), size_t{1000});
}

TEST(too_large_reported_from_prefix) {
  AssemblerConfig c = small_cfg();
  c.max_message_size = 1000;
  FrameAssembler a(c);
  std::vector<uint8_t> stream = frames_of({{1, 2, 3}});
  stream.push_back(0xe9);  // 1001, incomplete prefix is enough
  stream.push_back(0x07);
  std::vector<std::vector<uint8_t>> got;
  CHECK(!feed(a, stream, [] { return SIZE_MAX; }, got));
  CHECK(a.error() == FrameError::kTooLarge);
  CHECK_EQ(got.size(), size_t{1});  // the message before the error survives
  // exactly the limit is fine
  FrameAssembler b(c);
  std::vector<std::vector<uint8_t>> one = {std::vector<uint8_t>(1000, 9)};
  got.clear();
  CHECK(feed(b, frames_of(one), [] { return SIZE_MAX; }, got));
  CHECK(got == one);
}

TEST(overflow_prefixes) {
  for (auto prefix : {std::vector<uint8_t>(10, 0x80), std::vector<uint8_t>{0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02}}) {
    AssemblerConfig c = small_cfg();
    c.max_message_size = UINT64_MAX;
    FrameAssembler a(c);
    std::vector<std::vector<uint8_t>> got;
    CHECK(!feed(a, prefix, [] { return size_t{1}; }, got));
    CHECK(a.error() == FrameError::kInvalid);
  }
}

TEST(truncated_frame_detected) {
  auto stream = frames_of({std::vector<uint8_t>(100, 1)});
  stream.resize(20);
  FrameAssembler a(small_cfg());
  std::vector<std::vector<uint8_t>> got;
  CHECK(feed(a, stream, [] { return SIZE_MAX; }, got));
  CHECK(got.empty());
  CHECK(!a.at_frame_boundary());
  CHECK_EQ(a.partial_bytes(), size_t{20});
}

TEST(slabs_freed) {
  const int64_t before = Slab::live();
  {
    auto msgs = mixed_messages(3, 300, 100000);
    FrameAssembler a(small_cfg());
    std::vector<std::vector<uint8_t>> got;
    std::vector<Batch> keep;
    CHECK(feed(a, frames_of(msgs), [] { return size_t{5000}; }, got, &keep));
    CHECK(Slab::live() > before);
  }
  CHECK_EQ(Slab::live(), before);
}

TEST(pooled_slabs_reused_and_freed_after_owner_goes) {
  const int64_t before = Slab::live();
  AssemblerConfig c = small_cfg();
  SlabPool* pool = SlabPool::create(c.slab_size, 4);
  c.pool = pool;
  auto msgs = mixed_messages(4, 400, 3000);
  auto stream = frames_of(msgs);
  std::vector<Batch> keep;
  {
    FrameAssembler a(c);
    std::vector<std::vector<uint8_t>> got;
    CHECK(feed(a, stream, [] { return size_t{3000}; }, got, &keep));
    CHECK(got == msgs);
    const size_t slabs_in_use = static_cast<size_t>(Slab::live() - before);
    CHECK(slabs_in_use > 1);
    keep.clear();  // views gone: slabs go back to the pool (up to 4)
    CHECK_EQ(pool->free_count(), std::min<size_t>(4, slabs_in_use - 1));
    // Reading on reuses them: no new slab while the pool has some.
    const int64_t live_now = Slab::live();
    got.clear();
    CHECK(feed(a, stream, [] { return size_t{3000}; }, got, &keep));
    CHECK(got == msgs);
    CHECK(Slab::live() - live_now <= static_cast<int64_t>(slabs_in_use));
  }
  pool->unref();  // the owner goes; batches still view pooled slabs
  CHECK(Slab::live() > before);
  std::vector<uint8_t> first(keep.front().base + keep.front().offsets[0], keep.front().base + keep.front().offsets[1]);
  CHECK(first == msgs.front());
  keep.clear();  // last views gone: pool and every slab freed
  CHECK_EQ(Slab::live(), before);
}

// Found by fuzzing with extreme settings: a threshold near SIZE_MAX used to
// overflow the clamp, so a frame bigger than a slab got an empty read span.
TEST(huge_large_threshold_is_clamped) {
  AssemblerConfig c;
  c.slab_size = 16;
  c.min_read = 1;
  c.large_threshold = SIZE_MAX;
  c.max_message_size = 1000;
  FrameAssembler a(c);
  std::vector<std::vector<uint8_t>> msgs = {std::vector<uint8_t>(92, 3)};
  std::vector<std::vector<uint8_t>> got;
  CHECK(feed(a, frames_of(msgs), [] { return SIZE_MAX; }, got));
  CHECK(got == msgs);
}

// A "no limit" setting is clamped to what a batch can describe (32-bit
// offsets): a peer announcing 2^64-1 is refused, never allocated for.
TEST(unbounded_limit_is_clamped) {
  AssemblerConfig c = small_cfg();
  c.max_message_size = UINT64_MAX;
  FrameAssembler a(c);
  std::vector<uint8_t> stream(9, 0xff);
  stream.push_back(0x01);
  std::vector<std::vector<uint8_t>> got;
  CHECK(!feed(a, stream, [] { return SIZE_MAX; }, got));
  CHECK(a.error() == FrameError::kTooLarge);
}

// Offsets tables given back by the consumer are reused by later batches
// (the same memory, no fresh vector per batch); the pool keeps only a few,
// and none too large or without capacity.
TEST(offsets_tables_recycled) {
  OffsetsPool pool(2, 4096);
  AssemblerConfig c = small_cfg();
  c.offsets_pool = &pool;
  FrameAssembler a(c);
  std::vector<std::vector<uint8_t>> msgs(3000, std::vector<uint8_t>(10));
  for (size_t i = 0; i < msgs.size(); ++i) msgs[i][0] = static_cast<uint8_t>(i);
  const auto stream = frames_of(msgs);
  std::vector<std::vector<uint8_t>> got;
  std::vector<const uint32_t*> given_back;
  size_t batches = 0, reused = 0, taken = 0;
  for (size_t pos = 0; pos < stream.size();) {
    auto [ptr, cap] = a.prepare_read();
    const size_t n = std::min({cap, stream.size() - pos, size_t{1100}});
    std::memcpy(ptr, stream.data() + pos, n);
    pos += n;
    CHECK(a.commit(n));
    while (a.has_batch()) {
      Batch b = a.take_batch();
      ++batches;
      for (const uint32_t* p : given_back) reused += p == b.offsets.data();
      for (size_t i = 0; i < b.count(); ++i) got.emplace_back(b.base + b.offsets[2 * i], b.base + b.offsets[2 * i + 1]);
      given_back.push_back(b.offsets.data());
      taken += pool.free_count() == 0;  // the table given back last time is in use again
      pool.put(std::move(b.offsets));
      CHECK(pool.free_count() <= 2);
    }
  }
  CHECK(got == msgs);
  CHECK(batches > 10);
  CHECK(reused > batches / 2);
  CHECK(taken > batches / 2);
  OffsetsPool small(4, 16);
  std::vector<uint32_t> big;
  big.reserve(17);
  small.put(std::move(big));
  small.put(std::vector<uint32_t>{});
  CHECK_EQ(small.free_count(), size_t{0});
  std::vector<uint32_t> ok{1, 2, 3};
  small.put(std::move(ok));
  CHECK_EQ(small.free_count(), size_t{1});
  const std::vector<uint32_t> again = small.get();
  CHECK(again.empty() && again.capacity() >= 3);
  // By default a table above 64 Ki entries (a burst of tiny messages) is
  // freed, not kept: the pool pins at most what close_batch() reserves.
  OffsetsPool dflt;
  std::vector<uint32_t> burst;
  burst.reserve(64 * 1024 + 1);
  dflt.put(std::move(burst));
  CHECK_EQ(dflt.free_count(), size_t{0});
  std::vector<uint32_t> usual;
  usual.reserve(64 * 1024);
  dflt.put(std::move(usual));
  CHECK_EQ(dflt.free_count(), size_t{1});
}

// Issue 16 item 4: a budget (Batch::charge(), as the engine's
// max_pending_bytes counts it) stops the cutting of frames; the rest waits,
// backlogged, until resume() gets a new budget. Whatever the budgets and
// read sizes, every message arrives, in order, and no batch is charged more
// than its budget plus one message.
TEST(budget_stops_cutting_frames_and_resume_goes_on) {
  std::mt19937 rng(11);
  std::vector<std::vector<uint8_t>> msgs = mixed_messages(5, 400, 40000);
  for (int i = 0; i < 3000; ++i) msgs.insert(msgs.begin() + rng() % msgs.size(), std::vector<uint8_t>{});  // empty frames
  const auto stream = frames_of(msgs);
  for (const uint64_t budget : {uint64_t{1}, uint64_t{1500}, uint64_t{5000}, uint64_t{70000}}) {
    FrameAssembler a(small_cfg());
    std::vector<std::vector<uint8_t>> got;
    size_t backlogs = 0;
    const auto take = [&] {
      while (a.has_batch()) {
        Batch b = a.take_batch();
        size_t biggest = 0;
        for (size_t i = 0; i < b.count(); ++i) {
          got.emplace_back(b.base + b.offsets[2 * i], b.base + b.offsets[2 * i + 1]);
          biggest = std::max<size_t>(biggest, b.offsets[2 * i + 1] - b.offsets[2 * i] + kMaxVarintLen + 8);
        }
        // Large frames (own buffer) are one message, charged as a whole.
        if (b.count() > 1) CHECK(b.charge() < budget + biggest || b.charge() <= kBatchCharge + biggest);
      }
    };
    for (size_t pos = 0; pos < stream.size();) {
      auto [ptr, cap] = a.prepare_read();
      const size_t n = std::min({cap, stream.size() - pos, size_t{1} + rng() % 30000});
      std::memcpy(ptr, stream.data() + pos, n);
      pos += n;
      CHECK(a.commit(n, budget));
      take();
      while (a.backlogged()) {
        ++backlogs;
        CHECK(a.resume(budget));
        take();
      }
    }
    CHECK(got == msgs);
    CHECK(a.at_frame_boundary());
    if (budget < 70000) CHECK(backlogs > 0);
  }
}

// One 64 KiB read of empty frames under a 4 KiB budget: ~340 messages per
// batch, not 64 Ki (512 KiB of offsets).
TEST(empty_frames_are_charged_their_offsets) {
  FrameAssembler a(small_cfg());
  auto [ptr, cap] = a.prepare_read();
  CHECK(cap >= 60000);
  std::memset(ptr, 0, 60000);
  CHECK(a.commit(60000, 4096));
  CHECK(a.has_batch());
  Batch b = a.take_batch();
  CHECK_EQ(b.charge(), b.length + b.count() * 8 + kBatchCharge);
  CHECK(b.charge() >= 4096 && b.charge() < 4096 + 9);
  CHECK(!a.has_batch());
  CHECK(a.backlogged());
  CHECK(!a.at_frame_boundary());
  size_t frames = b.count();
  while (a.backlogged()) {
    CHECK(a.resume(4096));
    while (a.has_batch()) frames += a.take_batch().count();
  }
  CHECK_EQ(frames, size_t{60000});
  CHECK(a.at_frame_boundary());
}

// Issue 16 weak spot: a prefix announcing a large frame reserves kLargeChunk
// (or twice what came with it), not the announced length; the buffer grows as
// bytes arrive, never beyond twice what arrived, and ends exactly the frame's
// size with the bytes intact.
TEST(large_frame_buffer_grows_as_bytes_arrive) {
  AssemblerConfig c = small_cfg();
  c.max_message_size = 10u << 20;
  FrameAssembler a(c);
  std::vector<uint8_t> payload(10u << 20);
  std::mt19937 rng(3);
  for (auto& x : payload) x = static_cast<uint8_t>(rng());
  uint8_t h[10];
  const size_t hn = uvarint_encode(payload.size(), h);
  auto [ptr, cap] = a.prepare_read();
  std::memcpy(ptr, h, hn);
  CHECK(a.commit(hn));
  CHECK_EQ(a.large_reserved(), kLargeChunk);  // not 10 MiB
  size_t got = 0, most = 0;
  while (got < payload.size()) {
    auto [p, n] = a.prepare_read();
    CHECK(n > 0);
    CHECK(a.large_reserved() <= std::max(2 * got, kLargeChunk));
    most = std::max(most, a.large_reserved());
    const size_t k = std::min({n, payload.size() - got, size_t{1} + rng() % 300000});
    std::memcpy(p, payload.data() + got, k);
    got += k;
    CHECK(a.commit(k));
  }
  CHECK_EQ(most, payload.size());
  CHECK(a.has_batch());
  Batch b = a.take_batch();
  CHECK_EQ(b.count(), size_t{1});
  CHECK_EQ(b.length, payload.size());
  CHECK(std::memcmp(b.base, payload.data(), payload.size()) == 0);
  CHECK_EQ(a.large_reserved(), size_t{0});
  // Part of the frame in the first read: twice that is reserved.
  FrameAssembler a2(c);
  auto [p2, c2] = a2.prepare_read();
  std::memcpy(p2, h, hn);
  std::memcpy(p2 + hn, payload.data(), 40000);
  CHECK(a2.commit(hn + 40000));
  CHECK_EQ(a2.large_reserved(), size_t{80000});
}

TEST_MAIN()
