// Reference-counted slabs of received bytes. A slab is filled by the IO thread
// and handed to JavaScript one batch region at a time; the memory is freed when
// the IO thread and every batch that views it have let go. A byte that has been
// handed out is never written again, so a view stays valid for as long as
// JavaScript holds it.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>

namespace udsipc {

class Slab {
 public:
  // Allocates a slab of `capacity` bytes aligned to 64 bytes, with one
  // reference held by the caller. Throws std::bad_alloc on failure.
  static Slab* create(size_t capacity) {
    void* mem = std::malloc(sizeof(Slab));
    if (!mem) throw std::bad_alloc();
    size_t rounded = (capacity + 63) & ~size_t{63};
    if (rounded == 0) rounded = 64;
    void* data = std::aligned_alloc(64, rounded);
    if (!data) {
      std::free(mem);
      throw std::bad_alloc();
    }
    return new (mem) Slab(static_cast<uint8_t*>(data), capacity);
  }

  void ref() { refs_.fetch_add(1, std::memory_order_relaxed); }
  // Any thread. Frees the slab when the last reference goes.
  void unref() {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      uint8_t* d = data_;
      this->~Slab();
      std::free(d);
      std::free(this);
    }
  }

  uint8_t* data() const { return data_; }
  size_t capacity() const { return capacity_; }

  // Live slabs in the whole process (tests use it to prove nothing leaks).
  static int64_t live() { return live_.load(std::memory_order_relaxed); }

 private:
  Slab(uint8_t* data, size_t cap) : data_(data), capacity_(cap) {
    live_.fetch_add(1, std::memory_order_relaxed);
  }
  ~Slab() { live_.fetch_sub(1, std::memory_order_relaxed); }

  uint8_t* const data_;
  const size_t capacity_;
  std::atomic<int> refs_{1};
  static inline std::atomic<int64_t> live_{0};  // trivial destructor
};

// An owning handle to one slab reference (move-only RAII).
class SlabRef {
 public:
  SlabRef() = default;
  explicit SlabRef(Slab* s) : s_(s) {}  // adopts one reference
  SlabRef(const SlabRef&) = delete;
  SlabRef& operator=(const SlabRef&) = delete;
  SlabRef(SlabRef&& o) noexcept : s_(o.s_) { o.s_ = nullptr; }
  SlabRef& operator=(SlabRef&& o) noexcept {
    if (this != &o) {
      reset();
      s_ = o.s_;
      o.s_ = nullptr;
    }
    return *this;
  }
  ~SlabRef() { reset(); }

  SlabRef share() const {
    if (s_) s_->ref();
    return SlabRef(s_);
  }
  void reset() {
    if (s_) s_->unref();
    s_ = nullptr;
  }
  // Gives up ownership of the reference without dropping it.
  Slab* release() {
    Slab* s = s_;
    s_ = nullptr;
    return s;
  }
  Slab* get() const { return s_; }
  explicit operator bool() const { return s_ != nullptr; }

 private:
  Slab* s_ = nullptr;
};

}  // namespace udsipc
