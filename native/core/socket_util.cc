#include "socket_util.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/file.h>
#include <unistd.h>

#include <cstddef>
#include <cstring>

namespace udsipc {

bool make_address(const std::string& path, sockaddr_un* addr, socklen_t* len) {
  if (path.empty() || path.find('\0') != std::string::npos) return false;
  std::memset(addr, 0, sizeof(*addr));
  addr->sun_family = AF_UNIX;
  if (is_abstract(path)) {
    const size_t n = path.size() - 1;  // the name after '@'
    if (n == 0 || n > kMaxPathBytes) return false;
    addr->sun_path[0] = '\0';
    std::memcpy(addr->sun_path + 1, path.data() + 1, n);
    *len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + n);
    return true;
  }
  if (path.size() > kMaxPathBytes) return false;
  std::memcpy(addr->sun_path, path.data(), path.size());
  *len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + 1);
  return true;
}

namespace {

UniqueFd new_socket(int type = SOCK_STREAM) {
  return UniqueFd(::socket(AF_UNIX, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
}

// What is at `path`: 0 = a socket nobody listens on, EADDRINUSE = a live
// listener, ENOTSOCK = not a socket, ENOENT = gone.
int probe_existing(const std::string& path, const sockaddr_un& addr, socklen_t len) {
  if (!is_abstract(path)) {
    struct stat st;
    if (::lstat(path.c_str(), &st) != 0) return errno == ENOENT ? ENOENT : EADDRINUSE;
    if (!S_ISSOCK(st.st_mode)) return ENOTSOCK;
  }
  UniqueFd probe = new_socket();
  if (!probe.valid()) return EADDRINUSE;
  int r;
  do {
    r = ::connect(probe.get(), reinterpret_cast<const sockaddr*>(&addr), len);
  } while (r != 0 && errno == EINTR);
  if (r == 0) return EADDRINUSE;
  if (errno == ECONNREFUSED) return is_abstract(path) ? EADDRINUSE : 0;  // abstract: bound by someone
  if (errno == ENOENT) return ENOENT;
  return EADDRINUSE;  // EAGAIN (full backlog) and anything else: assume live
}

std::string parent_of(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// Creates the missing directories leading to `dir` with `mode` (applied with
// chmod, so the umask does not narrow or widen it). Records what it made.
int make_dirs(const std::string& dir, int mode, std::vector<std::string>* made) {
  struct stat st;
  if (::stat(dir.c_str(), &st) == 0) return S_ISDIR(st.st_mode) ? 0 : ENOTDIR;
  if (errno != ENOENT) return errno;
  const std::string up = parent_of(dir);
  if (up != dir) {
    const int e = make_dirs(up, mode, made);
    if (e) return e;
  }
  if (::mkdir(dir.c_str(), 0700) != 0) return errno == EEXIST ? 0 : errno;
  made->push_back(dir);
  if (::chmod(dir.c_str(), static_cast<mode_t>(mode)) != 0) return errno;
  return 0;
}

void remove_dirs(std::vector<std::string>& made) {
  for (auto it = made.rbegin(); it != made.rend(); ++it) ::rmdir(it->c_str());
  made.clear();
}

}  // namespace

Listener listen_unix(const std::string& path, const ListenOptions& opts) {
  Listener out;
  sockaddr_un addr;
  socklen_t len;
  if (!make_address(path, &addr, &len)) {
    out.error = CoreError::plain("ERR_PATH_TOO_LONG", "socket path is empty, contains NUL or exceeds " +
                                                          std::to_string(kMaxPathBytes) + " bytes");
    return out;
  }
  const bool abstract = is_abstract(path);
  std::vector<std::string> made;  // directories we created
  UniqueFd dir_lock;
  if (!abstract) {
    const std::string dir = parent_of(path);
    if (opts.dir_mode >= 0) {
      const int e = make_dirs(dir, opts.dir_mode, &made);
      if (e) {
        remove_dirs(made);
        out.error = CoreError::sys("ERR_SOCKET", e, "mkdir", "cannot create directory " + dir);
        return out;
      }
    }
    // Serialise starters in this directory: probe, replace and listen happen
    // as one step. (Best effort: some filesystems do not support flock.)
    dir_lock.reset(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (dir_lock.valid()) {
      while (::flock(dir_lock.get(), LOCK_EX) != 0 && errno == EINTR) {
      }
    }
  }
  auto fail = [&](CoreError e) {
    remove_dirs(made);
    out.error = std::move(e);
    return std::move(out);
  };

  UniqueFd fd;
  for (int attempt = 0;; ++attempt) {
    fd = new_socket();
    if (!fd.valid()) return fail(CoreError::sys("ERR_SOCKET", errno, "socket", "cannot create socket"));
    if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), len) == 0) break;
    const int e = errno;
    if (e != EADDRINUSE || attempt >= 3) {
      return fail(CoreError::sys(e == EADDRINUSE ? "ERR_ADDRESS_IN_USE" : "ERR_SOCKET", e, "bind",
                                 "cannot bind " + path));
    }
    const int what = probe_existing(path, addr, len);
    if (what == ENOTSOCK) {
      CoreError err = CoreError::plain("ERR_NOT_A_SOCKET", path + " exists and is not a socket; refusing to replace it");
      err.err = ENOTSOCK;
      return fail(err);
    }
    if (what == EADDRINUSE) {
      return fail(CoreError::sys("ERR_ADDRESS_IN_USE", EADDRINUSE, "bind", "another process is listening on " + path));
    }
    if (what == 0 && ::unlink(path.c_str()) != 0 && errno != ENOENT) {
      return fail(CoreError::sys("ERR_SOCKET", errno, "unlink", "cannot remove stale socket " + path));
    }
    // removed (or vanished meanwhile): bind again
  }
  if (!abstract) {
    struct stat st;
    if (::lstat(path.c_str(), &st) == 0) {
      out.dev = st.st_dev;
      out.ino = st.st_ino;
    }
    auto undo = [&](CoreError e) {
      unlink_if_same(path, out.dev, out.ino);
      return fail(std::move(e));
    };
    if (opts.mode >= 0 && ::chmod(path.c_str(), static_cast<mode_t>(opts.mode)) != 0)
      return undo(CoreError::sys("ERR_SOCKET", errno, "chmod", "cannot set the mode of " + path));
    if ((opts.uid >= 0 || opts.gid >= 0) &&
        ::lchown(path.c_str(), static_cast<uid_t>(opts.uid), static_cast<gid_t>(opts.gid)) != 0)
      return undo(CoreError::sys("ERR_SOCKET", errno, "chown", "cannot set the owner of " + path));
    if (::listen(fd.get(), opts.backlog) != 0)
      return undo(CoreError::sys("ERR_SOCKET", errno, "listen", "cannot listen on " + path));
  } else if (::listen(fd.get(), opts.backlog) != 0) {
    return fail(CoreError::sys("ERR_SOCKET", errno, "listen", "cannot listen on " + path));
  }
  out.fd = std::move(fd);
  return out;
}

void unlink_if_same(const std::string& path, dev_t dev, ino_t ino) {
  struct stat st;
  if (ino == 0 || is_abstract(path)) return;
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

PeerCred peer_credentials(int fd) {
  PeerCred p;
  struct ucred uc;
  socklen_t l = sizeof(uc);
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &l) == 0) {
    p.pid = uc.pid;
    p.uid = static_cast<int>(uc.uid);
    p.gid = static_cast<int>(uc.gid);
  }
  return p;
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

int lookup_uid(const std::string& name) {
  struct passwd pw, *res = nullptr;
  std::vector<char> buf(16384);
  if (::getpwnam_r(name.c_str(), &pw, buf.data(), buf.size(), &res) != 0 || !res) return -1;
  return static_cast<int>(pw.pw_uid);
}

int lookup_gid(const std::string& name) {
  struct group gr, *res = nullptr;
  std::vector<char> buf(16384);
  if (::getgrnam_r(name.c_str(), &gr, buf.data(), buf.size(), &res) != 0 || !res) return -1;
  return static_cast<int>(gr.gr_gid);
}

CoreError check_listening_unix(int fd) {
  int v = 0;
  socklen_t l = sizeof(v);
  sockaddr_storage ss;
  socklen_t sl = sizeof(ss);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &sl) != 0)
    return CoreError::sys("ERR_NOT_A_SOCKET", errno, "getsockname", "fd " + std::to_string(fd) + " is not a socket");
  if (ss.ss_family != AF_UNIX)
    return CoreError::plain("ERR_NOT_A_SOCKET", "fd " + std::to_string(fd) + " is not an AF_UNIX socket");
  if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &l) != 0 || v != SOCK_STREAM)
    return CoreError::plain("ERR_NOT_A_SOCKET", "fd " + std::to_string(fd) + " is not a SOCK_STREAM socket");
  l = sizeof(v);
  if (::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &l) != 0 || v != 1)
    return CoreError::plain("ERR_NOT_A_SOCKET", "fd " + std::to_string(fd) + " is not listening");
  return {};
}

std::string bound_path(int fd) {
  sockaddr_un a;
  socklen_t l = sizeof(a);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &l) != 0 || a.sun_family != AF_UNIX) return "";
  const size_t n = l > offsetof(sockaddr_un, sun_path) ? l - offsetof(sockaddr_un, sun_path) : 0;
  if (n == 0) return "";
  if (a.sun_path[0] == '\0') return "@" + std::string(a.sun_path + 1, n - 1);
  return std::string(a.sun_path, strnlen(a.sun_path, n));
}

int notify_datagram(const std::string& address, const std::string& message) {
  sockaddr_un addr;
  socklen_t len;
  if (!make_address(address, &addr, &len)) return ENAMETOOLONG;
  UniqueFd fd = new_socket(SOCK_DGRAM);
  if (!fd.valid()) return errno;
  if (::sendto(fd.get(), message.data(), message.size(), MSG_NOSIGNAL, reinterpret_cast<const sockaddr*>(&addr), len) < 0)
    return errno;
  return 0;
}

}  // namespace udsipc
