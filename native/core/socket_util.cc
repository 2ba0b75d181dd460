#include "socket_util.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstddef>
#include <cstring>

namespace udsipc {

bool make_address(const std::string& path, sockaddr_un* addr, socklen_t* len) {
  if (path.empty() || path.size() > kMaxPathBytes) return false;
  if (path.find('\0') != std::string::npos) return false;
  std::memset(addr, 0, sizeof(*addr));
  addr->sun_family = AF_UNIX;
  std::memcpy(addr->sun_path, path.data(), path.size());
  *len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + 1);
  return true;
}

namespace {

UniqueFd new_socket() {
  return UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
}

// What is at `path`: 0 = a socket nobody listens on, EADDRINUSE = a live
// listener, ENOTSOCK = not a socket, ENOENT = gone.
int probe_existing(const std::string& path, const sockaddr_un& addr, socklen_t len) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return errno == ENOENT ? ENOENT : EADDRINUSE;
  if (!S_ISSOCK(st.st_mode)) return ENOTSOCK;
  UniqueFd probe = new_socket();
  if (!probe.valid()) return EADDRINUSE;
  int r;
  do {
    r = ::connect(probe.get(), reinterpret_cast<const sockaddr*>(&addr), len);
  } while (r != 0 && errno == EINTR);
  if (r == 0) return EADDRINUSE;
  if (errno == ECONNREFUSED) return 0;  // stale
  if (errno == ENOENT) return ENOENT;
  return EADDRINUSE;  // EAGAIN (full backlog) and anything else: assume live
}

}  // namespace

Listener listen_unix(const std::string& path, int backlog, int mode) {
  Listener out;
  sockaddr_un addr;
  socklen_t len;
  if (!make_address(path, &addr, &len)) {
    out.error = CoreError::plain("ERR_PATH_TOO_LONG", "socket path is empty, contains NUL or exceeds " +
                                                          std::to_string(kMaxPathBytes) + " bytes");
    return out;
  }
  UniqueFd fd;
  for (int attempt = 0;; ++attempt) {
    fd = new_socket();
    if (!fd.valid()) {
      out.error = CoreError::sys("ERR_SOCKET", errno, "socket", "cannot create socket");
      return out;
    }
    if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), len) == 0) break;
    const int e = errno;
    if (e != EADDRINUSE || attempt >= 3) {
      out.error = CoreError::sys(e == EADDRINUSE ? "ERR_ADDRESS_IN_USE" : "ERR_SOCKET", e, "bind",
                                 "cannot bind " + path);
      return out;
    }
    const int what = probe_existing(path, addr, len);
    if (what == ENOTSOCK) {
      out.error = CoreError::plain("ERR_NOT_A_SOCKET",
                                   path + " exists and is not a socket; refusing to replace it");
      out.error.err = ENOTSOCK;
      return out;
    }
    if (what == EADDRINUSE) {
      out.error = CoreError::sys("ERR_ADDRESS_IN_USE", EADDRINUSE, "bind",
                                 "another process is listening on " + path);
      return out;
    }
    if (what == 0 && ::unlink(path.c_str()) != 0 && errno != ENOENT) {
      out.error = CoreError::sys("ERR_SOCKET", errno, "unlink", "cannot remove stale socket " + path);
      return out;
    }
    // removed (or vanished meanwhile): bind again
  }
  struct stat st;
  if (::stat(path.c_str(), &st) == 0) {
    out.dev = st.st_dev;
    out.ino = st.st_ino;
  }
  if (mode >= 0 && ::chmod(path.c_str(), static_cast<mode_t>(mode)) != 0) {
    CoreError e = CoreError::sys("ERR_SOCKET", errno, "chmod", "cannot set mode of " + path);
    unlink_if_same(path, out.dev, out.ino);
    out.error = e;
    return out;
  }
  if (::listen(fd.get(), backlog) != 0) {
    CoreError e = CoreError::sys("ERR_SOCKET", errno, "listen", "cannot listen on " + path);
    unlink_if_same(path, out.dev, out.ino);
    out.error = e;
    return out;
  }
  out.fd = std::move(fd);
  return out;
}

void unlink_if_same(const std::string& path, dev_t dev, ino_t ino) {
  struct stat st;
  if (ino == 0) return;
  if (::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode) && st.st_dev == dev && st.st_ino == ino)
    ::unlink(path.c_str());
}

int connect_unix(const std::string& path, UniqueFd* out) {
  sockaddr_un addr;
  socklen_t len;
  if (!make_address(path, &addr, &len)) return ENAMETOOLONG;
  UniqueFd fd = new_socket();
  if (!fd.valid()) return errno;
  int r;
  do {
    r = ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), len);
  } while (r != 0 && errno == EINTR);
  if (r != 0) return errno;
  *out = std::move(fd);
  return 0;
}

int raise_send_buffer(int fd, int want) {
  int cur = 0;
  socklen_t sl = sizeof(cur);
  ::getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &cur, &sl);
  // The kernel doubles the value it is given; it reports the doubled value.
  if (want > 0 && want > cur) {
    int half = want / 2;
    ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &half, sizeof(half));
    sl = sizeof(cur);
    ::getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &cur, &sl);
  }
  return cur;
}

}  // namespace udsipc
