// Descriptors with messages: the assembler's rule (descriptors belong to the
// last frame that starts in the read that brought them) and the writer's
// FdOutbox plan (a frame with descriptors goes alone, with them, once per
// connection).
#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <map>
#include <random>
#include <string>

#include "check.h"
#include "core/fd_outbox.h"
#include "core/frame_assembler.h"

using namespace udsipc;

namespace {

AssemblerConfig small_cfg() {
  AssemblerConfig c;
  c.slab_size = 64 * 1024;
  c.min_read = 4 * 1024;
  c.large_threshold = 16 * 1024;
  c.max_message_size = 1 << 20;
  return c;
}

UniqueFd dev_null() { return UniqueFd(::open("/dev/null", O_RDONLY | O_CLOEXEC)); }

int open_fds() {
  int n = 0;
  for (int fd = 0; fd < 4096; ++fd)
    if (::fcntl(fd, F_GETFD) >= 0) ++n;
  return n;
}

struct Frame {
  size_t start, end;  // in the stream, header included
  int nfds;
};

// The stream of `sizes` frames, and where each starts and ends.
std::vector<uint8_t> stream_of(const std::vector<size_t>& sizes, std::vector<Frame>* frames) {
  std::vector<uint8_t> out;
  for (size_t len : sizes) {
    uint8_t h[10];
    const size_t hn = uvarint_encode(len, h);
    frames->push_back({out.size(), out.size() + hn + len, 0});
    out.insert(out.end(), h, h + hn);
    for (size_t i = 0; i < len; ++i) out.push_back(static_cast<uint8_t>(len + i));
  }
  return out;
}

// Feeds `stream` in `reads` ([begin, end) spans, in order, covering it);
// reads in `with_fds` bring `count` descriptors. Collects, per global
// message index, the descriptor numbers tied to it. False on an error.
struct Fed {
  bool ok = true;
  FrameError error = FrameError::kNone;
  size_t messages = 0;
  std::map<size_t, std::vector<int>> fds;  // message index -> descriptors
};

Fed feed(FrameAssembler& a, const std::vector<uint8_t>& stream,
         const std::vector<std::pair<size_t, size_t>>& reads, const std::map<size_t, int>& with_fds,
         std::map<size_t, std::vector<int>>* sent) {
  Fed f;
  for (size_t r = 0; r < reads.size() && f.ok; ++r) {
    size_t pos = reads[r].first;
    const size_t end = reads[r].second;
    bool first = true;
    while (pos < end && f.ok) {
      auto [ptr, cap] = a.prepare_read();
      const size_t n = std::min(cap, end - pos);
      std::memcpy(ptr, stream.data() + pos, n);
      std::vector<UniqueFd> fds;
      // Only a whole read carries descriptors: the test splits no read that has them.
      if (first && n == end - pos && with_fds.count(r)) {
        for (int i = 0; i < with_fds.at(r); ++i) {
          fds.push_back(dev_null());
          (*sent)[r].push_back(fds.back().get());
        }
      }
      first = false;
      pos += n;
      f.ok = a.commit(n, kNoBudget, &fds);
      while (a.has_batch()) {
        Batch b = a.take_batch();
        for (MessageFds& m : b.fds) {
          CHECK(m.index < b.count());
          for (UniqueFd& fd : m.fds) f.fds[f.messages + m.index].push_back(fd.get());
        }
        f.messages += b.count();
      }
    }
  }
  f.error = a.error();
  return f;
}

}  // namespace

// Frames with descriptors sent alone (as a writer does), the stream cut
// into reads the way the kernel may: fd-less data merged before such a
// send, never after it; a frame with descriptors possibly cut short (a
// partial send) and finished by later reads.
TEST(descriptors_tie_to_the_last_frame_starting_in_their_read) {
  std::mt19937 rng(11);
  const int before = open_fds();
  for (int round = 0; round < 200; ++round) {
    std::vector<size_t> sizes;
    const int n = 5 + static_cast<int>(rng() % 40);
    for (int i = 0; i < n; ++i) {
      const int k = static_cast<int>(rng() % 10);
      sizes.push_back(k < 5 ? rng() % 40 : k < 9 ? rng() % 3000 : 16 * 1024 + rng() % 40000);
    }
    std::vector<Frame> frames;
    const std::vector<uint8_t> stream = stream_of(sizes, &frames);
    // Which frames carry descriptors, and the reads.
    std::vector<std::pair<size_t, size_t>> reads;
    std::map<size_t, int> with_fds;     // read index -> descriptor count
    std::map<size_t, size_t> read_msg;  // read index -> message index expected
    size_t pos = 0;
    for (int i = 0; i < n; ++i) {
      if (rng() % 3 != 0) continue;
      // Plain data up to this frame, in random reads.
      while (pos < frames[i].start) {
        const size_t e = std::min(frames[i].start, pos + 1 + rng() % 5000);
        // fd-less data may be merged with the read that brings the descriptors
        if (e == frames[i].start && rng() % 2) break;
        reads.emplace_back(pos, e);
        pos = e;
      }
      // The read with the descriptors ends at the frame's end, or inside it
      // (a partial send; the rest comes in later reads, without them).
      size_t end = frames[i].end;
      if (rng() % 3 == 0 && frames[i].end - frames[i].start > 1)
        end = frames[i].start + 1 + rng() % (frames[i].end - frames[i].start - 1);
      with_fds[reads.size()] = 1 + static_cast<int>(rng() % 3);
      read_msg[reads.size()] = static_cast<size_t>(i);
      reads.emplace_back(pos, end);
      pos = end;
    }
    while (pos < stream.size()) {
      const size_t e = std::min(stream.size(), pos + 1 + rng() % 7000);
      reads.emplace_back(pos, e);
      pos = e;
    }
    FrameAssembler a(small_cfg());
    std::map<size_t, std::vector<int>> sent;
    Fed f = feed(a, stream, reads, with_fds, &sent);
    CHECK(f.ok);
    CHECK_EQ(f.messages, sizes.size());
    std::map<size_t, std::vector<int>> want;
    for (auto& [r, fds] : sent) want[read_msg[r]] = fds;
    CHECK(f.fds == want);
  }
  CHECK_EQ(open_fds(), before);  // every descriptor closed with its batch
}

TEST(descriptors_on_a_read_where_no_frame_starts_are_an_error) {
  const int before = open_fds();
  std::vector<Frame> frames;
  const std::vector<uint8_t> stream = stream_of({100, 2000, 5}, &frames);
  // The second frame's bytes are split; descriptors come with its tail.
  const size_t mid = frames[1].start + 500;
  for (const bool large : {false, true}) {
    AssemblerConfig cfg = small_cfg();
    if (large) cfg.large_threshold = 1000;  // the second frame gets a buffer of its own
    FrameAssembler a(cfg);
    std::map<size_t, std::vector<int>> sent;
    Fed f = feed(a, stream, {{0, mid}, {mid, frames[1].end}, {frames[1].end, stream.size()}}, {{1, 2}}, &sent);
    CHECK(!f.ok);
    CHECK(f.error == FrameError::kUnexpectedFds);
    CHECK_EQ(f.messages, size_t{1});  // the first frame was complete before
  }
  CHECK_EQ(open_fds(), before);
}

// A peer that sends a frame a few bytes at a time, each send with
// descriptors, is stopped at its second such read: descriptors cannot pile up
// in the assembler while the frame never completes.
TEST(descriptors_cannot_pile_up_inside_an_unfinished_frame) {
  const int before = open_fds();
  std::vector<Frame> frames;
  const std::vector<uint8_t> stream = stream_of({5000}, &frames);  // below the large threshold
  std::vector<std::pair<size_t, size_t>> reads;
  std::map<size_t, int> with_fds;
  for (size_t p = 0; p < 100; p += 10) {
    with_fds[reads.size()] = 5;
    reads.emplace_back(p, p + 10);
  }
  FrameAssembler a(small_cfg());
  std::map<size_t, std::vector<int>> sent;
  Fed f = feed(a, stream, reads, with_fds, &sent);
  CHECK(!f.ok);
  CHECK(f.error == FrameError::kUnexpectedFds);
  CHECK_EQ(sent.size(), size_t{2});  // refused at the second read
  CHECK_EQ(open_fds(), before);
}

TEST(descriptors_with_the_first_bytes_of_a_large_frame_stay_with_it) {
  std::vector<Frame> frames;
  const std::vector<uint8_t> stream = stream_of({10, 50000, 7}, &frames);
  FrameAssembler a(small_cfg());
  std::map<size_t, std::vector<int>> sent;
  const size_t cut = frames[1].start + 3000;
  Fed f = feed(a, stream, {{0, cut}, {cut, cut + 20000}, {cut + 20000, stream.size()}}, {{0, 3}}, &sent);
  CHECK(f.ok);
  CHECK_EQ(f.messages, size_t{3});
  CHECK(f.fds.size() == 1 && f.fds.count(1) == 1 && f.fds[1] == sent[0]);
}

// A read brings descriptors with the first bytes of a frame (valid: they
// wait for the rest), and a later read brings more mid-frame: the peer broke
// the rule. Every descriptor of that frame is refused, whether the bad read
// completes the frame, leaves it partial, or the frame has a buffer of its
// own; none is left in a batch (found by the fuzzer: those tied first used to
// stay in the batch being built, on an index past its end).
TEST(descriptors_of_a_frame_refused_later_are_all_refused) {
  const int before = open_fds();
  const auto commit = [](FrameAssembler& a, const std::string& bytes, int nfds) {
    auto [p, cap] = a.prepare_read();
    CHECK(cap >= bytes.size());
    std::memcpy(p, bytes.data(), bytes.size());
    std::vector<UniqueFd> v;
    for (int i = 0; i < nfds; ++i) v.push_back(dev_null());
    return a.commit(bytes.size(), kNoBudget, nfds ? &v : nullptr);
  };
  {
    // Frames "" and "t"; the batch holding "" is not taken before the error.
    FrameAssembler a(small_cfg());
    CHECK(commit(a, std::string("\x00\x01", 2), 1));
    CHECK(!commit(a, "t", 1));
    CHECK(a.error() == FrameError::kUnexpectedFds);
    CHECK_EQ(a.refused_fds(), uint64_t{2});
    CHECK(a.has_batch());
    Batch b = a.take_batch();
    CHECK_EQ(b.count(), size_t{1});
    CHECK(b.fds.empty());
  }
  {
    // The bad read completes the frame.
    FrameAssembler a(small_cfg());
    CHECK(commit(a, "\x01", 2));
    CHECK(!commit(a, "t", 1));
    CHECK_EQ(a.refused_fds(), uint64_t{3});
    CHECK(!a.has_batch());
  }
  {
    // It does not.
    FrameAssembler a(small_cfg());
    CHECK(commit(a, "\x02", 2));
    CHECK(!commit(a, "t", 1));
    CHECK_EQ(a.refused_fds(), uint64_t{3});
  }
  {
    // A frame with a buffer of its own (above large_threshold).
    AssemblerConfig cfg = small_cfg();
    cfg.large_threshold = 100;
    FrameAssembler a(cfg);
    uint8_t h[10];
    const size_t hn = uvarint_encode(1000, h);
    CHECK(commit(a, std::string(reinterpret_cast<char*>(h), hn) + "abc", 2));
    CHECK(a.large_reserved() > 0);
    CHECK(!commit(a, "def", 1));
    CHECK_EQ(a.refused_fds(), uint64_t{3});
  }
  CHECK_EQ(open_fds(), before);  // the refused ones were closed at once
}

TEST(outbox_sends_a_frame_with_descriptors_alone_once_per_connection) {
  const int before = open_fds();
  {
    FdOutbox box;
    CHECK(box.empty());
    std::vector<UniqueFd> fds;
    fds.push_back(dev_null());
    fds.push_back(dev_null());
    const int f0 = fds[0].get();
    // Frames: [0,10) plain, [10,30) with descriptors, [30,40) plain.
    box.push(10, 30, std::move(fds));
    CHECK(!box.empty());
    CHECK_EQ(box.held(), 2u);
    FdOutbox::Plan p;
    box.plan(0, 40, &p);  // up to the frame with descriptors
    CHECK_EQ(p.limit, 10u);
    CHECK_EQ(p.count, 0);
    box.plan(0, 10, &p);  // not published yet: no limit
    CHECK_EQ(p.limit, 10u);
    box.plan(10, 40, &p);  // that frame alone, with them
    CHECK_EQ(p.limit, 30u);
    CHECK_EQ(p.count, 2);
    CHECK_EQ(p.fds[0], f0);
    box.mark_sent(10);  // a partial send of 5 bytes: the rest goes on without them
    box.plan(15, 40, &p);
    CHECK_EQ(p.limit, 40u);
    CHECK_EQ(p.count, 0);
    box.reset();  // the connection broke: the frame goes again, whole, with them
    box.plan(10, 40, &p);
    CHECK_EQ(p.limit, 30u);
    CHECK_EQ(p.count, 2);
    CHECK_EQ(box.release(29), 0u);
    CHECK_EQ(box.release(30), 2u);  // fully sent: closed
    CHECK(box.empty());
    CHECK_EQ(box.held(), 0u);
    // Positions wrap modulo 2^32.
    std::vector<UniqueFd> more;
    more.push_back(dev_null());
    box.push(0xfffffff0u, 0x10u, std::move(more));
    box.plan(0xffffffe0u, 0x20u, &p);
    CHECK_EQ(p.limit, 0xfffffff0u);
    box.plan(0xfffffff0u, 0x20u, &p);
    CHECK_EQ(p.limit, 0x10u);
    CHECK_EQ(p.count, 1);
    std::vector<UniqueFd> last;
    last.push_back(dev_null());
    box.push(0x10u, 0x18u, std::move(last));
    box.clear();  // closes what was never sent
    CHECK_EQ(box.held(), 0u);
  }
  CHECK_EQ(open_fds(), before);
}

TEST_MAIN()
