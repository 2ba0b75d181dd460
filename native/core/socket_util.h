// Unix domain socket helpers: addresses, listening with stale-socket
// recovery, non-blocking connect, send-buffer tuning. Plain POSIX, no Node.
#pragma once

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <string>

#include "error.h"
#include "unique_fd.h"

namespace udsipc {

// sun_path holds 108 bytes: 107 path bytes and the terminating NUL.
constexpr size_t kMaxPathBytes = sizeof(sockaddr_un::sun_path) - 1;

// Fills addr/len for a filesystem path. False if empty or longer than
// kMaxPathBytes (nothing is truncated).
bool make_address(const std::string& path, sockaddr_un* addr, socklen_t* len);

struct Listener {
  UniqueFd fd;
  dev_t dev = 0;  // identity of the socket file we created, so that stop
  ino_t ino = 0;  // removes it only if it is still ours
  CoreError error;
};

// socket + bind (+ chmod when mode >= 0) + listen. An existing path that is
// not a socket is never touched (ERR_NOT_A_SOCKET); a socket with a live
// listener is not stolen (ERR_ADDRESS_IN_USE); a stale one (connect refused)
// is removed and replaced.
Listener listen_unix(const std::string& path, int backlog, int mode);

// Removes path only if it is still the socket identified by dev/ino.
void unlink_if_same(const std::string& path, dev_t dev, ino_t ino);

// Non-blocking, close-on-exec connect. Returns 0 and sets *out, or an errno.
// Note: on a full backlog a Unix stream connect fails with EAGAIN.
int connect_unix(const std::string& path, UniqueFd* out);

// Raises SO_SNDBUF to `want` bytes if that is more than the current size
// (never shrinks it) and returns the effective size the kernel reports.
int raise_send_buffer(int fd, int want);

}  // namespace udsipc
