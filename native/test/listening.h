// Test helper shared by the engine tests: a listening socket as a reader's config.
#pragma once

#include <stdlib.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>

#include "check.h"
#include "core/reader_engine.h"
#include "core/socket_util.h"

// An engine's notify callback, waited for by the test thread (with a timeout:
// a missed notification costs a round, never a hang).
struct Collector {
  std::mutex mu;
  std::condition_variable cv;
  bool ready = false;
  void notify() {
    std::lock_guard<std::mutex> lk(mu);
    ready = true;
    cv.notify_one();
  }
  void wait(int ms = 50) {
    std::unique_lock<std::mutex> lk(mu);
    cv.wait_for(lk, std::chrono::milliseconds(ms), [&] { return ready; });
    ready = false;
  }
};

// A socket path in a fresh private directory.
inline std::string temp_socket() {
  char tmpl[] = "/tmp/uds-core-XXXXXX";
  const char* dir = ::mkdtemp(tmpl);
  return std::string(dir) + "/s.sock";
}

// A listening socket at path, as the reader's config (mode 0600).
inline udsipc::ReaderConfig listening_config(const std::string& path, int backlog = 16) {
  udsipc::ListenOptions lo;
  lo.backlog = backlog;
  lo.mode = 0600;
  udsipc::Listener l = udsipc::listen_unix(path, lo);
  CHECK(!l.error);
  udsipc::ReaderConfig rcfg;
  rcfg.listen_fd = std::move(l.fd);
  rcfg.path = path;
  rcfg.dev = l.dev;
  rcfg.ino = l.ino;
  return rcfg;
}
