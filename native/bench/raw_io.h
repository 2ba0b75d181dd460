// The raw-socket limit: what plain C++ gets from one SOCK_STREAM Unix socket
// with the uds-ipc framing (uvarint length + payload), no library involved.
//
// Writer: encodes frames back to back into one large buffer (copying each
// payload, as any API that lets the caller reuse its buffer must) and writes
// the buffer with write(2) whenever the next frame would not fit.
// Reader: reads up to 1 MiB at a time, parses every whole frame in place,
// touches the first byte of every payload and counts.
//
// Deliberately self-contained (its own varint code, blocking sockets): the
// yardstick must not move when the library changes. Shared by raw_limit.cc
// (two processes, as `npm run bench` runs every implementation) and
// bench_core.cc (two threads, next to the engines in the same process).
#pragma once

#include <errno.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

namespace rawbench {

inline int64_t mono_ns() {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);  // the clock behind process.hrtime
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

inline double cpu_seconds(const rusage& r) {
  return static_cast<double>(r.ru_utime.tv_sec + r.ru_stime.tv_sec) +
         static_cast<double>(r.ru_utime.tv_usec + r.ru_stime.tv_usec) / 1e6;
}

struct Cpu {
  double user = 0, sys = 0;
};

inline Cpu cpu_now(int who = RUSAGE_SELF) {
  rusage r{};
  ::getrusage(who, &r);
  return {r.ru_utime.tv_sec + r.ru_utime.tv_usec / 1e6, r.ru_stime.tv_sec + r.ru_stime.tv_usec / 1e6};
}

// Peak resident set size of this process in KiB (VmHWM), 0 if unknown.
inline long peak_rss_kib() {
  FILE* f = std::fopen("/proc/self/status", "r");
  if (!f) return 0;
  char line[256];
  long kib = 0;
  while (std::fgets(line, sizeof line, f)) {
    if (std::strncmp(line, "VmHWM:", 6) == 0) {
      kib = std::strtol(line + 6, nullptr, 10);
      break;
    }
  }
  std::fclose(f);
  return kib;
}

[[noreturn]] inline void die(const char* what) {
  std::fprintf(stderr, "raw: %s: %s\n", what, std::strerror(errno));
  std::exit(2);
}

inline sockaddr_un address(const std::string& path, socklen_t* len) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.size() >= sizeof a.sun_path) {
    errno = ENAMETOOLONG;
    die("socket path");
  }
  std::memcpy(a.sun_path, path.data(), path.size());
  *len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + 1);
  return a;
}

inline int listen_path(const std::string& path) {
  ::unlink(path.c_str());
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) die("socket");
  socklen_t len;
  sockaddr_un a = address(path, &len);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), len) != 0) die("bind");
  if (::listen(fd, 16) != 0) die("listen");
  return fd;
}

inline int accept_one(int lfd) {
  for (;;) {
    const int fd = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd >= 0) return fd;
    if (errno != EINTR) die("accept");
  }
}

inline int connect_path(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) die("socket");
  socklen_t len;
  sockaddr_un a = address(path, &len);
  for (int i = 0; ::connect(fd, reinterpret_cast<sockaddr*>(&a), len) != 0; ++i) {
    if ((errno != ENOENT && errno != ECONNREFUSED && errno != EAGAIN && errno != EINTR) || i > 5000) die("connect");
    ::usleep(1000);
  }
  return fd;
}

// Raises SO_SNDBUF (0 = leave the default); returns what the kernel reports.
inline int set_sndbuf(int fd, int bytes) {
  if (bytes > 0) ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes);
  int v = 0;
  socklen_t l = sizeof v;
  ::getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, &l);
  return v;
}

inline size_t put_uvarint(uint64_t v, uint8_t* out) {
  size_t i = 0;
  while (v >= 0x80) {
    out[i++] = static_cast<uint8_t>(v) | 0x80;
    v >>= 7;
  }
  out[i++] = static_cast<uint8_t>(v);
  return i;
}

inline void write_all(int fd, const uint8_t* p, size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w > 0) {
      p += w;
      n -= static_cast<size_t>(w);
    } else if (w < 0 && errno == EINTR) {
      continue;
    } else {
      die("write");
    }
  }
}

struct WriterStats {
  uint64_t msgs = 0, bytes = 0, write_calls = 0;
  int64_t start_ns = 0, end_ns = 0;
};

// Sends `count` frames of `size` payload bytes; the first payload byte of
// message i is (i & 0xff), the rest a constant pattern. Frames are packed into
// a buffer of `buf_size` bytes (grown to hold one frame if needed).
inline WriterStats raw_write(int fd, size_t size, uint64_t count, size_t buf_size) {
  std::string payload(size, '\x5a');
  const size_t frame_max = size + 10;
  const size_t cap = std::max(buf_size, frame_max);
  auto* buf = static_cast<uint8_t*>(std::aligned_alloc(64, (cap + 63) & ~size_t{63}));
  if (!buf) die("malloc");
  WriterStats st;
  st.start_ns = mono_ns();
  size_t used = 0;
  for (uint64_t i = 0; i < count; ++i) {
    if (used + frame_max > cap) {
      write_all(fd, buf, used);
      ++st.write_calls;
      used = 0;
    }
    used += put_uvarint(size, buf + used);
    if (size) {
      std::memcpy(buf + used, payload.data(), size);
      buf[used] = static_cast<uint8_t>(i);
    }
    used += size;
  }
  if (used) {
    write_all(fd, buf, used);
    ++st.write_calls;
  }
  st.end_ns = mono_ns();
  st.msgs = count;
  st.bytes = count * size;
  std::free(buf);
  return st;
}

struct ReaderStats {
  uint64_t msgs = 0, bytes = 0, read_calls = 0;
  uint64_t checksum = 0;        // sum of the first byte of every payload
  int64_t first_ns = 0;         // when the first message(s) arrived
  int64_t last_ns = 0;          // when message `count` arrived
  uint64_t msgs_at_first = 0;   // messages completed by the first read
  uint64_t bytes_at_first = 0;
  // Receiver throughput, first to last message: what arrived after the first
  // read over the time it took.
  double seconds() const { return static_cast<double>(last_ns - first_ns) / 1e9; }
  double msgs_per_sec() const { return seconds() > 0 ? (msgs - msgs_at_first) / seconds() : 0; }
  double bytes_per_sec() const { return seconds() > 0 ? (bytes - bytes_at_first) / seconds() : 0; }
};

// Reads until `count` frames arrived (then returns; the caller closes).
inline ReaderStats raw_read(int fd, uint64_t count, size_t read_size = size_t{1} << 20) {
  // Room for one read plus the largest partial frame carried over; grown when
  // a frame announces more.
  size_t cap = 2 * read_size;
  auto* buf = static_cast<uint8_t*>(std::malloc(cap));
  if (!buf) die("malloc");
  size_t begin = 0, end = 0;  // unparsed bytes are buf[begin, end)
  size_t need = 0;            // bytes the partial frame at begin needs in all (0 = unknown)
  ReaderStats st;
  while (st.msgs < count) {
    if (cap - end < read_size) {
      // Carry the partial frame to the front (at most one frame, once per
      // ~read_size bytes), growing the buffer for a frame bigger than it.
      const size_t partial = end - begin;
      const size_t want = std::max(need, partial) + read_size;
      if (want > cap) {
        cap = want;
        auto* nb = static_cast<uint8_t*>(std::malloc(cap));
        if (!nb) die("malloc");
        std::memcpy(nb, buf + begin, partial);
        std::free(buf);
        buf = nb;
      } else if (begin) {
        std::memmove(buf, buf + begin, partial);
      }
      begin = 0;
      end = partial;
    }
    const ssize_t r = ::read(fd, buf + end, std::min(read_size, cap - end));
    if (r < 0) {
      if (errno == EINTR) continue;
      die("read");
    }
    if (r == 0) {
      std::fprintf(stderr, "raw: EOF after %llu of %llu messages\n", static_cast<unsigned long long>(st.msgs),
                   static_cast<unsigned long long>(count));
      std::exit(3);
    }
    ++st.read_calls;
    end += static_cast<size_t>(r);
    if (need && end - begin < need) continue;
    // Parse every whole frame.
    size_t p = begin;
    uint64_t msgs = st.msgs, bytes = st.bytes, sum = st.checksum;
    need = 0;
    while (p < end) {
      uint64_t len = 0;
      unsigned shift = 0;
      size_t q = p;
      bool whole = false;
      while (q < end && q - p < 10) {
        const uint8_t b = buf[q++];
        len |= static_cast<uint64_t>(b & 0x7f) << shift;
        if (b < 0x80) {
          whole = true;
          break;
        }
        shift += 7;
      }
      if (!whole) {
        if (q - p >= 10) {
          std::fprintf(stderr, "raw: invalid frame\n");
          std::exit(3);
        }
        break;  // header incomplete
      }
      if (end - q < len) {
        need = (q - p) + len;
        break;
      }
      if (len) sum += buf[q];
      bytes += len;
      ++msgs;
      p = q + len;
    }
    begin = p;
    if (begin == end) begin = end = 0;
    if (msgs != st.msgs) {
      const int64_t now = mono_ns();
      if (st.first_ns == 0) {
        st.first_ns = now;
        st.msgs_at_first = msgs;
        st.bytes_at_first = bytes;
      }
      st.last_ns = now;
    }
    st.msgs = msgs;
    st.bytes = bytes;
    st.checksum = sum;
  }
  std::free(buf);
  return st;
}

// Expected checksum of raw_write(count) (and of every bench writer).
inline uint64_t expected_checksum(uint64_t count, size_t size) {
  if (size == 0) return 0;
  const uint64_t full = count / 256, rest = count % 256;
  return full * (255 * 256 / 2) + rest * (rest - 1) / 2;
}

}  // namespace rawbench
