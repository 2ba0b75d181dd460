// socket_util's helpers for descriptors handed over by someone else
// (systemd socket activation): adopt_listening_fd() and check_listening_unix().
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "check.h"
#include "core/socket_util.h"

using namespace udsipc;

namespace {

// A socket as systemd passes one: created without SOCK_NONBLOCK or
// SOCK_CLOEXEC (here: with both flags cleared), bound, and listening if asked.
UniqueFd inherited_socket(int domain, int type, bool listening, std::string* dir) {
  UniqueFd fd(::socket(domain, type, 0));
  CHECK(fd.valid());
  if (domain == AF_UNIX) {
    char tmpl[] = "/tmp/uds-adopt-XXXXXX";
    *dir = ::mkdtemp(tmpl);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    const std::string path = *dir + "/s.sock";
    std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
    CHECK(::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  }
  if (listening) CHECK(::listen(fd.get(), 8) == 0);
  CHECK((::fcntl(fd.get(), F_GETFL) & O_NONBLOCK) == 0);
  CHECK((::fcntl(fd.get(), F_GETFD) & FD_CLOEXEC) == 0);
  return fd;
}

void remove_dir(const std::string& dir) {
  if (dir.empty()) return;
  ::unlink((dir + "/s.sock").c_str());
  ::rmdir(dir.c_str());
}

bool nonblocking(int fd) { return (::fcntl(fd, F_GETFL) & O_NONBLOCK) != 0; }
bool cloexec(int fd) { return (::fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0; }

}  // namespace

// A listening AF_UNIX stream socket is accepted and made non-blocking and
// close-on-exec, as listen_unix()'s own sockets are; it stays open (the
// caller owns it).
TEST(adopt_listening_fd_prepares_a_listening_unix_socket) {
  std::string dir;
  UniqueFd fd = inherited_socket(AF_UNIX, SOCK_STREAM, true, &dir);
  const CoreError e = adopt_listening_fd(fd.get());
  if (e) std::fprintf(stderr, "  %s\n", e.message.c_str());
  CHECK(!e);
  CHECK(nonblocking(fd.get()));
  CHECK(cloexec(fd.get()));
  CHECK(::fcntl(fd.get(), F_GETFD) >= 0);
  // Idempotent.
  CHECK(!adopt_listening_fd(fd.get()));
  CHECK(nonblocking(fd.get()) && cloexec(fd.get()));
  remove_dir(dir);
}

// Anything else is refused with ERR_NOT_A_SOCKET, and left as it was.
TEST(adopt_listening_fd_refuses_anything_else_untouched) {
  struct Case {
    const char* what;
    int domain, type;
    bool listening;
  };
  for (const Case& c : {Case{"not listening", AF_UNIX, SOCK_STREAM, false},
                        Case{"a datagram socket", AF_UNIX, SOCK_DGRAM, false},
                        Case{"not AF_UNIX", AF_INET, SOCK_STREAM, true}}) {
    std::string dir;
    UniqueFd fd = inherited_socket(c.domain, c.type, c.listening, &dir);
    const CoreError e = adopt_listening_fd(fd.get());
    if (e.code != "ERR_NOT_A_SOCKET") std::fprintf(stderr, "  %s: got '%s'\n", c.what, e.code.c_str());
    CHECK(e.code == "ERR_NOT_A_SOCKET");
    CHECK(!nonblocking(fd.get()));
    CHECK(!cloexec(fd.get()));
    remove_dir(dir);
  }
  int p[2];
  CHECK(::pipe(p) == 0);
  CHECK(adopt_listening_fd(p[0]).code == "ERR_NOT_A_SOCKET");
  CHECK(!nonblocking(p[0]));
  ::close(p[0]);
  ::close(p[1]);
  CHECK(adopt_listening_fd(-1).code == "ERR_NOT_A_SOCKET");
}

TEST_MAIN()
