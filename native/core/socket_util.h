// Unix domain socket helpers: addresses (filesystem and abstract), listening
// safely in directories other users can write (bound in a private directory,
// mode/owner set there, moved into place; stale-socket recovery; missing
// directories created; of concurrent starters one wins), non-blocking connect,
// peer credentials, send-buffer tuning, systemd notifications. Plain POSIX.
#pragma once

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <string>
#include <vector>

#include "error.h"
#include "protocol.h"
#include "unique_fd.h"

namespace udsipc {

// sun_path holds 108 bytes: 107 path bytes and the terminating NUL (or, for
// an abstract name, the leading NUL and 107 name bytes).
using protocol::limits::kMaxPathBytes;
static_assert(kMaxPathBytes == sizeof(sockaddr_un::sun_path) - 1);

// A path starting with '@' names a Linux abstract socket: "@name" binds to
// "\0name" with an address length covering exactly the name (no padding).
inline bool is_abstract(const std::string& path) { return !path.empty() && path[0] == '@'; }

// Fills addr/len. False if empty, containing NUL, or too long (nothing is
// ever truncated).
bool make_address(const std::string& path, sockaddr_un* addr, socklen_t* len);

struct ListenOptions {
  // SOCK_STREAM, SOCK_SEQPACKET (listening too) or SOCK_DGRAM (bound only:
  // no listen()). The stale-socket probe connects with the same type: a live
  // socket of another type answers EPROTOTYPE and is never taken for stale.
  int type = SOCK_STREAM;
  int backlog = protocol::defaults::kBacklog;
  int mode = -1;            // chmod the socket file to this (-1 = leave)
  int uid = -1, gid = -1;   // chown the socket file (-1 = leave; ids >= 2^31 as their uid_t bits)
  int dir_mode = -1;        // create missing parent directories with this mode (-1 = don't)
  // SO_PASSRIGHTS (see set_pass_rights()), set before bind(): 0 refuses
  // descriptors, so that not even a connection queued before the reader
  // starts can bring one; 1 accepts them; -1 leaves the default.
  int pass_rights = -1;
  // Tests only: called on the calling thread between the filesystem steps of
  // listen_unix(), named by `step`, so that a test can act as an attacker
  // racing those steps deterministically. Null in production.
  void (*pause)(const char* step, void* arg) = nullptr;
  void* pause_arg = nullptr;
};

struct Listener {
  UniqueFd fd;
  dev_t dev = 0;  // identity of the socket file we created, so that stop
  ino_t ino = 0;  // removes it only if it is still ours
  CoreError error;
};

// socket + bind + chmod/chown + listen, safe in a directory other users can
// write. The socket is bound inside a fresh private (0700) directory made
// beside its final name, given its mode and owner there (fchmodat/fchownat
// relative to that directory's fd: nobody else can swap names in it), set
// listening, and only then moved to its name with renameat2(RENAME_NOREPLACE)
// (link() where the filesystem lacks it): it appears already listening,
// with its final mode and owner, and nothing else is ever chmod-ed or
// chown-ed whatever another user renames meanwhile. An existing path that is
// not a socket is never touched (ERR_NOT_A_SOCKET); a socket with a live
// listener is not stolen (ERR_ADDRESS_IN_USE); a stale one (connect refused)
// is swapped out atomically (RENAME_EXCHANGE), checked again where nobody
// else can reach it, and removed (or given back if it came alive: of several
// starters exactly one wins). Missing directories (dir_mode >= 0) are made
// 0700 relative to their parent's fd, opened O_NOFOLLOW, checked to be ours
// and given dir_mode with fchmod. No lock and no blocking call: another user
// cannot make this wait. On failure everything created is removed.
Listener listen_unix(const std::string& path, const ListenOptions& opts);
inline Listener listen_unix(const std::string& path, int backlog, int mode) {
  ListenOptions o;
  o.backlog = backlog;
  o.mode = mode;
  return listen_unix(path, o);
}

// Removes path only if it is still the socket identified by dev/ino.
void unlink_if_same(const std::string& path, dev_t dev, ino_t ino);

// Non-blocking, close-on-exec connect. Returns 0 and sets *out, or an errno.
// Note: on a full backlog a Unix stream connect fails with EAGAIN.
// With autobind, the socket first binds to a kernel-chosen abstract name
// (bind() of an address that is only the family): a SOCK_SEQPACKET writer
// does this so that every packet it sends carries a sender address, which is
// how a PacketReceiver tells its packets (even 0-byte ones) from EOF without
// SO_PASSCRED (see packet_io.h). A failed autobind is not an error: the
// receiver then falls back to SO_PASSCRED.
// With refuse_fds, SO_PASSRIGHTS is turned off before connect() (see
// refuse_rights() below): the peer can never send this socket a descriptor,
// not even before the caller first looks at it. Where the kernel lacks the
// option, nothing changes (not an error).
int connect_unix(const std::string& path, UniqueFd* out, int type = SOCK_STREAM, bool autobind = false,
                 bool refuse_fds = false);

// SO_PASSRIGHTS off (Linux 6.16): the kernel refuses SCM_RIGHTS sent to this
// socket (the sender's sendmsg fails with EPERM, nothing is queued), and a
// listening socket's accepted sockets inherit it, from before accept().
// Why: a descriptor received, or discarded by the kernel for lack of room,
// is released by the receiving thread, and releasing the last reference of
// a TCP socket with SO_LINGER and unsent data blocks for the linger time
// (up to 2^31 s): any peer that may send could stall our IO or JavaScript
// thread at will. 0, or an errno (ENOPROTOOPT before 6.16: nothing changes).
// set_pass_rights(fd, true) turns it back on (the default): for a socket
// that may have been turned off before (a listener a service manager passes
// again to the next run of the service).
int set_pass_rights(int fd, bool on);
inline int refuse_rights(int fd) { return set_pass_rights(fd, false); }
// Whether this kernel has SO_PASSRIGHTS (asked once per call; cheap).
bool kernel_refuses_rights();

struct PeerCred {
  int pid = -1, uid = -1, gid = -1;
};
// SO_PEERCRED: the peer's credentials as of its connect()/listen().
PeerCred peer_credentials(int fd);

// Raises SO_SNDBUF to `want` bytes if that is more than the current size
// (never shrinks it) and returns the effective size the kernel reports.
int raise_send_buffer(int fd, int want);

// Resolves a user or group name (getpwnam_r/getgrnam_r). -1 if unknown.
int lookup_uid(const std::string& name);
int lookup_gid(const std::string& name);

// Checks that fd is a listening AF_UNIX SOCK_STREAM socket. Empty error if so.
CoreError check_listening_unix(int fd);
// A listening socket handed over by someone else (systemd socket
// activation): checks it as check_listening_unix() does and, if it passes,
// makes it non-blocking and close-on-exec, as listen_unix()'s own sockets
// are. The fd stays the caller's either way.
CoreError adopt_listening_fd(int fd);
// The filesystem path a listening socket is bound to ("" if none/abstract;
// "@name" for an abstract name).
std::string bound_path(int fd);

// Sends one datagram (e.g. "READY=1") to $NOTIFY_SOCKET-style address.
// Returns 0 or an errno.
// Descriptors with messages (SCM_RIGHTS).
using protocol::limits::kMaxFdsPerMessage;

// Control data to send `count` descriptors with a message (SCM_RIGHTS):
// fills `control` (at least CMSG_SPACE(sizeof(int) * kMaxFdsPerMessage)
// bytes, aligned for cmsghdr) and points msg at it.
void put_rights(msghdr* msg, char* control, const int* fds, int count);

// Appends every SCM_RIGHTS descriptor of a received message to *out (owned
// from now on, so closed if dropped); other control messages are ignored.
void take_rights(msghdr* msg, std::vector<UniqueFd>* out);

// One recvmsg of a stream connection into [p, p + len), MSG_CMSG_CLOEXEC,
// with room for the most descriptors one sendmsg may carry, or for one when
// !accept (enough to see that some came: the kernel installs what fits and
// discards the rest). Returns what recvmsg returned. Descriptors that came
// are appended to *fds; *why is set when they break the receiver's rules:
// ERR_UNEXPECTED_FDS (not accepted) or ERR_FDS_TRUNCATED (MSG_CTRUNC:
// RLIMIT_NOFILE reached, or more than fit); then the caller closes the
// connection (the descriptors are dropped with *fds).
ssize_t recv_with_fds(int fd, uint8_t* p, size_t len, bool accept, std::vector<UniqueFd>* fds, CoreError* why);

int notify_datagram(const std::string& address, const std::string& message);

}  // namespace udsipc
