#include "writer_engine.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "varint.h"

namespace udsipc {

namespace {

namespace ctrl = protocol::ctrl;
using protocol::kArmed;
using protocol::kDisarmed;
using protocol::kIdle;
using protocol::kIoThreadSends;
using protocol::kProducerSends;

constexpr uint64_t kSocketTag = 1;
constexpr uint32_t kRewindFrom = 1024 * 1024;  // see send_direct()
// Receiving: warm slabs kept for reuse (a writer usually has one connection),
// and reads per EPOLLIN event before the loop looks at its other work.
constexpr size_t kPooledSlabs = 4;
constexpr int kMaxReadsPerEvent = 4;

// The config with the receive side's pools filled in.
WriterConfig with_pools(WriterConfig c, SlabPool* pool, OffsetsPool* offsets) {
  c.assembler.pool = pool;
  c.assembler.offsets_pool = offsets;
  return c;
}

bool retryable_connect_error(int e) {
  switch (e) {
    case ENOENT:
    case ECONNREFUSED:
    case ECONNRESET:
    case EPIPE:
    case EAGAIN:
    case EINTR:
    case ETIMEDOUT:
    // Out of descriptors or memory for the socket: this process's own
    // shortage (e.g. send()s holding their descriptors' dups), which passes.
    case EMFILE:
    case ENFILE:
    case ENOBUFS:
    case ENOMEM:
      return true;
    default:
      return false;
  }
}

// SO_PEERCRED of a connected Unix socket: the uid of the process that called
// listen() on the other end (read as uid_t: socket_util's peer_credentials()
// returns an int, which cannot tell uid 2^32 - 1 from a failure).
// Returns 0 or an errno.
int peer_uid(int fd, uid_t* uid) {
  struct ucred uc;
  socklen_t len = sizeof uc;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &len) != 0) return errno;
  if (len < sizeof uc) return EINVAL;
  *uid = uc.uid;
  return 0;
}

uint64_t splitmix(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

}  // namespace

uint64_t kernel_connection_bytes() {
  constexpr uint64_t kFallback = 16u << 20;
  FILE* f = std::fopen("/proc/sys/net/core/wmem_max", "re");
  if (!f) return kFallback;
  unsigned long long v = 0;
  const bool ok = std::fscanf(f, "%llu", &v) == 1 && v > 0;
  std::fclose(f);
  return ok && v < (1ull << 40) ? 4 * static_cast<uint64_t>(v) : kFallback;
}

WriterEngine::WriterEngine(WriterConfig cfg, Notify notify)
    : pool_{cfg.receive && !cfg.receive_on_consumer ? SlabPool::create(cfg.assembler.slab_size, kPooledSlabs) : nullptr},
      cfg_(with_pools(std::move(cfg), pool_.p, &offsets_pool_)),
      mask_(cfg_.capacity - 1),
      notify_(std::move(notify)),
      fds_(cfg_.fds ? *cfg_.fds : own_fds_) {
  head_ = send_pos_ = load(ctrl::kHead);
  sent_count_ = load(ctrl::kSent);
  ack_head_ = cfg_.acked ? load(ctrl::kAckHead) : head_;
  acked_count_ = load(ctrl::kAcked);
  if (cfg_.receive) {
    const uint64_t allowance =
        cfg_.end_allowance ? cfg_.end_allowance : std::max(cfg_.max_pending_bytes, kernel_connection_bytes());
    end_cap_ = cfg_.max_pending_bytes > UINT64_MAX - allowance ? UINT64_MAX : cfg_.max_pending_bytes + allowance;
  }
  rng_ = static_cast<uint64_t>(now_ms()) ^ reinterpret_cast<uintptr_t>(this);
  // The ring is written cyclically end to end: ask for transparent huge pages
  // over its 2 MiB-aligned interior, so that warming it up costs a handful of
  // page faults instead of one per 4 KiB (a hint; harmless if THP is off).
  const uintptr_t begin = reinterpret_cast<uintptr_t>(cfg_.ring);
  const uintptr_t end = begin + cfg_.capacity;
  const uintptr_t huge = uintptr_t{2} << 20;
  const uintptr_t a = (begin + huge - 1) & ~(huge - 1);
  const uintptr_t b = end & ~(huge - 1);
  if (b > a) ::madvise(reinterpret_cast<void*>(a), b - a, MADV_HUGEPAGE);
}

WriterEngine::~WriterEngine() { close(); }

uint32_t WriterEngine::load(int word) const {
  return std::atomic_ref<uint32_t>(cfg_.ctrl[word]).load(std::memory_order_seq_cst);
}
void WriterEngine::store(int word, uint32_t v) {
  std::atomic_ref<uint32_t>(cfg_.ctrl[word]).store(v, std::memory_order_seq_cst);
}

void WriterEngine::start() {
  if (thread_.joinable()) return;
  thread_ = std::thread([this] { run(); });
}

void WriterEngine::begin_stop(int64_t timeout_ms) {
  stop_deadline_.store(now_ms() + std::max<int64_t>(0, timeout_ms));
  stop_requested_.store(true);
  loop_.wake();
}

void WriterEngine::close() {
  exit_now_.store(true);
  loop_.wake();
  if (thread_.joinable()) thread_.join();
}

void WriterEngine::emit(WriterEvent ev) {
  {
    std::lock_guard<std::mutex> lk(events_mu_);
    events_.push_back(std::move(ev));
  }
  if (!call_pending_.exchange(true)) notify_();
}

std::vector<WriterEvent> WriterEngine::take_events() {
  call_pending_.store(false);
  std::lock_guard<std::mutex> lk(events_mu_);
  std::vector<WriterEvent> out;
  out.swap(events_);
  return out;
}

WriterMetrics WriterEngine::metrics() const {
  WriterMetrics m;
  m.sent = m_sent_.load(std::memory_order_relaxed);
  m.bytes_sent = m_bytes_.load(std::memory_order_relaxed);
  m.send_calls = m_calls_.load(std::memory_order_relaxed);
  m.connects = m_connects_.load(std::memory_order_relaxed);
  m.disconnects = m_disconnects_.load(std::memory_order_relaxed);
  m.connect_attempts = m_attempts_.load(std::memory_order_relaxed);
  m.untrusted_peers = m_untrusted_.load(std::memory_order_relaxed);
  m.send_buffer_size = m_sndbuf_.load(std::memory_order_relaxed);
  m.connected = m_connected_.load(std::memory_order_relaxed);
  m.read_calls = m_reads_.load(std::memory_order_relaxed);
  m.bytes_read = m_bytes_read_.load(std::memory_order_relaxed);
  m.pauses = m_pauses_.load(std::memory_order_relaxed);
  m.fds_sent = m_fds_sent_.load(std::memory_order_relaxed);
  m.reply_bytes_dropped = m_reply_bytes_dropped_.load(std::memory_order_relaxed);
  m.fds_buffered = fds_.held();
  m.acked = m_acked_.load(std::memory_order_relaxed);
  m.resent = m_resent_.load(std::memory_order_relaxed);
  return m;
}

void WriterEngine::ack(uint64_t bytes) {
  if (bytes == 0) return;
  acked_.fetch_add(bytes);
  // Only a paused writer needs the IO thread to act on an ack now (see
  // paused_flag_); the others apply it on their next round.
  if (paused_flag_.load()) loop_.wake();
}

void WriterEngine::report_inbound_error(uint32_t conn_id, CoreError why, bool report) {
  {
    std::lock_guard<std::mutex> lk(inbound_mu_);
    inbound_conn_ = conn_id;
    inbound_why_ = std::move(why);
    inbound_report_ = report;
  }
  inbound_error_.store(true);
  loop_.wake();
}

void WriterEngine::apply_inbound_error() {
  if (!inbound_error_.exchange(false)) return;
  std::unique_lock<std::mutex> lk(inbound_mu_);
  const uint32_t conn = inbound_conn_;
  const CoreError why = inbound_why_;
  const bool report = inbound_report_;
  lk.unlock();
  // Reported even when that connection has ended meanwhile (a reader that
  // sent descriptors and closed at once): the refusal is never silent.
  if (report) {
    WriterEvent ev{WriterEvent::kError};
    ev.error = why;
    emit(std::move(ev));
  }
  if (!connected_ || conn != conn_id_) return;  // that connection has ended already
  disconnect(why, Drop::kProtocolError);
}

void WriterEngine::close_fd() {
  if (!fd_.valid()) return;
  // The consumer's dup shares the socket: it reads what is queued, then EOF,
  // and the reader can add nothing more (its writes fail with EPIPE).
  if (cfg_.receive_on_consumer) ::shutdown(fd_.get(), SHUT_RDWR);
  // Explicitly: a dup keeps the file open, and with it fd_'s epoll registration.
  loop_.remove(fd_.get());
  fd_.reset();
}

void WriterEngine::run() {
  epoll_event events[8];
  next_connect_at_ = now_ms();
  while (!exit_now_.load()) {
    const int64_t now = now_ms();
    const bool stopping = stop_requested_.load();
    if (io_reads()) apply_acks();
    if (cfg_.receive_on_consumer) apply_inbound_error();
    const bool held = awaiting_consumer();
    if (!connected_ && !failed_ && now >= next_connect_at_ && !held) try_connect(now);
    if (connected_ && !want_out_ && may_send() && now >= send_retry_at_) send_published();

    if (stopping) {
      const uint32_t tail = load(ctrl::kTail);
      // Acked mode: done once everything is acknowledged, not just sent.
      const uint32_t kept = cfg_.acked ? ack_head_ : head_;
      const bool empty = kept == tail;
      const bool hopeless = !connected_ && (failed_ || !cfg_.reconnect.enabled);
      if (empty || hopeless || now >= stop_deadline_.load()) {
        WriterEvent ev{WriterEvent::kStopped};
        ev.discarded = frames_between(kept, tail);
        close_fd();
        connected_ = false;
        m_connected_.store(false);
        emit(std::move(ev));
        // Stay alive (idle) until close(): the owner joins us.
        while (!exit_now_.load()) loop_.wait(events, 8, -1);
        break;
      }
    }

    // How long may we sleep?
    int timeout = -1;
    // Held: consumer_finished() wakes us.
    if (!connected_ && !failed_ && !held) timeout = static_cast<int>(std::max<int64_t>(0, next_connect_at_ - now));
    if (connected_ && !may_send()) {
      if (now >= greet_deadline_) {
        protocol_mismatch("no greeting from the reader within handshakeTimeoutMs (" +
                          std::to_string(cfg_.handshake_timeout_ms) +
                          " ms): it does not speak acknowledged delivery (a default-mode reader, an older "
                          "version, or another library)");
        continue;
      }
      const int wait = static_cast<int>(greet_deadline_ - now);
      timeout = timeout < 0 ? wait : std::min(timeout, wait);
    }
    if (connected_ && send_retry_at_ > now) {
      const int wait = static_cast<int>(send_retry_at_ - now);
      timeout = timeout < 0 ? wait : std::min(timeout, wait);
    }
    if (connected_ && want_out_ && cfg_.write_timeout_ms > 0) {
      const int64_t due = last_progress_ms_ + cfg_.write_timeout_ms;
      if (now >= due) {
        // The peer has accepted nothing for write_timeout_ms while we have
        // data queued: report it and replace the connection.
        WriterEvent ev{WriterEvent::kError};
        ev.error = CoreError::plain("ERR_WRITE_TIMEOUT", "the reader accepted no bytes for " +
                                                             std::to_string(cfg_.write_timeout_ms) +
                                                             " ms; replacing the connection");
        emit(std::move(ev));
        disconnect(CoreError::plain("ERR_WRITE_TIMEOUT", "write timed out"));
        continue;
      }
      const int wait = static_cast<int>(due - now);
      timeout = timeout < 0 ? wait : std::min(timeout, wait);
    }
    if (stopping) {
      const int64_t left = std::max<int64_t>(0, stop_deadline_.load() - now);
      timeout = timeout < 0 ? static_cast<int>(left) : std::min<int>(timeout, static_cast<int>(left));
    }
    const bool idle = connected_ && !want_out_ && may_send() && send_retry_at_ == 0;
    if (idle) {
      // Dekker handshake with the producer: announce sleep, then look again.
      // From here until reclaim_send_state() the producer may take over
      // sending (kIdle -> kProducerSends, send_direct()), so no send state is
      // touched.
      const uint32_t pos = send_pos_;
      store(ctrl::kSleep, kIdle);
      if (load(ctrl::kTail) != pos) {
        uint32_t idle = kIdle;
        if (std::atomic_ref<uint32_t>(cfg_.ctrl[ctrl::kSleep]).compare_exchange_strong(idle, kIoThreadSends)) continue;
        // else the producer is sending right now; wait for events as usual
      }
    }
    const int n = loop_.wait(events, 8, timeout);
    if (idle && !reclaim_send_state()) break;  // exiting, the send state never handed back
    for (int i = 0; i < n; ++i) {
      if (events[i].data.u64 != kSocketTag || !connected_) continue;
      const uint32_t ev = events[i].events;
      if ((ev & EPOLLIN) && io_reads() && !read_paused_) {
        read_inbound();  // may end the connection (EOF, error, framing)
        if (!connected_) continue;
      } else if ((ev & EPOLLIN) && cfg_.acked) {
        read_control();  // greeting, acknowledgements; may end the connection
        if (!connected_) continue;
      }
      if (ev & (EPOLLERR | EPOLLHUP | EPOLLRDHUP)) {
        disconnect(peer_closed());  // hands over what the kernel still holds first
      } else if (ev & EPOLLOUT) {
        want_out_ = false;
        update_interest();
      }
    }
  }
}

// One sendmsg of ring bytes [send_pos_, tail): two iovecs when the ring wraps.
// Frames with descriptors go alone, with them (see fd_outbox.h), so a send
// may stop short of tail. On success advances send_pos_ and head; returns
// what sendmsg returned.
ssize_t WriterEngine::send_once(uint32_t tail, const Appended* upto) {
  if (cfg_.type != SOCK_STREAM) return send_packets(tail);
  uint32_t limit = tail;
  FdOutbox::Plan* plan = nullptr;
  if (!fds_.empty()) {
    plan = &plan_;
    fds_.plan(send_pos_, tail, plan);
    limit = plan->limit;
  }
  const uint32_t len = limit - send_pos_;
  const uint32_t off = send_pos_ & mask_;
  iovec iov[2];
  int iovcnt = 1;
  const uint32_t first = std::min<uint32_t>(len, cfg_.capacity - off);
  iov[0] = {cfg_.ring + off, first};
  if (first < len) {
    iov[1] = {cfg_.ring, static_cast<size_t>(len - first)};
    iovcnt = 2;
  }
  msghdr msg{};
  msg.msg_iov = iov;
  msg.msg_iovlen = iovcnt;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFdsPerMessage)];
  if (plan && plan->count > 0) put_rights(&msg, control, plan->fds, plan->count);
  ssize_t n = ::sendmsg(fd_.get(), &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
  m_calls_.fetch_add(1, std::memory_order_relaxed);
  const bool refused = n < 0 && errno == EPERM && plan && plan->count > 0;
  if (refused && !cfg_.acked) {
    // The reader refuses descriptors (SO_PASSRIGHTS off): nothing of the
    // frame went. Dropped, reported, never retried (it never could go).
    rights_refused(plan->count, false);
    n = static_cast<ssize_t>(limit - send_pos_);
  } else if (refused) {
    // Acked: every frame is numbered, so none may be skipped. The message
    // goes without its descriptors (they are marked as gone with it: no
    // retry on this connection; a re-send on the next one tries again),
    // and that is reported.
    rights_refused(plan->count, true);
    fds_.mark_sent(send_pos_);
    msg.msg_control = nullptr;
    msg.msg_controllen = 0;
    n = ::sendmsg(fd_.get(), &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    m_calls_.fetch_add(1, std::memory_order_relaxed);
  }
  if (n > 0) {
    if (plan && plan->count > 0) {
      // They went with the first bytes: the rest of the frame goes without.
      fds_.mark_sent(send_pos_);
      if (!refused) m_fds_sent_.fetch_add(static_cast<uint64_t>(plan->count), std::memory_order_relaxed);
    }
    send_pos_ += static_cast<uint32_t>(n);
    last_progress_ms_ = now_ms();
    if (upto && send_pos_ == tail) {
      // Everything up to the producer's tail is out: its counts say how much.
      const uint32_t count = upto->frames - sent_count_;
#ifdef UDS_IPC_CHECKS  // test builds: the counts must agree with the frames
      if (frames_between(head_, tail) != count) {
        std::fprintf(stderr, "uds-ipc: producer counts %u frames, the ring holds %llu\n", count,
                     static_cast<unsigned long long>(frames_between(head_, tail)));
        std::abort();
      }
#endif
      publish_progress(tail, count, static_cast<uint32_t>(upto->payload - sent_payload_));
    } else {
      advance_head();
    }
  }
  return n;
}

// SOCK_SEQPACKET: the frames in [send_pos_, tail) as packets, up to 256 per
// call. A packet goes whole or not at all, so head moves frame by frame.
// Returns the ring bytes advanced, or -1 with errno.
ssize_t WriterEngine::send_packets(uint32_t tail) {
  constexpr size_t kRun = 256;
  if (packets_.empty()) {
    packets_.resize(kRun);
    packet_ends_.resize(kRun);
  }
  uint32_t limit = tail;
  if (!fds_.empty()) {
    // A frame with descriptors goes alone, as one packet with them.
    fds_.plan(send_pos_, tail, &plan_);
    limit = plan_.limit;
    if (plan_.count > 0) {
      OutPacket one;
      uint32_t end = 0;
      if (ring_packets(cfg_.ring, cfg_.capacity, send_pos_, limit, &one, &end, 1) != 1) {
        errno = EINVAL;
        return -1;
      }
      msghdr msg{};
      msg.msg_iov = one.iov;
      msg.msg_iovlen = static_cast<size_t>(one.iovcnt);
      alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFdsPerMessage)];
      put_rights(&msg, control, plan_.fds, plan_.count);
      const ssize_t n = ::sendmsg(fd_.get(), &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
      m_calls_.fetch_add(1, std::memory_order_relaxed);
      if (n < 0 && (errno != EPERM || cfg_.acked)) return -1;
      if (n < 0) rights_refused(plan_.count, false);  // as in send_once(): dropped, reported
      else m_fds_sent_.fetch_add(static_cast<uint64_t>(plan_.count), std::memory_order_relaxed);
      fds_.mark_sent(send_pos_);
      const uint32_t before = send_pos_;
      send_pos_ = end;
      last_progress_ms_ = now_ms();
      publish_progress(send_pos_, 1, one.size());
      return static_cast<ssize_t>(send_pos_ - before);
    }
  }
  const size_t n = ring_packets(cfg_.ring, cfg_.capacity, send_pos_, limit, packets_.data(), packet_ends_.data(), kRun);
  if (n == 0) {
    errno = EINVAL;  // not a whole frame: cannot happen for published frames
    return -1;
  }
  const uint64_t calls = packet_sender_.calls();
  const SendResult r = packet_sender_.send(fd_.get(), packets_.data(), n);
  m_calls_.fetch_add(packet_sender_.calls() - calls, std::memory_order_relaxed);
  size_t k = r.sent;
  if (k == 0 && r.err == EMSGSIZE) {
    // Larger than the socket takes (the producer checks the limit; a send
    // buffer that shrank since): dropped and reported, never retried forever.
    WriterEvent ev{WriterEvent::kError};
    ev.error = CoreError::sys("ERR_MESSAGE_TOO_LARGE", EMSGSIZE, "sendmmsg",
                              "a message of " + std::to_string(packets_[0].size()) +
                                  " bytes is larger than this socket can send; dropped");
    emit(std::move(ev));
    k = 1;
  }
  if (k == 0) {
    errno = r.err;
    return -1;
  }
  uint64_t payload = 0;
  for (size_t i = 0; i < k; ++i) payload += packets_[i].size();
  const uint32_t before = send_pos_;
  send_pos_ = packet_ends_[k - 1];
  last_progress_ms_ = now_ms();
  publish_progress(send_pos_, static_cast<uint32_t>(k), payload);
  return static_cast<ssize_t>(send_pos_ - before);
}

bool WriterEngine::reclaim_send_state() {
  std::atomic_ref<uint32_t> sleep(cfg_.ctrl[ctrl::kSleep]);
  for (;;) {
    uint32_t v = sleep.load();
    if (v == kProducerSends) {
      // The producer is in send_direct(): it takes microseconds. Unless it
      // never gets there: a worker thread terminated between its swap and
      // the call. close() runs on the producer's own thread, so once it is
      // called no send_direct() is in progress: stop waiting and exit.
      if (exit_now_.load()) return false;
      std::this_thread::yield();
      continue;
    }
    if (sleep.compare_exchange_weak(v, kIoThreadSends)) return true;
  }
}

uint32_t WriterEngine::send_direct(Appended upto, bool rewind) {
  const uint32_t own = load(ctrl::kTail);  // the producer's (only it and we, on its behalf, store kTail)
  if (!send_direct_impl(upto)) return own;
  // Only past kRewindFrom into a ring of at least twice that: a smaller ring
  // is warm anyway, and its frames keep exercising the wrap-around path.
  if (rewind && !cfg_.acked && head_ == send_pos_ && cfg_.capacity >= 2 * kRewindFrom && (send_pos_ & mask_) >= kRewindFrom) {
    // Everything is sent: nothing in the ring is needed any more, and the
    // IO thread leaves the send state alone until kSleep goes back to kIdle.
    const uint32_t start = (send_pos_ + mask_) & ~mask_;
    head_ = send_pos_ = start;
    store(ctrl::kHead, start);
    store(ctrl::kTail, start);
  }
  const uint32_t tail = send_pos_;
  store(ctrl::kSleep, kIdle);  // all sent; the IO thread sleeps on
  return tail;
}

// Precondition: the producer swapped kSleep kIdle -> kProducerSends, so the
// IO thread is idle (connected, nothing in flight) and waits in epoll until
// we hand back. The producer is this thread: the tail read here is the one
// `upto` counts. Returns true with everything sent (the send state still
// borrowed: the caller stores kIdle), false after handing it to the IO
// thread.
bool WriterEngine::send_direct_impl(const Appended& upto) {
  for (;;) {
    const uint32_t tail = load(ctrl::kTail);
    if (tail == send_pos_) return true;
    const ssize_t n = send_once(tail, &upto);
    if (n > 0) continue;
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      // The socket is full: the IO thread waits for EPOLLOUT and goes on.
      want_out_ = true;
      update_interest();  // keeps EPOLLIN as the IO thread left it (read_paused_)
    }
    // Else an error: the IO thread's next send meets it again and handles
    // the disconnect.
    store(ctrl::kSleep, kIoThreadSends);
    loop_.wake();  // it slept with no deadline: let it arm the write timeout
    return false;
  }
}

CoreError WriterEngine::check_owner() const {
  if (cfg_.expect_uid < 0 && cfg_.expect_gid < 0 && cfg_.expect_mode < 0) return {};
  if (is_abstract(cfg_.path)) return {};  // no file: validated away in TypeScript
  struct stat st;
  if (::lstat(cfg_.path.c_str(), &st) != 0) return {};  // not there yet: connect reports it
  std::string why;
  if (!S_ISSOCK(st.st_mode)) why = "it is not a socket";
  else if (cfg_.expect_uid >= 0 && static_cast<int64_t>(st.st_uid) != cfg_.expect_uid)
    why = "it is owned by uid " + std::to_string(st.st_uid) + ", expected " + std::to_string(cfg_.expect_uid);
  else if (cfg_.expect_gid >= 0 && static_cast<int64_t>(st.st_gid) != cfg_.expect_gid)
    why = "its group is gid " + std::to_string(st.st_gid) + ", expected " + std::to_string(cfg_.expect_gid);
  else if (cfg_.expect_mode >= 0 && (st.st_mode & 07777 & ~static_cast<mode_t>(cfg_.expect_mode)) != 0) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "its mode 0%o is wider than 0%o", st.st_mode & 07777, cfg_.expect_mode);
    why = buf;
  }
  if (why.empty()) return {};
  return CoreError::plain("ERR_UNTRUSTED_SOCKET", "refusing to connect to " + cfg_.path + ": " + why);
}

// The file check above cannot tell who will answer: the path may name another
// socket by the time connect() follows it (a rename in a shared directory),
// and a socket file says nothing about its listener (one run by another user
// passes once root chowns the file to itself). The connected socket can:
// SO_PEERCRED holds the credentials of the process that called listen().
// Only the uid is compared; expect_gid and expect_mode stay checks of the
// file (a socket's group, e.g. systemd's SocketGroup=, normally differs from
// the listener's gid).
CoreError WriterEngine::check_peer(int fd) const {
  if (cfg_.expect_uid < 0) return {};
  uid_t uid = 0;
  if (const int err = peer_uid(fd, &uid)) {
    return CoreError::sys("ERR_UNTRUSTED_SOCKET", err, "getsockopt",
                          "cannot tell who listens on " + cfg_.path + " (SO_PEERCRED); closed the connection unused");
  }
  if (static_cast<int64_t>(uid) == cfg_.expect_uid) return {};
  return CoreError::plain("ERR_UNTRUSTED_SOCKET", "untrusted listener: the process listening on " + cfg_.path +
                                                      " runs as uid " + std::to_string(uid) + ", expected " +
                                                      std::to_string(cfg_.expect_uid) +
                                                      "; closed the connection before sending anything");
}

void WriterEngine::try_connect(int64_t now) {
  m_attempts_.fetch_add(1, std::memory_order_relaxed);
  if (CoreError e = check_owner()) {
    failed_ = true;
    WriterEvent ev{WriterEvent::kError};
    ev.error = std::move(e);
    emit(std::move(ev));
    return;
  }
  UniqueFd fd;
  const int err = connect_unix_fd(&fd);
  if (err != 0) {
    if (retryable_connect_error(err) && cfg_.reconnect.enabled) {
      schedule_retry(now, err);
    } else {
      failed_ = true;
      WriterEvent ev{WriterEvent::kError};
      ev.error = CoreError::sys("ERR_CONNECT_FAILED", err, "connect", "cannot connect to " + cfg_.path);
      emit(std::move(ev));
    }
    return;
  }
  // Check who answered before the socket becomes the writer's: until fd_ is
  // set and connected_ is true, neither send_published() (IO thread, only
  // while connected_) nor the producer's send_direct() (only after it swaps
  // kIdle -> kProducerSends, and kSleep is kIdle only while connected_ and
  // idle) can reach
  // this socket, so not a byte of the ring goes out on a connection that has
  // not passed.
  //
  // A failure is final, as a failed file check is (failed_, no reconnect):
  // the socket the writer was told to trust is served by someone else, which
  // retrying cannot fix and which the user has to look at. Retrying would
  // only keep offering that listener connections (telling it the writer is
  // there, each time) and report the same error on every backoff step. A new
  // Writer tries again.
  if (CoreError e = check_peer(fd.get())) {
    fd.reset();  // the listener sees a connection that ends without a byte
    m_untrusted_.fetch_add(1, std::memory_order_relaxed);
    failed_ = true;
    WriterEvent ev{WriterEvent::kError};
    ev.error = std::move(e);
    emit(std::move(ev));
    return;
  }
  UniqueFd dup;
  if (cfg_.receive_on_consumer) {
    dup.reset(::fcntl(fd.get(), F_DUPFD_CLOEXEC, 0));
    if (!dup.valid()) {  // out of descriptors: try again later
      const int e = errno;
      fd.reset();
      schedule_retry(now, e);
      return;
    }
  }
  const PeerCred cred = peer_credentials(fd.get());
  fd_ = std::move(fd);
  m_sndbuf_.store(raise_send_buffer(fd_.get(), cfg_.send_buffer_size));
  // A fresh assembler per connection: nothing of the last one's stream
  // (a partial frame) may be taken for the start of this one's.
  if (io_reads()) assembler_ = std::make_unique<FrameAssembler>(cfg_.assembler);
  first_batch_ = true;
  connected_ = true;
  want_out_ = false;
  loop_.add(fd_.get(), interest(), kSocketTag);  // EPOLLIN unless still paused by unacked batches
  progress_ = false;
  last_progress_ms_ = now;
  send_pos_ = head_;  // a frame cut by the last connection goes again, whole
  if (cfg_.acked) {
    // Nothing goes out until the reader's greeting (read_control()); the
    // connection is announced then.
    greeted_ = false;
    ctl_fill_ = 0;
    greet_deadline_ = now + cfg_.handshake_timeout_ms;
    greet_cred_ = cred;
    return;
  }
  conn_id_ = static_cast<uint32_t>(m_connects_.fetch_add(1, std::memory_order_relaxed) + 1);
  m_connected_.store(true);
  WriterEvent ev{WriterEvent::kConnect};
  ev.conn_id = conn_id_;
  ev.cred = cred;
  ev.dup = std::move(dup);
  emit(std::move(ev));
}

// A seqpacket writer binds to an abstract name first: its packets then carry
// a sender address, and the reader tells EOF from a 0-byte packet by that
// instead of by SO_PASSCRED (packet_io.h), which costs every packet a pid
// reference on both sides. Descriptors are refused from before connect()
// unless replies with them are wanted (WriterConfig::accept_fds).
int WriterEngine::connect_unix_fd(UniqueFd* out) {
  return connect_unix(cfg_.path, out, cfg_.type, /*autobind=*/cfg_.type == SOCK_SEQPACKET,
                      /*refuse_fds=*/!(cfg_.receive && cfg_.accept_fds));
}

void WriterEngine::schedule_retry(int64_t now, int err) {
  ++attempt_;
  const auto& p = cfg_.reconnect;
  if (p.max_attempts != 0 && attempt_ > p.max_attempts) {
    failed_ = true;
    WriterEvent ev{WriterEvent::kError};
    ev.error = CoreError::sys("ERR_CONNECT_FAILED", err, "connect",
                              "gave up connecting to " + cfg_.path + " after " +
                                  std::to_string(p.max_attempts) + " attempts");
    emit(std::move(ev));
    return;
  }
  // Exponential backoff with full jitter; a full backlog (EAGAIN) is retried
  // on a short timer since the listener is alive and just busy.
  double cap = p.initial_delay_ms * std::pow(p.multiplier, static_cast<double>(attempt_ - 1));
  cap = std::min<double>(cap, p.max_delay_ms);
  if (err == EAGAIN) cap = std::min<double>(cap, 20.0);
  uint32_t delay = static_cast<uint32_t>(static_cast<double>(splitmix(rng_) % 1000000) / 1e6 * cap);
  if (delay < 1) delay = 1;
  next_connect_at_ = now + delay;
  WriterEvent ev{WriterEvent::kReconnecting};
  ev.attempt = attempt_;
  ev.delay_ms = delay;
  ev.error = CoreError::sys("ERR_SOCKET", err, "connect", "cannot connect to " + cfg_.path);
  emit(std::move(ev));
}

void WriterEngine::send_published() {
  for (;;) {
    const uint32_t tail = load(ctrl::kTail);
    if (tail == send_pos_) return;
    const ssize_t n = send_once(tail);
    if (n > 0) {
      if (ack_target_ > acked_seq_) apply_ack();  // re-sent frames an acknowledgement had covered
      send_retry_at_ = 0;
      send_retry_delay_ = 0;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == ETOOMANYREFS) {
      retry_send_later();
      return;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      want_out_ = true;
      update_interest();
      return;
    }
    disconnect(CoreError::sys("ERR_SOCKET", n < 0 ? errno : EPIPE, "sendmsg", "send failed"));
    return;
  }
}

// A frame with `count` descriptors that the reader refused (EPERM: it has
// SO_PASSRIGHTS off, which a Reader without acceptFds sets on Linux 6.16+):
// dropped, or (acked mode) sent without them.
void WriterEngine::rights_refused(int count, bool sent_without) {
  WriterEvent ev{WriterEvent::kError};
  ev.error = CoreError::sys("ERR_FDS_REFUSED", EPERM, "sendmsg",
                            "the reader does not accept file descriptors (its acceptFds is off): a message with " +
                                std::to_string(count) + " descriptor(s) was " +
                                (sent_without ? "sent without them" : "dropped"));
  emit(std::move(ev));
}

// Descriptors in flight count against this process's RLIMIT_NOFILE until
// the reader takes them: another connection would not help (the ones in
// flight stay in the reader's queue) and reconnecting at once would spin.
// Keep the connection and try again a little later; say so once per spell.
void WriterEngine::retry_send_later() {
  constexpr uint32_t kFirstSendRetryMs = 5, kMaxSendRetryMs = 1000;
  if (send_retry_delay_ == 0) {
    WriterEvent ev{WriterEvent::kError};
    ev.error = CoreError::sys("ERR_SOCKET", ETOOMANYREFS, "sendmsg",
                              "too many descriptors in flight (RLIMIT_NOFILE) until the reader takes some; "
                              "the message and its descriptors are sent again shortly, on the same connection");
    emit(std::move(ev));
  }
  send_retry_delay_ = send_retry_delay_ == 0 ? kFirstSendRetryMs : std::min(send_retry_delay_ * 2, kMaxSendRetryMs);
  send_retry_at_ = now_ms() + send_retry_delay_;
}

// Walks the frames that are now fully sent and publishes head and sent.
void WriterEngine::advance_head() {
  // Acked mode, re-sending after a reconnect: send_pos_ is behind head_ (the
  // frames in between were fully sent before); nothing new is sent until it
  // passes head_. (The bytes at head_ may not even be published yet.)
  if (static_cast<int32_t>(send_pos_ - head_) <= 0) return;
  uint32_t head = head_;
  uint32_t count = 0;
  uint64_t bytes = 0;
  while (head != send_pos_) {
    const uint32_t avail = std::min<uint32_t>(kMaxVarintLen, send_pos_ - head);
    const uint32_t off = head & mask_;
    uint64_t len = 0;
    size_t h = 0;
    if (off + avail <= cfg_.capacity) {  // the header does not wrap: decode in place
      if (uvarint_decode(cfg_.ring + off, avail, UINT32_MAX, &len, &h) != VarintStatus::kOk) break;
    } else {
      uint8_t hdr[kMaxVarintLen];
      for (uint32_t i = 0; i < avail; ++i) hdr[i] = cfg_.ring[(head + i) & mask_];
      if (uvarint_decode(hdr, avail, UINT32_MAX, &len, &h) != VarintStatus::kOk) break;
    }
    const uint32_t end = head + static_cast<uint32_t>(h + len);
    if (static_cast<int32_t>(send_pos_ - end) < 0) break;  // not fully sent
    head = end;
    ++count;
    bytes += len;
  }
  publish_progress(head, count, bytes);
}

// `count` more frames (`payload` bytes) are fully sent, up to `head`.
void WriterEngine::publish_progress(uint32_t head, uint32_t count, uint64_t payload) {
  if (count == 0) return;
  if (!progress_) {
    progress_ = true;
    attempt_ = 0;  // a frame got through: the next failure starts a fresh backoff
  }
  head_ = head;
  sent_count_ += count;
  sent_payload_ += static_cast<uint32_t>(payload);
  // Their frames are fully sent: close the dups (acked mode: once acknowledged, apply_ack()).
  if (!cfg_.acked && !fds_.empty()) fds_.release(head_);
  m_sent_.fetch_add(count, std::memory_order_relaxed);
  m_bytes_.fetch_add(payload, std::memory_order_relaxed);
  store(ctrl::kSent, sent_count_);
  store(ctrl::kHead, head_);
  if (load(ctrl::kNotifyArmed) == kArmed) {
    const uint32_t th = load(ctrl::kNotifyHead);
    const uint32_t ts = load(ctrl::kNotifySent);
    if (static_cast<int32_t>(head_ - th) >= 0 && static_cast<int32_t>(sent_count_ - ts) >= 0) {
      uint32_t armed = kArmed;
      if (std::atomic_ref<uint32_t>(cfg_.ctrl[ctrl::kNotifyArmed]).compare_exchange_strong(armed, kDisarmed))
        emit(WriterEvent{WriterEvent::kNotify});
    }
  }
}

void WriterEngine::disconnect(const CoreError& why, Drop mode) {
  // What the reader sent before the connection ended is still delivered,
  // before the disconnect (unless its stream is what broke).
  if (mode == Drop::kDrainFirst) drain_inbound();
  assembler_.reset();  // a partial inbound frame goes with the connection
  close_fd();
  connected_ = false;
  want_out_ = false;
  send_pos_ = head_;
  fds_.reset();  // a frame cut here goes again whole, descriptors included
  // Acked mode: a connection that never completed the handshake was never
  // announced (kConnect), so it ends without a kDisconnect.
  const bool announced = !cfg_.acked || greeted_;
  greeted_ = false;
  ack_target_ = acked_seq_;  // an acknowledgement not applied goes with the connection that sent it
  send_retry_at_ = 0;
  send_retry_delay_ = 0;
  ctl_fill_ = 0;
  if (announced) {
    m_connected_.store(false);
    m_disconnects_.fetch_add(1, std::memory_order_relaxed);
    WriterEvent ev{WriterEvent::kDisconnect};
    ev.error = why;
    ev.sent = m_sent_.load(std::memory_order_relaxed);  // the send state is ours: exact
    // The consumer reads this connection's end from its dup when it takes
    // this event; until it has (consumer_finished()), no new connection.
    if (cfg_.receive_on_consumer) unfinished_.fetch_add(1);
    emit(std::move(ev));
  }
  if (!cfg_.reconnect.enabled) {
    failed_ = true;
    return;
  }
  if (progress_ && mode != Drop::kProtocolError) {
    // The connection did useful work: try again at once, then back off.
    attempt_ = 0;
    next_connect_at_ = now_ms();
  } else {
    // It broke before a single frame got through (a reader refusing our
    // frame, a peer that accepts and closes), or the reader broke the
    // framing of what it sends back: back off as for a failed connect, so
    // that this can never become a hot reconnect loop.
    schedule_retry(now_ms(), why.err ? why.err : EPIPE);
  }
}

uint64_t WriterEngine::frames_between(uint32_t from, uint32_t to) const {
  uint64_t n = 0;
  while (from != to) {
    uint8_t hdr[kMaxVarintLen];
    const uint32_t avail = std::min<uint32_t>(kMaxVarintLen, to - from);
    for (uint32_t i = 0; i < avail; ++i) hdr[i] = cfg_.ring[(from + i) & mask_];
    uint64_t len = 0;
    size_t h = 0;
    if (uvarint_decode(hdr, avail, UINT32_MAX, &len, &h) != VarintStatus::kOk) break;
    from += static_cast<uint32_t>(h + len);
    ++n;
  }
  return n;
}

}  // namespace udsipc

namespace udsipc {

// ─── Receiving (cfg_.receive) ────────────────────────────────────────────────

uint32_t WriterEngine::interest() const {
  return EPOLLRDHUP | (want_out_ ? uint32_t{EPOLLOUT} : 0u) |
         ((io_reads() && !read_paused_) || cfg_.acked ? uint32_t{EPOLLIN} : 0u);
}

// The holder of the send state: the IO thread, or the producer in send_direct().
void WriterEngine::update_interest() { loop_.modify(fd_.get(), interest(), kSocketTag); }

CoreError WriterEngine::peer_closed() const {
  int err = 0;
  socklen_t len = sizeof(err);
  ::getsockopt(fd_.get(), SOL_SOCKET, SO_ERROR, &err, &len);
  CoreError why;
  why.code = "ERR_SOCKET";
  why.err = err ? err : EPIPE;
  why.message = std::string("the reader closed the connection (") + std::strerror(why.err) + ")";
  return why;
}

uint64_t WriterEngine::budget() const {
  // At least one frame is always cut (FrameAssembler), so 1 when at the limit.
  return pending_ < cfg_.max_pending_bytes ? cfg_.max_pending_bytes - pending_ : 1;
}

CoreError WriterEngine::frame_error() const {
  if (assembler_->error() == FrameError::kTooLarge) {
    return CoreError::plain("ERR_MESSAGE_TOO_LARGE", "the reader sent a message of at least " +
                                                         std::to_string(assembler_->error_length()) +
                                                         " bytes, above maxMessageSize " +
                                                         std::to_string(cfg_.assembler.max_message_size) +
                                                         "; replacing the connection");
  }
  return CoreError::plain("ERR_INVALID_FRAME",
                          "the reader sent an invalid length prefix (varint overflow); replacing the connection");
}

bool WriterEngine::hand_over(bool ok, uint64_t limit) {
  for (;;) {
    while (assembler_->has_batch()) {
      WriterEvent ev{WriterEvent::kBatch};
      ev.batch = assembler_->take_batch();
      if (first_batch_) {
        first_batch_ = false;
        const Batch& b = ev.batch;
        if (b.count() > 0 && acked::is_greeting_message(b.base + b.offsets[0], b.offsets[1] - b.offsets[0])) {
          drop_first_messages(ev.batch, 1);
          report_error(acked_reader_error());
          if (ev.batch.count() == 0) continue;
        }
      }
      ev.batch.conn_id = conn_id_;
      ev.conn_id = conn_id_;
      const uint64_t charge = ev.batch.charge();
      pending_ += charge;
      unacked_.emplace_back(ev.batch.length, charge - ev.batch.length);
      emit(std::move(ev));  // one lock per batch
    }
    if (!ok) {
      WriterEvent ev{WriterEvent::kError};
      ev.error = frame_error();
      emit(std::move(ev));
      return false;
    }
    // The assembler stops cutting at the budget it was given: go on while
    // there is room below `limit`.
    if (!assembler_->backlogged() || pending_ >= limit) return true;
    ok = assembler_->resume(limit - pending_);
  }
}

void WriterEngine::read_inbound() {
  try {
    for (int r = 0; r < kMaxReadsPerEvent && connected_ && !read_paused_; ++r) {
      auto [ptr, len] = assembler_->prepare_read();
      // Descriptors are read only on the consumer's thread (JsReceiver):
      // here any that come are refused and the connection replaced.
      std::vector<UniqueFd> fds;
      CoreError why;
      const ssize_t n = recv_with_fds(fd_.get(), ptr, len, false, &fds, &why);
      if (why) {
        fds.clear();
        WriterEvent ev{WriterEvent::kError};
        ev.error = why;
        emit(std::move(ev));
        disconnect(why, Drop::kProtocolError);
        return;
      }
      if (n > 0) {
        m_reads_.fetch_add(1, std::memory_order_relaxed);
        m_bytes_read_.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
        if (!hand_over(assembler_->commit(static_cast<size_t>(n), budget()), cfg_.max_pending_bytes)) {
          disconnect(frame_error(), Drop::kProtocolError);
          return;
        }
        // hand_over() leaves frames backlogged only at the limit.
        if (pending_ >= cfg_.max_pending_bytes) {
          pause_reading();
          return;
        }
        if (static_cast<size_t>(n) < len) return;  // the kernel buffer is empty
        continue;
      }
      if (n == 0) {
        disconnect(peer_closed());  // EOF: a partial frame is dropped with the connection
        return;
      }
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      disconnect(CoreError::sys("ERR_SOCKET", errno, "read", "receiving from the reader failed"));
      return;
    }
  } catch (const std::bad_alloc&) {
    // No memory for the next slab or a large message's buffer: replace the
    // connection rather than take the process down from the IO thread.
    disconnect(CoreError::sys("ERR_SOCKET", ENOMEM, "malloc", "out of memory receiving from the reader"),
               Drop::kProtocolError);
  }
}

void WriterEngine::pause_reading() {
  read_paused_ = true;
  // Set before apply_acks() next takes acked_: an ack made meanwhile sees it
  // and wakes us (see ack()).
  paused_flag_.store(true);
  m_pauses_.fetch_add(1, std::memory_order_relaxed);
  update_interest();
}

void WriterEngine::apply_acks() {
  uint64_t bytes = acked_.exchange(0);
  if (bytes == 0) return;
  const uint64_t released = release_acked(unacked_, bytes);
  pending_ -= std::min(pending_, released);
  if (!read_paused_ || pending_ >= cfg_.max_pending_bytes) return;
  if (connected_ && assembler_ && assembler_->backlogged()) {
    // Frames read before the pause but not cut yet come first; they may use
    // up the budget again (then reading stays paused).
    try {
      if (!hand_over(assembler_->resume(cfg_.max_pending_bytes - pending_), cfg_.max_pending_bytes)) {
        disconnect(frame_error(), Drop::kProtocolError);
        return;
      }
    } catch (const std::bad_alloc&) {
      disconnect(CoreError::sys("ERR_SOCKET", ENOMEM, "malloc", "out of memory receiving from the reader"),
                 Drop::kProtocolError);
      return;
    }
    if (pending_ >= cfg_.max_pending_bytes) return;
  }
  read_paused_ = false;
  paused_flag_.store(false);
  if (connected_) update_interest();
}

// Before a connection is closed: hands over every whole frame of what the
// kernel holds for it now (bounded by that amount: a reader that keeps
// writing cannot keep us here), so that replies sent before a close are not
// lost: beyond max_pending_bytes, up to the end cap (WriterConfig::
// end_allowance). What is left beyond the cap goes with the connection,
// counted (reply_bytes_dropped) and reported (ERR_REPLIES_DROPPED): reading
// every end whole would let a reader that fills its send buffer and closes,
// again on every reconnect, grow memory without bound while the consumer
// does not settle. A partial frame
// at the end is dropped. Over max_pending_bytes, reading stays paused until
// acks bring it back: the next connection is not read before.
void WriterEngine::drain_inbound() {
  if (!io_reads() || !assembler_ || !fd_.valid()) return;
  struct PauseIfOver {
    WriterEngine* e;
    ~PauseIfOver() {
      if (e->pending_ < e->cfg_.max_pending_bytes || e->read_paused_) return;
      e->read_paused_ = true;
      e->paused_flag_.store(true);  // an ack now wakes the loop
      e->m_pauses_.fetch_add(1, std::memory_order_relaxed);
    }
  } pause_if_over{this};
  int queued = 0;
  if (::ioctl(fd_.get(), FIONREAD, &queued) != 0 || queued < 0) queued = 0;
  size_t left = static_cast<size_t>(queued);
  const uint64_t cap = end_cap_;
  const auto room = [&] { return pending_ < cap ? cap - pending_ : uint64_t{1}; };
  const auto at_cap = [&] { return pending_ >= cap || assembler_->backlogged(); };
  try {
    if (assembler_->backlogged() && !hand_over(assembler_->resume(room()), cap)) return;
    while (left > 0 && !at_cap()) {
      auto [ptr, len] = assembler_->prepare_read();
      std::vector<UniqueFd> fds;  // refused (see read_inbound()): dropped, closing them
      CoreError why;
      const ssize_t n = recv_with_fds(fd_.get(), ptr, std::min(len, left), false, &fds, &why);
      if (why) return;
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return;
      left -= static_cast<size_t>(n);
      m_reads_.fetch_add(1, std::memory_order_relaxed);
      m_bytes_read_.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
      if (!hand_over(assembler_->commit(static_cast<size_t>(n), room()), cap)) return;
    }
  } catch (const std::bad_alloc&) {
    return;  // what was handed over stays handed over; the rest goes with the connection
  }
  if (!at_cap()) return;
  const uint64_t lost = assembler_->partial_bytes() + left;
  if (lost == 0) return;
  m_reply_bytes_dropped_.fetch_add(lost, std::memory_order_relaxed);
  report_error(CoreError::plain(
      "ERR_REPLIES_DROPPED", "the connection ended with " + std::to_string(lost) +
                                 " bytes from the reader unread: the consumer held " + std::to_string(pending_) +
                                 " bytes in batches not yet done with (the most a connection's end may bring it to is " +
                                 std::to_string(end_cap_) + "), and they went with it"));
}

}  // namespace udsipc

namespace udsipc {

// ─── Acknowledged delivery (cfg_.acked) ─────────────────────────────────────

void WriterEngine::protocol_mismatch(const std::string& why) {
  const CoreError e = CoreError::plain("ERR_PROTOCOL_MISMATCH", "acknowledged delivery with " + cfg_.path + ": " + why +
                                                                    "; replacing the connection");
  WriterEvent ev{WriterEvent::kError};
  ev.error = e;
  emit(std::move(ev));
  disconnect(e, Drop::kProtocolError);  // backs off before the next attempt
}

uint32_t WriterEngine::frame_end(uint32_t pos) const {
  uint8_t hdr[kMaxVarintLen];
  for (uint32_t i = 0; i < kMaxVarintLen; ++i) hdr[i] = cfg_.ring[(pos + i) & mask_];
  uint64_t len = 0;
  size_t h = 0;
  uvarint_decode(hdr, kMaxVarintLen, UINT32_MAX, &len, &h);  // the producer wrote it: valid
  return pos + static_cast<uint32_t>(h + len);
}

// What an acked reader sends: its greeting, then acknowledgements, each a
// frame of a few bytes. Anything else (a longer frame, another kind, file
// descriptors) is a reader that does not speak the mode.
void WriterEngine::read_control() {
  for (int r = 0; r < 16 && connected_; ++r) {
    std::vector<UniqueFd> fds;
    CoreError why;
    const ssize_t n = recv_with_fds(fd_.get(), ctl_buf_ + ctl_fill_, sizeof ctl_buf_ - ctl_fill_, false, &fds, &why);
    if (why) {
      protocol_mismatch("the reader sent file descriptors");
      return;
    }
    if (n == 0) {
      disconnect(peer_closed());
      return;
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      disconnect(CoreError::sys("ERR_SOCKET", errno, "read", "receiving from the reader failed"));
      return;
    }
    m_reads_.fetch_add(1, std::memory_order_relaxed);
    m_bytes_read_.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
    ctl_fill_ += static_cast<size_t>(n);
    size_t off = 0;
    for (;;) {
      uint64_t len = 0;
      size_t h = 0;
      const VarintStatus st = uvarint_decode(ctl_buf_ + off, ctl_fill_ - off, acked::kMaxControl, &len, &h);
      if (st == VarintStatus::kNeedMore) break;
      if (st != VarintStatus::kOk) {
        protocol_mismatch(greeted_ ? "the reader sent a frame that is not an acknowledgement"
                                   : "the reader sent a frame that is not the acked greeting");
        return;
      }
      if (ctl_fill_ - off < h + len) break;
      if (!on_control(ctl_buf_ + off + h, static_cast<size_t>(len))) return;
      off += h + static_cast<size_t>(len);
    }
    std::memmove(ctl_buf_, ctl_buf_ + off, ctl_fill_ - off);
    ctl_fill_ -= off;
  }
}

bool WriterEngine::on_control(const uint8_t* p, size_t n) {
  if (!greeted_) {
    if (!acked::is_greeting(p, n)) {
      protocol_mismatch("the reader sent a frame that is not the acked greeting (a reader in another mode)");
      return false;
    }
    on_greeting();
    return connected_;
  }
  uint64_t seq = 0;
  if (!acked::parse_ack(p, n, &seq)) {
    protocol_mismatch("the reader sent a frame that is not an acknowledgement");
    return false;
  }
  if (seq > resent_high_ && static_cast<int32_t>(send_pos_ - head_) < 0) {
    // While re-sending, every frame the reader can have got was sent on an
    // earlier connection: an acknowledgement past the last of those is
    // refused now, before it frees any of the frames being re-sent.
    protocol_mismatch("the reader acknowledged message " + std::to_string(seq) + ", beyond the last one sent (" +
                      std::to_string(resent_high_) + ")");
    return false;
  }
  if (seq > ack_target_) ack_target_ = seq;
  apply_ack();
  return connected_;
}

void WriterEngine::on_greeting() {
  // Frames in [ack_head_, head_) were fully sent on earlier connections and
  // are not acknowledged: they go again, first, flagged by resent_below.
  const uint64_t unacked_sent = frames_between(ack_head_, head_);
  acked::Hello hello;
  hello.session = cfg_.session;
  hello.first_seq = acked_seq_ + 1;
  hello.resent_below = hello.first_seq + unacked_sent;
  uint8_t buf[1 + acked::kHelloSize];
  const size_t len = acked::put_hello(buf, hello);
  // The socket is fresh and nothing else was sent on it: 42 bytes fit.
  ssize_t n;
  do {
    n = ::send(fd_.get(), buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n != static_cast<ssize_t>(len)) {
    disconnect(CoreError::sys("ERR_SOCKET", n < 0 ? errno : EPIPE, "send", "sending the acked hello failed"));
    return;
  }
  greeted_ = true;
  resent_high_ = hello.resent_below - 1;
  send_pos_ = ack_head_;
  ack_target_ = acked_seq_;  // what an earlier connection claimed beyond this is forgotten
  fds_.reset();
  m_resent_.fetch_add(unacked_sent, std::memory_order_relaxed);
  conn_id_ = static_cast<uint32_t>(m_connects_.fetch_add(1, std::memory_order_relaxed) + 1);
  m_connected_.store(true);
  WriterEvent ev{WriterEvent::kConnect};
  ev.conn_id = conn_id_;
  ev.cred = greet_cred_;
  emit(std::move(ev));
}

// Frees the ring space of the frames acknowledged, up to ack_target_, but
// never past send_pos_: after a reconnect the frames from ack_head_ are sent
// again, and an acknowledgement may cover some of them before they went (the
// reader had them from an earlier connection). Their bytes must stay until
// they are sent (the reader drops the copies), so the rest waits for
// send_published() to call again.
void WriterEngine::apply_ack() {
  uint32_t pos = ack_head_;
  uint64_t seq = acked_seq_;
  uint32_t count = 0;
  while (seq < ack_target_ && pos != send_pos_) {
    const uint32_t end = frame_end(pos);
    if (static_cast<int32_t>(send_pos_ - end) < 0) break;  // not fully sent on this connection
    pos = end;
    ++seq;
    ++count;
  }
  if (seq < ack_target_ && static_cast<int32_t>(send_pos_ - head_) >= 0) {
    // Not re-sending (send_pos_ at or past head_): every frame the reader
    // can have got is fully sent, hence below send_pos_. It claims more: it
    // acknowledges messages it never got.
    protocol_mismatch("the reader acknowledged message " + std::to_string(ack_target_) + ", beyond the last one sent (" +
                      std::to_string(seq) + ")");
    return;
  }
  if (count == 0) return;
  ack_head_ = pos;
  acked_seq_ = seq;
  acked_count_ += count;
  m_acked_.fetch_add(count, std::memory_order_relaxed);
  if (!fds_.empty()) fds_.release(ack_head_);
  store(ctrl::kAcked, acked_count_);
  store(ctrl::kAckHead, ack_head_);
  if (load(ctrl::kAckNotifyArmed) == kArmed) {
    const uint32_t th = load(ctrl::kAckNotifyHead);
    const uint32_t ts = load(ctrl::kAckNotifySent);
    if (static_cast<int32_t>(ack_head_ - th) >= 0 && static_cast<int32_t>(acked_count_ - ts) >= 0) {
      uint32_t armed = kArmed;
      if (std::atomic_ref<uint32_t>(cfg_.ctrl[ctrl::kAckNotifyArmed]).compare_exchange_strong(armed, kDisarmed))
        emit(WriterEvent{WriterEvent::kNotify});
    }
  }
}

}  // namespace udsipc
