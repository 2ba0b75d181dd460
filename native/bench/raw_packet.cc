// raw_packet: the raw limit of SOCK_SEQPACKET and SOCK_DGRAM Unix sockets
// between two processes (fork()): a sender with sendmmsg(), a receiver with
// recvmmsg(), `--batch` messages per call (64). No library in the raw path:
// it is the yardstick for the seqpacket/dgram engines.
//
//   raw_packet [--type seqpacket|dgram|all] [--size 64,1024] [--count N]
//              [--runs R] [--batch B] [--mode block|poll] [--impl raw|core]
//              [--passcred 0|1] [--max BYTES]
//
// dgram: the receiver binds a path and the sender connect()s to it, as the
// dgram Reader/Writer do (a socketpair would not do: between a connected
// pair the kernel skips the receive-queue limit, max_dgram_qlen).
// seqpacket: listen + connect + accept.
// --mode block: blocking sockets (recvmmsg with MSG_WAITFORONE). --mode
// poll: non-blocking sockets, poll() on EAGAIN, as an engine does with epoll.
// --impl core: the same over the library's PacketSender/PacketReceiver
// (poll mode), to see what they cost against the raw calls (--max: the
// receiver's maxMessageSize, default 212960, the default packet limit, which
// sets its landing slots). --passcred 1:
// the raw receiver turns SO_PASSCRED on and reads credentials with every
// packet (what PacketReceiver does on seqpacket to tell EOF from a 0-byte
// packet, and on dgram with credentials), to see what that costs.
//
// One JSON line per run (receiver's view: messages after the first over the
// time from the first to the last), then one summary line per type and size
// with the median, min and max of the runs. Every message carries its
// sequence number (sizes >= 8): a lost or reordered message fails the run.
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "core/packet_io.h"

namespace {

int64_t mono_ns() {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

struct Args {
  std::vector<int> types;
  std::vector<size_t> sizes{64, 1024};
  uint64_t count = 1000000;
  int runs = 5;
  size_t batch = 64;
  bool poll_mode = false;
  bool core = false;
  bool passcred = false;  // raw receiver: SO_PASSCRED + a control buffer per entry
  size_t max = 0;         // core receiver: maxMessageSize (0: 212960, the default limit)
};

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "raw_packet: %s: %s\n", what, std::strerror(errno));
  std::exit(1);
}

uint64_t num(const char* s) {
  char* e = nullptr;
  const unsigned long long v = std::strtoull(s, &e, 10);
  if (!e || *e != '\0') {
    std::fprintf(stderr, "raw_packet: not a number: %s\n", s);
    std::exit(1);
  }
  return v;
}

Args parse(int argc, char** argv) {
  Args a;
  std::string type = "all";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    const char* v = argv[i + 1];
    if (k == "--type") type = v;
    else if (k == "--size") {
      a.sizes.clear();
      std::string s = v;
      size_t pos = 0;
      while (pos <= s.size()) {
        size_t c = s.find(',', pos);
        if (c == std::string::npos) c = s.size();
        a.sizes.push_back(num(s.substr(pos, c - pos).c_str()));
        pos = c + 1;
      }
    } else if (k == "--count") a.count = num(v);
    else if (k == "--runs") a.runs = static_cast<int>(num(v));
    else if (k == "--batch") a.batch = std::clamp<size_t>(num(v), 1, 1024);
    else if (k == "--mode") a.poll_mode = std::string(v) == "poll";
    else if (k == "--impl") a.core = std::string(v) == "core";
    else if (k == "--passcred") a.passcred = num(v) != 0;
    else if (k == "--max") a.max = num(v);
    else {
      std::fprintf(stderr,
                   "usage: raw_packet [--type seqpacket|dgram|all] [--size 64,1024] [--count N] [--runs R] "
                   "[--batch B] [--mode block|poll] [--impl raw|core] [--passcred 0|1] [--max BYTES]\n");
      std::exit(1);
    }
  }
  if (type == "all" || type == "seqpacket") a.types.push_back(SOCK_SEQPACKET);
  if (type == "all" || type == "dgram") a.types.push_back(SOCK_DGRAM);
  if (a.core) a.poll_mode = true;
  return a;
}

void wait_for(int fd, short ev) {
  pollfd p{fd, ev, 0};
  while (::poll(&p, 1, -1) < 0 && errno == EINTR) {
  }
}

struct SenderStats {
  uint64_t calls = 0, eagain = 0;
  int err = 0;
};

// The child: sends `count` messages of `size` bytes, `batch` per sendmmsg().
SenderStats run_sender(int fd, const Args& a, size_t size) {
  SenderStats st;
  std::vector<std::vector<uint8_t>> bufs(a.batch, std::vector<uint8_t>(std::max<size_t>(size, 1), 0xab));
  std::vector<iovec> iov(a.batch);
  std::vector<mmsghdr> h(a.batch);
  udsipc::PacketSender sender;
  uint64_t seq = 0;
  while (seq < a.count) {
    const size_t k = static_cast<size_t>(std::min<uint64_t>(a.batch, a.count - seq));
    for (size_t j = 0; j < k; ++j) {
      const uint64_t s = seq + j;
      if (size >= 8) std::memcpy(bufs[j].data(), &s, 8);
      iov[j] = {bufs[j].data(), size};
      std::memset(&h[j], 0, sizeof(h[j]));
      h[j].msg_hdr.msg_iov = &iov[j];
      h[j].msg_hdr.msg_iovlen = 1;
    }
    size_t done = 0;
    while (done < k) {
      if (a.core) {
        const udsipc::SendResult r = sender.send(fd, iov.data() + done, k - done);
        done += r.sent;
        if (r.err == EAGAIN) {
          ++st.eagain;
          wait_for(fd, POLLOUT);
        } else if (r.err) {
          st.err = r.err;
          return st;
        }
        continue;
      }
      const int r = ::sendmmsg(fd, h.data() + done, static_cast<unsigned>(k - done), a.poll_mode ? MSG_DONTWAIT : 0);
      ++st.calls;
      if (r > 0) {
        done += static_cast<size_t>(r);
      } else if (errno == EAGAIN && a.poll_mode) {
        ++st.eagain;
        wait_for(fd, POLLOUT);
      } else if (errno != EINTR) {
        st.err = errno;
        return st;
      }
    }
    seq += k;
  }
  if (a.core) st.calls = sender.calls();
  return st;
}

struct ReceiverStats {
  uint64_t msgs = 0, calls = 0, eagain = 0;
  int64_t t_first = 0, t_last = 0;
  bool ok = true;
};

ReceiverStats run_receiver(int fd, const Args& a, size_t size) {
  ReceiverStats st;
  auto check = [&](const uint8_t* p, size_t len) {
    if (len != size) st.ok = false;
    else if (size >= 8) {
      uint64_t s;
      std::memcpy(&s, p, 8);
      if (s != st.msgs) st.ok = false;
    }
    if (st.msgs == 0) st.t_first = mono_ns();
    ++st.msgs;
  };
  if (a.core) {
    udsipc::PacketReceiverConfig c;
    c.type = SOCK_SEQPACKET;
    int type = 0;
    socklen_t l = sizeof(type);
    ::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l);
    c.type = type;
    c.max_message_size = std::max<size_t>(size, a.max ? a.max : 212960);
    c.max_packets = a.batch;
    c.trunc = udsipc::TruncPolicy::kFail;
    udsipc::PacketReceiver r(c);
    if (r.attach(fd)) die("attach");
    while (st.msgs < a.count && st.ok) {
      const udsipc::RecvResult res = r.receive();
      ++st.calls;
      while (r.has_batch()) {
        udsipc::PacketBatch pb = r.take();
        for (size_t i = 0; i < pb.batch.count(); ++i)
          check(pb.batch.base + pb.batch.offsets[2 * i], pb.batch.offsets[2 * i + 1] - pb.batch.offsets[2 * i]);
      }
      if (res.status == udsipc::RecvStatus::kAgain) {
        ++st.eagain;
        wait_for(fd, POLLIN);
      } else if (res.status != udsipc::RecvStatus::kOk) {
        st.ok = false;
      }
    }
    st.t_last = mono_ns();
    return st;
  }
  const size_t slot = std::max<size_t>(size, 64);
  std::vector<uint8_t> buf(slot * a.batch);
  std::vector<iovec> iov(a.batch);
  std::vector<mmsghdr> h(a.batch);
  constexpr size_t kCtl = 64;
  std::vector<uint8_t> ctl(a.passcred ? kCtl * a.batch : 0);
  if (a.passcred) {
    const int one = 1;
    if (::setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof one) != 0) die("SO_PASSCRED");
  }
  for (size_t j = 0; j < a.batch; ++j) {
    iov[j] = {buf.data() + j * slot, slot};
    std::memset(&h[j], 0, sizeof(h[j]));
    h[j].msg_hdr.msg_iov = &iov[j];
    h[j].msg_hdr.msg_iovlen = 1;
  }
  while (st.msgs < a.count && st.ok) {
    if (a.passcred) {
      for (size_t j = 0; j < a.batch; ++j) {
        h[j].msg_hdr.msg_control = ctl.data() + j * kCtl;
        h[j].msg_hdr.msg_controllen = kCtl;
      }
    }
    const int r = ::recvmmsg(fd, h.data(), static_cast<unsigned>(a.batch), a.poll_mode ? MSG_DONTWAIT : MSG_WAITFORONE,
                             nullptr);
    ++st.calls;
    if (r > 0) {
      for (int j = 0; j < r && st.msgs < a.count; ++j) check(buf.data() + j * slot, h[j].msg_len);
    } else if (r == 0) {
      st.ok = false;  // seqpacket EOF before the count
    } else if (errno == EAGAIN && a.poll_mode) {
      ++st.eagain;
      wait_for(fd, POLLIN);
    } else if (errno != EINTR) {
      die("recvmmsg");
    }
  }
  st.t_last = mono_ns();
  return st;
}

void set_blocking(int fd, bool blocking) {
  const int fl = ::fcntl(fd, F_GETFL);
  ::fcntl(fd, F_SETFL, blocking ? fl & ~O_NONBLOCK : fl | O_NONBLOCK);
}

// The 1-minute load average: the machine may be shared, and a busy one
// shows in the figures.
double loadavg1() {
  double v = -1;
  if (FILE* f = std::fopen("/proc/loadavg", "r")) {
    if (std::fscanf(f, "%lf", &v) != 1) v = -1;
    std::fclose(f);
  }
  return v;
}

double run_once(const Args& a, int type, size_t size, int run) {
  const std::string path = "/tmp/raw_packet." + std::to_string(::getpid()) + ".sock";
  ::unlink(path.c_str());
  udsipc::Listener l = type == SOCK_DGRAM ? udsipc::bind_dgram_reader(path) : udsipc::listen_seqpacket(path, 16);
  if (l.error) {
    std::fprintf(stderr, "raw_packet: %s\n", l.error.message.c_str());
    std::exit(1);
  }
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) die("pipe");
  const pid_t child = ::fork();
  if (child < 0) die("fork");
  if (child == 0) {
    ::close(pipefd[0]);
    l.fd.reset();
    udsipc::UniqueFd w;
    if (const int e = udsipc::connect_packet(path, type, &w)) {
      errno = e;
      die("connect");
    }
    set_blocking(w.get(), !a.poll_mode);
    const SenderStats st = run_sender(w.get(), a, size);
    if (::write(pipefd[1], &st, sizeof st) != sizeof st) ::_exit(3);
    // Exiting closes the connection: a seqpacket receiver still reads what
    // is queued, then EOF (after the count, so never seen).
    ::_exit(st.err ? 2 : 0);
  }
  ::close(pipefd[1]);
  udsipc::UniqueFd conn;
  if (type == SOCK_SEQPACKET) {
    wait_for(l.fd.get(), POLLIN);
    conn.reset(::accept4(l.fd.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!conn.valid()) die("accept");
  }
  const int fd = type == SOCK_SEQPACKET ? conn.get() : l.fd.get();
  set_blocking(fd, !a.poll_mode);
  const ReceiverStats rs = run_receiver(fd, a, size);
  SenderStats ss{};
  if (::read(pipefd[0], &ss, sizeof ss) != sizeof ss) ss.err = -1;
  ::close(pipefd[0]);
  int status = 0;
  ::waitpid(child, &status, 0);
  udsipc::unlink_if_same(path, l.dev, l.ino);
  const double secs = static_cast<double>(rs.t_last - rs.t_first) / 1e9;
  const double rate = rs.msgs > 1 && secs > 0 ? static_cast<double>(rs.msgs - 1) / secs : 0;
  const bool ok = rs.ok && rs.msgs == a.count && ss.err == 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
  std::printf(
      "{\"bench\":\"raw_packet\",\"impl\":\"%s%s\",\"type\":\"%s\",\"size\":%zu,\"run\":%d,\"count\":%" PRIu64
      ",\"batch\":%zu,\"mode\":\"%s\",\"seconds\":%.6f,\"msgsPerSec\":%.0f,\"recvCalls\":%" PRIu64
      ",\"msgsPerRecv\":%.2f,\"recvEagain\":%" PRIu64 ",\"sendCalls\":%" PRIu64 ",\"sendEagain\":%" PRIu64
      ",\"loadavg1\":%.2f,\"ok\":%s}\n",
      a.core ? "core" : "raw", a.passcred && !a.core ? "+passcred" : "", type == SOCK_DGRAM ? "dgram" : "seqpacket", size, run, rs.msgs, a.batch,
      a.poll_mode ? "poll" : "block", secs, rate, rs.calls, rs.calls ? static_cast<double>(rs.msgs) / rs.calls : 0.0,
      rs.eagain, ss.calls, ss.eagain, loadavg1(), ok ? "true" : "false");
  std::fflush(stdout);
  if (!ok) {
    std::fprintf(stderr, "raw_packet: run failed (received %" PRIu64 ", sender errno %d)\n", rs.msgs, ss.err);
    std::exit(1);
  }
  return rate;
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse(argc, argv);
  long qlen = -1;
  if (FILE* f = std::fopen("/proc/sys/net/unix/max_dgram_qlen", "r")) {
    if (std::fscanf(f, "%ld", &qlen) != 1) qlen = -1;
    std::fclose(f);
  }
  for (int type : a.types) {
    for (size_t size : a.sizes) {
      std::vector<double> rates;
      for (int run = 0; run < a.runs; ++run) rates.push_back(run_once(a, type, size, run));
      std::sort(rates.begin(), rates.end());
      const size_t n = rates.size();
      const double median = n % 2 ? rates[n / 2] : (rates[n / 2 - 1] + rates[n / 2]) / 2;
      std::printf(
          "{\"summary\":true,\"impl\":\"%s%s\",\"type\":\"%s\",\"size\":%zu,\"mode\":\"%s\",\"batch\":%zu,\"runs\":%zu,"
          "\"medianMsgsPerSec\":%.0f,\"minMsgsPerSec\":%.0f,\"maxMsgsPerSec\":%.0f,\"maxDgramQlen\":%ld,\"nproc\":%ld}\n",
          a.core ? "core" : "raw", a.passcred && !a.core ? "+passcred" : "", type == SOCK_DGRAM ? "dgram" : "seqpacket", size, a.poll_mode ? "poll" : "block",
          a.batch, n, median, rates.front(), rates.back(), qlen, ::sysconf(_SC_NPROCESSORS_ONLN));
      std::fflush(stdout);
    }
  }
  return 0;
}
