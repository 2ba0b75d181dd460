// Acknowledged delivery (acked.h) in the core, without Node: the control
// frames' bytes (the test vectors of docs/wire-format.md), and writer engine
// -> socket -> reader engine in acked mode: sequence numbers, cumulative
// acknowledgements freeing the ring, a reader that dies with messages
// unacknowledged (everything arrives, re-sent ones flagged), copies dropped
// within one reader's life, and the handshake refusing what does not speak it.
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "check.h"
#include "listening.h"
#include "core/acked.h"
#include "core/reader_engine.h"
#include "core/socket_util.h"
#include "core/varint.h"
#include "core/writer_engine.h"

using namespace udsipc;
namespace ctrl = udsipc::protocol::ctrl;

namespace {

std::string hex(const uint8_t* p, size_t n) {
  static const char* d = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    s += d[p[i] >> 4];
    s += d[p[i] & 15];
  }
  return s;
}

// The producer as the addon is in acked mode: room is reckoned from
// kAckHead (a frame's space is freed once acknowledged); it leaves sending to
// the IO thread (kIdle -> kIoThreadSends, then wake()).
struct AckedProducer {
  std::vector<uint32_t> ctrl = std::vector<uint32_t>(ctrl::kWords, 0);
  std::vector<uint8_t> ring;
  uint32_t tail = 0, mask;
  uint32_t accepted = 0;
  WriterEngine* engine = nullptr;
  explicit AckedProducer(uint32_t cap) : ring(cap), mask(cap - 1) {}
  uint32_t load(int w) { return std::atomic_ref<uint32_t>(ctrl[w]).load(); }
  // Message `seq`: its number in 8 bytes, then filler up to len.
  bool write(uint64_t seq, size_t len, std::vector<UniqueFd> fds = {}) {
    std::vector<uint8_t> p(std::max<size_t>(len, 8), static_cast<uint8_t>(seq));
    acked::put_u64le(p.data(), seq);
    uint8_t h[10];
    const size_t hn = uvarint_encode(p.size(), h);
    const uint32_t total = static_cast<uint32_t>(hn + p.size());
    if (tail - load(ctrl::kAckHead) + total > ring.size()) return false;
    for (size_t i = 0; i < hn; ++i) ring[(tail + i) & mask] = h[i];
    for (size_t i = 0; i < p.size(); ++i) ring[(tail + hn + i) & mask] = p[i];
    if (!fds.empty()) engine->attach_fds(tail, tail + total, std::move(fds));
    tail += total;
    ++accepted;
    std::atomic_ref<uint32_t>(ctrl[ctrl::kTail]).store(tail);
    uint32_t idle = protocol::kIdle;
    if (std::atomic_ref<uint32_t>(ctrl[ctrl::kSleep]).compare_exchange_strong(idle, protocol::kIoThreadSends))
      engine->wake();
    return true;
  }
};

WriterConfig acked_writer_config(const std::string& path, AckedProducer& p, bool acked = true) {
  WriterConfig w;
  w.path = path;
  w.ctrl = p.ctrl.data();
  w.ring = p.ring.data();
  w.capacity = static_cast<uint32_t>(p.ring.size());
  w.acked = acked;
  w.handshake_timeout_ms = 2000;
  for (size_t i = 0; i < w.session.size(); ++i) w.session[i] = static_cast<uint8_t>(0xa0 + i);
  w.reconnect.initial_delay_ms = 2;
  w.reconnect.max_delay_ms = 10;
  return w;
}

ReaderConfig acked_reader_config(const std::string& path, bool acked = true) {
  ReaderConfig c = listening_config(path);
  c.acked = acked;
  return c;
}

// What one reader engine delivered: per message (seq, redelivered), in order.
struct Delivered {
  std::vector<std::pair<uint64_t, bool>> msgs;
  std::vector<std::string> errors;
  int sessions = 0, plain = 0;
  bool bad_payload = false;
};

// Takes what `reader` has; acks each batch unless `hold` (then keeps it in
// *held, unacked). Checks each message's payload against its sequence number.
void take(ReaderEngine& reader, Delivered* d, std::vector<ReaderItem>* held = nullptr) {
  std::vector<ReaderItem> items;
  reader.take(items);
  for (auto& it : items) {
    if (it.type == ReaderItem::kSession) {
      if (it.plain) ++d->plain;
      else ++d->sessions;
    } else if (it.type == ReaderItem::kError) {
      d->errors.push_back(it.error.code);
    } else if (it.type == ReaderItem::kBatch) {
      const Batch& b = it.batch;
      for (size_t i = 0; i < b.count(); ++i) {
        const uint64_t seq = b.acked ? b.first_seq + i : 0;
        const uint8_t* p = b.base + b.offsets[2 * i];
        if (b.offsets[2 * i + 1] - b.offsets[2 * i] < 8 || (b.acked && acked::get_u64le(p) != seq))
          d->bad_payload = true;
        d->msgs.emplace_back(b.acked ? seq : acked::get_u64le(p), b.acked && i < b.redelivered);
      }
      if (held) held->push_back(std::move(it));
      else reader.ack(it.conn_id, b.length);
    }
  }
}

}  // namespace

TEST(control_frames_match_the_documented_vectors) {
  uint8_t buf[64];
  size_t n = acked::put_greeting(buf);
  CHECK(hex(buf, n) == std::string("09ff55445341434b0147"));
  CHECK(acked::is_greeting(buf + 1, n - 1));
  acked::Hello h;
  for (size_t i = 0; i < h.session.size(); ++i) h.session[i] = static_cast<uint8_t>(i);
  h.first_seq = 1;
  h.resent_below = 1;
  n = acked::put_hello(buf, h);
  CHECK(hex(buf, n) == std::string("29ff5544534143"
                                    "4b0148000102030405060708090a0b0c0d0e0f"
                                    "0100000000000000"
                                    "0100000000000000"));
  acked::Hello back;
  CHECK(acked::parse_hello(buf + 1, n - 1, &back));
  CHECK(back.session == h.session && back.first_seq == 1 && back.resent_below == 1);
  CHECK(!acked::parse_hello(buf + 1, n - 2, &back));  // one byte short
  h.first_seq = 0;  // sequence numbers start at 1
  n = acked::put_hello(buf, h);
  CHECK(!acked::parse_hello(buf + 1, n - 1, &back));
  n = acked::put_ack(buf, 0x0102030405060708ULL);
  CHECK(hex(buf, n) == std::string("09410807060504030201"));
  uint64_t seq = 0;
  CHECK(acked::parse_ack(buf + 1, n - 1, &seq));
  CHECK_EQ(seq, uint64_t{0x0102030405060708ULL});
  CHECK(!acked::is_greeting(buf + 1, n - 1));
}

TEST(acked_round_trip_numbers_messages_and_acks_free_the_ring) {
  const std::string path = temp_socket();
  Collector rs, ws;
  ReaderEngine reader(acked_reader_config(path), [&] { rs.notify(); });
  reader.start();
  AckedProducer prod(1 << 16);  // 64 KiB: 20k messages go round it many times
  WriterEngine writer(acked_writer_config(path, prod), [&] { ws.notify(); });
  prod.engine = &writer;
  writer.start();
  constexpr uint64_t kN = 20000;
  Delivered d;
  uint64_t next = 1;
  for (int round = 0; round < 20000 && (d.msgs.size() < kN || prod.load(ctrl::kAcked) != kN); ++round) {
    while (next <= kN && prod.write(next, 8 + next % 200)) ++next;
    rs.wait(5);
    take(reader, &d);
  }
  CHECK_EQ(d.msgs.size(), size_t{kN});
  CHECK(!d.bad_payload);
  for (size_t i = 0; i < d.msgs.size() && i < kN; ++i) {
    if (d.msgs[i].first != i + 1 || d.msgs[i].second) {
      CHECK_EQ(d.msgs[i].first, uint64_t{i + 1});
      break;
    }
  }
  CHECK_EQ(d.sessions, 1);
  CHECK_EQ(prod.load(ctrl::kAcked), static_cast<uint32_t>(kN));
  CHECK_EQ(prod.load(ctrl::kAckHead), prod.tail);
  CHECK_EQ(writer.metrics().acked, uint64_t{kN});
  CHECK_EQ(reader.metrics().acked, uint64_t{kN});
  writer.close();
  reader.close();
}

TEST(a_reader_that_dies_with_messages_unacknowledged_loses_none) {
  const std::string path = temp_socket();
  Collector rs, ws;
  AckedProducer prod(1 << 18);  // a window of about 1,500 messages
  WriterEngine writer(acked_writer_config(path, prod), [&] { ws.notify(); });
  prod.engine = &writer;
  constexpr uint64_t kN = 12000;
  uint64_t next = 1;
  std::vector<Delivered> lives;
  writer.start();
  // Five reader lives: each acks only its first batches, then dies with the
  // rest unacknowledged (close() without acks, as a crash).
  for (int life = 0; life < 6; ++life) {
    ReaderEngine reader(acked_reader_config(path), [&] { rs.notify(); });
    reader.start();
    Delivered d;
    std::vector<ReaderItem> held;
    const size_t ack_upto = life == 5 ? SIZE_MAX : 800;  // the last life acks everything
    size_t last = 0;
    int quiet = 0;  // rounds in a row that brought nothing
    for (int round = 0; round < 20000; ++round) {
      while (next <= kN && prod.write(next, 16 + next % 300)) ++next;
      rs.wait(5);
      take(reader, &d, d.msgs.size() < ack_upto ? nullptr : &held);
      quiet = d.msgs.size() == last ? quiet + 1 : 0;
      last = d.msgs.size();
      // Dies once it holds enough unacknowledged, or (near the end) once
      // the writer has nothing more for it.
      if (life < 5 && (d.msgs.size() >= 2000 || (next > kN && last > 0 && quiet >= 40))) break;
      if (round % 400 == 399 && std::getenv("ACKED_DEBUG"))
        std::fprintf(stderr, "life %d round %d: delivered %zu held %zu next %llu acked %u sent %u connected %d\n", life, round,
                     d.msgs.size(), held.size(), (unsigned long long)next, prod.load(ctrl::kAcked), prod.load(ctrl::kSent),
                     (int)writer.metrics().connected);
      if (life == 5 && prod.load(ctrl::kAcked) == kN) break;
    }
    reader.close();  // dies: what it held unacked is lost with it
    lives.push_back(std::move(d));
  }
  // Every message arrived at least once; a message's first delivery is in
  // order; a later copy is of something delivered before and is flagged.
  std::set<uint64_t> seen;
  uint64_t last_first = 0;
  bool order_ok = true, flags_ok = true, payload_ok = true;
  for (const Delivered& d : lives) {
    payload_ok = payload_ok && !d.bad_payload;
    for (auto [seq, redelivered] : d.msgs) {
      if (seen.insert(seq).second) {
        order_ok = order_ok && seq == last_first + 1;
        last_first = seq;
      } else {
        flags_ok = flags_ok && redelivered;
      }
    }
  }
  CHECK(payload_ok);
  CHECK(order_ok);
  CHECK(flags_ok);
  CHECK_EQ(seen.size(), size_t{kN});
  CHECK_EQ(prod.load(ctrl::kAcked), static_cast<uint32_t>(kN));
  CHECK(writer.metrics().resent > 0);
  writer.close();
}

TEST(copies_resent_within_one_reader_life_are_dropped) {
  const std::string path = temp_socket();
  Collector rs, ws;
  ReaderConfig rc = acked_reader_config(path);
  rc.inactivity_timeout_ms = 100;  // cuts the writer's connection while it is quiet
  ReaderEngine reader(std::move(rc), [&] { rs.notify(); });
  reader.start();
  AckedProducer prod(1 << 20);
  WriterEngine writer(acked_writer_config(path, prod), [&] { ws.notify(); });
  prod.engine = &writer;
  writer.start();
  Delivered d;
  std::vector<ReaderItem> held;
  for (uint64_t s = 1; s <= 1000; ++s) CHECK(prod.write(s, 32));
  // Hold every batch unacked until the inactivity timeout replaced the
  // connection and the writer re-sent them (they are copies then).
  for (int round = 0; round < 2000 && reader.metrics().accepted < 2; ++round) {
    rs.wait(5);
    take(reader, &d, &held);
  }
  CHECK(reader.metrics().accepted >= 2);
  for (int round = 0; round < 200 && reader.metrics().duplicates_dropped < 1000; ++round) {
    rs.wait(5);
    take(reader, &d, &held);
  }
  CHECK_EQ(reader.metrics().duplicates_dropped, uint64_t{1000});
  for (auto& it : held) reader.ack(it.conn_id, it.batch.length);
  held.clear();
  for (uint64_t s = 1001; s <= 2000; ++s) CHECK(prod.write(s, 32));
  for (int round = 0; round < 2000 && prod.load(ctrl::kAcked) != 2000; ++round) {
    rs.wait(5);
    take(reader, &d);
  }
  CHECK_EQ(prod.load(ctrl::kAcked), uint32_t{2000});
  CHECK_EQ(d.msgs.size(), size_t{2000});  // each exactly once
  std::set<uint64_t> uniq;
  for (auto [seq, r] : d.msgs) uniq.insert(seq);
  CHECK_EQ(uniq.size(), size_t{2000});
  writer.close();
  reader.close();
}

TEST(handshake_refuses_what_does_not_speak_it) {
  // An acked writer and a plain reader: no greeting, ERR_PROTOCOL_MISMATCH,
  // never a connect event, nothing delivered.
  {
    const std::string path = temp_socket();
    Collector rs, ws;
    ReaderEngine reader(acked_reader_config(path, false), [&] { rs.notify(); });
    reader.start();
    AckedProducer prod(1 << 16);
    WriterConfig wc = acked_writer_config(path, prod);
    wc.handshake_timeout_ms = 50;
    WriterEngine writer(std::move(wc), [&] { ws.notify(); });
    prod.engine = &writer;
    CHECK(prod.write(1, 10));
    writer.start();
    bool mismatch = false, connected = false;
    for (int round = 0; round < 400 && !mismatch; ++round) {
      ws.wait(5);
      for (auto& e : writer.take_events()) {
        if (e.type == WriterEvent::kError && e.error.code == "ERR_PROTOCOL_MISMATCH") mismatch = true;
        if (e.type == WriterEvent::kConnect) connected = true;
      }
    }
    CHECK(mismatch);
    CHECK(!connected);
    Delivered d;
    take(reader, &d);
    CHECK_EQ(d.msgs.size(), size_t{0});
    writer.close();
    reader.close();
  }
  // A plain writer and an acked reader: served at most once, then refused
  // with require_acked.
  for (bool require : {false, true}) {
    const std::string path = temp_socket();
    Collector rs, ws;
    ReaderConfig rc = acked_reader_config(path);
    rc.require_acked = require;
    ReaderEngine reader(std::move(rc), [&] { rs.notify(); });
    reader.start();
    AckedProducer prod(1 << 16);
    WriterEngine writer(acked_writer_config(path, prod, /*acked=*/false), [&] { ws.notify(); });
    prod.engine = &writer;
    for (uint64_t s = 1; s <= 10; ++s) CHECK(prod.write(s, 10));
    writer.start();
    Delivered d;
    for (int round = 0; round < 400; ++round) {
      rs.wait(5);
      take(reader, &d);
      if (require ? !d.errors.empty() : d.msgs.size() == 10) break;
    }
    if (require) {
      CHECK_EQ(d.msgs.size(), size_t{0});
      CHECK(!d.errors.empty() && d.errors[0] == "ERR_PROTOCOL_MISMATCH");
    } else {
      CHECK_EQ(d.msgs.size(), size_t{10});
      CHECK_EQ(d.plain, 1);
      CHECK_EQ(reader.metrics().plain_peers, uint64_t{1});
    }
    writer.close();
    reader.close();
  }
}

// An acked reader that does not accept descriptors, and an acked writer that
// sends some: the messages that carry them are delivered without them, in
// order, each once, and the connection is kept. Frames are numbered, so none
// may be skipped, and closing the connection (as a plain reader does) would
// only bring the same message back forever (it did: a reconnect loop).
// On Linux 6.16+ the reader's socket refuses them (SO_PASSRIGHTS off): the
// writer sends that frame without them and reports ERR_FDS_REFUSED. With
// the listener's option turned back on (a kernel that cannot refuse), the
// reader closes them on arrival (fds_refused) and takes the message.
TEST(acked_reader_without_accept_fds_takes_messages_without_their_descriptors) {
  for (const bool kernel_refuses : {true, false}) {
    if (kernel_refuses && !kernel_refuses_rights()) continue;  // this kernel cannot: the other half is its case
    const std::string path = temp_socket();
    Collector rs, ws;
    ReaderConfig rc = acked_reader_config(path);
    UniqueFd listener(::fcntl(rc.listen_fd.get(), F_DUPFD_CLOEXEC, 0));
    ReaderEngine reader(std::move(rc), [&] { rs.notify(); });
    reader.start();
    if (!kernel_refuses) CHECK_EQ(set_pass_rights(listener.get(), true), kernel_refuses_rights() ? 0 : ENOPROTOOPT);
    AckedProducer prod(1 << 16);
    WriterEngine writer(acked_writer_config(path, prod), [&] { ws.notify(); });
    prod.engine = &writer;
    writer.start();
    constexpr uint64_t kN = 30;
    for (uint64_t i = 1; i <= kN; ++i) {
      std::vector<UniqueFd> fds;
      if (i % 3 == 0) fds.emplace_back(::open("/dev/null", O_RDONLY | O_CLOEXEC));
      CHECK(prod.write(i, 16, std::move(fds)));
    }
    Delivered d;
    for (int round = 0; round < 4000 && (d.msgs.size() < kN || prod.load(ctrl::kAcked) != kN); ++round) {
      rs.wait(5);
      take(reader, &d);
    }
    CHECK_EQ(d.msgs.size(), size_t{kN});
    CHECK(!d.bad_payload);
    for (size_t i = 0; i < d.msgs.size(); ++i) CHECK_EQ(d.msgs[i].first, uint64_t{i + 1});
    CHECK_EQ(prod.load(ctrl::kAcked), static_cast<uint32_t>(kN));
    CHECK_EQ(writer.metrics().connects, uint64_t{1});  // no reconnect
    CHECK(d.errors.empty());
    CHECK_EQ(writer.metrics().fds_buffered, 0u);  // the dups closed once acknowledged
    size_t refused_reports = 0;
    std::vector<WriterEvent> evs = writer.take_events();
    for (auto& e : evs) refused_reports += e.type == WriterEvent::kError && e.error.code == "ERR_FDS_REFUSED";
    if (kernel_refuses) {
      CHECK_EQ(refused_reports, size_t{kN / 3});
      CHECK_EQ(reader.metrics().fds_refused, uint64_t{0});
      CHECK_EQ(writer.metrics().fds_sent, uint64_t{0});
    } else {
      CHECK_EQ(refused_reports, size_t{0});
      CHECK_EQ(reader.metrics().fds_refused, uint64_t{kN / 3});
    }
    writer.close();
    reader.close();
  }
}

TEST_MAIN()
