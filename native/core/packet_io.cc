#include "packet_io.h"

#include <errno.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <new>

#include "varint.h"

namespace udsipc {

namespace {

constexpr size_t kPage = 4096;

size_t round_up(size_t v, size_t to) { return (v + to - 1) / to * to; }

// The arena slot for packets of up to `max` bytes: 64-byte aligned, whole
// pages once a slot is a page or more (so slots start on page boundaries and
// their deep pages can be given back one slot at a time).
size_t slot_for(uint64_t max) {
  size_t s = round_up(static_cast<size_t>(std::max<uint64_t>(max, 1)), 64);
  if (s >= kPage) s = round_up(s, kPage);
  return s;
}

}  // namespace

size_t effective_max_packet(int fd) {
  int sndbuf = 0;
  socklen_t l = sizeof(sndbuf);
  if (::getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, &l) != 0 || sndbuf <= static_cast<int>(kUnixPacketOverhead))
    return 0;
  return std::min(static_cast<size_t>(sndbuf) - kUnixPacketOverhead, kMaxPacketCap);
}

// ---- PacketArena ----

PacketArena::PacketArena(size_t slot_size, size_t count)
    : slot_(slot_size), count_(std::max<size_t>(count, 1)) {
  map_len_ = round_up(slot_ * count_, kPage);
  void* p = ::mmap(nullptr, map_len_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  base_ = static_cast<uint8_t*>(p);
  control_.resize(kControlSize * count_);
  names_.resize(count_);
  headers_.resize(count_);
  iov_.resize(count_);
  depth_.assign(count_, 0);
}

std::unique_ptr<PacketArena> PacketArena::make(uint64_t max_message_size, size_t max_packets) {
  const size_t slot = slot_for(std::min<uint64_t>(max_message_size, kMaxPacketCap));
  const size_t count = std::min(std::clamp<size_t>(max_packets, 1, kMaxSendBatch), std::max<size_t>(1, kArenaMaxVirtual / slot));
  return std::make_unique<PacketArena>(slot, count);
}

PacketArena::~PacketArena() {
  if (base_) ::munmap(base_, map_len_);
}

void PacketArena::touched(size_t i, size_t len) {
  if (len <= kKeepPerSlot || len <= depth_[i]) return;
  deep_bytes_ += round_up(len, kPage) - std::max(round_up(depth_[i], kPage), kKeepPerSlot);
  depth_[i] = len;
}

void PacketArena::trim_if_needed() {
  if (deep_bytes_ <= kArenaKeepResident) return;
  // Give the deep pages back (the first kKeepPerSlot bytes of every slot
  // stay: small packets keep landing on warm pages).
  for (size_t k = 0; k < count_; ++k) {
    if (depth_[k] <= kKeepPerSlot) continue;
    ::madvise(slot(k) + kKeepPerSlot, round_up(depth_[k], kPage) - kKeepPerSlot, MADV_DONTNEED);
    depth_[k] = 0;
  }
  deep_bytes_ = 0;
  ++trims_;
}

// ---- PacketReceiver ----

PacketReceiver::PacketReceiver(const PacketReceiverConfig& cfg) : cfg_(cfg) {
  if (cfg_.max_message_size > kMaxPacketCap) cfg_.max_message_size = kMaxPacketCap;
  if (cfg_.trunc == TruncPolicy::kByType)
    cfg_.trunc = cfg_.type == SOCK_SEQPACKET ? TruncPolicy::kFail : TruncPolicy::kDrop;
  if (cfg_.max_packets == 0) cfg_.max_packets = 1;
  if (cfg_.max_packets > kMaxSendBatch) cfg_.max_packets = kMaxSendBatch;
  if (cfg_.slab_size < 64) cfg_.slab_size = 64;
  if (cfg_.large_threshold == 0 || cfg_.large_threshold > cfg_.slab_size) cfg_.large_threshold = cfg_.slab_size;
  slot_ = slot_for(cfg_.max_message_size);
  count_ = std::min(cfg_.max_packets, std::max<size_t>(1, kArenaMaxVirtual / slot_));
  if (cfg_.arena && cfg_.arena->slot_size() >= slot_) {
    // A shared arena with larger slots is fine: packets land at the start
    // of each slot and the receiver still reads at most slot_ bytes.
    arena_ = cfg_.arena;
    count_ = std::min(count_, arena_->count());
  }
  if (cfg_.offsets_pool) offsets_ = cfg_.offsets_pool->get();
}

PacketReceiver::~PacketReceiver() = default;

CoreError PacketReceiver::attach(int fd) {
  fd_ = fd;
  named_peer_ = false;
  if (cfg_.type == SOCK_SEQPACKET) {
    // A peer with an address puts it on every packet: that tells EOF, and
    // SO_PASSCRED (if the socket has it from elsewhere) is not needed.
    sockaddr_un peer{};
    socklen_t len = sizeof peer;
    named_peer_ = ::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &len) == 0 && len > sizeof(sa_family_t);
  }
  if ((cfg_.type == SOCK_SEQPACKET && !named_peer_) || cfg_.credentials) {
    if (const int e = set_passcred(fd, true)) return CoreError::sys("ERR_SOCKET", e, "setsockopt", "cannot set SO_PASSCRED");
  }
  return {};
}

PeerCred PacketReceiver::scan_control(msghdr& m, std::vector<UniqueFd>* fds) {
  PeerCred c;
  for (cmsghdr* cm = CMSG_FIRSTHDR(&m); cm; cm = CMSG_NXTHDR(&m, cm)) {
    if (cm->cmsg_level != SOL_SOCKET) continue;
    if (cm->cmsg_type == SCM_CREDENTIALS && cm->cmsg_len >= CMSG_LEN(sizeof(ucred))) {
      ucred u;
      std::memcpy(&u, CMSG_DATA(cm), sizeof(u));
      c.pid = u.pid;
      c.uid = static_cast<int>(u.uid);
      c.gid = static_cast<int>(u.gid);
    } else if (cm->cmsg_type == SCM_RIGHTS) {
      const size_t nfd = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t k = 0; k < nfd; ++k) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(cm) + k * sizeof(int), sizeof(int));
        if (cfg_.accept_fds) {
          fds->emplace_back(fd);
        } else {
          ::close(fd);
          ++stats_.fds_closed;
        }
      }
    }
  }
  return c;
}

void PacketReceiver::close_batch() {
  if (offsets_.empty()) return;
  PacketBatch pb;
  pb.batch.slab = slab_.share();
  pb.batch.base = slab_.get()->data() + batch_begin_;
  pb.batch.length = write_pos_ - batch_begin_;
  const size_t used = offsets_.size();
  pb.batch.offsets = std::move(offsets_);
  pb.batch.payload_bytes = payload_;
  pb.creds = std::move(creds_);
  if (!fds_.empty()) {
    pb.batch.fds = std::move(fds_);
    fds_.clear();
  }
  ready_.push_back(std::move(pb));
  ++stats_.batches;
  offsets_ = cfg_.offsets_pool ? cfg_.offsets_pool->get() : std::vector<uint32_t>{};
  offsets_.reserve(std::min<size_t>(used, 2 * kMaxSendBatch));
  creds_ = {};
  payload_ = 0;
  batch_begin_ = write_pos_;
}

void PacketReceiver::put_small(const uint8_t* p, size_t len, const PeerCred& c, std::vector<UniqueFd>* fds) {
  if (!slab_ || slab_.get()->capacity() - write_pos_ < len) {
    close_batch();
    slab_ = SlabRef(cfg_.pool && cfg_.pool->slab_size() == cfg_.slab_size ? cfg_.pool->get()
                                                                         : Slab::create(cfg_.slab_size));
    write_pos_ = batch_begin_ = 0;
  }
  if (len) std::memcpy(slab_.get()->data() + write_pos_, p, len);
  if (fds) fds_.push_back({static_cast<uint32_t>(offsets_.size() / 2), std::move(*fds)});
  const uint32_t start = static_cast<uint32_t>(write_pos_ - batch_begin_);
  offsets_.push_back(start);
  offsets_.push_back(start + static_cast<uint32_t>(len));
  if (cfg_.credentials) creds_.push_back(c);
  write_pos_ += len;
  payload_ += len;
}

void PacketReceiver::put_large(const uint8_t* p, size_t len, const PeerCred& c, std::vector<UniqueFd>* fds) {
  close_batch();
  PacketBatch pb;
  pb.batch.slab = SlabRef(Slab::create(len));
  std::memcpy(pb.batch.slab.get()->data(), p, len);
  pb.batch.base = pb.batch.slab.get()->data();
  pb.batch.length = len;
  pb.batch.offsets = {0, static_cast<uint32_t>(len)};
  pb.batch.payload_bytes = len;
  if (cfg_.credentials) pb.creds.push_back(c);
  if (fds) pb.batch.fds.push_back({0, std::move(*fds)});
  ready_.push_back(std::move(pb));
  ++stats_.batches;
}

RecvResult PacketReceiver::receive(uint64_t budget, bool close, uint64_t fd_room) {
  RecvResult r;
  if (failed_) {
    r.status = RecvStatus::kError;
    return r;
  }
  if (eof_) {
    r.status = RecvStatus::kEof;
    return r;
  }
  if (!arena_) {
    own_arena_ = std::make_unique<PacketArena>(slot_, count_);
    arena_ = own_arena_.get();
  }
  // As many packets as fit the budget if each were as large as allowed and
  // in a batch of its own; at least one.
  size_t vlen = count_;
  if (budget != kNoBudget) {
    const uint64_t worst = cfg_.max_message_size + 2 * sizeof(uint32_t) + kBatchCharge;
    vlen = static_cast<size_t>(std::clamp<uint64_t>(budget / worst, 1, count_));
  }
  if (cfg_.accept_fds && fd_room != kNoBudget)
    vlen = std::min(vlen, static_cast<size_t>(std::clamp<uint64_t>(fd_room / protocol::limits::kMaxFdsPerMessage, 1, count_)));
  // Control data only when it can carry something we need: credentials
  // (and, for seqpacket, the EOF test). Without a control buffer the
  // kernel drops stray descriptors itself (MSG_CTRUNC).
  const bool seqpacket = cfg_.type == SOCK_SEQPACKET;
  const bool control = seqpacket || cfg_.credentials || cfg_.accept_fds;
  // Credentials come with every packet when asked for, and on a seqpacket
  // connection whose peer has no address (the EOF test).
  const bool creds = cfg_.credentials || (seqpacket && !named_peer_);
  const size_t room = cfg_.accept_fds ? PacketArena::kControlSize
                      : creds         ? PacketArena::kSmallControl
                                      : PacketArena::kFdsOnlyControl;
  mmsghdr* h = arena_->headers();
  iovec* iov = arena_->iovecs();
  for (size_t i = 0; i < vlen; ++i) {
    iov[i].iov_base = arena_->slot(i);
    iov[i].iov_len = slot_;
    msghdr& m = h[i].msg_hdr;
    // The EOF test needs only the address's length: with room for none the
    // kernel copies no address bytes and still writes the length back
    // (recvmsg(2): a truncated address reports its full length).
    m.msg_name = named_peer_ ? arena_->name(i) : nullptr;
    m.msg_namelen = 0;
    m.msg_iov = &iov[i];
    m.msg_iovlen = 1;
    m.msg_control = control ? arena_->control(i) : nullptr;
    m.msg_controllen = control ? room : 0;
    m.msg_flags = 0;
    h[i].msg_len = 0;
  }
  int n;
  for (;;) {
    n = ::recvmmsg(fd_, h, static_cast<unsigned>(vlen), MSG_DONTWAIT | MSG_CMSG_CLOEXEC | MSG_TRUNC, nullptr);
    ++stats_.calls;
    if (n >= 0 || errno == EINTR) {
      if (n >= 0) break;
      continue;
    }
    // seqpacket: the peer closed with packets we sent it unread. The kernel
    // reports that once, before the packets still queued for us (they are
    // not lost, and EOF follows them): note it and read on.
    if (seqpacket && errno == ECONNRESET && !peer_reset_) {
      peer_reset_ = true;
      continue;
    }
    break;
  }
  if (n <= 0) {
    if (n == 0 || errno == EAGAIN || errno == EWOULDBLOCK) {
      r.status = RecvStatus::kAgain;
    } else {
      r.status = RecvStatus::kError;
      r.err = errno;
    }
    return r;
  }
  const size_t ready_before = ready_.size();
  r.status = RecvStatus::kOk;
  r.maybe_more = static_cast<size_t>(n) == vlen;
  // First pass, before anything can throw: EOF, control data of every entry
  // (credentials; stray descriptors closed whatever happens to their
  // packet, so that not even a failed allocation below can leak them),
  // arena use.
  size_t end = static_cast<size_t>(n);
  creds_in_.resize(end);
  // The first EOF-shaped entry, skipped (there is at most one per
  // connection: eof_seen_ is set once); npos when this call read none.
  size_t skipped_at = std::string::npos;
  if (cfg_.accept_fds) {
    fds_in_.resize(end);
    for (auto& v : fds_in_) v.clear();
  }
  const uint64_t closed_before = stats_.fds_closed;
  for (size_t i = 0; i < end; ++i) {
    msghdr& m = h[i].msg_hdr;
    if (seqpacket && h[i].msg_len == 0 && m.msg_controllen == 0 && (!named_peer_ || m.msg_namelen == 0)) {
      if (eof_seen_) {
        // The second EOF-shaped entry: EOF, this entry and every one after
        // it (see the header comment).
        eof_ = true;
        end = i;
        break;
      }
      // The first: the peer has shut down, but a packet it queued just
      // before may still follow (the close race): skip it and read on.
      eof_seen_ = true;
      skipped_at = i;
      continue;
    }
    if (eof_seen_) ++stats_.early_eof;  // a packet after an EOF-shaped entry: the close race
    const uint64_t closed_here = stats_.fds_closed;
    creds_in_[i] = control && m.msg_controllen ? scan_control(m, cfg_.accept_fds ? &fds_in_[i] : nullptr) : PeerCred{};
    if (m.msg_flags & MSG_CTRUNC) {
      ++stats_.ctrunc;
      // Control data cut short: descriptors came that did not fit, or could
      // not be installed (RLIMIT_NOFILE reached; credentials always fit the
      // room offered). The kernel closed those without installing them: if
      // none of the packet's reached us to be counted, count the packet's as
      // one, so that a refusal is never silent.
      if (!cfg_.accept_fds && stats_.fds_closed == closed_here) ++stats_.fds_closed;
      if (cfg_.accept_fds && !failed_ && seqpacket) {
        failed_ = true;
        fd_error_ = CoreError::plain("ERR_FDS_TRUNCATED",
                                     "descriptors sent with a packet did not all arrive (RLIMIT_NOFILE reached, or "
                                     "more than fit)");
      }
    }
    arena_->touched(i, std::min<size_t>(h[i].msg_len, slot_));
  }
  if (seqpacket && !cfg_.accept_fds && !failed_ && stats_.fds_closed > closed_before) {
    // Descriptors on a connection that does not accept them: a protocol
    // violation (and a flood of them an attack on our descriptor table).
    failed_ = true;
    fd_error_ = CoreError::plain("ERR_UNEXPECTED_FDS",
                                 "the peer sent file descriptors, and this end does not accept them (acceptFds)");
  }
  const size_t skipped = skipped_at < end ? 1 : 0;
  r.packets = end - skipped;
  stats_.packets += end - skipped;
  // A packet that is not delivered has its descriptors (accept_fds) closed
  // and counted as refused.
  const auto refuse_fds_of = [&](size_t i) {
    if (cfg_.accept_fds && !fds_in_[i].empty()) {
      stats_.fds_closed += fds_in_[i].size();
      fds_in_[i].clear();
    }
  };
  for (size_t i = 0; i < end; ++i) {
    if (i == skipped_at) continue;
    msghdr& m = h[i].msg_hdr;
    const PeerCred& c = creds_in_[i];
    const size_t len = h[i].msg_len;
    if (failed_) {
      ++stats_.discarded;
      refuse_fds_of(i);
      continue;
    }
    // The sender first: a refused sender's datagrams are refused whatever
    // their size (counted as refused, never reported as too large: that
    // would let anyone flood the reader's onError).
    if (cfg_.accept && cfg_.credentials && !cfg_.accept(c, cfg_.accept_arg)) {
      ++stats_.refused;
      refuse_fds_of(i);
      continue;
    }
    if ((m.msg_flags & MSG_TRUNC) || len > cfg_.max_message_size) {
      ++stats_.too_large;
      if (cfg_.trunc == TruncPolicy::kFail) {
        failed_ = true;
        error_length_ = len;
      }
      refuse_fds_of(i);
      continue;
    }
    const uint8_t* p = arena_->slot(i);
    std::vector<UniqueFd>* fds = cfg_.accept_fds && !fds_in_[i].empty() ? &fds_in_[i] : nullptr;
    if (fds) r.fds += fds->size();
    if (len >= cfg_.large_threshold) put_large(p, len, c, fds);
    else put_small(p, len, c, fds);
    ++r.delivered;
    r.bytes += len;
  }
  if (close) close_batch();
  arena_->trim_if_needed();  // only now: the packets have been copied out
  stats_.bytes += r.bytes;
  for (size_t k = ready_before; k < ready_.size(); ++k) r.charge += ready_[k].batch.charge();
  if (failed_) {
    r.status = RecvStatus::kError;
    r.maybe_more = false;
  } else if (eof_) {
    // Packets before the EOF are in the batches; the next call says kEof.
    r.maybe_more = end > skipped;
    if (end == skipped) r.status = RecvStatus::kEof;
  } else if (eof_seen_) {
    r.maybe_more = true;  // the next call reads the second EOF-shaped entry (or a late packet)
  }
  return r;
}

PacketBatch PacketReceiver::take() {
  PacketBatch b = std::move(ready_.front());
  ready_.pop_front();
  return b;
}

// ---- PacketSender ----

template <typename Fill>
SendResult PacketSender::send_impl(int fd, size_t n, Fill fill) {
  SendResult res;
  while (res.sent < n) {
    const size_t k = std::min(n - res.sent, kMaxSendBatch);
    for (size_t j = 0; j < k; ++j) {
      msghdr& m = hdrs_[j].msg_hdr;
      std::memset(&m, 0, sizeof(m));
      fill(res.sent + j, m);
      hdrs_[j].msg_len = 0;
    }
    int r;
    do {
      r = ::sendmmsg(fd, hdrs_.data(), static_cast<unsigned>(k), MSG_DONTWAIT | MSG_NOSIGNAL);
    } while (r < 0 && errno == EINTR);
    ++calls_;
    if (r < 0) {
      res.err = errno;
      return res;
    }
    // r < k: sendmmsg() dropped the errno of the message that stopped it;
    // the next round sends from there and either gets it or goes on.
    res.sent += static_cast<size_t>(r);
  }
  return res;
}

SendResult PacketSender::send(int fd, const OutPacket* msgs, size_t n) {
  return send_impl(fd, n, [msgs](size_t i, msghdr& m) {
    m.msg_iov = const_cast<iovec*>(msgs[i].iov);
    m.msg_iovlen = static_cast<size_t>(msgs[i].iovcnt);
  });
}

SendResult PacketSender::send(int fd, const iovec* msgs, size_t n) {
  return send_impl(fd, n, [msgs](size_t i, msghdr& m) {
    m.msg_iov = const_cast<iovec*>(&msgs[i]);
    m.msg_iovlen = 1;
  });
}

// ---- the Writer's ring ----

size_t ring_packets(const uint8_t* ring, uint32_t capacity, uint32_t from, uint32_t to, OutPacket* out,
                    uint32_t* ends, size_t max_out) {
  const uint32_t mask = capacity - 1;
  size_t k = 0;
  uint32_t pos = from;
  while (k < max_out && pos != to) {
    const uint32_t left = to - pos;
    const uint32_t avail = std::min<uint32_t>(static_cast<uint32_t>(kMaxVarintLen), left);
    const uint32_t off = pos & mask;
    uint64_t len = 0;
    size_t h = 0;
    VarintStatus st;
    if (off + avail <= capacity) {
      st = uvarint_decode(ring + off, avail, UINT32_MAX, &len, &h);
    } else {
      uint8_t hdr[kMaxVarintLen];
      for (uint32_t i = 0; i < avail; ++i) hdr[i] = ring[(pos + i) & mask];
      st = uvarint_decode(hdr, avail, UINT32_MAX, &len, &h);
    }
    if (st != VarintStatus::kOk || h + len > left) break;
    const uint32_t start = (pos + static_cast<uint32_t>(h)) & mask;
    OutPacket& o = out[k];
    const size_t first = std::min<size_t>(len, capacity - start);
    o.iov[0] = {const_cast<uint8_t*>(ring) + start, first};
    o.iovcnt = 1;
    if (first < len) {
      o.iov[1] = {const_cast<uint8_t*>(ring), static_cast<size_t>(len - first)};
      o.iovcnt = 2;
    }
    pos += static_cast<uint32_t>(h + len);
    ends[k++] = pos;
  }
  return k;
}

// ---- sockets ----

int set_passcred(int fd, bool on) {
  const int v = on ? 1 : 0;
  return ::setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &v, sizeof(v)) == 0 ? 0 : errno;
}

int connect_packet(const std::string& path, int type, UniqueFd* out) { return connect_unix(path, out, type); }

AddressProbe probe_packet_address(const std::string& path, int type) {
  UniqueFd probe;
  const int e = connect_packet(path, type, &probe);
  switch (e) {
    case 0: return AddressProbe::kLive;
    case ECONNREFUSED: return AddressProbe::kStale;
    case ENOENT: return AddressProbe::kGone;
    case EPROTOTYPE: return AddressProbe::kOtherType;
    default: return AddressProbe::kLive;  // EAGAIN (full backlog), EACCES, ...: not ours to remove
  }
}

Listener bind_packet_socket(const std::string& path, const PacketBindOptions& opts) {
  Listener out;
  const char* what = opts.type == SOCK_SEQPACKET ? "seqpacket" : "dgram";
  if (opts.type != SOCK_SEQPACKET && opts.type != SOCK_DGRAM) {
    out.error = CoreError::sys("ERR_SOCKET", EINVAL, "socket", "not a packet socket type");
    return out;
  }
  sockaddr_un addr;
  socklen_t len;
  if (!make_address(path, &addr, &len)) {
    out.error = CoreError::plain("ERR_PATH_TOO_LONG", "socket path is empty, contains NUL or exceeds " +
                                                          std::to_string(kMaxPathBytes) + " bytes");
    return out;
  }
  const bool abstract = is_abstract(path);
  for (int attempt = 0; attempt < 4; ++attempt) {
    UniqueFd fd(::socket(AF_UNIX, opts.type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd.valid()) {
      out.error = CoreError::sys("ERR_SOCKET", errno, "socket", "cannot create socket");
      return out;
    }
    if (opts.passcred) {
      if (const int e = set_passcred(fd.get(), true)) {
        out.error = CoreError::sys("ERR_SOCKET", e, "setsockopt", "cannot set SO_PASSCRED");
        return out;
      }
    }
    // The socket file takes the socket inode's mode (minus the umask) at
    // bind(): set it through the fd, never by path.
    if (opts.mode >= 0 && !abstract && ::fchmod(fd.get(), static_cast<mode_t>(opts.mode)) != 0) {
      out.error = CoreError::sys("ERR_SOCKET", errno, "chmod", "cannot set the mode of " + path);
      return out;
    }
    if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), len) == 0) {
      struct stat st {};
      if (!abstract && ::lstat(path.c_str(), &st) != 0) st = {};
      if (opts.type == SOCK_SEQPACKET) {
        if (::listen(fd.get(), opts.backlog) != 0) {
          out.error = CoreError::sys("ERR_SOCKET", errno, "listen", "cannot listen on " + path);
          if (!abstract) unlink_if_same(path, st.st_dev, st.st_ino);
          return out;
        }
        // Between bind() and listen() a connect is refused, so a concurrent
        // starter may have probed our socket stale and replaced it: then
        // ours is unreachable, and the other one won.
        struct stat now {};
        if (!abstract && (::lstat(path.c_str(), &now) != 0 || now.st_dev != st.st_dev || now.st_ino != st.st_ino)) {
          out.error = CoreError::sys("ERR_ADDRESS_IN_USE", EADDRINUSE, "bind", path + " was replaced while starting");
          return out;
        }
      }
      out.dev = st.st_dev;
      out.ino = st.st_ino;
      out.fd = std::move(fd);
      return out;
    }
    const int e = errno;
    if (e != EADDRINUSE || abstract) {
      out.error = CoreError::sys(e == EADDRINUSE ? "ERR_ADDRESS_IN_USE" : "ERR_SOCKET", e, "bind", "cannot bind " + path);
      return out;
    }
    struct stat st;
    if (::lstat(path.c_str(), &st) != 0) {
      if (errno == ENOENT) continue;  // removed meanwhile: bind again
      out.error = CoreError::sys("ERR_SOCKET", errno, "stat", "cannot inspect " + path);
      return out;
    }
    if (!S_ISSOCK(st.st_mode)) {
      out.error = CoreError::plain("ERR_NOT_A_SOCKET", path + " exists and is not a socket; refusing to replace it");
      out.error.err = ENOTSOCK;
      return out;
    }
    switch (probe_packet_address(path, opts.type)) {
      case AddressProbe::kGone: continue;
      case AddressProbe::kStale: unlink_if_same(path, st.st_dev, st.st_ino); continue;
      case AddressProbe::kOtherType:
        out.error = CoreError::sys("ERR_ADDRESS_IN_USE", EADDRINUSE, "bind",
                                   "a socket of another type than " + std::string(what) + " is live on " + path);
        return out;
      case AddressProbe::kLive:
        out.error = CoreError::sys("ERR_ADDRESS_IN_USE", EADDRINUSE, "bind", "another process is using " + path);
        return out;
    }
  }
  out.error = CoreError::sys("ERR_ADDRESS_IN_USE", EADDRINUSE, "bind", "cannot take " + path + ": it keeps changing");
  return out;
}

}  // namespace udsipc
