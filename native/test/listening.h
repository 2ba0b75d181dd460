// Test helper shared by the engine tests: a listening socket as a reader's config.
#pragma once

#include <string>

#include "check.h"
#include "core/reader_engine.h"
#include "core/socket_util.h"

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
