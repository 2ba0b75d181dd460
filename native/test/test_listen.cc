// listen_unix() against a hostile user who can write the socket's directory.
//
// The attacker acts deterministically: ListenOptions::pause is called between
// listen_unix()'s filesystem steps, and each run lets the attacker act at one
// of those pauses (every pause in turn, for every attack). Whatever happens,
// nothing but our own socket inode may be chmod-ed or chown-ed, and a
// listen_unix() that reports success must be listening on the path it was
// given, with the mode and owner asked for.
//
// Needs root (chown, another uid, a mount namespace), as CI runs it; as
// another user the cases that need root fail with a message saying so.
#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <future>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "check.h"
#include "core/socket_util.h"

// Test-only interposition (glibc >= 2.34, where dlsym is in libc): this
// executable's syscall() and unlinkat() stand in for libc's, so that a test
// can (1) play a filesystem whose rename has no RENAME_NOREPLACE /
// RENAME_EXCHANGE (renameat2 with flags -> EINVAL, as on NFS, 9p, ecryptfs,
// some FUSE), and (2) run a concurrent starter at the exact moment
// listen_unix() is about to unlink something.
#if defined(__GLIBC__) && __GLIBC_PREREQ(2, 34)
#define UDS_TEST_INTERPOSE 1
namespace {
bool g_no_rename_flags = false;
std::function<void()> g_before_unlinkat;  // run once, just before the next unlinkat()
using RealSyscall = long (*)(long, ...);
RealSyscall g_real_syscall = nullptr;
}  // namespace

// Forwards six arguments whatever the caller passed, as libc's syscall() does
// (the unused ones are ignored by the kernel): not a bug for ASan to report.
extern "C" __attribute__((no_sanitize("address"))) long syscall(long nr, ...) noexcept {
  va_list ap;
  va_start(ap, nr);
  long a[6];
  for (long& x : a) x = va_arg(ap, long);
  va_end(ap);
  if (nr == SYS_renameat2 && g_no_rename_flags && a[4] != 0) {
    errno = EINVAL;
    return -1;
  }
  if (!g_real_syscall) g_real_syscall = reinterpret_cast<RealSyscall>(::dlsym(RTLD_NEXT, "syscall"));
  return g_real_syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
}

extern "C" int unlinkat(int dirfd, const char* name, int flags) noexcept {
  if (g_before_unlinkat) {
    auto f = std::move(g_before_unlinkat);
    g_before_unlinkat = nullptr;
    f();
  }
  return static_cast<int>(syscall(SYS_unlinkat, dirfd, name, flags));
}

extern "C" int unlink(const char* name) noexcept { return unlinkat(AT_FDCWD, name, 0); }
#endif

using namespace udsipc;

namespace {

std::string make_temp_dir() {
  char tmpl[] = "/tmp/uds-ipc-listen-XXXXXX";
  const char* d = ::mkdtemp(tmpl);
  if (!d) {
    std::perror("mkdtemp");
    std::abort();
  }
  ::chmod(d, 0777);  // the attacker may write here (no sticky bit)
  return d;
}

void remove_tree(const std::string& p) {
  const std::string cmd = "rm -rf '" + p + "'";
  if (std::system(cmd.c_str()) != 0) std::fprintf(stderr, "cannot remove %s\n", p.c_str());
}

struct stat lstat_of(const std::string& p) {
  struct stat st {};
  if (::lstat(p.c_str(), &st) != 0) st.st_mode = 0;
  return st;
}

std::vector<std::string> entries(const std::string& dir) {
  std::vector<std::string> out;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d)) {
      const std::string n = e->d_name;
      if (n != "." && n != "..") out.push_back(n);
    }
    ::closedir(d);
  }
  std::sort(out.begin(), out.end());
  return out;
}

bool has_private_dir(const std::string& dir) {
  for (const auto& n : entries(dir))
    if (n.rfind(".uds-", 0) == 0) return true;
  return false;
}

// Open descriptors of this process (-1 without /proc).
int count_fds() {
  DIR* d = ::opendir("/proc/self/fd");
  if (!d) return -1;
  int n = 0;
  while (dirent* e = ::readdir(d)) n += e->d_name[0] != '.';
  ::closedir(d);
  return n - 1;  // the one opendir holds
}

// A stale socket at path: bound, never listening, closed.
void make_stale(const std::string& path) {
  sockaddr_un addr;
  socklen_t len;
  CHECK(make_address(path, &addr, &len));
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  CHECK(::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), len) == 0);
}

// Without /proc, listen_unix() may refuse cleanly instead of binding by path.
bool g_unattacked_may_fail = false;

enum class Attack {
  kSwapPath,        // the socket's name becomes a symlink to the victim file
  kSwapHiddenDirs,  // every directory in the socket's directory becomes a symlink to the victim directory
  kSwapCreatedDir,  // the directory listen_unix() created becomes a symlink to the victim directory
};

const char* attack_name(Attack a) {
  switch (a) {
    case Attack::kSwapPath: return "swap-path";
    case Attack::kSwapHiddenDirs: return "swap-hidden-dirs";
    case Attack::kSwapCreatedDir: return "swap-created-dir";
  }
  return "?";
}

struct Attacker {
  Attack kind;
  std::string dir;          // the shared directory
  std::string sock_dir;     // the socket's directory (dir, or one created in it)
  std::string path;         // the socket path
  std::string created;      // kSwapCreatedDir: the directory to swap
  std::string victim_file;  // outside dir
  std::string victim_dir;   // outside dir
  int act_at = -1;          // act at this pause (0-based); -1 = never
  int seen = 0;
  bool acted = false;
  std::vector<std::string> steps;

  static void pause(const char* step, void* arg) { static_cast<Attacker*>(arg)->on_pause(step); }

  void swap_for_symlink(const std::string& name, const std::string& target) {
    const std::string moved = name + ".moved-by-attacker";
    ::rename(name.c_str(), moved.c_str());  // may not exist (yet): then only the symlink appears
    const std::string tmp = dir + "/.attacker-link";
    ::unlink(tmp.c_str());
    if (::symlink(target.c_str(), tmp.c_str()) != 0) std::perror("symlink");
    if (::rename(tmp.c_str(), name.c_str()) != 0) std::perror("rename");
  }

  void on_pause(const char* step) {
    steps.push_back(step);
    if (seen++ != act_at) return;
    acted = true;
    switch (kind) {
      case Attack::kSwapPath:
        swap_for_symlink(path, victim_file);
        break;
      case Attack::kSwapHiddenDirs: {
        std::vector<std::string> names;
        for (const std::string& where : {sock_dir, dir}) {
          if (DIR* d = ::opendir(where.c_str())) {
            while (dirent* e = ::readdir(d)) {
              const std::string n = e->d_name;
              if (n == "." || n == ".." || n.find("moved-by-attacker") != std::string::npos) continue;
              if (S_ISDIR(lstat_of(where + "/" + n).st_mode)) names.push_back(where + "/" + n);
            }
            ::closedir(d);
          }
          if (sock_dir == dir) break;
        }
        for (const auto& n : names) swap_for_symlink(n, victim_dir);
        break;
      }
      case Attack::kSwapCreatedDir:
        swap_for_symlink(created, victim_dir);
        break;
    }
  }
};

// Connects to path and checks that `listener` accepts that very connection.
bool reaches(const std::string& path, int listener) {
  UniqueFd c;
  if (connect_unix(path, &c) != 0) return false;
  for (int i = 0; i < 1000; ++i) {
    const int a = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (a >= 0) {
      ::close(a);
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return false;
}

struct Case {
  Attack kind;
  int mode;
  int uid, gid;        // -1 = leave
  bool create_dirs;    // the socket's directory does not exist yet
  bool stale = false;  // a stale socket has the name already
};

// Runs one listen_unix() with the attacker acting at pause `act_at`.
// Returns the number of pauses seen.
int run_case(const Case& c, int act_at) {
  const std::string base = make_temp_dir();
  const std::string shared = base + "/shared";
  ::mkdir(shared.c_str(), 0777);
  ::chmod(shared.c_str(), 0777);
  const std::string victim_file = base + "/victim-file";
  const std::string victim_dir = base + "/victim-dir";
  {
    UniqueFd f(::open(victim_file.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644));
    ::fchmod(f.get(), 0644);
  }
  ::mkdir(victim_dir.c_str(), 0755);
  ::chmod(victim_dir.c_str(), 0755);
  const struct stat vf0 = lstat_of(victim_file), vd0 = lstat_of(victim_dir);
  const int fds0 = count_fds();

  Attacker atk;
  atk.kind = c.kind;
  atk.dir = shared;
  atk.created = shared + "/made";
  atk.path = c.create_dirs ? shared + "/made/s.sock" : shared + "/s.sock";
  atk.sock_dir = c.create_dirs ? atk.created : shared;
  atk.victim_file = victim_file;
  atk.victim_dir = victim_dir;
  atk.act_at = act_at;

  if (c.stale) make_stale(atk.path);
  ListenOptions o;
  o.mode = c.mode;
  o.uid = c.uid;
  o.gid = c.gid;
  o.dir_mode = c.create_dirs ? 0777 : -1;
  o.pause = &Attacker::pause;
  o.pause_arg = &atk;
  Listener l = listen_unix(atk.path, o);

  const struct stat vf1 = lstat_of(victim_file), vd1 = lstat_of(victim_dir);
  const std::string what = std::string(attack_name(c.kind)) + " at pause " + std::to_string(act_at) +
                           (atk.acted ? " (" + atk.steps[act_at] + ")" : " (not reached)") +
                           (c.create_dirs ? ", creating dirs" : "") + (c.stale ? ", replacing a stale socket" : "");
  bool ok = true;
  auto expect = [&](bool cond, const std::string& msg) {
    if (!cond) {
      std::fprintf(stderr, "  %s: %s\n", what.c_str(), msg.c_str());
      ok = false;
    }
  };
  expect((vf1.st_mode & 07777) == (vf0.st_mode & 07777), "the victim file's mode changed");
  expect(vf1.st_uid == vf0.st_uid && vf1.st_gid == vf0.st_gid, "the victim file's owner changed");
  expect((vd1.st_mode & 07777) == (vd0.st_mode & 07777), "the victim directory's mode changed");
  expect(vd1.st_uid == vd0.st_uid && vd1.st_gid == vd0.st_gid, "the victim directory's owner changed");
  expect(entries(victim_dir).empty(), "something was created in the victim directory: " +
                                          (entries(victim_dir).empty() ? "" : entries(victim_dir)[0]));
  if (!atk.acted) {
    expect(!has_private_dir(shared) && !has_private_dir(atk.sock_dir), "a private .uds-* directory was left behind");
    if (!g_unattacked_may_fail) expect(!l.error, "an unattacked start failed: " + l.error.message);
  }
  if (!l.error) {
    // Success means: the path names our listening socket, as asked.
    const struct stat s = lstat_of(atk.path);
    expect(S_ISSOCK(s.st_mode), "start succeeded but the path is not a socket");
    if (S_ISSOCK(s.st_mode)) {
      expect(s.st_dev == l.dev && s.st_ino == l.ino, "start succeeded but the path names another inode");
      if (c.mode >= 0) expect(static_cast<int>(s.st_mode & 07777) == c.mode, "the socket's mode is not the one asked for");
      if (c.uid >= 0) expect(static_cast<int>(s.st_uid) == c.uid, "the socket's owner is not the one asked for");
      if (c.gid >= 0) expect(static_cast<int>(s.st_gid) == c.gid, "the socket's group is not the one asked for");
      expect(reaches(atk.path, l.fd.get()), "connecting to the path does not reach our listener");
    }
  } else {
    expect(!l.error.code.empty() && !l.error.message.empty(), "an error without code or message");
  }
  const int seen = atk.seen;
  l.fd.reset();
  if (fds0 >= 0) expect(count_fds() == fds0, "file descriptors leaked");
  CHECK(ok);
  remove_tree(base);
  return seen;
}

void run_all_pauses(const Case& c, int min_pauses = 0) {
  const int pauses = run_case(c, -1);  // a clean run counts the pauses
  CHECK(pauses >= (min_pauses ? min_pauses : c.stale ? 7 : 5));
  for (int k = 0; k < pauses; ++k) run_case(c, k);
}

const bool root = ::geteuid() == 0;

}  // namespace

// The attacker swaps the socket's name for a symlink to a file of the
// victim's between any two steps: chmod must never follow it.
TEST(symlink_swap_never_chmods_the_target) {
  run_all_pauses({Attack::kSwapPath, 0666, -1, -1, false});
  run_all_pauses({Attack::kSwapPath, 0600, -1, -1, false});
}

// The same while a stale socket is replaced (the exchange and the look at
// what was exchanged are steps to race too).
TEST(symlink_swap_while_replacing_a_stale_socket) {
  run_all_pauses({Attack::kSwapPath, 0666, -1, -1, false, true});
  run_all_pauses({Attack::kSwapHiddenDirs, 0666, -1, -1, false, true});
  if (root) run_all_pauses({Attack::kSwapPath, 0660, 1, 1, false, true});
}

TEST(symlink_swap_never_chowns_the_target) {
  CHECK(root);  // chown to another owner needs root: run the C++ tests as root (CI does)
  if (!root) return;
  run_all_pauses({Attack::kSwapPath, 0660, 1, 1, false});
}

// Directories listen_unix() makes for itself in the shared directory (if
// any) are swapped for symlinks to the victim's directory.
TEST(private_directory_swap_never_chmods_the_target) {
  run_all_pauses({Attack::kSwapHiddenDirs, 0666, -1, -1, false});
  if (root) run_all_pauses({Attack::kSwapHiddenDirs, 0660, 1, 1, false});
}

// directoryMode: the directory created for the socket is swapped for a
// symlink to the victim's directory before its mode is set.
TEST(created_directory_swap_never_chmods_the_target) {
  run_all_pauses({Attack::kSwapCreatedDir, 0666, -1, -1, true});
  run_all_pauses({Attack::kSwapHiddenDirs, 0666, -1, -1, true});
  run_all_pauses({Attack::kSwapPath, 0666, -1, -1, true});
}

// A lock on the socket's directory, held by anyone who can open it, must not
// stop listen_unix() (which runs on the JavaScript thread): it returns at
// once, whatever the lock.
TEST(a_lock_held_on_the_directory_does_not_block) {
  const std::string base = make_temp_dir();
  UniqueFd lock(::open(base.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  CHECK(::flock(lock.get(), LOCK_EX) == 0);
  auto done = std::async(std::launch::async, [&] { return listen_unix(base + "/s.sock", ListenOptions{}); });
  const bool returned = done.wait_for(std::chrono::seconds(5)) == std::future_status::ready;
  CHECK(returned);
  ::flock(lock.get(), LOCK_UN);  // lets a blocked listen_unix() finish, so the test ends either way
  Listener l = done.get();
  CHECK(!l.error);
  remove_tree(base);
}

// Of several starters on the same path at once, exactly one wins; with a
// stale socket at the path too.
TEST(concurrent_starters_exactly_one_wins) {
  for (int stale = 0; stale < 2; ++stale) {
    for (int round = 0; round < 50; ++round) {
      const std::string base = make_temp_dir();
      const std::string path = base + "/s.sock";
      if (stale) {
        Listener old = listen_unix(path, ListenOptions{});
        CHECK(!old.error);
        // closing it leaves the file behind: a stale socket
      }
      std::vector<std::future<Listener>> fs;
      for (int i = 0; i < 4; ++i)
        fs.push_back(std::async(std::launch::async, [&] { return listen_unix(path, ListenOptions{}); }));
      std::vector<Listener> ls;
      for (auto& f : fs) ls.push_back(f.get());
      int won = 0;
      for (auto& l : ls) {
        if (!l.error) {
          ++won;
          CHECK(reaches(path, l.fd.get()));
          const struct stat s = lstat_of(path);
          CHECK(s.st_ino == l.ino);
        } else {
          CHECK(l.error.code == "ERR_ADDRESS_IN_USE");
        }
      }
      CHECK_EQ(won, 1);
      // Nothing left in the directory but the socket.
      int entries = 0;
      if (DIR* d = ::opendir(base.c_str())) {
        while (dirent* e = ::readdir(d)) {
          const std::string n = e->d_name;
          if (n == "." || n == "..") continue;
          ++entries;
          if (n != "s.sock") std::fprintf(stderr, "  left behind: %s\n", n.c_str());
        }
        ::closedir(d);
      }
      CHECK_EQ(entries, 1);
      remove_tree(base);
    }
  }
}

// ---------------------------------------------------------------------------
// Review findings (attacker's review of the private-directory listen_unix()).

namespace {

// Runs listen_unix() on a thread of its own, stopping at the named pauses
// until released: several starters interleaved step by step.
struct Starter {
  std::string path;
  std::vector<std::string> stops;
  bool keep_listener_open = false;  // dup the listener at "listening" (see below)
  UniqueFd kept;
  std::set<int> known_fds;
  Listener result;
  std::mutex m;
  std::condition_variable cv;
  std::string at;
  bool go = false, done = false, run_free = false;
  std::thread t;

  static void pause(const char* step, void* arg) { static_cast<Starter*>(arg)->on(step); }
  void on(const char* step) {
    if (keep_listener_open && std::strcmp(step, "listening") == 0) {
      // Our listener is the only listening AF_UNIX socket opened since start().
      if (DIR* d = ::opendir("/proc/self/fd")) {
        while (dirent* e = ::readdir(d)) {
          const int fd = std::atoi(e->d_name);
          int v = 0;
          socklen_t l = sizeof(v);
          if (e->d_name[0] != '.' && !known_fds.count(fd) &&
              ::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &l) == 0 && v == 1 && !kept.valid())
            kept.reset(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
        }
        ::closedir(d);
      }
    }
    std::unique_lock<std::mutex> lk(m);
    if (run_free || std::find(stops.begin(), stops.end(), step) == stops.end()) return;
    at = step;
    cv.notify_all();
    cv.wait(lk, [&] { return go; });
    go = false;
    at.clear();
  }
  void start() {
    if (DIR* d = ::opendir("/proc/self/fd")) {
      while (dirent* e = ::readdir(d)) known_fds.insert(std::atoi(e->d_name));
      known_fds.erase(::dirfd(d));  // closed below: its number is free again
      ::closedir(d);
    }
    t = std::thread([this] {
      ListenOptions o;
      o.pause = &Starter::pause;
      o.pause_arg = this;
      Listener l = listen_unix(path, o);
      std::lock_guard<std::mutex> lk(m);
      result = std::move(l);
      done = true;
      cv.notify_all();
    });
  }
  // Waits until it stops at `step` (true) or has returned (false).
  bool reached(const std::string& step) {
    std::unique_lock<std::mutex> lk(m);
    cv.wait(lk, [&] { return at == step || done; });
    return at == step;
  }
  void release() {
    std::lock_guard<std::mutex> lk(m);
    go = true;
    cv.notify_all();
  }
  Listener finish() {
    {
      std::lock_guard<std::mutex> lk(m);
      run_free = true;
      go = true;
      cv.notify_all();
    }
    t.join();
    return std::move(result);
  }
};

}  // namespace

// Three starters and a stale socket. B and C both probe the stale socket;
// A then replaces it and wins. B's RENAME_EXCHANGE then takes A's live
// listener off its name (B swaps with whatever the name holds now, not with
// the stale socket it probed), C's exchange takes B's, and the two give-backs
// permute the sockets: B hands back A's socket but receives C's, which stays
// in B's private directory. With B's listener still open while C looks at it
// (B closes it only as it returns, a moment after its give-back: modelled
// by keeping a dup of it), C "gives back" B's socket and keeps A's: A,
// which reported success, no longer has its name (its live listener sits in
// C's leftover .uds-* directory) and the name holds B's dead socket.
void three_starters(bool b_slow_to_close) {
  const std::string base = make_temp_dir();
  const std::string path = base + "/s.sock";
  make_stale(path);
  Starter b, c;
  b.path = c.path = path;
  b.stops = c.stops = {"stale-found", "exchanged"};
  b.keep_listener_open = b_slow_to_close;
  b.start();
  CHECK(b.reached("stale-found"));
  c.start();
  CHECK(c.reached("stale-found"));
  Listener a = listen_unix(path, ListenOptions{});
  CHECK(!a.error);
  b.release();
  if (b.reached("exchanged"))
    CHECK(lstat_of(path).st_ino == a.ino);  // B took A's live listener off its name
  c.release();
  c.reached("exchanged");
  Listener lb = b.finish();
  Listener lc = c.finish();
  CHECK(lb.error.code == "ERR_ADDRESS_IN_USE");
  CHECK(lc.error.code == "ERR_ADDRESS_IN_USE");
  const struct stat now = lstat_of(path);
  CHECK(S_ISSOCK(now.st_mode) && now.st_ino == a.ino);
  if (now.st_ino == a.ino) CHECK(reaches(path, a.fd.get()));
  const auto left = entries(base);
  CHECK(left.size() == 1 && left[0] == "s.sock");
  for (const auto& n : left)
    if (n != "s.sock")
      std::fprintf(stderr, "  left behind: %s/s%s\n", n.c_str(),
                   lstat_of(base + "/" + n + "/s").st_ino == a.ino ? " = A's live listener, off its name" : "");
  remove_tree(base);
}

TEST(stale_exchange_never_takes_a_live_listener_that_won_meanwhile) {
  three_starters(false);
  three_starters(true);
}

// uds-ipc's own umask is not touched, but the user's may lack owner write
// (umask 0222: "read-only files"). The old code bound in the directory
// itself and worked; the private directory is made 0700 & ~umask = 0500,
// so bind() inside it fails with EACCES for a non-root user.
// Also as that user: a 0333 directory (write+search, no read) works; a stale
// socket of another user in a sticky directory fails cleanly with EPERM and
// is left alone; directories created before a failure (chown EPERM) are
// removed again; nothing is left behind.
TEST(as_another_user_umask_sticky_and_failures) {
  if (!root) {
    std::fprintf(stderr, "  as_another_user_*: needs root to switch to uid 65534 (run the C++ tests as root)\n");
    CHECK(root);
    return;
  }
  const std::string base = make_temp_dir();
  const std::string d333 = base + "/d333", sticky = base + "/sticky", stale = sticky + "/s.sock";
  ::mkdir(d333.c_str(), 0333);
  ::chmod(d333.c_str(), 0333);
  ::mkdir(sticky.c_str(), 01777);
  ::chmod(sticky.c_str(), 01777);
  make_stale(stale);
  ::chmod(stale.c_str(), 0666);  // root's, stale, connectable by anyone
  const struct stat stale0 = lstat_of(stale);
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (::setgroups(0, nullptr) != 0 || ::setresgid(65534, 65534, 65534) != 0 || ::setresuid(65534, 65534, 65534) != 0)
      ::_exit(2);
    {
      ::umask(0222);
      ListenOptions o;
      o.mode = 0600;
      Listener l = listen_unix(base + "/u.sock", o);
      ::umask(022);
      if (l.error) std::fprintf(stderr, "  umask 0222: %s\n", l.error.message.c_str());
      CHECK(!l.error);
      CHECK(!has_private_dir(base));
    }
    {
      ListenOptions o;
      o.mode = 0600;
      Listener l = listen_unix(d333 + "/s.sock", o);
      CHECK(!l.error);
      CHECK(!has_private_dir(d333));
    }
    {
      Listener l = listen_unix(stale, ListenOptions{});
      CHECK(l.error && l.error.err == EPERM);
      CHECK(!has_private_dir(sticky));
    }
    {
      ListenOptions o;
      o.dir_mode = 0755;
      o.uid = 0;  // not ours to give: chown fails with EPERM after the directories were made
      Listener l = listen_unix(base + "/made/deeper/s.sock", o);
      CHECK(l.error && l.error.err == EPERM);
      CHECK(lstat_of(base + "/made").st_mode == 0);
    }
    std::fflush(nullptr);
    ::_exit(check::failures() ? 1 : 0);
  }
  int status = 0;
  CHECK(::waitpid(pid, &status, 0) == pid);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  const struct stat stale1 = lstat_of(stale);
  CHECK(stale1.st_ino == stale0.st_ino && (stale1.st_mode & 07777) == 0666 && stale1.st_uid == 0);
  remove_tree(base);
}

// Without /proc the socket is bound by path, parent/.uds-XXXXXXXX/s, and the
// private directory's name is in the shared directory: the attacker swaps it
// for a symlink to a directory of their choice and bind() creates the socket
// there (as root: in any directory), where it is left behind. run_case()
// checks that nothing appears in the victim directory.
TEST(without_proc_nothing_is_created_outside) {
  if (!root) {
    std::fprintf(stderr, "  without_proc_*: needs root for unshare(CLONE_NEWNS) (run the C++ tests as root)\n");
    CHECK(root);
    return;
  }
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (::unshare(CLONE_NEWNS) != 0 || ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
        ::umount2("/proc", MNT_DETACH) != 0)
      ::_exit(77);
    g_unattacked_may_fail = true;  // refusing to bind by path is a fine answer
    run_all_pauses({Attack::kSwapPath, 0666, -1, -1, false}, 1);
    run_all_pauses({Attack::kSwapHiddenDirs, 0666, -1, -1, false}, 1);
    run_all_pauses({Attack::kSwapHiddenDirs, 0666, -1, -1, false, true}, 1);
    std::fflush(nullptr);
    ::_exit(check::failures() ? 1 : 0);
  }
  int status = 0;
  CHECK(::waitpid(pid, &status, 0) == pid);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 77) {
    std::fprintf(stderr, "  without_proc_*: cannot unmount /proc in a new mount namespace here\n");
    CHECK(!"/proc could be unmounted");
    return;
  }
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

// Edge inputs behave as before the private directory: relative paths,
// "./" and created directories, a symlinked directory, 107 bytes (108 is
// refused), a trailing slash and "//" fail cleanly; nothing is left behind
// and no descriptor leaks.
TEST(edge_paths) {
  const std::string base = make_temp_dir();
  UniqueFd cwd(::open(".", O_PATH | O_DIRECTORY | O_CLOEXEC));
  CHECK(::chdir(base.c_str()) == 0);
  const int fds0 = count_fds();
  auto ok_at = [&](const std::string& path, int dir_mode, const std::string& where) {
    ListenOptions o;
    o.dir_mode = dir_mode;
    Listener l = listen_unix(path, o);
    if (l.error) std::fprintf(stderr, "  %s: %s\n", path.c_str(), l.error.message.c_str());
    CHECK(!l.error);
    CHECK(lstat_of(where).st_ino == l.ino && S_ISSOCK(lstat_of(where).st_mode));
    CHECK(reaches(path, l.fd.get()));
  };
  ok_at("s.sock", -1, base + "/s.sock");
  ok_at("./a/s.sock", 0755, base + "/a/s.sock");
  CHECK((lstat_of(base + "/a").st_mode & 07777) == 0755);
  ::mkdir("real", 0755);
  CHECK(::symlink("real", "lnk") == 0);
  ok_at("lnk/s.sock", -1, base + "/real/s.sock");
  std::string p107 = base + "/";
  p107 += std::string(107 - p107.size(), 'x');
  ok_at(p107, -1, p107);
  CHECK(listen_unix(p107 + "y", ListenOptions{}).error.code == "ERR_PATH_TOO_LONG");
  for (const char* bad : {"t/", "real/", "//", "real/.."}) {
    Listener l = listen_unix(bad, ListenOptions{});
    CHECK(l.error && !l.error.message.empty());
  }
  CHECK(count_fds() == fds0);
  CHECK(!has_private_dir(base) && !has_private_dir(base + "/a") && !has_private_dir(base + "/real"));
  CHECK(lstat_of(base + "/t").st_mode == 0);
  CHECK(::fchdir(cwd.get()) == 0);
  remove_tree(base);
}

#ifdef UDS_TEST_INTERPOSE
namespace {
struct NoRenameFlags {
  NoRenameFlags() { g_no_rename_flags = true; }
  ~NoRenameFlags() { g_no_rename_flags = false; }
};
}  // namespace

// The link() fallback (no renameat2 flags) against the same attacker.
TEST(without_rename_flags_the_fallback_holds_against_the_attacker) {
  NoRenameFlags no_flags;
  run_all_pauses({Attack::kSwapPath, 0666, -1, -1, false}, 5);
  run_all_pauses({Attack::kSwapPath, 0666, -1, -1, false, true}, 6);
  run_all_pauses({Attack::kSwapHiddenDirs, 0666, -1, -1, false, true}, 6);
}

// No RENAME_EXCHANGE: the stale socket is removed by name once a stat shows
// it is still the inode probed. A concurrent starter B that replaces it
// between that stat and the unlink (run here at A's unlinkat) loses its
// name to A's unlink, and both report success.
TEST(without_rename_flags_a_live_listener_is_never_unlinked) {
  NoRenameFlags no_flags;
  const std::string base = make_temp_dir();
  const std::string path = base + "/s.sock";
  make_stale(path);
  Listener b;
  bool b_ran = false;
  struct Arm {
    std::function<void()> run;
    static void pause(const char* step, void* arg) {
      if (std::strcmp(step, "stale-found") == 0) g_before_unlinkat = static_cast<Arm*>(arg)->run;
    }
  } arm;
  arm.run = [&] {
    b = listen_unix(path, ListenOptions{});
    b_ran = true;
  };
  ListenOptions o;
  o.pause = &Arm::pause;
  o.pause_arg = &arm;
  Listener a = listen_unix(path, o);
  g_before_unlinkat = nullptr;
  CHECK(b_ran);
  CHECK_EQ(int(!a.error) + int(!b.error), 1);
  const Listener& w = a.error ? b : a;
  CHECK(lstat_of(path).st_ino == w.ino);
  if (lstat_of(path).st_ino == w.ino) CHECK(reaches(path, w.fd.get()));
  CHECK(!has_private_dir(base));
  remove_tree(base);
}
// unlink_if_same() (stop(), process.exit()) checks the file by path, then
// unlinks by path. The socket's directory sits in a directory the attacker
// can write (here: made by directoryMode in a world-writable one); between
// the check and the unlink the attacker renames it away and puts a symlink
// to another directory in its place: the unlink then deletes whatever has
// the socket's name there (as root: in any directory).
TEST(unlink_if_same_never_follows_a_swapped_directory) {
  const std::string base = make_temp_dir();
  const std::string shared = base + "/shared", app = shared + "/app", path = app + "/s.sock";
  const std::string victim_dir = base + "/victim-dir", victim = victim_dir + "/s.sock";
  ::mkdir(shared.c_str(), 0777);
  ::chmod(shared.c_str(), 0777);
  ::mkdir(victim_dir.c_str(), 0755);
  { UniqueFd f(::open(victim.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644)); }
  ListenOptions o;
  o.dir_mode = 0755;
  Listener l = listen_unix(path, o);
  CHECK(!l.error);
  g_before_unlinkat = [&] {
    ::rename(app.c_str(), (app + ".moved").c_str());
    ::symlink(victim_dir.c_str(), app.c_str());
  };
  unlink_if_same(path, l.dev, l.ino);
  g_before_unlinkat = nullptr;
  CHECK(lstat_of(victim).st_mode != 0);  // the victim's file is still there
  remove_tree(base);
}
#else
TEST(without_rename_flags_not_run) {
  std::fprintf(stderr, "  without_rename_flags_*: interposition needs glibc >= 2.34 (dlsym in libc)\n");
  CHECK(!"built with glibc >= 2.34");
}
#endif

TEST_MAIN()
