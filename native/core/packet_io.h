// Batched IO for the socket types that keep message boundaries:
// SOCK_SEQPACKET (connected, one PacketReceiver per connection) and
// SOCK_DGRAM (one bound reader socket, any number of connected writers).
// No length prefix on the wire: one packet is one message.
//
// PacketReceiver reads up to max_packets (64) packets per recvmmsg() call and
// turns them into the same Batch objects FrameAssembler makes (a slab region
// plus (start, end) offsets per message), so the engines hand them over
// unchanged. PacketSender sends a run of messages with sendmmsg(). The rest
// are socket helpers for both types (bind/listen, connect, SO_PASSCRED, the
// stale-socket probe with the reader's own type) and effective_max_packet().
//
// Memory: where packets land. recvmmsg() needs, for every entry, room for the
// largest packet that may come: a packet larger than its buffer is cut by
// the kernel and the rest is thrown away (MSG_TRUNC), so a buffer can never
// be sized after the fact. Reserving max_message_size x 64 of real memory
// per call (13 MiB at the default seqpacket/dgram limit of 208 KiB, 256 MiB
// at 4 MiB) is out of the question, and so is giving up batching when the
// limit is large. So packets land in a PacketArena: one mmap()ed region
// of `count` slots of max_message_size each (rounded up to 64 bytes, to
// whole pages from 4 KiB on), mapped
// MAP_NORESERVE, so it costs address space, not memory: a page becomes
// resident only when a packet reaches it (a 64-byte packet touches one page
// of its slot). Each packet is then copied, densely, into slab memory (one
// memcpy per message, from memory the kernel has just written, so hot in the
// cache: a few ns for 64 B, about a microsecond per 64 KiB), and that
// dense region is what the Batch describes, as a FrameAssembler batch would
// (JavaScript copies a batch of up to 16 KiB instead of wrapping it, which
// a sparse region would defeat). Packets of large_threshold (128 KiB) or
// more get a slab of their own (one batch each), as FrameAssembler does for
// large frames. Slots touched deep by large packets are given back with
// madvise(MADV_DONTNEED) once they hold more than kArenaKeepResident, so a
// burst of large packets does not pin its memory. The arena's slot count is
// max_packets, capped so that the arena stays below kArenaMaxVirtual (256 MiB
// of address space: at the 4 MiB limit a call still reads 64 packets; the
// reader of the default maxMessageSize, clamped to 4 MiB, read 16 per call
// with a 64 MiB cap, 4x the system calls for the same packets). The alternatives: MSG_PEEK|MSG_TRUNC (or FIONREAD) tells the
// size of the next packet only, so it costs a system call per packet and
// gives up recvmmsg; a growable buffer cannot be grown after the kernel has
// cut a packet. The arena is only used inside receive() (everything is
// copied out before it returns), so one arena can serve every receiver of
// one thread: an engine should make one per IO thread and pass it in the
// config (otherwise each receiver makes its own, which for many seqpacket
// connections means a few resident pages each).
//
// EOF on SOCK_SEQPACKET. A 0-byte packet and EOF both read as 0 bytes
// (recv() returns 0 either way), and recvmmsg() makes it worse: once the
// peer has closed, every remaining entry of the call is "received" as an
// EOF of length 0 (checked: a call of 8 entries after [3-byte, 0-byte,
// close] returns 8 entries: 3, 0, 0, 0, 0, 0, 0, 0). No flag tells them
// apart. What does: something the kernel attaches to every real packet and
// never to an EOF entry. Two such things, chosen per connection in attach():
// - the sender's address: when the peer's socket is bound (getpeername()
//   says so; our seqpacket Writer binds to a kernel-chosen abstract name
//   before it connects, see connect_unix()), every packet carries it
//   (msg_name, msg_namelen > 0) and an EOF entry has none. The kernel
//   copies the sender's address when the packet is read, so a peer that
//   binds only after attach() looked is still told right. Only its length
//   is asked for (msg_namelen 0 in, the address's length out: no bytes of
//   it are copied), a store per packet;
// - credentials: for a peer with no address (a raw client that did not
//   bind), attach() turns on SO_PASSCRED, and every real packet carries an
//   SCM_CREDENTIALS control message (the kernel adds it at receive time, so
//   packets queued before attach() have it too), an EOF entry none. This
//   costs more: the sender takes a reference on its pid (and, on 6.18,
//   registers it with pidfs) for every packet and the receiver formats the
//   message (raw seqpacket measured 8-11 % faster without it, see
//   docs/socket-types-core.md; that is why the address is preferred).
// An entry of length 0 with neither is EOF-shaped, but the first one is not
// final: the kernel finds the queue empty, drops the queue lock, and only
// then looks at the shutdown flag, so a peer that queues a packet and closes
// in between makes that entry read as EOF while its packet is still queued
// (seen on 6.18: [EOF, 1-byte packet, EOF, EOF] from one call, a few times
// per 100k connections that send and close at once). Once the shutdown flag
// is seen, nothing more can be queued (the sender checks the flag under the
// same lock before it queues), so the second EOF-shaped entry, in the same
// call or a later one, is final. receive() skips the first and delivers
// what follows it; the second ends the connection, with everything after it.
// (A dgram socket has no EOF: a dgram reader reads EAGAIN when its writers
// are gone.)
//
// ECONNRESET on SOCK_SEQPACKET means the peer closed while packets we sent
// it were unread; the kernel reports it once, before the packets still
// queued for us, which stay readable. receive() notes it (peer_reset()) and
// reads on: those packets are delivered, then EOF.
//
// Too-large packets (MSG_TRUNC; every call passes MSG_TRUNC so that msg_len
// is the packet's real length): never delivered. TruncPolicy::kDrop (the
// default for dgram) counts and drops them and goes on; kFail (the default
// for seqpacket) delivers the packets before the first one too large, then
// puts the receiver in an error state (failed(), error_length()): the packets
// the same call read after it are discarded (counted) and further calls
// return kError. The caller closes the connection, as for a stream frame
// above maxMessageSize.
//
// Budget: receive() takes a budget in bytes, counted as Batch::charge()
// counts them (bytes + 8 per message + kBatchCharge per batch), and asks the
// kernel for at most as many packets as can fit it if each were as large as
// max_message_size and in a batch of its own; at least one packet per call,
// so a call makes progress. What it does not read stays in the kernel (no
// backlog is kept here). So the charge of one call never exceeds
// max(budget, the charge of a single packet).
//
// Descriptors: kept with their packet when accept_fds; otherwise any that
// arrives is closed at once and counted (fds_closed), so a peer cannot fill
// our fd table. A receiver that does not accept them offers room for at
// most two (kSmallControl beside credentials, kFdsOnlyControl without), or
// none when it needs no control data at all (dgram without credentials):
// the kernel discards the rest without installing them, so fds_closed
// counts at least one per packet that carried some, not the number sent.
//
// Threads: a PacketReceiver, PacketSender or PacketArena is used by one
// thread at a time, the owner of the socket (the IO thread, or whichever
// thread holds the reader's loop lock); the batches they hand out hold slab
// references and may travel to any thread. The sockets are borrowed, never
// owned, by these classes: the caller's UniqueFd owns them.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "error.h"
#include "frame_assembler.h"
#include "socket_util.h"
#include "unique_fd.h"

namespace udsipc {

// af_unix refuses a packet of more than sk_sndbuf - 32 bytes (EMSGSIZE).
constexpr size_t kUnixPacketOverhead = 32;
// Above about 4 MiB + 17 pages (4 KiB pages) a send fails with ENOBUFS
// whatever SO_SNDBUF says (the packet's linear part is one kmalloc, capped at
// KMALLOC_MAX_SIZE, plus MAX_SKB_FRAGS pages): effective_max_packet() never
// reports more than this.
constexpr size_t kMaxPacketCap = size_t{4} << 20;
constexpr size_t kMaxPacketsPerCall = 64;
// sendmmsg() takes at most UIO_MAXIOV (1024) messages per call.
constexpr size_t kMaxSendBatch = 1024;
constexpr size_t kArenaMaxVirtual = size_t{256} << 20;
constexpr size_t kArenaKeepResident = size_t{1} << 20;

// The largest packet that can be sent on fd (a SOCK_SEQPACKET or SOCK_DGRAM
// socket): SO_SNDBUF - 32, at most kMaxPacketCap. With default sysctls
// (wmem_default 212992) that is 212960 bytes; raise_send_buffer() raises it
// (4 MiB asked, capped by wmem_max, doubled by the kernel). 0 on error.
size_t effective_max_packet(int fd);

// Landing memory for recvmmsg() (see the header comment): `count` slots of
// `slot_size` bytes, plus the mmsghdr/iovec/control arrays. One thread at a
// time. Throws std::bad_alloc if the mapping fails.
class PacketArena {
 public:
  PacketArena(size_t slot_size, size_t count);
  // The arena a PacketReceiver with this max_message_size and max_packets
  // would make for itself: share one per thread between such receivers.
  static std::unique_ptr<PacketArena> make(uint64_t max_message_size, size_t max_packets = kMaxPacketsPerCall);
  ~PacketArena();
  PacketArena(const PacketArena&) = delete;
  PacketArena& operator=(const PacketArena&) = delete;

  size_t slot_size() const { return slot_; }
  size_t count() const { return count_; }
  uint8_t* slot(size_t i) const { return base_ + i * slot_; }
  // Control buffer room per entry: credentials plus the most descriptors one
  // packet may carry (a receiver that does not accept descriptors offers
  // only kSmallControl of it: room for one, enough to see that some came).
  static constexpr size_t kControlSize = CMSG_SPACE(sizeof(int) * 3) + CMSG_SPACE(sizeof(int) * 253);
  static constexpr size_t kSmallControl = CMSG_SPACE(sizeof(int) * 3) + CMSG_SPACE(sizeof(int));
  // Without credentials to read: room for SCM_RIGHTS alone (two descriptors
  // fit, as on a stream socket). kSmallControl would fit ten.
  static constexpr size_t kFdsOnlyControl = CMSG_SPACE(sizeof(int));
  uint8_t* control(size_t i) { return control_.data() + i * kControlSize; }
  sockaddr_un* name(size_t i) { return &names_[i]; }
  mmsghdr* headers() { return headers_.data(); }
  iovec* iovecs() { return iov_.data(); }

  // A packet of `len` bytes landed in slot i: remembers how deep.
  void touched(size_t i, size_t len);
  // Once the packets are copied out: gives the deep pages back if more than
  // kArenaKeepResident is held that way.
  void trim_if_needed();
  // Pages currently held beyond each slot's first kKeepPerSlot bytes.
  size_t deep_bytes() const { return deep_bytes_; }
  size_t trims() const { return trims_; }

 private:
  static constexpr size_t kKeepPerSlot = 64 * 1024;
  uint8_t* base_ = nullptr;
  size_t map_len_ = 0;
  size_t slot_, count_;
  std::vector<uint8_t> control_;
  std::vector<sockaddr_un> names_;  // the sender's address per entry (seqpacket EOF test)
  std::vector<mmsghdr> headers_;
  std::vector<iovec> iov_;
  std::vector<size_t> depth_;  // deepest byte written per slot since the last trim
  size_t deep_bytes_ = 0, trims_ = 0;
};

enum class TruncPolicy {
  kByType,  // kFail for SOCK_SEQPACKET, kDrop for SOCK_DGRAM
  kDrop,    // count it, drop it, go on (dgram)
  kFail,    // error state (seqpacket): the caller closes the connection
};

struct PacketReceiverConfig {
  int type = SOCK_DGRAM;  // SOCK_DGRAM or SOCK_SEQPACKET
  // Packets above this are too large (never delivered); clamped to
  // kMaxPacketCap (no sender can send more).
  uint64_t max_message_size = kMaxPacketCap;
  size_t max_packets = kMaxPacketsPerCall;  // per recvmmsg() call (1..1024)
  size_t slab_size = protocol::defaults::kSlabSize;
  size_t large_threshold = kLargeThreshold;  // packets this big get their own slab
  TruncPolicy trunc = TruncPolicy::kByType;  // see the header comment
  // Collect SCM_CREDENTIALS per message (dgram: attach() sets SO_PASSCRED;
  // seqpacket has it on anyway). Off: PacketBatch::creds stays empty.
  bool credentials = false;
  // With credentials: called for every datagram that arrived whole; false
  // drops it (counted in Stats::refused), e.g. allowUids/allowGids per
  // datagram. Called on the receiving thread, before the copy.
  bool (*accept)(const PeerCred& cred, void* arg) = nullptr;
  void* accept_arg = nullptr;
  // Descriptors (SCM_RIGHTS) with packets: kept with their message
  // (Batch::fds) when accept_fds; otherwise closed at once, and on
  // seqpacket the receiver fails with fd_error() ERR_UNEXPECTED_FDS (a
  // datagram with descriptors is still delivered; they are closed, counted).
  // With accept_fds, MSG_CTRUNC fails it with ERR_FDS_TRUNCATED.
  bool accept_fds = false;
  SlabPool* pool = nullptr;             // not owned; null = malloc
  OffsetsPool* offsets_pool = nullptr;  // not owned; may be null
  // Not owned; shared by the receivers of one thread; its slot size must be
  // at least max_message_size rounded up to 64. Null = the receiver makes
  // its own on first use.
  PacketArena* arena = nullptr;
};

// A batch plus, when credentials are collected, one PeerCred per message
// (creds[i] belongs to message i of batch; -1s if a packet carried none).
struct PacketBatch {
  Batch batch;
  std::vector<PeerCred> creds;
};

enum class RecvStatus {
  kOk,     // at least one packet was taken from the socket (maybe all dropped)
  kAgain,  // nothing to read (EAGAIN)
  kEof,    // seqpacket: the peer closed (after the packets before it); sticky
  kError,  // err is set, or a packet too large under kFail (failed()); sticky for kFail
};

struct RecvResult {
  RecvStatus status = RecvStatus::kAgain;
  int err = 0;             // errno for kError from the socket (0 for a packet too large)
  size_t packets = 0;      // packets taken from the socket by this call
  size_t delivered = 0;    // of which put into batches
  uint64_t bytes = 0;      // payload bytes delivered
  uint64_t charge = 0;     // Batch::charge() of the batches this call made
  uint64_t fds = 0;        // descriptors kept with the packets delivered (accept_fds)
  bool maybe_more = false;  // the call was full (or stopped by its budget): call again
};

class PacketReceiver {
 public:
  explicit PacketReceiver(const PacketReceiverConfig& cfg);
  ~PacketReceiver();
  PacketReceiver(const PacketReceiver&) = delete;
  PacketReceiver& operator=(const PacketReceiver&) = delete;

  // Borrows fd (a non-blocking socket of cfg.type) and sets SO_PASSCRED on
  // it when needed (dgram if credentials; seqpacket when the peer has no
  // address: EOF detection, see the header comment).
  CoreError attach(int fd);
  // seqpacket: EOF is told by the sender's address (true) or by
  // credentials (false, SO_PASSCRED on).
  bool peer_named() const { return named_peer_; }

  // One recvmmsg() (MSG_DONTWAIT | MSG_CMSG_CLOEXEC | MSG_TRUNC) of at most
  // max_packets packets, fewer if the budget says so (see header). Batches
  // made are queued (has_batch()/take()). EINTR is retried. Throws
  // std::bad_alloc when no slab can be had (the rest of that call's packets
  // are lost; descriptors that came with them are closed all the same): the
  // caller closes the connection, as with FrameAssembler.
  //
  // With close_batch false, the packets of this call stay in the batch
  // being built (made ready by the next call that closes it, or by
  // flush()): several calls in a row then hand over one batch instead of
  // one each (the reader engine reads up to four times per readable event).
  //
  // With accept_fds, `fd_room` bounds the descriptors one call may bring:
  // the kernel installs every descriptor of the packets a call takes before
  // anything can be checked, so a call takes at most fd_room / 253 packets
  // (at least one), and a peer cannot fill the descriptor table through one
  // call.
  RecvResult receive(uint64_t budget = kNoBudget, bool close_batch = true, uint64_t fd_room = kNoBudget);
  // Makes the batch being built ready (see receive()).
  void flush() { close_batch(); }

  bool has_batch() const { return !ready_.empty(); }
  PacketBatch take();  // oldest ready batch; precondition has_batch()

  // kFail: the packet too large that stopped this receiver.
  bool failed() const { return failed_; }
  // Failed for descriptors instead (see accept_fds): the error to report.
  const CoreError& fd_error() const { return fd_error_; }
  uint64_t error_length() const { return error_length_; }
  bool eof() const { return eof_; }
  // seqpacket: the kernel said ECONNRESET: the peer closed while packets we
  // sent it (replies) were unread by it. receive() reads on past it: the
  // packets queued for us are still delivered, then kEof.
  bool peer_reset() const { return peer_reset_; }

  // Counters (owner thread; mirror them into atomics for metrics).
  struct Stats {
    uint64_t calls = 0, packets = 0, bytes = 0, batches = 0;
    uint64_t too_large = 0;     // packets cut by the kernel (MSG_TRUNC) or above max: dropped
    uint64_t discarded = 0;     // read after a too-large packet under kFail
    uint64_t refused = 0;       // dropped by cfg.accept
    uint64_t fds_closed = 0;    // stray SCM_RIGHTS descriptors closed (a packet's that never reached our table: 1)
    uint64_t ctrunc = 0;        // entries with MSG_CTRUNC
    uint64_t early_eof = 0;     // seqpacket: EOF-shaped entries with packets after them (the close race)
  };
  const Stats& stats() const { return stats_; }
  size_t slot_size() const { return slot_; }
  size_t max_packets() const { return count_; }

 private:
  void close_batch();
  void put_small(const uint8_t* p, size_t len, const PeerCred& c, std::vector<UniqueFd>* fds = nullptr);
  void put_large(const uint8_t* p, size_t len, const PeerCred& c, std::vector<UniqueFd>* fds = nullptr);
  PeerCred scan_control(msghdr& h, std::vector<UniqueFd>* fds);  // creds; descriptors kept (accept_fds) or closed

  PacketReceiverConfig cfg_;
  int fd_ = -1;  // borrowed
  size_t slot_ = 0, count_ = 0;
  std::unique_ptr<PacketArena> own_arena_;
  PacketArena* arena_ = nullptr;
  SlabRef slab_;
  size_t write_pos_ = 0, batch_begin_ = 0;
  std::vector<uint32_t> offsets_;
  std::vector<PeerCred> creds_;     // of the batch being built
  std::vector<PeerCred> creds_in_;  // of the entries of the current call
  std::vector<std::vector<UniqueFd>> fds_in_;  // accept_fds: of the entries of the current call
  std::vector<MessageFds> fds_;     // of the batch being built
  CoreError fd_error_;
  uint64_t payload_ = 0;
  std::deque<PacketBatch> ready_;
  bool failed_ = false, eof_ = false, peer_reset_ = false;
  bool eof_seen_ = false;             // seqpacket: one EOF-shaped entry read (see the header comment)
  bool named_peer_ = false;  // seqpacket: the peer's socket has an address (set by attach())
  uint64_t error_length_ = 0;
  Stats stats_;
};

// One outgoing message: one or two segments (two when a frame wraps around
// the end of a ring). The segments' total is the packet.
struct OutPacket {
  iovec iov[2];
  int iovcnt = 1;
  size_t size() const { return iov[0].iov_len + (iovcnt > 1 ? iov[1].iov_len : 0); }
};

struct SendResult {
  size_t sent = 0;  // messages fully sent, from the first (never partly: packet sockets)
  int err = 0;      // 0 if all were sent; else what stopped it (EAGAIN, ECONNREFUSED, ...)
};

// sendmmsg() (MSG_DONTWAIT | MSG_NOSIGNAL) over a run of messages, in calls
// of up to kMaxSendBatch. sendmmsg() returns how many went and drops the
// errno of the one that stopped it; send() asks again from there, so err is
// the real reason (or the rest went after all).
class PacketSender {
 public:
  PacketSender() : hdrs_(kMaxSendBatch) {}
  SendResult send(int fd, const OutPacket* msgs, size_t n);
  // Each iovec is one message.
  SendResult send(int fd, const iovec* msgs, size_t n);
  uint64_t calls() const { return calls_; }

 private:
  template <typename Fill>
  SendResult send_impl(int fd, size_t n, Fill fill);
  std::vector<mmsghdr> hdrs_;
  uint64_t calls_ = 0;
};

// The Writer's ring holds frames as uvarint(length) payload. On a packet
// socket each frame goes as one packet of its payload alone: the prefix is
// stripped (the kernel keeps the boundary). ring_packets() walks the
// frames in ring positions [from, to) (positions wrap at 2^32; the ring is
// `capacity` bytes, a power of two) and fills up to max_out OutPackets
// (two segments when a payload wraps around the ring's end; a prefix that
// wraps is decoded through a copy) plus, for each, the ring position just
// after its frame (ends[i]); out[i].size() is its payload length. It stops early at a
// frame that is not whole before `to` or has an invalid prefix (neither
// happens to frames the producer published). Returns the number filled.
// After PacketSender::send() sent k of them: the new head is ends[k-1],
// k frames and the sum of their payloads are sent.
size_t ring_packets(const uint8_t* ring, uint32_t capacity, uint32_t from, uint32_t to, OutPacket* out,
                    uint32_t* ends, size_t max_out);

// ---- sockets ----

struct PacketBindOptions {
  int type = SOCK_DGRAM;  // SOCK_DGRAM (bound reader) or SOCK_SEQPACKET (listening)
  int backlog = protocol::defaults::kBacklog;  // seqpacket
  int mode = -1;           // socket file mode (fchmod before bind, minus the umask); -1 = leave
  bool passcred = false;   // SO_PASSCRED on the bound socket (dgram credentials)
};

// socket(type) + bind(path or @name) [+ listen for seqpacket]. A path that is
// a socket nobody serves (probe_packet_address() says stale) is unlinked and
// bound again; anything else there is refused (ERR_NOT_A_SOCKET,
// ERR_ADDRESS_IN_USE, also for a live socket of another type). The socket
// file's mode is set before bind() through the fd (never by path). Unlike
// listen_unix() (stream only), this binds in place, not in a private
// directory: see docs/socket-types-core.md for the change to socket_util
// that would give packet sockets listen_unix()'s placement.
Listener bind_packet_socket(const std::string& path, const PacketBindOptions& opts);
inline Listener listen_seqpacket(const std::string& path, int backlog = protocol::defaults::kBacklog, int mode = -1) {
  PacketBindOptions o;
  o.type = SOCK_SEQPACKET;
  o.backlog = backlog;
  o.mode = mode;
  return bind_packet_socket(path, o);
}
inline Listener bind_dgram_reader(const std::string& path, int mode = -1, bool passcred = false) {
  PacketBindOptions o;
  o.type = SOCK_DGRAM;
  o.mode = mode;
  o.passcred = passcred;
  return bind_packet_socket(path, o);
}

// Non-blocking, close-on-exec socket of `type` connected to path. For dgram
// this is the writer's socket: connected, so that EPOLLOUT waits for room in
// the reader's queue (an unconnected socket polls writable even when the
// reader's queue is full, and the writer would spin on EAGAIN) and send()
// needs no address. Returns 0 or an errno (ENOENT, ECONNREFUSED, EPROTOTYPE,
// EAGAIN for a full seqpacket backlog, ...).
int connect_packet(const std::string& path, int type, UniqueFd* out);
inline int connect_dgram_writer(const std::string& path, UniqueFd* out) { return connect_packet(path, SOCK_DGRAM, out); }

// SO_PASSCRED on or off. 0 or an errno.
int set_passcred(int fd, bool on);


enum class AddressProbe {
  kGone,       // no such file
  kStale,      // a socket file nobody serves (ECONNREFUSED): safe to unlink
  kLive,       // someone serves it with this type (or the backlog is full)
  kOtherType,  // someone serves it with another type (EPROTOTYPE): live, not stale
};
// Connects a socket of `type` to path to see who is there.
AddressProbe probe_packet_address(const std::string& path, int type);

}  // namespace udsipc
