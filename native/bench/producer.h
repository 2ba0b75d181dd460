// bench_core's stand-in for JavaScript: a producer thread that appends frames
// to a WriterEngine's ring exactly as Writer.write() does, and a small signal
// for the engines' notify callbacks.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>

#include "core/writer_engine.h"

namespace udsbench {

// A flag set by a notify callback (any thread) and awaited with a timeout.
struct Signal {
  std::mutex mu;
  std::condition_variable cv;
  bool ready = false;  // guarded by mu
  void notify() {
    std::lock_guard<std::mutex> lk(mu);
    ready = true;
    cv.notify_one();
  }
  void wait(int ms) {
    std::unique_lock<std::mutex> lk(mu);
    cv.wait_for(lk, std::chrono::milliseconds(ms), [&] { return ready; });
    ready = false;
  }
};

// What Writer.write() does, in C++: same ring layout, limits and protocol;
// room checked against cached head/sent counts first; the same publishing:
// the tail goes to the IO thread every min(1 MiB, max_bytes / 4) bytes and
// before waiting for room (finish() at the end), sent from this thread
// (send_direct, with the frame and payload counts) while the IO thread idles.
//
// producer.cc is compiled without SLP vectorization: with it, GCC packs the
// four per-message counters (tail, frames, payload bytes, unpublished) into
// one vector register, spills it around each memcpy call and reads it back
// lane by lane, which makes this harness's code generation, not the engine,
// the limit at small sizes (bench/README.md has the figures). The
// JavaScript Writer (V8) does not have that code.
class Producer {
 public:
  Producer(uint32_t max_bytes, uint32_t max_writes);
  ~Producer();
  Producer(const Producer&) = delete;
  Producer& operator=(const Producer&) = delete;

  uint32_t* ctrl() { return ctrl_; }
  uint8_t* ring() { return ring_; }
  uint32_t capacity() const { return cap_; }
  void attach(udsipc::WriterEngine* e) { engine_ = e; }
  void on_notify() { sig_.notify(); }  // any thread (the engine's notify callback)

  // Writes `count` messages of `len` bytes, waiting for 'drain' whenever the
  // queue is full. With `rotate` > 1 (a power of two), message i is
  // msgs + (i % rotate) * len, all ready beforehand; with 1 it is `msgs`
  // itself, its first byte set to (i & 0xff) just before the write. The loop
  // keeps its positions in locals and takes write()'s full path (room,
  // publishing, the ring's end) only when one of them is due.
  void write_run(uint8_t* msgs, uint32_t rotate, uint32_t len, uint64_t count);
  // The end of the JavaScript task: publish what is left.
  void finish() { publish(); }

 private:
  uint32_t load(int w);
  void store(int w, uint32_t v);
  void write_blocking(const uint8_t* p, uint32_t len);
  bool write(const uint8_t* p, uint32_t len);
  bool fits(uint32_t total) const;
  // The queue limits, for a frame of `total` bytes, by the given positions
  // and counts (write_run() keeps them in locals, fits() in members).
  bool room(uint32_t tail, uint32_t head, uint32_t accepted, uint32_t sent, uint32_t total) const {
    return tail - head + total <= max_bytes_ && accepted - sent < max_writes_;
  }
  bool room_after_all(uint32_t total);
  void publish();
  void put(uint32_t at, const uint8_t* p, size_t n);
  bool reached(uint32_t head, uint32_t sent);
  void wait_drain(uint32_t len);

  // Immutable after construction.
  uint8_t* mem_;  // control block + ring, owned
  uint32_t* ctrl_;
  uint8_t* ring_;
  uint32_t cap_, mask_;
  const uint32_t max_bytes_, max_writes_;
  const uint32_t publish_bytes_;
  udsipc::WriterEngine* engine_ = nullptr;
  // Producer thread only.
  uint32_t tail_ = 0, accepted_ = 0, payload_ = 0, unpublished_ = 0;
  uint32_t head_cache_ = 0, sent_cache_ = 0;  // last head/sent read from the IO thread's ctrl words
  // Any thread.
  Signal sig_;
};

}  // namespace udsbench
