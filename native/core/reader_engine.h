// The reader engine: one IO thread that accepts connections on a listening
// Unix socket, reads large chunks into slabs, cuts them into batches of whole
// frames and hands the batches to the consumer: JavaScript's thread in the
// addon ("the JS thread" below), a test thread in the C++ tests.
//
// Hand-off: items go into a bounded lock-free SPSC queue (IO thread ->
// consumer). After a round of work the IO thread calls `notify` at most once
// while a previous notification is unconsumed; the consumer takes every
// ready item per notification (take()). Backpressure: what batches handed over but
// not yet acknowledged by the consumer occupy (Batch::charge(): bytes,
// offsets table, a fixed amount per batch) is counted per connection; at
// max_pending_bytes the connection is no longer read (nor are more frames cut
// from what was read) until acks come back, so the kernel buffer fills and
// the peer's writer slows down.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "acked.h"
#include "error.h"
#include "event_loop.h"
#include "frame_assembler.h"
#include "packet_io.h"
#include "protocol.h"
#include "reply_queue.h"
#include "socket_util.h"
#include "spsc_queue.h"
#include "unique_fd.h"

namespace udsipc {

struct ReaderConfig {
  // SOCK_STREAM (frames: uvarint length + payload), SOCK_SEQPACKET (one
  // packet per message, no prefix: read with a PacketReceiver, see
  // packet_io.h) or SOCK_DGRAM (listen_fd is the bound datagram socket
  // itself: no accept; it is read as one connection, id 1, opened at start,
  // whose batches carry each datagram's credentials when dgram_credentials,
  // and allow_uids/allow_gids apply per datagram). Replies and descriptors
  // are for SOCK_STREAM only.
  int type = SOCK_STREAM;
  bool dgram_credentials = false;
  UniqueFd listen_fd;          // a listening, non-blocking socket (adopted)
  std::string path;            // socket file to remove on stop ("" = none)
  dev_t dev = 0;               // identity of that file
  ino_t ino = 0;
  AssemblerConfig assembler;   // slab sizes and max_message_size
  // Per connection: the charge (Batch::charge()) of batches handed over and
  // not yet acked above which the connection is paused.
  uint64_t max_pending_bytes = protocol::defaults::kMaxPendingBytes;
  size_t queue_capacity = 4096;                   // items in the hand-off queue
  uint32_t inactivity_timeout_ms = 0;  // close connections silent this long (0 = never)
  // Close a connection (ERR_FRAME_TIMEOUT) whose frame takes longer than
  // this from its first byte to its last, not counting time the connection
  // was paused by backpressure (0 = never).
  uint32_t frame_timeout_ms = protocol::defaults::kFrameTimeoutMs;
  // Peers allowed by credentials (SO_PEERCRED at accept): a peer passes if
  // its uid is in allow_uids or its gid in allow_gids; both empty = anyone.
  std::vector<uint32_t> allow_uids, allow_gids;
  // Hold each accepted connection unread until the consumer calls
  // authorize(id, allowed) (JavaScript's authorize callback).
  bool hold_for_authorize = false;
  // JS-thread polling: while the load is light, the IO thread hands the
  // event loop to the JS thread (see js_thread_poll()), so that a message
  // wakes one thread instead of two; under load the IO thread takes it back.
  bool js_thread_polling = false;
  // With js_thread_polling: the JS thread keeps the loop under load too (the
  // IO thread takes it back only when the JS thread leaves ready events
  // unhandled for kJsThreadWatchMs). Fewer threads and wake-ups; on two
  // cores shared with the writer, reading beside the handler gains nothing.
  bool js_thread_under_load = false;
  // Replies (reply()): a connection's reply queue that makes no progress for
  // this long is discarded (kItemDrained with the bytes dropped; the
  // connection stays open for reading). 0 = never.
  uint32_t reply_timeout_ms = protocol::defaults::kReplyTimeoutMs;
  // Descriptors (SCM_RIGHTS). Without accept_fds, any that arrive are closed
  // at once (fds_refused) and their connection is closed with
  // ERR_UNEXPECTED_FDS. With it they travel with their message's batch
  // (Batch::fds); a connection whose batches handed over and not acked hold
  // max_pending_fds or more is paused like one at max_pending_bytes.
  bool accept_fds = false;
  uint32_t max_pending_fds = protocol::defaults::kMaxPendingFds;
  // Acknowledged delivery (acked.h; SOCK_STREAM). Every accepted connection
  // gets the greeting first. A connection whose first frame is a hello is
  // acked: its frames carry sequence numbers (Batch::first_seq), copies of
  // messages already handed over on any connection of the same writer
  // session are dropped, and once the consumer acks a batch the writer gets
  // a cumulative acknowledgement (one frame per session per round of acks).
  // A connection whose first frame is anything else is a plain writer,
  // served at most once (kItemSession with plain), or refused with
  // ERR_PROTOCOL_MISMATCH if require_acked. max_sessions bounds the sessions
  // remembered: beyond it, the least recently used one without a connection
  // or unacknowledged batches is forgotten.
  bool acked = false;
  bool require_acked = false;
  uint32_t max_sessions = protocol::defaults::kMaxSessions;
};

struct ReaderItem {
  // The tags JavaScript reads (protocol::ItemTag). kOpen: a connection was
  // accepted (cred; held unread until authorize() if hold_for_authorize).
  // kRejected: a peer refused by allow_uids/allow_gids (cred), already
  // closed. kStopped: the graceful stop (begin_stop()) finished.
  // kDrained: the connection's reply queue emptied (dropped: bytes discarded
  // by the reply timeout, 0 when everything was sent).
  using Type = protocol::ItemTag;
  static constexpr Type kBatch = protocol::kItemBatch;
  static constexpr Type kOpen = protocol::kItemOpen;
  static constexpr Type kClose = protocol::kItemClose;
  static constexpr Type kError = protocol::kItemError;
  static constexpr Type kStopped = protocol::kItemStopped;
  static constexpr Type kRejected = protocol::kItemRejected;
  static constexpr Type kDrained = protocol::kItemDrained;
  static constexpr Type kSession = protocol::kItemSession;
  Type type = kBatch;
  ReaderItem() = default;
  explicit ReaderItem(Type t) : type(t) {}
  uint32_t conn_id = 0;
  Batch batch;      // kBatch
  CoreError error;  // kError (a kClose follows if the connection ends for it); kClose: why, if not EOF
  PeerCred cred;    // kOpen, kRejected
  uint64_t dropped = 0;  // kDrained
  // kSession: plain (served at most once), or the writer's session and its hello.
  bool plain = false;
  acked::SessionId session{};
  uint64_t first_seq = 0, resent_below = 0;
};

struct ReaderMetrics {
  uint64_t accepted = 0, active = 0, read_calls = 0, bytes_read = 0, frames = 0, batches = 0,
           errors = 0, pauses = 0, accept_errors = 0, rejected = 0;
  uint64_t js_thread_reads = 0;  // read calls made on the JS thread (js_thread_poll())
  uint64_t handoffs = 0;        // event-loop hand-overs, either way
  uint64_t reply_bytes_sent = 0, reply_send_calls = 0, reply_bytes_dropped = 0;
  uint64_t fds_received = 0;  // descriptors received and handed over with their message
  uint64_t fds_refused = 0;   // descriptors closed on arrival (not accepted, misplaced, truncated)
  uint64_t fds_sent = 0;      // descriptors sent with replies
  uint64_t rejected_datagrams = 0;  // SOCK_DGRAM: datagrams dropped by allow_uids/allow_gids
  // Acked mode: messages acknowledged to their writers, copies dropped
  // (already handed over in this reader's life), messages handed over that
  // their writer had sent before on an earlier connection, and connections
  // of plain writers served at most once.
  uint64_t acked = 0, duplicates_dropped = 0, redelivered = 0, plain_peers = 0;
};

class ReaderEngine {
 public:
  using Notify = std::function<void()>;  // called on the IO thread; must not block

  ReaderEngine(ReaderConfig cfg, Notify notify);
  ~ReaderEngine();  // closes and joins
  ReaderEngine(const ReaderEngine&) = delete;
  ReaderEngine& operator=(const ReaderEngine&) = delete;

  void start();  // owner thread

  // Consumer thread. Appends every ready item to out; returns how many.
  size_t take(std::vector<ReaderItem>& out);
  // Consumer thread: `bytes` of connection `conn_id` are done with: the sum
  // of the `length`s of the batches done with (their charge is released
  // batch by batch, in the order they were handed over, as the lengths add
  // up).
  void ack(uint32_t conn_id, uint64_t bytes);
  // Any thread: a batch's offsets table, copied out and no longer needed,
  // for the assemblers to reuse.
  void recycle_offsets(std::vector<uint32_t>&& offsets) { offsets_pool_.put(std::move(offsets)); }
  // Consumer thread: sends `len` bytes (whole frames) back to connection
  // `conn_id`'s writer, directly if nothing is queued for it, else after what
  // is (see reply_queue.h). Returns the bytes now queued for it (0: all
  // sent), or -1 if there is no such connection (closed). len 0 only asks.
  // One mutex per call, none per message; the IO thread is woken only when
  // the queue goes from empty to not empty.
  // With `fds` (not empty): data is one frame, which carries them (taken).
  int64_t reply(uint32_t conn_id, const uint8_t* data, size_t len, std::vector<UniqueFd>* fds = nullptr);
  // Consumer thread: the verdict on a connection held for authorization.
  void authorize(uint32_t conn_id, bool allowed);
  // Any thread: graceful stop. Accept what is in the backlog, stop listening
  // (removing the socket file if still ours), shut every connection's read
  // side, read what the kernel holds until EOF, then emit kStopped. No
  // deadline here: the owner calls close() when it stops waiting.
  void begin_stop();
  // Owner thread: stop now, close everything, join.
  void close();

  // JS-thread polling (cfg.js_thread_polling). The IO thread hands the event
  // loop over when it would otherwise sleep with nothing for the JS thread
  // to do and its last reads were small; it then calls notify. The JS thread
  // checks take_poll_request() after take(): on true it starts watching
  // poll_fd() for readability (level-triggered) and calls js_thread_poll()
  // each time it is readable. js_thread_poll() handles whatever is ready
  // without blocking (items pushed, notify called as usual) and returns false
  // once the load calls for the IO thread, which has then taken the loop
  // back: the JS thread stops watching until the next poll request.
  // With `items`, notify is not called for items pushed during the call;
  // *items says whether there are any (the JS thread takes them at once).
  bool take_poll_request() { return poll_request_.exchange(false); }  // JS thread
  int poll_fd() const { return loop_.fd(); }
  bool js_thread_poll(bool* items = nullptr);  // JS thread

  ReaderMetrics metrics() const;  // any thread
  // After close(): whole frames that were still in the kernel's buffers of
  // shut connections when a stop was cut short, and so never delivered.
  uint64_t discarded_unread() const { return discarded_.load(); }

 private:
  // Per batch handed over and not fully acked, in order: its length not
  // yet acked, and the rest of its charge (released when the length is).
  using Unacked = UnackedBatches;

  // Acked mode: a writer session (acked.h), IO thread only.
  struct Session {
    acked::SessionId id{};
    uint64_t delivered = 0;  // highest sequence number handed over
    uint64_t released = 0;   // highest acknowledged (its batch done with)
    uint32_t conn = 0;       // the connection acknowledgements go to (0: none open)
    uint64_t last_used = 0;  // for eviction (a counter, not a time)
    // No hello of it seen yet in this reader's life: only then may a hello
    // start past what this life handed over (see sequence()).
    bool fresh = true;
    // Connections (ids) of this session with batches handed over and not
    // done with: acknowledgements never pass the first of those (with
    // concurrency 'connection' a newer connection's batch may finish first).
    std::vector<uint32_t> pending_tracks;
  };
  struct AckMark {
    uint64_t end;    // sum of batch lengths handed over up to and including this batch
    uint64_t first;  // sequence numbers of its first and last message
    uint64_t last;
  };
  // The batches of one connection handed over and not acked, for the
  // acknowledgements, in order. Outlives its connection until the consumer
  // is done with every batch of it.
  struct AckTrack {
    std::shared_ptr<Session> session;
    uint64_t handed = 0, acked = 0;
    std::deque<AckMark> marks;
    bool closed = false;
  };
  enum class Delivery : uint8_t { kAwaitHello, kAcked, kPlain };

  struct Conn {
    uint32_t id;
    UniqueFd fd;
    FrameAssembler assembler;
    std::unique_ptr<PacketReceiver> packets;  // SOCK_SEQPACKET: reads instead of the assembler
    uint64_t pending = 0;  // charge of the batches handed over, not yet acked
    Unacked unacked;
    // Descriptors handed over with batches and not yet acked, and when they
    // are released: (sum of batch lengths handed over up to and including
    // their batch, count), in order; acked_len sums the lengths acked.
    uint64_t pending_fds = 0;
    uint64_t handed_len = 0, acked_len = 0;
    std::deque<std::pair<uint64_t, uint32_t>> fd_marks;
    bool paused = false;
    bool held = false;           // waiting for authorize(); not in epoll
    int64_t last_active_ms = 0;  // last read that returned data (or accept)
    // When the partial frame's first byte arrived, shifted forward by the
    // time the connection spent paused since; -1: no partial frame (or
    // frame_timeout_ms off).
    int64_t frame_start_ms = -1;
    int64_t paused_at_ms = 0;
    // The events fd is registered for in the loop (0: not registered):
    // EPOLLIN|EPOLLRDHUP unless paused or held, EPOLLOUT while replies wait.
    uint32_t interest = 0;
    bool want_out = false;  // replies are queued: watch EPOLLOUT
    // SOCK_SEQPACKET: its last read round stopped with packets
    // still queued, so it is read every round (in hot_) and is out of the
    // epoll set for EPOLLIN until a round drains it (see set_hot()).
    bool hot = false;
    // Acked mode (cfg_.acked).
    Delivery delivery = Delivery::kAwaitHello;
    std::shared_ptr<Session> session;
    uint64_t next_seq = 0;      // sequence number of the next message cut
    uint64_t resent_below = 0;  // from the hello
    int peer_uid = -1;          // SO_PEERCRED at accept: sessions are kept apart per user
    // Acked, its end of stream read (the writer closed or half-closed), batches
    // not yet done with: kept open (unread) so that their acknowledgement
    // still reaches the writer.
    bool lingering = false;
    // An acknowledgement is due but one is still queued unsent (the writer
    // does not read): acks are cumulative, so the newest goes once the
    // queue drains (flush_replies()) instead of piling up.
    bool ack_due = false;
    // Shared with the consumer's reply() (through replies_); closed before fd.
    std::shared_ptr<ReplyQueue> out;
    Conn(uint32_t i, UniqueFd f, const AssemblerConfig& c, ReplyStats* stats)
        : id(i), fd(std::move(f)), assembler(c), out(std::make_shared<ReplyQueue>(fd.get(), stats)) {}
    ~Conn() { out->close(); }
  };

  void run();
  // One round of the event loop: housekeeping, then wait up to the computed
  // timeout (never longer than max_wait_ms; -1 = no cap) and handle events.
  // Caller holds own_mu_. Returns the number of events handled.
  // try_direct (JS-thread polling): with a single connection, read it before
  // asking the epoll set; if that brought data, the round ends there.
  int step(std::vector<epoll_event>& events, int max_wait_ms, bool try_direct = false);
  bool handoff_to_js_thread_ok() const;
  void notify_if_pushed();
  bool accept_all();  // true once accept() said EAGAIN (backlog empty)
  void stop_listening();
  void on_readable(Conn& c);
  void on_readable_packets(Conn& c);  // SOCK_SEQPACKET and SOCK_DGRAM
  void open_dgram();                  // SOCK_DGRAM: the bound socket as connection 1
  PacketReceiverConfig packet_config();  // IO thread (or owner before start)
  bool allowed(int uid, int gid) const;  // allow_uids / allow_gids (true when both are empty)
  // Hands one batch over (charging it); counts its messages into *frames.
  // False if it closed the connection (acked mode: a plain writer refused).
  bool deliver(Conn& c, Batch&& b, uint64_t* frames);
  // Acked mode: the hello (or not) at the start of c's first batch; drops
  // copies; numbers the messages. False: c was closed.
  bool sequence(Conn& c, Batch& b);
  // The session `id` of a writer running as `uid` (a session id another
  // user presents names another session: no peer can touch the state of
  // another user's writer, even knowing its id).
  std::shared_ptr<Session> find_session(const acked::SessionId& id, int uid);
  void send_ack(Session& s);  // to s's connection, if open and acked
  void read_conn(Conn& c);  // on_readable(), closing the connection on bad_alloc
  // Moves c in or out of hot_ and updates its epoll interest. Every packet
  // queued on a socket that sits in an epoll set runs the set's wake-up
  // callback in the sender's sendmsg() (the socket's wait queue holds the
  // set's entry), with interrupts off: for small packets that was ~6 % of
  // all the CPU of a writer/reader pair (raw seqpacket measured the same
  // with and without an idle epoll set on the receiver). A connection that
  // a round leaves with packets queued is read again next round anyway, so
  // it leaves the set until a round drains it; EPOLL_CTL_ADD then reports
  // anything that arrived in between.
  void set_hot(Conn& c, bool on);
  int read_hot();  // reads the hot connections; returns how many brought data
  void keep_polled_if_hot();  // end of a round: a JS-thread poll must come back to hot_
  // Hands over the batches the assembler has cut, charging them; false if it
  // closed the connection (framing error: then c is gone).
  bool hand_over(Conn& c, bool parsed_ok, uint64_t* frames);
  // Starts or clears c's frame clock after `frames` frames were cut.
  void track_frame(Conn& c, uint64_t frames);
  void pause(Conn& c);
  // At a limit: max_pending_bytes, or max_pending_fds.
  bool full(const Conn& c) const {
    return c.pending >= cfg_.max_pending_bytes || c.pending_fds >= cfg_.max_pending_fds;
  }
  static bool peer_hung_up(int fd);  // after EOF: the peer closed both directions
  // One read of c (recvmsg); the descriptors that came with it go to *fds.
  // Returns what recvmsg returned; -1 with errno EPROTO after it closed the
  // connection for its descriptors (refused or truncated).
  ssize_t receive(Conn& c, uint8_t* p, size_t len, std::vector<UniqueFd>* fds);
  void close_conn(uint32_t id, CoreError why, CoreError reason = {});
  void close_idle(int64_t now);  // inactivity and frame timeouts
  // Releases `bytes` of acked batch lengths from `fifo`; returns the charge released.
  static uint64_t release(Unacked& fifo, uint64_t bytes);
  // After a flood: give memory freed since back to the system (see .cc).
  void maybe_trim(int64_t now);
  uint64_t count_unread_frames(Conn& c);
  void push(ReaderItem&& item);
  void flush_overflow();
  void apply_acks();
  void resume(Conn& c);
  // Registers c's descriptor for what it needs now (see Conn::interest).
  void update_interest(Conn& c);
  void apply_reply_requests();
  void flush_replies(Conn& c);
  void report_refused(uint32_t conn_id, const ReplyQueue::Refused& r);
  void close_stalled_replies(int64_t now);

  // Owns one pool reference; declared first so that it is released last,
  // after the queue and connections have returned their slabs.
  struct PoolRef {
    SlabPool* p;
    ~PoolRef() { p->unref(); }
  } pool_;
  OffsetsPool offsets_pool_;  // any thread (internally locked); outlives the connections
  ReplyStats reply_stats_;    // any thread (atomics); outlives every connection's ReplyQueue
  ReaderConfig cfg_;  // listen_fd: IO thread after start(); the rest immutable
  const Notify notify_;
  EventLoop loop_;    // thread-safe wake(); the rest used by the IO thread

  // Event-loop state below, and everything marked "IO thread only", is
  // touched only by the thread that holds own_mu_: the IO thread, or in
  // JS-thread mode the JS thread inside js_thread_poll() (the IO thread too,
  // for timers). So does the queue's producer side (push(), flush_overflow()):
  // one pusher at a time, handed over through own_mu_ (see spsc_queue.h).
  std::mutex own_mu_;
  enum Mode { kIoThread, kJsThread };
  std::atomic<int> mode_{kIoThread};         // written under own_mu_
  std::mutex mode_mu_;                        // with mode_cv_: IO thread sleeps in JS-thread mode
  std::condition_variable mode_cv_;
  std::atomic<bool> poll_request_{false};     // IO thread -> JS thread: start polling
  std::atomic<uint64_t> js_thread_polls_{0};   // js_thread_poll() calls (the IO thread watches it)
  bool full_read_ = false;                    // a read in the last round filled its span
  uint64_t last_round_bytes_ = 0;             // bytes read by the last round that had events
  bool in_js_thread_poll_ = false;                  // inside js_thread_poll(items): no notify
  int direct_streak_ = 0;                     // JS-thread rounds in a row ended by a direct read
  std::vector<uint32_t> hot_;                 // ids of the connections with Conn::hot set
  std::vector<uint32_t> hot_scratch_;         // read_hot()'s copy of hot_
  bool js_thread_items_ = false;               // items pushed meanwhile
  std::vector<epoll_event> js_thread_events_;  // js_thread_poll()'s event buffer

  // IO thread only (that is, own_mu_'s holder).
  std::unordered_map<uint32_t, std::unique_ptr<Conn>> conns_;
  std::unique_ptr<PacketArena> arena_;  // SOCK_SEQPACKET: where recvmmsg() lands, shared by the connections
  uint32_t next_id_ = 1;
  std::deque<ReaderItem> overflow_;  // items waiting for queue space, in order
  bool listening_ = true;
  bool stopping_ = false;
  bool stopped_sent_ = false;
  bool pushed_ = false;              // items pushed since the last notify
  int64_t accept_retry_at_ = 0;      // accept paused (EMFILE) until then
  int64_t next_idle_scan_ = 0;       // when to look for inactive connections / slow frames
  int64_t scan_period_ms_ = 0;       // how often (0 = no timeouts configured)
  // Charge handed over and not acked, all connections (closed ones too: the
  // consumer still holds their batches until it acks them).
  uint64_t unacked_total_ = 0;
  std::unordered_map<uint32_t, Unacked> closed_unacked_;  // by connection id
  // Acked mode: sessions by id, and the acknowledgement tracks by connection id.
  std::unordered_map<std::string, std::shared_ptr<Session>> sessions_;
  std::unordered_map<uint32_t, AckTrack> ack_tracks_;
  uint64_t session_clock_ = 0;
  std::atomic<bool> trim_wake_{false};  // acks must wake the loop: a trim waits for the last one
  bool trim_due_ = false;            // a connection was paused since the last trim
  int64_t trim_at_ = 0;              // a trim waits for its rate limit until then (0 = none)
  int64_t last_trim_ms_ = 0;

  // Shared.
  std::mutex replies_mu_;
  // Guarded by replies_mu_: every open connection's reply queue, for reply(),
  // and the connections whose queue became non-empty since the loop last looked.
  std::unordered_map<uint32_t, std::shared_ptr<ReplyQueue>> replies_;
  std::vector<uint32_t> out_requests_;
  // Replies with descriptors the writer refused during reply() (on the
  // consumer's thread), for the loop to report (report_refused()).
  std::vector<std::pair<uint32_t, ReplyQueue::Refused>> refusals_;
  std::atomic<bool> out_requested_{false};  // out_requests_ or refusals_ is not empty (read without the lock on every round)
  SpscQueue<ReaderItem> queue_;      // producer: own_mu_'s holder; consumer: take()
  std::atomic<bool> call_pending_{false};
  std::atomic<bool> consumer_wake_{false};  // IO thread waits for queue space
  std::atomic<bool> stop_requested_{false};
  std::atomic<bool> exit_now_{false};
  std::atomic<int> paused_count_{0};
  std::atomic<uint64_t> discarded_{0};
  std::mutex acks_mu_;
  std::vector<std::pair<uint32_t, uint64_t>> acks_;  // guarded by acks_mu_
  std::vector<std::pair<uint32_t, bool>> verdicts_;  // guarded by acks_mu_
  // apply_acks()'s side of the swap, kept for their capacity (no allocation
  // per batch): the loop's owner (own_mu_), empty between calls.
  std::vector<std::pair<uint32_t, uint64_t>> acks_taken_;
  std::vector<std::pair<uint32_t, bool>> verdicts_taken_;
  std::atomic<uint64_t> m_accepted_{0}, m_active_{0}, m_reads_{0}, m_bytes_{0}, m_frames_{0},
      m_batches_{0}, m_errors_{0}, m_pauses_{0}, m_accept_errors_{0}, m_rejected_{0},
      m_js_thread_reads_{0}, m_handoffs_{0}, m_fds_received_{0}, m_fds_refused_{0}, m_rejected_datagrams_{0},
      m_acked_{0}, m_duplicates_{0}, m_redelivered_{0}, m_plain_peers_{0};

  std::thread thread_;  // owner thread starts and joins it
};

}  // namespace udsipc
