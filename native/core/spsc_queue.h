// Bounded lock-free single-producer/single-consumer queue (in the style of
// rigtorp/SPSCQueue): indices on their own cache lines, each side caching the
// other's index so that the common case touches no shared line.
//
// One producer and one consumer at any moment. try_push is the producer's;
// front/pop/try_pop are the consumer's. Either role may pass from one thread
// to another, provided the hand-over orders the previous holder's last call
// before the next holder's first (a mutex both hold while in the role, or
// any release/acquire pair): the role's private state (read_cache_ or
// write_cache_, and its own index) then moves with it. ReaderEngine's
// producer role does move: the IO thread pushes, or the JS thread inside
// js_thread_poll(), whichever holds the engine's own_mu_; its consumer is
// always the thread that calls take(). Capacity is fixed at construction.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstring>
#include <memory>
#include <new>
#include <stdexcept>
#include <type_traits>
#include <utility>

namespace udsipc {

constexpr size_t kCacheLine = 64;

template <typename T>
class SpscQueue {
 public:
  explicit SpscQueue(size_t capacity)
      : cap_(checked(capacity) + 1),  // one slot stays empty: full != empty
        slots_(static_cast<T*>(::operator new[](sizeof(T) * cap_,
                                                std::align_val_t{alignof(T)}))) {
    // Touch every slot now: a large queue is otherwise faulted in page by
    // page by the producer's first lap, on the hot path.
    std::memset(static_cast<void*>(slots_), 0, sizeof(T) * cap_);
  }
  SpscQueue(const SpscQueue&) = delete;
  SpscQueue& operator=(const SpscQueue&) = delete;
  ~SpscQueue() {
    // No other thread may be using the queue now: read both indices directly.
    size_t r = read_.load(std::memory_order_acquire);
    const size_t w = write_.load(std::memory_order_acquire);
    while (r != w) {
      slots_[r].~T();
      if (++r == cap_) r = 0;
    }
    ::operator delete[](slots_, std::align_val_t{alignof(T)});
  }

  // Producer. Returns false (and leaves v untouched) when full.
  template <typename U>
  bool try_push(U&& v) {
    const size_t w = write_.load(std::memory_order_relaxed);
    size_t next = w + 1;
    if (next == cap_) next = 0;
    if (next == read_cache_) {
      read_cache_ = read_.load(std::memory_order_acquire);
      if (next == read_cache_) return false;
    }
    new (&slots_[w]) T(std::forward<U>(v));
    write_.store(next, std::memory_order_release);
    return true;
  }

  // Consumer. Pointer to the oldest element, or nullptr when empty.
  T* front() {
    const size_t r = read_.load(std::memory_order_relaxed);
    if (r == write_cache_) {
      write_cache_ = write_.load(std::memory_order_acquire);
      if (r == write_cache_) return nullptr;
    }
    return &slots_[r];
  }

  // Consumer. Precondition: front() != nullptr.
  void pop() {
    const size_t r = read_.load(std::memory_order_relaxed);
    slots_[r].~T();
    size_t next = r + 1;
    if (next == cap_) next = 0;
    read_.store(next, std::memory_order_release);
  }

  // Consumer. Moves the oldest element into out; false when empty.
  bool try_pop(T& out) {
    T* f = front();
    if (!f) return false;
    out = std::move(*f);
    pop();
    return true;
  }

  // Either side; a snapshot that may be stale by the time it is used.
  bool empty() const {
    return read_.load(std::memory_order_acquire) == write_.load(std::memory_order_acquire);
  }
  size_t capacity() const { return cap_ - 1; }

 private:
  static size_t checked(size_t c) {
    if (c == 0) throw std::invalid_argument("SpscQueue capacity must be > 0");
    return c;
  }
  const size_t cap_;
  T* const slots_;
  alignas(kCacheLine) std::atomic<size_t> write_{0};  // written by the producer role only
  alignas(kCacheLine) size_t read_cache_ = 0;          // the producer role's copy of read_
  alignas(kCacheLine) std::atomic<size_t> read_{0};   // written by the consumer role only
  alignas(kCacheLine) size_t write_cache_ = 0;         // the consumer role's copy of write_
  char pad_[kCacheLine - sizeof(size_t)];
};

}  // namespace udsipc
