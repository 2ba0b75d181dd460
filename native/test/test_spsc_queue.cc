#include <thread>

#include "check.h"
#include "core/spsc_queue.h"

using namespace udsipc;

TEST(single_thread_fifo_and_full) {
  SpscQueue<int> q(3);
  CHECK(q.try_push(1));
  CHECK(q.try_push(2));
  CHECK(q.try_push(3));
  CHECK(!q.try_push(4));
  int v = 0;
  CHECK(q.try_pop(v));
  CHECK_EQ(v, 1);
  CHECK(q.try_push(4));
  CHECK(q.try_pop(v) && v == 2);
  CHECK(q.try_pop(v) && v == 3);
  CHECK(q.try_pop(v) && v == 4);
  CHECK(!q.try_pop(v));
  CHECK(q.empty());
}

TEST(destroys_leftovers) {
  static int live = 0;
  struct Obj {
    Obj() { ++live; }
    Obj(const Obj&) { ++live; }
    Obj(Obj&&) noexcept { ++live; }
    ~Obj() { --live; }
  };
  {
    SpscQueue<Obj> q(8);
    for (int i = 0; i < 5; ++i) q.try_push(Obj());
    CHECK(q.front() != nullptr);
    q.pop();
    CHECK_EQ(live, 4);
  }
  CHECK_EQ(live, 0);
}

TEST(two_threads_every_item_once_in_order) {
  constexpr uint64_t kN = 5'000'000;
  SpscQueue<uint64_t> q(1024);
  std::thread producer([&] {
    for (uint64_t i = 0; i < kN;) {
      if (q.try_push(i)) ++i;
    }
  });
  uint64_t expect = 0;
  bool ordered = true;
  while (expect < kN) {
    uint64_t v;
    if (q.try_pop(v)) {
      if (v != expect) ordered = false;
      ++expect;
    }
  }
  producer.join();
  CHECK(ordered);
  CHECK_EQ(expect, kN);
  CHECK(q.empty());
}

TEST_MAIN()
