#include "socket_util.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstddef>
#include <cstring>
#include <optional>
#include <random>

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

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

// renameat2(2) through syscall(): glibc wraps it only from 2.28 on, the
// prebuilds' floor, and newer kernel features go through syscall() with a
// fallback (EINVAL/ENOSYS: the caller falls back to link()).
int rename_at2(int olddir, const char* oldname, int newdir, const char* newname, unsigned flags) {
#ifdef SYS_renameat2
  return static_cast<int>(::syscall(SYS_renameat2, olddir, oldname, newdir, newname, flags));
#else
  errno = ENOSYS;
  return -1;
#endif
}

enum class Probe { kGone, kStale, kLive };

// Is anyone listening at addr (with a socket of `type`)? Refused = a stale
// socket nobody listens on; EPROTOTYPE (a live socket of another type) is live.
Probe probe_address(const sockaddr_un& addr, socklen_t len, int type) {
  UniqueFd probe = new_socket(type);
  if (!probe.valid()) return Probe::kLive;
  int r;
  do {
    r = ::connect(probe.get(), reinterpret_cast<const sockaddr*>(&addr), len);
  } while (r != 0 && errno == EINTR);
  if (r == 0) return Probe::kLive;
  if (errno == ECONNREFUSED) return Probe::kStale;
  if (errno == ENOENT) return Probe::kGone;
  return Probe::kLive;  // EAGAIN (full backlog) and anything else: assume live
}

bool same_inode(const struct stat& a, const struct stat& b) { return a.st_dev == b.st_dev && a.st_ino == b.st_ino; }

bool stat_at(int dir, const char* name, struct stat* st) { return ::fstatat(dir, name, st, AT_SYMLINK_NOFOLLOW) == 0; }

// A directory this call created, to remove again on failure: removed only
// while its name still names the same (then empty) directory.
struct Made {
  UniqueFd parent;
  std::string name;
  struct stat st;
};

void remove_made(std::vector<Made>& made) {
  for (auto it = made.rbegin(); it != made.rend(); ++it) {
    struct stat now;
    if (stat_at(it->parent.get(), it->name.c_str(), &now) && same_inode(now, it->st))
      ::unlinkat(it->parent.get(), it->name.c_str(), AT_REMOVEDIR);
  }
  made.clear();
}

// Opens the directory `dir` (O_PATH: search permission is enough). With
// mode >= 0, missing components are created, each one by mkdirat() with
// 0700 relative to the fd of its parent, then opened with O_NOFOLLOW and
// checked to be the directory we just made (ours, no group/other bits)
// before fchmod() gives it `mode` through that fd. An attacker who can write
// the parent may swap the new name for a symlink or a directory of their
// own between the steps; neither passes the check, and no path-based chmod
// ever follows the swap. Existing components are followed as the caller
// wrote them (symlinks included): the caller chose them.
// Returns 0 or an errno; *syscall names the step that failed.
int open_dir(const std::string& dir, int mode, std::vector<Made>* made, const ListenOptions& opts, UniqueFd* out,
             const char** syscall) {
  *syscall = "open";
  if (mode < 0) {
    out->reset(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    return out->valid() ? 0 : errno;
  }
  *syscall = "mkdir";
  UniqueFd cur(::open(dir[0] == '/' ? "/" : ".", O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!cur.valid()) return errno;
  size_t pos = 0;
  while (pos < dir.size()) {
    size_t next = dir.find('/', pos);
    if (next == std::string::npos) next = dir.size();
    const std::string comp = dir.substr(pos, next - pos);
    pos = next + 1;
    if (comp.empty() || comp == ".") continue;
    for (int tries = 0;; ++tries) {
      UniqueFd existing(::openat(cur.get(), comp.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
      if (existing.valid()) {
        cur = std::move(existing);
        break;
      }
      if (errno != ENOENT || tries >= 3) return errno;
      if (::mkdirat(cur.get(), comp.c_str(), 0700) != 0) {
        if (errno == EEXIST) continue;  // made by someone else meanwhile: open it
        return errno;
      }
      if (opts.pause) opts.pause("dir-created", opts.pause_arg);
      UniqueFd mine(::openat(cur.get(), comp.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      struct stat st;
      if (!mine.valid() || ::fstat(mine.get(), &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != ::geteuid() ||
          (st.st_mode & 077) != 0) {
        return EEXIST;  // not the directory we made: someone swapped it
      }
      made->push_back(Made{UniqueFd(::fcntl(cur.get(), F_DUPFD_CLOEXEC, 0)), comp, st});
      if (::fchmod(mine.get(), static_cast<mode_t>(mode)) != 0) {
        *syscall = "chmod";
        return errno;
      }
      if (opts.pause) opts.pause("dir-mode-set", opts.pause_arg);
      cur = std::move(mine);
      break;
    }
  }
  *out = std::move(cur);
  return 0;
}

// A fresh directory of ours, mode 0700, beside the socket's final name: the
// socket is bound, given its mode and owner, and set listening in here,
// where nobody else can reach it, then moved into place. Removed (with the
// socket, if it is still ours and still in here) when this goes away.
class PrivateDir {
 public:
  explicit PrivateDir(int parent) : parent_(parent) {}
  PrivateDir(const PrivateDir&) = delete;
  PrivateDir& operator=(const PrivateDir&) = delete;
  ~PrivateDir() {
    if (!fd_.valid()) return;
    struct stat st;
    if (sock_.st_ino != 0 && stat_at(fd_.get(), kName, &st) && same_inode(st, sock_)) ::unlinkat(fd_.get(), kName, 0);
    if (stat_at(parent_, name_.c_str(), &st) && same_inode(st, self_)) ::unlinkat(parent_, name_.c_str(), AT_REMOVEDIR);
  }

  // Creates it under a random name. 0 or an errno.
  int create() {
    std::random_device rd;
    static constexpr char kAlphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
    for (int tries = 0; tries < 16; ++tries) {
      name_ = ".uds-";
      for (int i = 0; i < 8; ++i) name_ += kAlphabet[rd() % (sizeof(kAlphabet) - 1)];
      if (::mkdirat(parent_, name_.c_str(), 0700) != 0) {
        if (errno == EEXIST) continue;
        return errno;
      }
      UniqueFd fd(::openat(parent_, name_.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!fd.valid() || ::fstat(fd.get(), &self_) != 0 || !S_ISDIR(self_.st_mode) || self_.st_uid != ::geteuid() ||
          (self_.st_mode & 077) != 0) {
        // Swapped before we could open it, or a umask without owner read
        // (EACCES): remove the name if it is an empty directory (whoever's:
        // an empty directory in a directory they can write is no loss).
        const int e = fd.valid() ? EEXIST : errno;
        ::unlinkat(parent_, name_.c_str(), AT_REMOVEDIR);
        return e == ELOOP || e == ENOTDIR ? EEXIST : e;
      }
      fd_ = std::move(fd);
      // The umask may have taken owner bits (umask 0222): ours, through the fd.
      if (::fchmod(fd_.get(), 0700) != 0) return errno;
      return 0;
    }
    return EEXIST;
  }

  int fd() const { return fd_.get(); }
  static constexpr const char* kName = "s";

  // The address of the socket in here: through /proc/self/fd, which names
  // exactly the directory we opened (and is short). Without /proc there is
  // no safe address: a path through the shared directory can be swapped
  // between our check and bind(), which would then create a file wherever
  // the swap points. (The kernel records this address: getsockname() and
  // `ss -xl` show /proc/self/fd/N/s, not the final path.)
  bool address(sockaddr_un* addr, socklen_t* len) const {
    struct stat via, real;
    const std::string proc = "/proc/self/fd/" + std::to_string(fd_.get());
    if (::stat(proc.c_str(), &via) == 0 && ::fstat(fd_.get(), &real) == 0 && same_inode(via, real))
      return make_address(proc + "/" + kName, addr, len);
    return false;  // no /proc: a path through the shared directory can be swapped
  }

  // The socket in here is ours: remember it, so that cleanup removes only it.
  void own_socket(const struct stat& st) { sock_ = st; }
  void disown_socket() { sock_ = {}; }

 private:
  int parent_;  // borrowed
  std::string name_;
  UniqueFd fd_;
  struct stat self_ {};
  struct stat sock_ {};
};

// Moves our listening socket (priv/s) to dir/base without ever replacing a
// live socket or anything that is not a socket. A stale socket (connect
// refused) is swapped out atomically with RENAME_EXCHANGE, then looked at
// where nobody else can touch it: still refused, it is removed; answered
// (a concurrent starter won the name meanwhile), it is swapped back.
CoreError place(PrivateDir& priv, int dir, const std::string& base, const std::string& path, const sockaddr_un& addr,
                socklen_t len, const struct stat& ours, const ListenOptions& opts) {
  const char* s = PrivateDir::kName;
  sockaddr_un held_addr;
  socklen_t held_len;
  if (!priv.address(&held_addr, &held_len))
    return CoreError::plain("ERR_PATH_TOO_LONG", "cannot address a socket next to " + path);
  for (int attempt = 0; attempt < 8; ++attempt) {
    int e = 0;
    if (rename_at2(priv.fd(), s, dir, base.c_str(), RENAME_NOREPLACE) == 0) return {};
    e = errno;
    if (e == EINVAL || e == ENOSYS) {  // no renameat2 flags here: link() never replaces either
      if (::linkat(priv.fd(), s, dir, base.c_str(), 0) == 0) {
        ::unlinkat(priv.fd(), s, 0);
        return {};
      }
      e = errno;
    }
    if (e != EEXIST) return CoreError::sys("ERR_SOCKET", e, "rename", "cannot move the socket into place at " + path);

    struct stat there;
    if (!stat_at(dir, base.c_str(), &there)) {
      if (errno == ENOENT) continue;
      return CoreError::sys("ERR_SOCKET", errno, "stat", "cannot inspect " + path);
    }
    if (!S_ISSOCK(there.st_mode)) {
      CoreError err = CoreError::plain("ERR_NOT_A_SOCKET", path + " exists and is not a socket; refusing to replace it");
      err.err = ENOTSOCK;
      return err;
    }
    const Probe p = probe_address(addr, len, opts.type);
    if (p == Probe::kGone) continue;
    if (p == Probe::kLive)
      return CoreError::sys("ERR_ADDRESS_IN_USE", EADDRINUSE, "bind", "another process is listening on " + path);

    if (opts.pause) opts.pause("stale-found", opts.pause_arg);
    {
      struct stat still;  // the name must still be the socket probed stale
      if (!stat_at(dir, base.c_str(), &still) || !same_inode(still, there)) continue;
    }
    if (rename_at2(priv.fd(), s, dir, base.c_str(), RENAME_EXCHANGE) != 0) {
      e = errno;
      if (e == ENOENT) continue;  // gone meanwhile
      if (e == EINVAL || e == ENOSYS) {
        // No exchange on this filesystem: remove the stale socket by name if
        // it still is the one probed (a narrow race remains here, and only
        // here), then try the no-replace move again.
        if (::renameat(dir, base.c_str(), priv.fd(), "old") != 0) {
          if (errno == ENOENT) continue;
          return CoreError::sys("ERR_SOCKET", errno, "rename", "cannot replace the stale socket " + path);
        }
        struct stat took;
        if (stat_at(priv.fd(), "old", &took) && same_inode(took, there)) {
          ::unlinkat(priv.fd(), "old", 0);
          continue;
        }
        const bool back = ::linkat(priv.fd(), "old", dir, base.c_str(), 0) == 0;
        if (back) ::unlinkat(priv.fd(), "old", 0);
        return CoreError::sys("ERR_ADDRESS_IN_USE", EADDRINUSE, "bind", "another process is listening on " + path);
      }
      return CoreError::sys("ERR_SOCKET", e, "rename", "cannot replace the stale socket " + path);
    }
    // The name is ours; what had it is in our private directory now.
    priv.disown_socket();
    if (opts.pause) opts.pause("exchanged", opts.pause_arg);
    struct stat took;
    const bool is_sock = stat_at(priv.fd(), s, &took) && S_ISSOCK(took.st_mode);
    if (is_sock && !same_inode(took, there)) {  // not what was probed: give it back at once
      if (rename_at2(priv.fd(), s, dir, base.c_str(), RENAME_EXCHANGE) != 0)
        rename_at2(priv.fd(), s, dir, base.c_str(), RENAME_NOREPLACE);
      struct stat back;
      if (stat_at(priv.fd(), s, &back) && same_inode(back, ours)) priv.own_socket(back);
      continue;
    }
    if (is_sock && probe_address(held_addr, held_len, opts.type) == Probe::kStale) {
      ::unlinkat(priv.fd(), s, 0);
      return {};
    }
    // Not stale after all, or not a socket: give it its name back.
    if (rename_at2(priv.fd(), s, dir, base.c_str(), RENAME_EXCHANGE) != 0)
      rename_at2(priv.fd(), s, dir, base.c_str(), RENAME_NOREPLACE);
    struct stat back;
    if (stat_at(priv.fd(), s, &back) && same_inode(back, ours)) priv.own_socket(back);
    if (!is_sock) {
      CoreError err = CoreError::plain("ERR_NOT_A_SOCKET", path + " exists and is not a socket; refusing to replace it");
      err.err = ENOTSOCK;
      return err;
    }
    return CoreError::sys("ERR_ADDRESS_IN_USE", EADDRINUSE, "bind", "another process is listening on " + path);
  }
  return CoreError::sys("ERR_ADDRESS_IN_USE", EADDRINUSE, "bind", "cannot take " + path + ": it keeps changing");
}

}  // namespace

// Filesystem sockets are bound in a private directory and moved into place
// (see PrivateDir and place()): the mode and owner are set where nobody else
// can swap names, so nothing but our own socket inode is ever chmod-ed or
// chown-ed, and the socket appears at its name already listening with its
// final mode and owner. No lock is taken: every step is a non-blocking
// system call, so nothing another user does can make this wait.
Listener listen_unix(const std::string& path, const ListenOptions& opts) {
  Listener out;
  sockaddr_un addr;
  socklen_t len;
  if (!make_address(path, &addr, &len)) {
    out.error = CoreError::plain("ERR_PATH_TOO_LONG", "socket path is empty, contains NUL or exceeds " +
                                                          std::to_string(kMaxPathBytes) + " bytes");
    return out;
  }
  UniqueFd fd = new_socket(opts.type);
  if (!fd.valid()) {
    out.error = CoreError::sys("ERR_SOCKET", errno, "socket", "cannot create socket");
    return out;
  }
  if (opts.pass_rights >= 0) (void)set_pass_rights(fd.get(), opts.pass_rights != 0);  // ENOPROTOOPT before 6.16
  const bool listens = opts.type != SOCK_DGRAM;
  if (is_abstract(path)) {
    if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), len) != 0) {
      const int e = errno;
      out.error = CoreError::sys(e == EADDRINUSE ? "ERR_ADDRESS_IN_USE" : "ERR_SOCKET", e, "bind", "cannot bind " + path);
    } else if (listens && ::listen(fd.get(), opts.backlog) != 0) {
      out.error = CoreError::sys("ERR_SOCKET", errno, "listen", "cannot listen on " + path);
    } else {
      out.fd = std::move(fd);
    }
    return out;
  }

  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  std::vector<Made> made;  // directories created, removed again on failure
  UniqueFd dfd;            // the socket's directory
  std::optional<PrivateDir> priv;  // borrows dfd: declared after it, so destroyed before it
  auto fail = [&](CoreError e) {
    priv.reset();  // first: it lives in the last directory made
    remove_made(made);
    out.error = std::move(e);
    return std::move(out);
  };
  if (base.empty() || base == "." || base == "..")
    return fail(CoreError::sys("ERR_SOCKET", EISDIR, "bind", "cannot bind " + path));

  const char* step = "";
  if (const int e = open_dir(dir, opts.dir_mode, &made, opts, &dfd, &step)) {
    if (opts.dir_mode < 0) return fail(CoreError::sys("ERR_SOCKET", e, "bind", "cannot bind " + path));
    return fail(CoreError::sys("ERR_SOCKET", e, step, "cannot create directory " + dir));
  }
  priv.emplace(dfd.get());
  if (const int e = priv->create())
    return fail(CoreError::sys("ERR_SOCKET", e, "bind", "cannot bind " + path + " (a private directory in " + dir + ")"));
  if (opts.pause) opts.pause("private-dir", opts.pause_arg);

  sockaddr_un paddr;
  socklen_t plen;
  if (!priv->address(&paddr, &plen))
    return fail(CoreError::plain("ERR_SOCKET", "cannot bind " + path + ": /proc/self/fd is needed to bind safely and is not mounted"));
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&paddr), plen) != 0)
    return fail(CoreError::sys("ERR_SOCKET", errno, "bind", "cannot bind " + path));
  if (opts.pause) opts.pause("bound", opts.pause_arg);
  struct stat st;
  if (!stat_at(priv->fd(), PrivateDir::kName, &st) || !S_ISSOCK(st.st_mode))  // bound elsewhere (no /proc, path swapped)
    return fail(CoreError::sys("ERR_SOCKET", EEXIST, "bind", "cannot bind " + path + ": its directory was replaced"));
  priv->own_socket(st);
  if (opts.mode >= 0 && ::fchmodat(priv->fd(), PrivateDir::kName, static_cast<mode_t>(opts.mode), 0) != 0)
    return fail(CoreError::sys("ERR_SOCKET", errno, "chmod", "cannot set the mode of " + path));
  if ((opts.uid != -1 || opts.gid != -1) &&
      ::fchownat(priv->fd(), PrivateDir::kName, static_cast<uid_t>(opts.uid), static_cast<gid_t>(opts.gid),
                 AT_SYMLINK_NOFOLLOW) != 0)
    return fail(CoreError::sys("ERR_SOCKET", errno, "chown", "cannot set the owner of " + path));
  if (opts.pause) opts.pause("mode-set", opts.pause_arg);
  if (listens && ::listen(fd.get(), opts.backlog) != 0)
    return fail(CoreError::sys("ERR_SOCKET", errno, "listen", "cannot listen on " + path));
  if (opts.pause) opts.pause("listening", opts.pause_arg);

  if (CoreError e = place(*priv, dfd.get(), base, path, addr, len, st, opts)) return fail(std::move(e));
  if (opts.pause) opts.pause("placed", opts.pause_arg);
  // Success means the name is our socket now (whoever can write the
  // directory may of course rename it afterwards).
  // Checked by path, as a client resolves it.
  struct stat now;
  if (::lstat(path.c_str(), &now) != 0 || !same_inode(now, st)) {
    if (stat_at(dfd.get(), base.c_str(), &now) && same_inode(now, st)) ::unlinkat(dfd.get(), base.c_str(), 0);
    return fail(CoreError::sys("ERR_ADDRESS_IN_USE", EADDRINUSE, "bind", path + " was replaced while starting"));
  }
  out.dev = st.st_dev;
  out.ino = st.st_ino;
  out.fd = std::move(fd);
  return out;
}

void unlink_if_same(const std::string& path, dev_t dev, ino_t ino) {
  struct stat st;
  if (ino == 0 || is_abstract(path)) return;
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  UniqueFd dfd(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (dfd.valid() && stat_at(dfd.get(), base.c_str(), &st) && S_ISSOCK(st.st_mode) && st.st_dev == dev && st.st_ino == ino)
    ::unlinkat(dfd.get(), base.c_str(), 0);
}

// Linux 6.16. Older headers lack it: 83 is its number in
// asm-generic/socket.h, which these architectures use (alpha, mips, parisc
// and sparc number socket options their own way: there, without the header,
// it is reported as unavailable).
#if !defined(SO_PASSRIGHTS) &&                                                                                    \
    (defined(__x86_64__) || defined(__i386__) || defined(__aarch64__) || defined(__arm__) || defined(__riscv) || \
     defined(__powerpc64__) || defined(__s390x__) || defined(__loongarch__))
#define SO_PASSRIGHTS 83
#endif

int set_pass_rights(int fd, bool on) {
#ifdef SO_PASSRIGHTS
  const int v = on ? 1 : 0;
  return ::setsockopt(fd, SOL_SOCKET, SO_PASSRIGHTS, &v, sizeof(v)) == 0 ? 0 : errno;
#else
  (void)fd;
  (void)on;
  return ENOPROTOOPT;
#endif
}

bool kernel_refuses_rights() {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv) != 0) return false;
  UniqueFd a(sv[0]), b(sv[1]);
  return refuse_rights(b.get()) == 0;
}

int connect_unix(const std::string& path, UniqueFd* out, int type, bool autobind, bool refuse_fds) {
  sockaddr_un addr;
  socklen_t len;
  if (!make_address(path, &addr, &len)) return ENAMETOOLONG;
  UniqueFd fd = new_socket(type);
  if (!fd.valid()) return errno;
  if (refuse_fds) (void)refuse_rights(fd.get());
  if (autobind) {
    sockaddr_un self{};
    self.sun_family = AF_UNIX;
    (void)::bind(fd.get(), reinterpret_cast<const sockaddr*>(&self), sizeof(sa_family_t));
  }
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

CoreError adopt_listening_fd(int fd) {
  if (CoreError e = check_listening_unix(fd)) return e;
  const int fl = ::fcntl(fd, F_GETFL);
  if (fl < 0 || ::fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0)
    return CoreError::sys("ERR_SOCKET", errno, "fcntl", "cannot make fd " + std::to_string(fd) + " non-blocking");
  const int fdfl = ::fcntl(fd, F_GETFD);
  if (fdfl < 0 || ::fcntl(fd, F_SETFD, fdfl | FD_CLOEXEC) != 0)
    return CoreError::sys("ERR_SOCKET", errno, "fcntl", "cannot set close-on-exec on fd " + std::to_string(fd));
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

void take_rights(msghdr* msg, std::vector<UniqueFd>* out) {
  for (cmsghdr* c = CMSG_FIRSTHDR(msg); c != nullptr; c = CMSG_NXTHDR(msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    const unsigned char* data = CMSG_DATA(c);
    for (size_t i = 0; i < n; ++i) {
      int fd;
      std::memcpy(&fd, data + i * sizeof(int), sizeof fd);
      out->emplace_back(fd);
    }
  }
}

ssize_t recv_with_fds(int fd, uint8_t* p, size_t len, bool accept, std::vector<UniqueFd>* fds, CoreError* why) {
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFdsPerMessage)];
  iovec iov{p, len};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = accept ? sizeof control : CMSG_SPACE(sizeof(int));
  const ssize_t n = ::recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
  if (n < 0) return n;
  const bool truncated = (msg.msg_flags & MSG_CTRUNC) != 0;
  if (msg.msg_controllen == 0 && !truncated) return n;  // the common case
  take_rights(&msg, fds);
  if (fds->empty() && !truncated) return n;
  if (!accept) {
    *why = CoreError::plain("ERR_UNEXPECTED_FDS",
                            "the peer sent file descriptors, and this end does not accept them (acceptFds)");
  } else if (truncated) {
    *why = CoreError::plain("ERR_FDS_TRUNCATED", "file descriptors sent with a message did not all arrive (" +
                                                     std::to_string(fds->size()) +
                                                     " did; the kernel discarded the rest: RLIMIT_NOFILE reached, or "
                                                     "more than " + std::to_string(kMaxFdsPerMessage) + ")");
  }
  return n;
}

void put_rights(msghdr* msg, char* control, const int* fds, int count) {
  msg->msg_control = control;
  msg->msg_controllen = CMSG_SPACE(sizeof(int) * count);
  cmsghdr* c = CMSG_FIRSTHDR(msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int) * count);
  std::memcpy(CMSG_DATA(c), fds, sizeof(int) * count);
}

}  // namespace udsipc
