// Unsigned LEB128 varints, bit-for-bit compatible with Go's encoding/binary
// PutUvarint / Uvarint and protobuf varints. Header-only, no allocation.
#pragma once

#include <cstddef>
#include <cstdint>

namespace udsipc {

constexpr size_t kMaxVarintLen = 10;

// Number of bytes the minimal encoding of v takes (1..10).
inline size_t uvarint_size(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

// Writes the minimal encoding of v to out (which must have room for
// uvarint_size(v) bytes) and returns the number of bytes written.
inline size_t uvarint_encode(uint64_t v, uint8_t* out) {
  size_t i = 0;
  while (v >= 0x80) {
    out[i++] = static_cast<uint8_t>(v) | 0x80;
    v >>= 7;
  }
  out[i++] = static_cast<uint8_t>(v);
  return i;
}

enum class VarintStatus {
  kOk,        // value decoded, *consumed bytes used
  kNeedMore,  // the prefix is incomplete; feed more bytes
  kOverflow,  // a 10th byte > 1, or a 10th byte with the continuation bit
  kTooLarge,  // the value is certain to exceed `limit`
};

// Decodes a frame length prefix from p[0..n). Rules (see LINUX-NOTES.md):
// overlong encodings are accepted, as Go accepts them; a 10th byte must be 0
// or 1 and is judged as soon as it arrives; the value is compared with `limit`
// as soon as it must exceed it, so a peer cannot make us wait for bytes of a
// length we will refuse anyway.
inline VarintStatus uvarint_decode(const uint8_t* p, size_t n, uint64_t limit,
                                   uint64_t* value, size_t* consumed) {
  // Lengths below 128 (one byte) are the common case of small messages.
  if (n != 0 && p[0] < 0x80) {
    if (p[0] > limit) return VarintStatus::kTooLarge;
    *value = p[0];
    *consumed = 1;
    return VarintStatus::kOk;
  }
  uint64_t x = 0;
  unsigned shift = 0;
  for (size_t i = 0; i < n; ++i) {
    const uint8_t b = p[i];
    if (i == kMaxVarintLen - 1) {
      if (b > 1) return VarintStatus::kOverflow;
    }
    x |= static_cast<uint64_t>(b & 0x7f) << shift;
    if (x > limit) return VarintStatus::kTooLarge;
    if (b < 0x80) {
      *value = x;
      *consumed = i + 1;
      return VarintStatus::kOk;
    }
    shift += 7;
  }
  // Incomplete. The lower bits are known; later bytes can only add, so a value
  // already above the limit was caught above. An incomplete 10-byte prefix
  // cannot exist: the 10th byte either ends it or overflowed.
  return VarintStatus::kNeedMore;
}

}  // namespace udsipc
