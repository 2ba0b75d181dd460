#include "event_loop.h"

#include <errno.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <system_error>

namespace udsipc {

EventLoop::EventLoop()
    : epfd_(::epoll_create1(EPOLL_CLOEXEC)), evfd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
  if (!epfd_.valid() || !evfd_.valid())
    throw std::system_error(errno, std::generic_category(), "epoll_create1/eventfd");
  if (!add(evfd_.get(), EPOLLIN, kWakeTag))
    throw std::system_error(errno, std::generic_category(), "epoll_ctl");
}

bool EventLoop::add(int fd, uint32_t events, uint64_t tag) {
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = tag;
  return ::epoll_ctl(epfd_.get(), EPOLL_CTL_ADD, fd, &ev) == 0;
}

bool EventLoop::modify(int fd, uint32_t events, uint64_t tag) {
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = tag;
  return ::epoll_ctl(epfd_.get(), EPOLL_CTL_MOD, fd, &ev) == 0;
}

void EventLoop::remove(int fd) { ::epoll_ctl(epfd_.get(), EPOLL_CTL_DEL, fd, nullptr); }

int EventLoop::wait(epoll_event* out, int max, int timeout_ms) {
  int n = ::epoll_wait(epfd_.get(), out, max, timeout_ms);
  if (n < 0) return 0;  // EINTR
  for (int i = 0; i < n; ++i) {
    if (out[i].data.u64 == kWakeTag) {
      uint64_t v;
      while (::read(evfd_.get(), &v, sizeof(v)) > 0) {
      }
    }
  }
  return n;
}

void EventLoop::wake() {
  const uint64_t one = 1;
  ssize_t r;
  do {
    r = ::write(evfd_.get(), &one, sizeof(one));
  } while (r < 0 && errno == EINTR);
}

int64_t now_ms() {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

}  // namespace udsipc
