// Reference-counted slabs of received bytes. A slab is filled by the IO thread
// and handed to JavaScript one batch region at a time; the memory is freed when
// the IO thread and every batch that views it have let go. A byte that has been
// handed out is never written again while anything still references its
// slab. (The addon detaches a batch's ArrayBuffer when the batch is
// acknowledged, unless JavaScript retained it: the views become empty and
// the reference goes; see native/addon/batch_export.cc.)
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <new>
#include <vector>

namespace udsipc {

class SlabPool;

class Slab {
 public:
  // Allocates a slab of `capacity` bytes aligned to 64 bytes, with one
  // reference held by the caller. Throws std::bad_alloc on failure.
  static Slab* create(size_t capacity) { return create_in(capacity, nullptr); }

  // A slab that can grow (see grow()), for a frame whose bytes are still
  // arriving: plain malloc memory (16-byte aligned), never pooled.
  static Slab* create_growable(size_t capacity) {
    if (capacity > (size_t{1} << 40)) throw std::bad_alloc();
    void* mem = std::malloc(sizeof(Slab));
    if (!mem) throw std::bad_alloc();
    void* data = std::malloc(capacity ? capacity : 1);
    if (!data) {
      std::free(mem);
      throw std::bad_alloc();
    }
    return new (mem) Slab(static_cast<uint8_t*>(data), capacity, nullptr);
  }

  // Growable slabs only, while nobody else references the slab (no batch
  // views it yet): makes room for `capacity` bytes, keeping the contents.
  // realloc: large blocks are mmap-ed and grow with mremap, which moves
  // page-table entries instead of copying; smaller ones grow in place when
  // they can, else are copied once. Throws std::bad_alloc (the slab is then
  // unchanged).
  void grow(size_t capacity) {
    if (capacity <= capacity_) return;
    if (capacity > (size_t{1} << 40)) throw std::bad_alloc();
    void* d = std::realloc(data_, capacity);
    if (!d) throw std::bad_alloc();
    data_ = static_cast<uint8_t*>(d);
    capacity_ = capacity;
  }

  void ref() { refs_.fetch_add(1, std::memory_order_relaxed); }
  // Any thread. When the last reference goes, the slab returns to its pool
  // (if it has one with room) or is freed.
  inline void unref();

  uint8_t* data() const { return data_; }
  size_t capacity() const { return capacity_; }

  // Live slabs in the whole process (tests use it to prove nothing leaks).
  static int64_t live() { return live_.load(std::memory_order_relaxed); }

 private:
  friend class SlabPool;
  static Slab* create_in(size_t capacity, SlabPool* pool) {
    if (capacity > (size_t{1} << 40)) throw std::bad_alloc();  // never wraps below
    void* mem = std::malloc(sizeof(Slab));
    if (!mem) throw std::bad_alloc();
    size_t rounded = (capacity + 63) & ~size_t{63};
    if (rounded == 0) rounded = 64;
    void* data = std::aligned_alloc(64, rounded);
    if (!data) {
      std::free(mem);
      throw std::bad_alloc();
    }
    return new (mem) Slab(static_cast<uint8_t*>(data), capacity, pool);
  }
  void destroy() {
    uint8_t* d = data_;
    this->~Slab();
    std::free(d);
    std::free(this);
  }
  Slab(uint8_t* data, size_t cap, SlabPool* pool) : data_(data), capacity_(cap), pool_(pool) {
    live_.fetch_add(1, std::memory_order_relaxed);
  }
  ~Slab() { live_.fetch_sub(1, std::memory_order_relaxed); }

  uint8_t* data_;     // fixed, except by grow() before the slab is shared
  size_t capacity_;
  SlabPool* const pool_;  // the pool it returns to; referenced while in use
  std::atomic<int> refs_{1};
  static inline std::atomic<int64_t> live_{0};  // trivial destructor
};

// A free list of equal-sized slabs, so that steady-state reading reuses warm
// memory instead of faulting in fresh pages for every slab. A slab goes back
// only when its last reference (the IO thread's or a JavaScript view's) is
// gone, so memory is never recycled under a live view. Reference-counted: the
// engine holds one reference and every slab it handed out holds one, so the
// pool outlives the engine while JavaScript still views its slabs.
class SlabPool {
 public:
  static SlabPool* create(size_t slab_size, size_t max_free) { return new SlabPool(slab_size, max_free); }

  // Any thread that holds a pool reference. A slab of slab_size() bytes with
  // one reference (and one pool reference on its behalf).
  Slab* get() {
    ref();
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (!free_.empty()) {
        Slab* s = free_.back();
        free_.pop_back();
        s->refs_.store(1, std::memory_order_relaxed);
        return s;
      }
    }
    try {
      return Slab::create_in(slab_size_, this);
    } catch (...) {
      unref();
      throw;
    }
  }

  size_t slab_size() const { return slab_size_; }
  size_t free_count() {
    std::lock_guard<std::mutex> lk(mu_);
    return free_.size();
  }

  void ref() { refs_.fetch_add(1, std::memory_order_relaxed); }
  void unref() {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

 private:
  friend class Slab;
  SlabPool(size_t slab_size, size_t max_free) : slab_size_(slab_size), max_free_(max_free) {}
  ~SlabPool() {
    for (Slab* s : free_) s->destroy();
  }
  // The last reference to a slab of ours was dropped. Slabs on the free list
  // hold no pool reference, so the pool (and its free list) goes away with
  // the last engine or in-use slab.
  void give_back(Slab* s) {
    bool kept = false;
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (free_.size() < max_free_) {
        free_.push_back(s);
        kept = true;
      }
    }
    if (!kept) s->destroy();
    unref();
  }

  const size_t slab_size_;
  const size_t max_free_;
  std::mutex mu_;
  std::vector<Slab*> free_;  // guarded by mu_
  std::atomic<size_t> refs_{1};
};

inline void Slab::unref() {
  if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    if (pool_) pool_->give_back(this);
    else destroy();
  }
}

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
