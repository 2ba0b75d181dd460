// The writer engine: one IO thread that connects to a Unix socket and sends
// the frames JavaScript (or a C++ test) appends to a shared byte ring.
//
// The ring is a single-producer/single-consumer byte queue that already holds
// wire-format frames back to back. The producer copies frames in at `tail`
// and publishes tail; the IO thread sends [send_pos, tail) with sendmsg
// (MSG_NOSIGNAL), walks the frame headers it has fully sent, and publishes
// `head` (the start of the first frame not yet fully sent) and `sent` (frames
// fully sent). Space is freed only frame by frame, so a frame cut by a broken
// connection is still in the ring and is sent again, whole, on the next one.
//
// The control block's words and the values of kSleep are declared in
// protocol.h (protocol::ctrl, protocol::SendTurn, protocol::NotifyState). The
// send hand-over on kSleep:
//   kIoThreadSends  the IO thread owns the send state and sends [send_pos,
//                   tail) itself (send_published()), or waits for EPOLLOUT.
//   kIdle           the IO thread stored it before sleeping: connected,
//                   nothing in flight. The producer, after publishing a tail,
//                   swaps kIdle -> kProducerSends and calls send_direct().
//   kProducerSends  the producer sends on its own thread (no thread hop while
//                   idle, like libuv's try-write), then stores kIdle (all
//                   sent) or kIoThreadSends (socket full or failed: the IO
//                   thread takes over). A direct send that empties the ring
//                   may also rewind it (see send_direct()).
// The IO thread takes the state back from kIdle with a compare-and-swap to
// kIoThreadSends when it wakes (reclaim_send_state()); from kProducerSends it
// waits for the producer to hand back. All of it seq_cst.
// kNotifyArmed/kNotifyHead/kNotifySent: the producer asks to be notified
// (event kNotify) once head and sent both reach the targets.
// Positions are ring offsets modulo 2^32; capacity is a power of two.
//
// Receiving (cfg.receive, JavaScript's onMessage): the same IO thread also
// reads what the reader sends back on the connection (EPOLLIN on the same
// fd), cuts it into batches with a FrameAssembler and hands them over as
// kBatch events, in order with the connection's other events (every batch of
// a connection precedes its kDisconnect). Backpressure as in the reader: the
// charge (Batch::charge()) of the batches handed over and not yet acked is
// counted across connections (acks are global: the consumer acks batches in
// the order it got them, whichever connection they came from); at
// max_pending_bytes the fd's read interest is dropped until acks bring it
// below. The epoll interest of the fd is always interest(): EPOLLRDHUP, plus
// EPOLLOUT while want_out_, plus EPOLLIN while receiving and not paused; it
// is registered by whichever thread holds the send state (the IO thread, or
// the producer inside send_direct()), and the receive state it reads
// (read_paused_) only changes on the IO thread while it holds the send state,
// so neither side can drop the other's interest. Without cfg.receive the
// writer never reads: nothing above is allocated and the interest is what it
// always was.
//
// With cfg.receive_on_consumer (the addon, whenever it has a libuv loop) the
// IO thread does none of the reading above: no EPOLLIN, no assembler, no
// kBatch. Each kConnect carries a dup of the socket for the consumer to read
// on its own thread; close_fd() shuts the socket down before every kDisconnect
// and kStopped, so the dup reads what the kernel holds, then EOF; the
// consumer's framing errors come back through report_inbound_error().
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "acked.h"
#include "error.h"
#include "event_loop.h"
#include "fd_outbox.h"
#include "frame_assembler.h"
#include "packet_io.h"
#include "protocol.h"
#include "socket_util.h"
#include "unique_fd.h"

namespace udsipc {

struct ReconnectPolicy {
  bool enabled = true;
  uint32_t initial_delay_ms = protocol::defaults::kReconnectInitialDelayMs;
  uint32_t max_delay_ms = protocol::defaults::kReconnectMaxDelayMs;
  double multiplier = protocol::defaults::kReconnectMultiplier;
  uint32_t max_attempts = 0;  // 0 = unlimited
};

// What the kernel can hold for one connection, with room to spare: the
// reader's send buffer is at most 2 x net.core.wmem_max (the kernel doubles
// what SO_SNDBUF asks), and its last send may pass that by up to half of it;
// this returns twice that maximum, 4 x wmem_max. Read from /proc on each
// call; 16 MiB if it cannot be read.
uint64_t kernel_connection_bytes();

struct WriterConfig {
  std::string path;
  // SOCK_STREAM, or SOCK_SEQPACKET: each frame of the ring goes as one packet
  // of its payload (the prefix stripped; packet_io.h's ring_packets()), many
  // per sendmmsg(). The producer keeps frames within the packet limit
  // (effective_max_packet()). No receiving and no descriptors on it.
  int type = SOCK_STREAM;
  uint32_t* ctrl = nullptr;   // protocol::ctrl::kWords words, owned by the caller, outlives the engine
  uint8_t* ring = nullptr;    // capacity bytes, owned by the caller
  uint32_t capacity = 0;      // power of two
  int send_buffer_size = 0;   // raise SO_SNDBUF to this (0 = leave)
  uint32_t write_timeout_ms = 0;  // replace a connection that accepts nothing this long (0 = off)
  // Refuse to connect unless the socket file has this owner/group and no
  // permission bits beyond expect_mode (-1 = not checked), and, after each
  // connect and before any byte is sent, unless the process that listens
  // (SO_PEERCRED of the connected socket) runs as expect_uid. Either failure
  // is ERR_UNTRUSTED_SOCKET and final (the writer stops trying). Ids are
  // 64-bit so that every uid_t/gid_t value (up to 2^32 - 2) fits beside -1.
  int64_t expect_uid = -1, expect_gid = -1;
  int expect_mode = -1;
  ReconnectPolicy reconnect;
  // Receiving (onMessage). Off: the writer never reads its socket.
  bool receive = false;
  // With receive: descriptors the reader sends with replies are wanted (the
  // consumer takes them). Otherwise the socket refuses them from before
  // connect() (SO_PASSRIGHTS off, Linux 6.16+): whoever listens at the path
  // cannot put a descriptor into this process, whose release could block
  // the thread that releases it (socket_util.h, refuse_rights()).
  bool accept_fds = false;
  AssemblerConfig assembler;  // max_message_size (inbound) and slab size; pools set by the engine
  // Charge of batches handed over and not acked above which reading stops.
  uint64_t max_pending_bytes = protocol::defaults::kMaxPendingBytes;
  // When a connection ends, what the kernel still holds for it is read beyond
  // max_pending_bytes, so that replies sent before a close are not lost, by
  // up to this much more (the end cap, end_cap()); what is left beyond goes
  // with the connection, dropped and reported (ERR_REPLIES_DROPPED). Reading
  // every end whole would let a reader that fills its send buffer and closes,
  // again on every reconnect, grow memory without bound while the consumer
  // does not settle. 0: max(max_pending_bytes, kernel_connection_bytes()),
  // so that one connection's end always fits.
  uint64_t end_allowance = 0;
  // With receive: the IO thread never reads (no EPOLLIN, no assembler, no
  // kBatch events). Each kConnect carries a dup of the connected socket
  // (WriterEvent::dup) that the consumer reads on its own thread (the addon:
  // JavaScript's thread, js_receiver.h), and every end of a connection
  // (disconnect, stop) shuts the socket down first, so that the dup reads
  // what the kernel holds, then EOF. The consumer reports a framing error
  // with report_inbound_error(). assembler and max_pending_bytes are the
  // consumer's business then.
  bool receive_on_consumer = false;
  // Descriptors to send with frames (see fd_outbox.h): owned by the caller,
  // outlives the engine (the addon's handle, which takes them before the
  // engine exists). Null: the engine's own (attach_fds()).
  FdOutbox* fds = nullptr;
  // Acknowledged delivery (acked.h; SOCK_STREAM, no receive). On each
  // connection the writer sends nothing until the reader's greeting came
  // (ERR_PROTOCOL_MISMATCH after handshake_timeout_ms without it, or when the
  // reader sends anything else first), then a hello naming `session` and the
  // sequence number of the first frame it sends, then frames from the first
  // one not acknowledged. A frame's ring space is freed (ctrl::kAckHead,
  // kAcked) when the reader acknowledges it, not when it is sent; kHead and
  // kSent keep meaning "sent" (flush()). The kConnect event comes after the
  // handshake; a connection that never completes it emits no kDisconnect.
  bool acked = false;
  uint32_t handshake_timeout_ms = protocol::defaults::kHandshakeTimeoutMs;
  acked::SessionId session{};
};

struct WriterEvent {
  using Type = protocol::EventTag;
  static constexpr Type kConnect = protocol::kEventConnect;
  static constexpr Type kDisconnect = protocol::kEventDisconnect;
  static constexpr Type kReconnecting = protocol::kEventReconnecting;
  static constexpr Type kError = protocol::kEventError;
  static constexpr Type kNotify = protocol::kEventNotify;
  static constexpr Type kStopped = protocol::kEventStopped;
  static constexpr Type kBatch = protocol::kEventBatch;
  Type type = kNotify;
  WriterEvent() = default;
  explicit WriterEvent(Type t) : type(t) {}
  CoreError error;            // kDisconnect (reason), kError
  uint32_t attempt = 0;       // kReconnecting
  uint32_t delay_ms = 0;      // kReconnecting
  uint64_t discarded = 0;     // kStopped: frames left unsent
  uint64_t sent = 0;          // kDisconnect: frames fully sent since start, as the connection ended
  uint32_t conn_id = 0;       // kConnect (1-based count of this writer's connections), kBatch
  PeerCred cred;              // kConnect: the listening process (SO_PEERCRED)
  Batch batch;                // kBatch
  // kConnect with receive_on_consumer: a dup of the connected socket, the
  // consumer's from now on (closed with the event if never taken).
  UniqueFd dup;
};

struct WriterMetrics {
  uint64_t sent = 0, bytes_sent = 0, send_calls = 0, connects = 0, disconnects = 0,
           connect_attempts = 0;
  // Connections closed unused because the process listening was not
  // expect_uid (or its credentials could not be read).
  uint64_t untrusted_peers = 0;
  int send_buffer_size = 0;
  bool connected = false;
  // Receiving: read(2) calls that returned data, bytes read, times reading
  // was paused at max_pending_bytes.
  uint64_t read_calls = 0, bytes_read = 0, pauses = 0;
  // Bytes the reader sent that were left unread when their connection ended
  // with the consumer at the end cap (end_cap(); ERR_REPLIES_DROPPED).
  uint64_t reply_bytes_dropped = 0;
  uint64_t fds_sent = 0;     // descriptors the kernel took with their frame (re-sends included)
  uint32_t fds_buffered = 0;  // descriptors held for frames not fully sent
  // Acked mode: frames acknowledged by the reader, and frames sent again on
  // a new connection because no acknowledgement had come.
  uint64_t acked = 0, resent = 0;
};

class WriterEngine {
 public:
  using Notify = std::function<void()>;  // called on the IO thread; must not block

  WriterEngine(WriterConfig cfg, Notify notify);
  ~WriterEngine();  // stops and joins
  WriterEngine(const WriterEngine&) = delete;
  WriterEngine& operator=(const WriterEngine&) = delete;

  // What the producer had appended when it published its last tail: frames
  // and payload bytes since the ring was created (both wrap). A send that
  // empties the ring then sets head and sent from these instead of walking
  // every frame header it sent (a cost per message, on the producer's thread).
  struct Appended {
    uint32_t frames = 0;
    uint32_t payload = 0;
  };

  void start();  // owner thread
  // Producer thread, after it swapped kSleep kIdle -> kProducerSends: sends
  // the published frames on this thread, `upto` being the counts at the
  // published tail. With `rewind`, a send that empties a ring of 2 MiB or
  // more once it is at least 1 MiB in moves head, send position and kTail on
  // to the next multiple of the capacity (ring offset 0): a writer that keeps
  // up then reuses the first megabytes of its ring, warm in cache, and never
  // faults in the rest. Returns the tail the producer continues from (its own
  // unless the ring was rewound); without `rewind` the producer may ignore it.
  uint32_t send_direct(Appended upto, bool rewind = false);
  // Any thread: wakes the IO thread. Only for a producer that leaves a send
  // to the IO thread (kSleep kIdle -> kIoThreadSends, then wake()), as the
  // C++ tests' second producer does; the addon always sends directly.
  void wake() { loop_.wake(); }
  // Any thread: graceful stop. Send what the ring holds until it is empty or
  // `timeout_ms` has passed (or sending is hopeless), then close the
  // connection and emit kStopped with the frames left unsent.
  void begin_stop(int64_t timeout_ms);
  // Owner thread: stop now and join. No send_direct() may be in progress (in
  // the addon the owner and the producer are the same JavaScript thread); a
  // swap to kProducerSends that was never followed by send_direct() is no
  // obstacle.
  void close();
  std::vector<WriterEvent> take_events();   // any thread (the consumer)
  // Consumer thread (receiving): `bytes` of batch lengths are done with (the
  // sum of the `length`s of the batches done with, in the order they were
  // handed over, across connections); their charge is released.
  void ack(uint64_t bytes);
  // Any thread (receive_on_consumer): the consumer met a framing error (or
  // ran out of memory) reading connection `conn_id`. The IO thread emits
  // kError with `why` if `report`, then replaces the connection as for a
  // protocol error (backoff), unless that connection has ended already.
  void report_inbound_error(uint32_t conn_id, CoreError why, bool report);
  // Any thread: emits kError with `why`; the connection stays.
  void report_error(CoreError why) {
    WriterEvent ev{WriterEvent::kError};
    ev.error = std::move(why);
    emit(std::move(ev));
  }
  // The error a plain writer that reads reports when its reader's first
  // frame is an acked greeting (dropped, never a message).
  CoreError acked_reader_error() const {
    return CoreError::plain("ERR_PROTOCOL_MISMATCH",
                            "the reader at " + cfg_.path +
                                " uses acknowledged delivery (delivery: 'acked') and this Writer does not: it "
                                "serves this Writer at most once and sends no replies on this connection");
  }
  // Producer thread, before it publishes a tail covering the frame: the
  // frame at ring span [start, end) carries `fds` (the engine's from now on;
  // closed once the frame is fully sent, or with the engine).
  void attach_fds(uint32_t start, uint32_t end, std::vector<UniqueFd> fds) {
    fds_.push(start, end, std::move(fds));
  }
  // Consumer thread (receive_on_consumer): it has read the end of a
  // connection whose kDisconnect it took (JsReceiver::Finish()) and closed
  // its dup. Until then no new connection is made: each ended connection
  // left waiting holds its kernel queue (up to a send buffer) and a
  // descriptor, and a consumer thread held up (busy JavaScript) must not let
  // reconnects pile them up. This waits for that thread's event loop, not
  // for the handler.
  void consumer_finished() {
    unfinished_.fetch_sub(1);
    loop_.wake();
  }
  // Any thread: the most a receiving consumer may hold in batches once a
  // connection's end is read (WriterConfig::end_allowance).
  uint64_t end_cap() const { return end_cap_; }
  // Any thread: a batch's offsets table, copied out, for reuse.
  void recycle_offsets(std::vector<uint32_t>&& offsets) { offsets_pool_.put(std::move(offsets)); }
  WriterMetrics metrics() const;            // any thread

 private:
  void run();
  void try_connect(int64_t now);
  bool awaiting_consumer() const {  // see consumer_finished(); never while stopping
    return cfg_.receive_on_consumer && unfinished_.load() > 0 && !stop_requested_.load();
  }
  int connect_unix_fd(UniqueFd* out);
  CoreError check_owner() const;
  CoreError check_peer(int fd) const;
  void schedule_retry(int64_t now, int err);
  void send_published();  // IO thread: sends [send_pos_, kTail) until done or EAGAIN
  void retry_send_later();  // after ETOOMANYREFS (see send_retry_at_)
  bool send_direct_impl(const Appended& upto);
  ssize_t send_once(uint32_t tail, const Appended* upto = nullptr);
  ssize_t send_packets(uint32_t tail);  // send_once() for SOCK_SEQPACKET
  bool reclaim_send_state();  // false: exiting while the producer never handed back
  void advance_head();
  void publish_progress(uint32_t head, uint32_t count, uint64_t payload);
  // How disconnect() treats what the reader sent: kDrainFirst hands over
  // what the kernel still holds first; kProtocolError (the reader broke the
  // framing, or no memory) drops it and backs off before reconnecting.
  enum class Drop { kDrainFirst, kProtocolError };
  void disconnect(const CoreError& why, Drop mode = Drop::kDrainFirst);
  // Receiving, IO thread only.
  bool io_reads() const { return cfg_.receive && !cfg_.receive_on_consumer; }
  void apply_inbound_error();  // acts on report_inbound_error()
  void close_fd();            // shuts down (for the consumer's dup), unregisters and closes fd_
  uint32_t interest() const;  // the fd's epoll events (see the header comment)
  void update_interest();     // registers interest(): holder of the send state (IO thread or send_direct())
  CoreError peer_closed() const;  // why, when the reader closed the connection
  CoreError frame_error() const;  // the assembler's framing error as reported
  void read_inbound();        // on EPOLLIN: reads up to the budget, hands batches over
  // Hands over the batches the assembler has cut (charging them), cutting
  // backlogged frames while the charge handed over stays below `limit`
  // (max_pending_bytes, or the end cap when draining a closing connection);
  // false after a framing error (the error is reported as kError; the
  // caller replaces the connection).
  bool hand_over(bool parsed_ok, uint64_t limit);
  uint64_t budget() const;    // charge that may still be handed over
  void pause_reading();
  void apply_acks();          // releases acked charge; resumes reading below the limit
  // A frame with descriptors refused by the reader: reports it, as dropped or
  // (acked) as sent without them (send-state holder).
  void rights_refused(int count, bool sent_without);
  void drain_inbound();       // before a disconnect: what the kernel holds, complete frames handed over
  void emit(WriterEvent ev);
  uint64_t frames_between(uint32_t from, uint32_t to) const;
  // Acked mode (IO thread, holding the send state).
  bool may_send() const { return !cfg_.acked || greeted_; }
  void read_control();              // on EPOLLIN: greeting and acknowledgements
  bool on_control(const uint8_t* p, size_t n);  // one control frame's payload; false: disconnected
  void on_greeting();               // sends the hello, starts (re-)sending
  void apply_ack();                 // moves ack_head_ towards ack_target_, never past send_pos_
  void protocol_mismatch(const std::string& why);  // reports and replaces the connection
  uint32_t frame_end(uint32_t pos) const;  // end of the frame at ring position pos
  uint32_t load(int word) const;
  void store(int word, uint32_t v);

  // Receiving: the slab pool (one reference, released last: after the
  // assembler and the queued events gave their slabs back) and the offsets
  // tables' free list. Any thread (internally synchronized).
  struct PoolRef {
    SlabPool* p;
    ~PoolRef() { if (p) p->unref(); }
  } pool_;
  OffsetsPool offsets_pool_;

  // Immutable after construction.
  const WriterConfig cfg_;
  const uint32_t mask_;
  const Notify notify_;
  EventLoop loop_;  // thread-safe wake(); the rest by the IO thread, and modify() by send_direct() (below)

  // IO thread only, except that send_direct() borrows the send state (fd_,
  // send_pos_, head_, sent_count_, sent_payload_, want_out_, attempt_,
  // progress_, last_progress_ms_, and loop_.modify() of fd_, which reads
  // read_paused_ through interest()) on the producer thread while kSleep ==
  // kProducerSends, with seq_cst hand-over on kSleep.
  UniqueFd fd_;
  bool connected_ = false;
  bool want_out_ = false;      // waiting for EPOLLOUT
  bool failed_ = false;        // gave up connecting
  uint32_t send_pos_ = 0;      // next ring byte to send
  uint32_t head_ = 0;          // first byte of the first frame not fully sent
  uint32_t sent_count_ = 0;
  uint32_t sent_payload_ = 0;  // payload bytes of the frames fully sent (wraps)
  uint32_t attempt_ = 0;       // failed connects (or fruitless connections) in a row
  bool progress_ = false;      // a frame completed on the current connection
  int64_t last_progress_ms_ = 0;  // last time the kernel accepted bytes
  int64_t next_connect_at_ = 0;
  uint64_t rng_ = 0;           // jitter state, seeded in the constructor
  // Receiving: read_paused_ belongs to the send state above (send_direct()
  // reads it through interest()); the rest is IO thread only.
  bool read_paused_ = false;   // at max_pending_bytes: no EPOLLIN
  uint32_t conn_id_ = 0;       // id of the current (or last) connection
  std::unique_ptr<FrameAssembler> assembler_;  // per connection: a cut frame goes with it
  bool first_batch_ = true;    // the connection's first batch is not cut yet (an acked greeting?)
  uint64_t pending_ = 0;       // charge handed over, not acked (all connections)
  uint64_t end_cap_ = 0;       // set in the constructor, then read-only
  // Per batch handed over and not fully acked, in order: its length not yet
  // acked, and the rest of its charge (released when the length is).
  UnackedBatches unacked_;

  // Acked mode: part of the send state (see above; send_direct() only runs
  // once greeted_ and reads none of the rest but greeted_).
  bool greeted_ = false;          // the greeting came and the hello went: frames may go
  int64_t greet_deadline_ = 0;    // ERR_PROTOCOL_MISMATCH if not greeted_ by then
  PeerCred greet_cred_;           // the listener's credentials, for the kConnect sent once greeted
  uint32_t ack_head_ = 0;         // first byte of the first frame not acknowledged (<= send_pos_)
  uint32_t acked_count_ = 0;      // frames acknowledged (wraps), published as kAcked
  uint64_t acked_seq_ = 0;        // sequence number of the last frame acknowledged (the first is 1)
  uint64_t ack_target_ = 0;       // highest acknowledgement received (applied up to send_pos_)
  uint64_t resent_high_ = 0;      // the last sequence number sent on earlier connections (the hello's resent_below - 1)
  // ETOOMANYREFS (descriptors in flight beyond our RLIMIT_NOFILE: the reader
  // has not taken them yet): the connection stays and the send is retried
  // then, with a delay that doubles up to kMaxSendRetryMs. IO thread (send state).
  int64_t send_retry_at_ = 0;     // 0: no retry pending
  uint32_t send_retry_delay_ = 0;
  uint8_t ctl_buf_[64];           // control bytes read and not yet parsed (a partial frame)
  size_t ctl_fill_ = 0;

  // Shared.
  std::atomic<bool> stop_requested_{false};
  std::atomic<int64_t> stop_deadline_{0};  // monotonic ms
  std::atomic<bool> exit_now_{false};
  std::atomic<bool> call_pending_{false};
  mutable std::mutex events_mu_;
  std::vector<WriterEvent> events_;  // guarded by events_mu_
  std::atomic<uint64_t> m_sent_{0}, m_bytes_{0}, m_calls_{0}, m_connects_{0}, m_disconnects_{0},
      m_attempts_{0}, m_untrusted_{0}, m_acked_{0}, m_resent_{0};
  std::atomic<int> m_sndbuf_{0};
  std::atomic<uint64_t> m_reads_{0}, m_bytes_read_{0}, m_pauses_{0}, m_fds_sent_{0};
  std::atomic<uint64_t> m_reply_bytes_dropped_{0};  // drain_inbound(): unread beyond the end cap
  std::atomic<uint32_t> unfinished_{0};  // kDisconnects the consumer has not finished (consumer_finished())
  // Descriptors of queued frames: pushed by the producer, the rest by the
  // send state's holder (see fd_outbox.h). cfg_.fds, or own_fds_.
  FdOutbox own_fds_;
  FdOutbox& fds_;
  FdOutbox::Plan plan_;  // send state (the holder's scratch space)
  // SOCK_SEQPACKET, send state too: the packets of one sendmmsg() run.
  PacketSender packet_sender_;
  std::vector<OutPacket> packets_;
  std::vector<uint32_t> packet_ends_;
  // Receiving: acked bytes not yet applied (consumer adds, IO thread takes),
  // and whether the IO thread paused reading (then an ack must wake it).
  // Both seq_cst: the consumer adds then looks at paused_flag_, the IO
  // thread sets it then takes acked_, so one of them sees the other.
  std::atomic<uint64_t> acked_{0};
  std::atomic<bool> paused_flag_{false};
  std::atomic<bool> m_connected_{false};
  // report_inbound_error(): the flag says the rest (guarded by inbound_mu_) is set.
  std::atomic<bool> inbound_error_{false};
  std::mutex inbound_mu_;
  uint32_t inbound_conn_ = 0;
  CoreError inbound_why_;
  bool inbound_report_ = false;

  std::thread thread_;  // owner thread starts and joins it
};

}  // namespace udsipc
