// epoll + eventfd: an engine's poller and the way other threads wake it.
#pragma once

#include <sys/epoll.h>

#include <cstdint>

#include "error.h"
#include "unique_fd.h"

namespace udsipc {

class EventLoop {
 public:
  static constexpr uint64_t kWakeTag = ~uint64_t{0};

  EventLoop();  // throws std::system_error if epoll/eventfd cannot be created
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  // The thread that owns the engine's event-loop state at the time: the IO
  // thread (or any thread before it starts), or a thread it handed that
  // state to: ReaderEngine's JS thread inside js_thread_poll() (own_mu_
  // held: add, remove, wait), WriterEngine's producer inside send_direct()
  // while kSleep == kProducerSends (modify of the connection's fd). Each is
  // one epoll syscall on descriptors fixed at construction, safe in the
  // kernel from any thread; the ownership rule keeps the engines' own
  // bookkeeping of what is registered consistent.
  bool add(int fd, uint32_t events, uint64_t tag);
  bool modify(int fd, uint32_t events, uint64_t tag);
  void remove(int fd);
  // Waits up to timeout_ms (-1 = forever). Returns the number of events in
  // out (0 on timeout or EINTR). A wake-up is reported with tag kWakeTag and
  // is already consumed.
  int wait(epoll_event* out, int max, int timeout_ms);

  // Any thread; async-signal-safe. Coalesces: many wakes, one event.
  void wake();

  // The epoll descriptor: readable when an event is ready (for another
  // thread's poller to watch).
  int fd() const { return epfd_.get(); }

 private:
  UniqueFd epfd_;  // set in the constructor, then read-only
  UniqueFd evfd_;  // set in the constructor, then read-only
};

// Monotonic clock in milliseconds.
int64_t now_ms();

}  // namespace udsipc
