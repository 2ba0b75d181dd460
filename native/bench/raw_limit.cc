// raw_limit: the raw-socket limit for `npm run bench` (no Node, no library).
//
//   raw_limit reader --path P --count N [--read-size BYTES]
//   raw_limit writer --path P --count N --size BYTES [--buf BYTES] [--sndbuf BYTES]
//   raw_limit pair   --count N --size BYTES [...]   (fork(): both in one call)
//
// bench/run.mjs spawns a reader and a writer as two separate processes, as it
// does for uds-ipc and node:net. Each prints one JSON line on stdout (the
// reader first prints {"ready":true} once it listens). `pair` forks the
// writer off a listening reader, for use by hand.
#include <sys/wait.h>

#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <string>

#include "raw_io.h"

using namespace rawbench;

namespace {

struct Args {
  std::string mode, path;
  uint64_t count = 1000000;
  size_t size = 64;
  size_t buf = size_t{1} << 20;       // writer: frames are packed into this much
  size_t read_size = size_t{1} << 20;  // reader: bytes per read(2)
  int sndbuf = 4 << 20;                // writer: SO_SNDBUF, as the uds-ipc Writer default (0 = kernel default)
};

uint64_t num(const char* s) {
  char* e = nullptr;
  const unsigned long long v = std::strtoull(s, &e, 10);
  if (!e || *e != '\0') {
    std::fprintf(stderr, "raw_limit: not a number: %s\n", s);
    std::exit(1);
  }
  return v;
}

Args parse(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr,
                 "usage: raw_limit reader|writer|pair --path P --count N --size BYTES "
                 "[--buf BYTES] [--read-size BYTES] [--sndbuf BYTES]\n");
    std::exit(1);
  }
  Args a;
  a.mode = argv[1];
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    const char* v = argv[i + 1];
    if (k == "--path") a.path = v;
    else if (k == "--count") a.count = num(v);
    else if (k == "--size") a.size = num(v);
    else if (k == "--buf") a.buf = num(v);
    else if (k == "--read-size") a.read_size = num(v);
    else if (k == "--sndbuf") a.sndbuf = static_cast<int>(num(v));
    else {
      std::fprintf(stderr, "raw_limit: unknown option %s\n", k.c_str());
      std::exit(1);
    }
  }
  if (a.path.empty()) a.path = "/tmp/raw_limit." + std::to_string(::getpid()) + ".sock";
  return a;
}

void print_reader(const Args& a, const ReaderStats& st, Cpu c0, Cpu c1) {
  std::printf(
      "{\"role\":\"reader\",\"impl\":\"raw\",\"size\":%zu,\"count\":%" PRIu64 ",\"bytes\":%" PRIu64
      ",\"msgsAfterFirst\":%" PRIu64 ",\"bytesAfterFirst\":%" PRIu64
      ",\"seconds\":%.9f,\"msgsPerSec\":%.1f,\"bytesPerSec\":%.1f,\"cpuUser\":%.6f,\"cpuSystem\":%.6f"
      ",\"peakRssKiB\":%ld,\"readCalls\":%" PRIu64 ",\"checksumOk\":%s,\"pid\":%d}\n",
      a.size, st.msgs, st.bytes, st.msgs - st.msgs_at_first, st.bytes - st.bytes_at_first, st.seconds(),
      st.msgs_per_sec(), st.bytes_per_sec(), c1.user - c0.user, c1.sys - c0.sys, peak_rss_kib(), st.read_calls,
      st.checksum == expected_checksum(a.count, a.size) ? "true" : "false", static_cast<int>(::getpid()));
  std::fflush(stdout);
}

void print_writer(const Args& a, const WriterStats& st, int sndbuf, Cpu c0, Cpu c1) {
  std::printf(
      "{\"role\":\"writer\",\"impl\":\"raw\",\"size\":%zu,\"count\":%" PRIu64
      ",\"seconds\":%.9f,\"cpuUser\":%.6f,\"cpuSystem\":%.6f,\"peakRssKiB\":%ld,\"writeCalls\":%" PRIu64
      ",\"bufBytes\":%zu,\"sndbuf\":%d,\"pid\":%d}\n",
      a.size, st.msgs, (st.end_ns - st.start_ns) / 1e9, c1.user - c0.user, c1.sys - c0.sys, peak_rss_kib(),
      st.write_calls, a.buf, sndbuf, static_cast<int>(::getpid()));
  std::fflush(stdout);
}

int run_reader(const Args& a, int lfd) {
  const int fd = accept_one(lfd);
  ::close(lfd);
  ::unlink(a.path.c_str());
  const Cpu c0 = cpu_now();
  const ReaderStats st = raw_read(fd, a.count, a.read_size);
  const Cpu c1 = cpu_now();
  ::close(fd);
  print_reader(a, st, c0, c1);
  return st.checksum == expected_checksum(a.count, a.size) ? 0 : 4;
}

int run_writer(const Args& a) {
  const int fd = connect_path(a.path);
  const int sndbuf = set_sndbuf(fd, a.sndbuf);
  const Cpu c0 = cpu_now();
  const WriterStats st = raw_write(fd, a.size, a.count, a.buf);
  const Cpu c1 = cpu_now();
  ::close(fd);
  print_writer(a, st, sndbuf, c0, c1);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse(argc, argv);
  if (a.mode == "reader") {
    const int lfd = listen_path(a.path);
    std::printf("{\"ready\":true}\n");
    std::fflush(stdout);
    return run_reader(a, lfd);
  }
  if (a.mode == "writer") return run_writer(a);
  if (a.mode == "pair") {
    const int lfd = listen_path(a.path);
    std::fflush(stdout);
    const pid_t pid = ::fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
      ::close(lfd);
      std::_Exit(run_writer(a));
    }
    const int rc = run_reader(a, lfd);
    int status = 0;
    ::waitpid(pid, &status, 0);
    return rc != 0 ? rc : (WIFEXITED(status) ? WEXITSTATUS(status) : 5);
  }
  std::fprintf(stderr, "raw_limit: unknown mode %s\n", a.mode.c_str());
  return 1;
}
