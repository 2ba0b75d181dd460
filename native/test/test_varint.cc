#include <cstring>

#include "check.h"
#include "core/varint.h"

using namespace udsipc;

static VarintStatus dec(std::vector<uint8_t> b, uint64_t limit, uint64_t* v, size_t* n) {
  return uvarint_decode(b.data(), b.size(), limit, v, n);
}

TEST(vectors) {
  struct V {
    std::vector<uint8_t> bytes;
    uint64_t value;
  } vs[] = {{{0x00}, 0},
            {{0x7f}, 127},
            {{0x80, 0x01}, 128},
            {{0xff, 0x7f}, 16383},
            {{0x80, 0x80, 0x01}, 16384},
            {{0x80, 0x00}, 0},
            {{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, UINT64_MAX}};
  for (auto& t : vs) {
    uint64_t v = 1;
    size_t n = 0;
    CHECK(dec(t.bytes, UINT64_MAX, &v, &n) == VarintStatus::kOk);
    CHECK_EQ(v, t.value);
    CHECK_EQ(n, t.bytes.size());
  }
}

TEST(overflow) {
  uint64_t v;
  size_t n;
  std::vector<uint8_t> ff9_02(9, 0xff);
  ff9_02.push_back(0x02);
  CHECK(dec(ff9_02, UINT64_MAX, &v, &n) == VarintStatus::kOverflow);
  // Ten continuation bytes: overflow at the 10th, without waiting for an 11th.
  CHECK(dec(std::vector<uint8_t>(10, 0x80), UINT64_MAX, &v, &n) == VarintStatus::kOverflow);
  std::vector<uint8_t> z9_02(9, 0x80);
  z9_02.push_back(0x02);
  CHECK(dec(z9_02, 1 << 20, &v, &n) == VarintStatus::kOverflow);
  CHECK(dec(std::vector<uint8_t>(9, 0x80), UINT64_MAX, &v, &n) == VarintStatus::kNeedMore);
}

TEST(limit_checked_early) {
  uint64_t v;
  size_t n;
  // 0x80 0x80 0x80 0x08: 2^24 * 8 = 128 MiB; with a 10 MiB limit the prefix is
  // refused as soon as the value must exceed it, even if incomplete.
  CHECK(dec({0x80, 0x80, 0x80, 0x08}, 10 << 20, &v, &n) == VarintStatus::kTooLarge);
  CHECK(dec({0xff, 0xff, 0xff, 0x7f}, 1000, &v, &n) == VarintStatus::kTooLarge);
  CHECK(dec({0xe8, 0x07}, 1000, &v, &n) == VarintStatus::kOk);  // exactly 1000
  CHECK_EQ(v, uint64_t{1000});
  CHECK(dec({0xe9, 0x07}, 1000, &v, &n) == VarintStatus::kTooLarge);
  CHECK(dec({0x80, 0x80}, 1000, &v, &n) == VarintStatus::kNeedMore);
  // One-byte lengths (the fast path) against the limit too.
  CHECK(dec({0x64}, 100, &v, &n) == VarintStatus::kOk);
  CHECK_EQ(v, uint64_t{100});
  CHECK_EQ(n, size_t{1});
  CHECK(dec({0x65}, 100, &v, &n) == VarintStatus::kTooLarge);
  CHECK(dec({0x00}, 0, &v, &n) == VarintStatus::kOk);
  CHECK(dec({0x01}, 0, &v, &n) == VarintStatus::kTooLarge);
}

TEST(round_trip_and_sizes) {
  const uint64_t vals[] = {0, 1, 127, 128, 16383, 16384, (1u << 21) - 1, 1u << 21, 1u << 28, 1ull << 35, UINT64_MAX};
  for (uint64_t x : vals) {
    uint8_t buf[10];
    const size_t n = uvarint_encode(x, buf);
    CHECK_EQ(n, uvarint_size(x));
    uint64_t v;
    size_t m;
    CHECK(uvarint_decode(buf, n, UINT64_MAX, &v, &m) == VarintStatus::kOk);
    CHECK_EQ(v, x);
    CHECK_EQ(m, n);
  }
  CHECK_EQ(uvarint_size(127), size_t{1});
  CHECK_EQ(uvarint_size(16383), size_t{2});
  CHECK_EQ(uvarint_size((1u << 21) - 1), size_t{3});
}

TEST_MAIN()
