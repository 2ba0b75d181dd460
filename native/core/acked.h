// Acknowledged delivery ("acked" mode): the control frames both ends
// exchange, and their encoding. Everything rides in ordinary frames
// (uvarint(length) payload), so the outer framing never changes; a plain
// writer or reader (the Go library, or this one in its default mode) never
// sees any of it, because nothing is sent before the other side has shown it
// speaks the mode. docs/wire-format.md ("Acknowledged delivery") is the
// normative text, with test vectors.
//
//   reader -> writer, first frame on every accepted connection:
//       greeting = kMagic kGreeting                         (9 bytes)
//   writer -> reader, first frame, only after the greeting came:
//       hello    = kMagic kHello session[16] first_seq:u64le resent_below:u64le   (41 bytes)
//   then the writer's data frames: the n-th (0-based) has sequence number
//   first_seq + n. Sequence numbers start at 1 for a writer session and
//   never repeat within it; resent_below: those below it were sent on an
//   earlier connection already (re-sent now because no acknowledgement came).
//   reader -> writer, any number, after the greeting:
//       ack      = kAck seq:u64le                            (9 bytes)
//   cumulative: every message up to and including seq is done with.
//
// Plain C++, no Node headers.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace udsipc::acked {

inline constexpr uint8_t kMagic[8] = {0xff, 'U', 'D', 'S', 'A', 'C', 'K', 0x01};  // last byte: version
inline constexpr uint8_t kGreeting = 'G';
inline constexpr uint8_t kHello = 'H';
inline constexpr uint8_t kAck = 'A';
inline constexpr size_t kGreetingSize = sizeof kMagic + 1;
inline constexpr size_t kHelloSize = sizeof kMagic + 1 + 16 + 8 + 8;
inline constexpr size_t kAckSize = 1 + 8;
// The largest control frame (its payload) a writer accepts from an acked reader.
inline constexpr size_t kMaxControl = kGreetingSize;

using SessionId = std::array<uint8_t, 16>;

// Sequence numbers a hello may announce: below 2^53 (exact as a JavaScript number).
inline constexpr uint64_t kMaxSeq = uint64_t{1} << 53;

struct Hello {
  SessionId session{};
  uint64_t first_seq = 0;
  uint64_t resent_below = 0;
};

inline void put_u64le(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
inline uint64_t get_u64le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// Each writes the whole frame (1-byte length prefix: every payload < 128)
// at p and returns its size.
inline size_t put_greeting(uint8_t* p) {
  p[0] = kGreetingSize;
  std::memcpy(p + 1, kMagic, sizeof kMagic);
  p[1 + sizeof kMagic] = kGreeting;
  return 1 + kGreetingSize;
}
inline size_t put_hello(uint8_t* p, const Hello& h) {
  p[0] = kHelloSize;
  uint8_t* q = p + 1;
  std::memcpy(q, kMagic, sizeof kMagic);
  q += sizeof kMagic;
  *q++ = kHello;
  std::memcpy(q, h.session.data(), h.session.size());
  q += h.session.size();
  put_u64le(q, h.first_seq);
  put_u64le(q + 8, h.resent_below);
  return 1 + kHelloSize;
}
inline size_t put_ack(uint8_t* p, uint64_t seq) {
  p[0] = kAckSize;
  p[1] = kAck;
  put_u64le(p + 2, seq);
  return 1 + kAckSize;
}

// Payload parsers: true when `payload` is exactly that control frame.
inline bool is_greeting(const uint8_t* p, size_t n) {
  return n == kGreetingSize && std::memcmp(p, kMagic, sizeof kMagic) == 0 && p[sizeof kMagic] == kGreeting;
}
inline bool parse_hello(const uint8_t* p, size_t n, Hello* h) {
  if (n != kHelloSize || std::memcmp(p, kMagic, sizeof kMagic) != 0 || p[sizeof kMagic] != kHello) return false;
  const uint8_t* q = p + sizeof kMagic + 1;
  std::memcpy(h->session.data(), q, h->session.size());
  q += h->session.size();
  h->first_seq = get_u64le(q);
  h->resent_below = get_u64le(q + 8);
  // Sequence numbers start at 1 and stay below 2^53, so that JavaScript
  // holds them exactly (batch.sequence(i) is a number).
  return h->first_seq >= 1 && h->first_seq < kMaxSeq && h->resent_below < kMaxSeq;
}
inline bool parse_ack(const uint8_t* p, size_t n, uint64_t* seq) {
  if (n != kAckSize || p[0] != kAck) return false;
  *seq = get_u64le(p + 1);
  return true;
}

// A plain writer that reads (onMessage) meets an acked reader: the reader's
// first frame is the greeting, which is not a message. True when `payload`
// (the first message of a connection) is it.
inline bool is_greeting_message(const uint8_t* payload, size_t n) { return is_greeting(payload, n); }

}  // namespace udsipc::acked
