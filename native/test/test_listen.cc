// listen_unix() against a hostile user who can write the socket's directory.
//
// The attacker acts deterministically: ListenOptions::pause is called between
// listen_unix()'s filesystem steps, and each run lets the attacker act at one
// of those pauses (every pause in turn, for every attack). Whatever happens,
// nothing but our own socket inode may be chmod-ed or chown-ed, and a
// listen_unix() that reports success must be listening on the path it was
// given, with the mode and owner asked for.
//
// Runs as root in CI (chown needs it); as another user the chown cases are
// skipped by the uid check below and the mode cases still run.
#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "check.h"
#include "core/socket_util.h"

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

  Attacker atk;
  atk.kind = c.kind;
  atk.dir = shared;
  atk.created = shared + "/made";
  atk.path = c.create_dirs ? shared + "/made/s.sock" : shared + "/s.sock";
  atk.sock_dir = c.create_dirs ? atk.created : shared;
  atk.victim_file = victim_file;
  atk.victim_dir = victim_dir;
  atk.act_at = act_at;

  if (c.stale) {
    Listener old = listen_unix(atk.path, ListenOptions{});  // closed at once: stale
    CHECK(!old.error);
  }
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
  CHECK(ok);
  const int seen = atk.seen;
  l.fd.reset();
  remove_tree(base);
  return seen;
}

void run_all_pauses(const Case& c) {
  const int pauses = run_case(c, -1);  // a clean run counts the pauses
  CHECK(pauses > (c.stale ? 6 : 4));
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

TEST_MAIN()
