// A minimal test harness: CHECK macros that report file:line and count
// failures; main() returns non-zero if any check failed.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

namespace check {

inline int& failures() {
  static int n = 0;
  return n;
}

struct Test {
  const char* name;
  std::function<void()> fn;
};

inline std::vector<Test>& registry() {
  static std::vector<Test> r;
  return r;
}

struct Register {
  Register(const char* name, std::function<void()> fn) { registry().push_back({name, std::move(fn)}); }
};

inline int run_all() {
  int failed_tests = 0;
  for (auto& t : registry()) {
    const int before = failures();
    t.fn();
    const bool ok = failures() == before;
    std::printf("%s %s\n", ok ? "ok  " : "FAIL", t.name);
    if (!ok) ++failed_tests;
  }
  std::printf("%zu passed, %d failed\n", registry().size() - failed_tests, failed_tests);
  return failed_tests == 0 ? 0 : 1;
}

}  // namespace check

#define TEST(name)                                                   \
  static void test_##name();                                         \
  static check::Register reg_##name(#name, test_##name);             \
  static void test_##name()

#define CHECK(cond)                                                                  \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      ++check::failures();                                                           \
    }                                                                                \
  } while (0)

#define CHECK_EQ(a, b)                                                                            \
  do {                                                                                            \
    auto va_ = (a);                                                                               \
    auto vb_ = (b);                                                                               \
    if (!(va_ == vb_)) {                                                                          \
      std::fprintf(stderr, "%s:%d: CHECK_EQ failed: %s == %s (%s vs %s)\n", __FILE__, __LINE__, #a, #b, \
                   std::to_string(va_).c_str(), std::to_string(vb_).c_str());                     \
      ++check::failures();                                                                        \
    }                                                                                             \
  } while (0)

#define TEST_MAIN() \
  int main() { return check::run_all(); }
