#include "reader_engine.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <algorithm>
#include <cstring>

#include "socket_util.h"

namespace udsipc {

namespace {
constexpr uint64_t kListenTag = 0;
constexpr int kMaxReadsPerEvent = 4;      // fairness between connections
constexpr int kMaxAcceptsPerEvent = 256;  // fairness between accept and reads
constexpr int kAcceptRetryMs = 100;       // after EMFILE/ENFILE
// JS-thread polling: this much read in one js_thread_poll() call hands the
// loop back to the IO thread.
constexpr uint64_t kHandBackBytes = 256 * 1024;
// The IO thread hands its loop to the JS thread only after a round of reads
// that brought less than this: light traffic. Under bulk traffic a moment
// with nothing to read is common, and handing over then would only mean
// taking the loop back on the next big read: two hand-overs for nothing.
constexpr uint64_t kLightRoundBytes = 64 * 1024;
// JS-thread polling with one connection: at most this many rounds in a row
// read it directly before one goes through the epoll set (see step()).
constexpr int kMaxDirectStreak = 8;
// JS-thread polling: how often the sleeping IO thread checks that the JS
// thread keeps up (ready events not handled meanwhile: it takes over).
constexpr int64_t kJsThreadWatchMs = 50;
// At most one malloc_trim() per this period (see maybe_trim()).
constexpr int64_t kTrimIntervalMs = 1000;
}  // namespace

constexpr size_t kPooledSlabs = 32;  // warm slabs kept for reuse per reader

ReaderEngine::ReaderEngine(ReaderConfig cfg, Notify notify)
    : pool_{SlabPool::create(cfg.assembler.slab_size, kPooledSlabs)},
      cfg_(std::move(cfg)),
      notify_(std::move(notify)),
      queue_(cfg_.queue_capacity) {
  cfg_.assembler.pool = pool_.p;
  cfg_.assembler.offsets_pool = &offsets_pool_;
  // One scan serves both timeouts, a few times per the shorter period: a
  // connection is closed within ~1.25x of its timeout. No timer per
  // connection.
  for (const uint32_t t : {cfg_.inactivity_timeout_ms, cfg_.frame_timeout_ms, cfg_.reply_timeout_ms}) {
    if (t == 0) continue;
    const int64_t p = std::max<int64_t>(1, t / 4);
    scan_period_ms_ = scan_period_ms_ ? std::min(scan_period_ms_, p) : p;
  }
}

ReaderEngine::~ReaderEngine() {
  close();
  conns_.clear();
}

void ReaderEngine::start() {
  if (thread_.joinable()) return;
  // A reader that takes no descriptors has the kernel refuse them (see
  // refuse_rights()): none can reach this process to be closed here. An
  // acked writer then sends such a message without them (its frames are
  // numbered: none may be skipped). Before Linux 6.16 this does nothing and
  // descriptors are closed on arrival (see receive()). Set either way: a
  // listener passed by a service manager may come from a run that refused
  // them.
  const bool refuse = cfg_.type == SOCK_DGRAM || !cfg_.accept_fds;
  (void)set_pass_rights(cfg_.listen_fd.get(), !refuse);
  if (cfg_.type == SOCK_DGRAM) open_dgram();
  else loop_.add(cfg_.listen_fd.get(), EPOLLIN, kListenTag);
  thread_ = std::thread([this] { run(); });
}

// A PacketReceiver of the engine's type, on its slab and offsets pools and
// its one arena (made on first use).
PacketReceiverConfig ReaderEngine::packet_config() {
  if (!arena_) arena_ = PacketArena::make(cfg_.assembler.max_message_size);
  PacketReceiverConfig pc;
  pc.type = cfg_.type;
  pc.max_message_size = cfg_.assembler.max_message_size;
  pc.slab_size = cfg_.assembler.slab_size;
  pc.pool = pool_.p;
  pc.offsets_pool = &offsets_pool_;
  pc.arena = arena_.get();
  return pc;
}

bool ReaderEngine::allowed(int uid, int gid) const {
  if (cfg_.allow_uids.empty() && cfg_.allow_gids.empty()) return true;
  // Ids compared as the kernel's unsigned uid_t/gid_t (an unknown id reads as
  // -1, i.e. 2^32-1, which no list may hold).
  const auto has = [](const std::vector<uint32_t>& v, int x) {
    return std::find(v.begin(), v.end(), static_cast<uint32_t>(x)) != v.end();
  };
  return has(cfg_.allow_uids, uid) || has(cfg_.allow_gids, gid);
}

// SOCK_DGRAM: no connections to accept. The bound socket is read like one
// connection (a dup of it, so that stop_listening() can still close the
// listener and remove the file), with a PacketReceiver that drops datagrams
// too large (counted) and, when allowUids/allowGids are set, those of other
// senders (counted as rejected). Runs on the owner thread before the IO
// thread starts.
void ReaderEngine::open_dgram() {
  UniqueFd fd(::fcntl(cfg_.listen_fd.get(), F_DUPFD_CLOEXEC, 0));
  const uint32_t id = next_id_++;
  auto conn = std::make_unique<Conn>(id, std::move(fd), cfg_.assembler, &reply_stats_);
  PacketReceiverConfig pc = packet_config();
  const bool filter = !cfg_.allow_uids.empty() || !cfg_.allow_gids.empty();
  pc.credentials = cfg_.dgram_credentials || filter;
  if (filter) {
    pc.accept = [](const PeerCred& cred, void* self) {
      return static_cast<const ReaderEngine*>(self)->allowed(cred.uid, cred.gid);
    };
    pc.accept_arg = this;
  }
  conn->packets = std::make_unique<PacketReceiver>(pc);
  ReaderItem open{ReaderItem::kOpen};
  open.conn_id = id;
  if (CoreError e = conn->packets->attach(conn->fd.get())) {
    ReaderItem err{ReaderItem::kError};
    err.error = std::move(e);
    push(std::move(err));
  }
  conn->last_active_ms = now_ms();
  m_accepted_.fetch_add(1, std::memory_order_relaxed);
  m_active_.fetch_add(1, std::memory_order_relaxed);
  push(std::move(open));
  update_interest(*conn);
  conns_.emplace(id, std::move(conn));
}

void ReaderEngine::begin_stop() {
  stop_requested_.store(true);
  loop_.wake();
}

void ReaderEngine::close() {
  {
    std::lock_guard<std::mutex> lk(mode_mu_);
    exit_now_.store(true);
  }
  mode_cv_.notify_one();
  loop_.wake();
  if (thread_.joinable()) thread_.join();
}

size_t ReaderEngine::take(std::vector<ReaderItem>& out) {
  call_pending_.store(false);
  size_t n = 0;
  while (ReaderItem* it = queue_.front()) {
    out.push_back(std::move(*it));
    queue_.pop();
    ++n;
  }
  if (n && consumer_wake_.exchange(false)) loop_.wake();
  return n;
}

void ReaderEngine::ack(uint32_t conn_id, uint64_t bytes) {
  {
    std::lock_guard<std::mutex> lk(acks_mu_);
    acks_.emplace_back(conn_id, bytes);
  }
  // Only a paused connection needs the IO thread to act on an ack now. The
  // IO thread bumps paused_count_ before it re-reads the ack list, so one of
  // the two sides always sees the other. Acked mode: the writer waits for
  // the acknowledgement this ack may complete (one wake per batch).
  if (cfg_.acked || paused_count_.load() > 0 || trim_wake_.load(std::memory_order_relaxed)) loop_.wake();
}

int64_t ReaderEngine::reply(uint32_t conn_id, const uint8_t* data, size_t len, std::vector<UniqueFd>* fds) {
  std::shared_ptr<ReplyQueue> q;
  {
    std::lock_guard<std::mutex> lk(replies_mu_);
    auto it = replies_.find(conn_id);
    if (it == replies_.end()) return -1;
    q = it->second;
  }
  const ReplyQueue::Offer r = q->offer(data, len, now_ms(), fds);
  if (r.want_out || r.refused.frames > 0) {
    {
      std::lock_guard<std::mutex> lk(replies_mu_);
      if (r.want_out) out_requests_.push_back(conn_id);
      if (r.refused.frames > 0) refusals_.emplace_back(conn_id, r.refused);
      out_requested_.store(true);
    }
    loop_.wake();
  }
  return r.queued;
}

void ReaderEngine::authorize(uint32_t conn_id, bool allowed) {
  {
    std::lock_guard<std::mutex> lk(acks_mu_);
    verdicts_.emplace_back(conn_id, allowed);
  }
  loop_.wake();
}

ReaderMetrics ReaderEngine::metrics() const {
  ReaderMetrics m;
  m.accepted = m_accepted_.load(std::memory_order_relaxed);
  m.active = m_active_.load(std::memory_order_relaxed);
  m.read_calls = m_reads_.load(std::memory_order_relaxed);
  m.bytes_read = m_bytes_.load(std::memory_order_relaxed);
  m.frames = m_frames_.load(std::memory_order_relaxed);
  m.batches = m_batches_.load(std::memory_order_relaxed);
  m.errors = m_errors_.load(std::memory_order_relaxed);
  m.pauses = m_pauses_.load(std::memory_order_relaxed);
  m.accept_errors = m_accept_errors_.load(std::memory_order_relaxed);
  m.rejected = m_rejected_.load(std::memory_order_relaxed);
  m.js_thread_reads = m_js_thread_reads_.load(std::memory_order_relaxed);
  m.handoffs = m_handoffs_.load(std::memory_order_relaxed);
  m.reply_bytes_sent = reply_stats_.bytes_sent.load(std::memory_order_relaxed);
  m.reply_send_calls = reply_stats_.send_calls.load(std::memory_order_relaxed);
  m.reply_bytes_dropped = reply_stats_.bytes_dropped.load(std::memory_order_relaxed);
  m.fds_received = m_fds_received_.load(std::memory_order_relaxed);
  m.acked = m_acked_.load(std::memory_order_relaxed);
  m.duplicates_dropped = m_duplicates_.load(std::memory_order_relaxed);
  m.redelivered = m_redelivered_.load(std::memory_order_relaxed);
  m.plain_peers = m_plain_peers_.load(std::memory_order_relaxed);
  m.fds_refused = m_fds_refused_.load(std::memory_order_relaxed);
  m.fds_sent = reply_stats_.fds_sent.load(std::memory_order_relaxed);
  m.rejected_datagrams = m_rejected_datagrams_.load(std::memory_order_relaxed);
  return m;
}

void ReaderEngine::push(ReaderItem&& item) {
  pushed_ = true;
  if (overflow_.empty() && queue_.try_push(std::move(item))) return;
  overflow_.push_back(std::move(item));
}

void ReaderEngine::flush_overflow() {
  while (!overflow_.empty()) {
    if (!queue_.try_push(std::move(overflow_.front()))) {
      consumer_wake_.store(true);
      // The consumer may have emptied the queue just before the flag was set.
      if (!queue_.try_push(std::move(overflow_.front()))) return;
      consumer_wake_.store(false);
    }
    overflow_.pop_front();
    pushed_ = true;
  }
}

void ReaderEngine::apply_acks() {
  std::vector<std::pair<uint32_t, uint64_t>>& acks = acks_taken_;
  std::vector<std::pair<uint32_t, bool>>& verdicts = verdicts_taken_;
  {
    std::lock_guard<std::mutex> lk(acks_mu_);
    acks.swap(acks_);
    verdicts.swap(verdicts_);
  }
  // Emptied on the way out, capacity kept (close_conn() below never calls back in here).
  struct Clear {
    std::vector<std::pair<uint32_t, uint64_t>>& a;
    std::vector<std::pair<uint32_t, bool>>& v;
    ~Clear() {
      a.clear();
      v.clear();
    }
  } clear{acks, verdicts};
  for (auto [id, allowed] : verdicts) {
    auto it = conns_.find(id);
    if (it == conns_.end() || !it->second->held) continue;
    Conn& c = *it->second;
    c.held = false;
    if (allowed) {
      c.last_active_ms = now_ms();
      if (stopping_) ::shutdown(c.fd.get(), SHUT_RD);
      update_interest(c);
    } else {
      m_rejected_.fetch_add(1, std::memory_order_relaxed);
      c.paused = false;
      close_conn(id, CoreError{}, CoreError::plain("ERR_PEER_REJECTED", "rejected by authorize()"));
    }
  }
  for (auto [id, bytes] : acks) {
    auto it = conns_.find(id);
    if (it == conns_.end()) {
      // A closed connection's batches, done with at last.
      auto o = closed_unacked_.find(id);
      if (o == closed_unacked_.end()) continue;
      unacked_total_ -= std::min(unacked_total_, release(o->second, bytes));
      if (o->second.empty()) closed_unacked_.erase(o);
      continue;
    }
    Conn& c = *it->second;
    const uint64_t released = release(c.unacked, bytes);
    c.pending -= std::min(c.pending, released);
    unacked_total_ -= std::min(unacked_total_, released);
    if (!c.fd_marks.empty()) {
      c.acked_len += bytes;
      while (!c.fd_marks.empty() && c.fd_marks.front().first <= c.acked_len) {
        c.pending_fds -= std::min<uint64_t>(c.pending_fds, c.fd_marks.front().second);
        c.fd_marks.pop_front();
      }
    } else {
      c.acked_len += bytes;
    }
    if (c.paused && !full(c)) resume(c);
  }
  if (cfg_.acked && !acks.empty()) {
    // Every session whose batches the consumer finished gets one cumulative
    // acknowledgement for the whole round: up to the message before the
    // first one still in the consumer's hands on any of its connections.
    std::vector<std::shared_ptr<Session>> touched;
    std::vector<uint32_t> settled;  // connections whose batches are all done with
    for (auto [id, bytes] : acks) {
      auto t = ack_tracks_.find(id);
      if (t == ack_tracks_.end()) continue;
      AckTrack& tr = t->second;
      tr.acked += bytes;
      bool popped = false;
      while (!tr.marks.empty() && tr.marks.front().end <= tr.acked) {
        tr.marks.pop_front();
        popped = true;
      }
      if (!popped) continue;
      std::shared_ptr<Session> s = tr.session;
      if (tr.marks.empty()) {
        std::erase(s->pending_tracks, id);
        settled.push_back(id);
        if (tr.closed) ack_tracks_.erase(t);
      }
      if (std::find(touched.begin(), touched.end(), s) == touched.end()) touched.push_back(std::move(s));
    }
    for (const std::shared_ptr<Session>& s : touched) {
      uint64_t safe = s->delivered;
      for (const uint32_t id : s->pending_tracks) {
        auto t = ack_tracks_.find(id);
        if (t != ack_tracks_.end() && !t->second.marks.empty()) safe = std::min(safe, t->second.marks.front().first - 1);
      }
      if (safe <= s->released) continue;
      m_acked_.fetch_add(safe - s->released, std::memory_order_relaxed);
      s->released = safe;
      send_ack(*s);
    }
    // A stopping reader closes a connection it kept open for them now.
    for (const uint32_t id : settled) {
      auto it = conns_.find(id);
      if (it != conns_.end() && it->second->lingering) close_conn(id, CoreError{});
    }
  }
  if (trim_due_ && unacked_total_ == 0 && !acks.empty()) maybe_trim(now_ms());
}

uint64_t ReaderEngine::release(Unacked& fifo, uint64_t bytes) { return release_acked(fifo, bytes); }

// A flood held back by backpressure (connections paused at their limit) is
// over and every batch of it is done with: hand the memory it used back to
// the system. glibc keeps freed memory for reuse, and its mmap threshold
// rises with every large block freed, so the large offsets tables and
// copies of a flood end up in its heaps rather than unmapped, and an idle
// reader would keep tens of megabytes it no longer uses. malloc_trim()
// returns the free pages of every arena. It walks every free chunk, so it
// is kept off the hot path: at most once per kTrimIntervalMs (a trim waiting
// for its turn is run by step()), only after a pause and once everything is
// handled (steady traffic never pays for it), and only on the IO thread,
// which has nothing else to do at that moment.
void ReaderEngine::maybe_trim(int64_t now) {
  // Never on the JS thread (in js_thread_poll()): the IO thread runs it from
  // step(), in JS-thread mode within kJsThreadWatchMs.
  if (now - last_trim_ms_ < kTrimIntervalMs || std::this_thread::get_id() != thread_.get_id()) {
    trim_at_ = std::max(now, last_trim_ms_ + kTrimIntervalMs);
    return;
  }
  trim_due_ = false;
  trim_wake_.store(false, std::memory_order_relaxed);
  trim_at_ = 0;
  last_trim_ms_ = now;
#if defined(__GLIBC__)
  ::malloc_trim(0);
#endif
}

void ReaderEngine::resume(Conn& c) {
  const int64_t now = now_ms();
  // Its silence while paused was ours: restart its inactivity clock, or the
  // scan in this very step could close it before it is read. Likewise its
  // frame clock does not count the pause.
  c.last_active_ms = now;
  if (c.frame_start_ms >= 0) c.frame_start_ms += now - c.paused_at_ms;
  c.paused_at_ms = now;
  // Frames read before the pause but not cut yet come first; they may use
  // up the budget again (then it stays paused).
  if (c.assembler.backlogged()) {
    uint64_t frames = 0;
    const bool ok = c.assembler.resume(cfg_.max_pending_bytes - c.pending);
    if (!hand_over(c, ok, &frames)) return;  // closed
    track_frame(c, frames);
    if (full(c)) return;
  }
  c.paused = false;
  paused_count_.fetch_sub(1);
  update_interest(c);
}

void ReaderEngine::set_hot(Conn& c, bool on) {
  if (c.hot == on) return;
  c.hot = on;
  if (on) hot_.push_back(c.id);
  else hot_.erase(std::find(hot_.begin(), hot_.end(), c.id));
  update_interest(c);
}

void ReaderEngine::keep_polled_if_hot() {
  // The JS thread polls the set: hot connections are not in it, and the
  // wake-up a round consumed (ours, or the IO thread's look in JS-thread
  // mode) must be put back, or the poll would not come back to them.
  if (!hot_.empty() && mode_.load(std::memory_order_relaxed) == kJsThread) loop_.wake();
}

int ReaderEngine::read_hot() {
  if (hot_.empty()) return 0;
  hot_scratch_ = hot_;  // a read may close a connection or cool it
  int n = 0;
  for (const uint32_t id : hot_scratch_) {
    auto it = conns_.find(id);
    if (it == conns_.end()) continue;
    Conn& c = *it->second;
    if (!c.hot || c.paused || c.held) continue;
    const uint64_t reads_before = m_reads_.load(std::memory_order_relaxed);
    read_conn(c);
    if (m_reads_.load(std::memory_order_relaxed) != reads_before) ++n;
  }
  return n;
}

void ReaderEngine::update_interest(Conn& c) {
  const uint32_t want = (c.paused || c.held || c.lingering || c.hot ? 0u : static_cast<uint32_t>(EPOLLIN | EPOLLRDHUP)) |
                        (c.want_out ? static_cast<uint32_t>(EPOLLOUT) : 0u);
  if (want == c.interest) return;
  if (c.interest == 0) loop_.add(c.fd.get(), want, c.id);
  else if (want == 0) loop_.remove(c.fd.get());
  else loop_.modify(c.fd.get(), want, c.id);
  c.interest = want;
}

// Connections whose reply queue became non-empty: watch EPOLLOUT.
void ReaderEngine::apply_reply_requests() {
  if (!out_requested_.load()) return;  // the common case: no lock
  std::vector<uint32_t> ids;
  std::vector<std::pair<uint32_t, ReplyQueue::Refused>> refused;
  {
    std::lock_guard<std::mutex> lk(replies_mu_);
    out_requested_.store(false);
    ids.swap(out_requests_);
    refused.swap(refusals_);
  }
  for (const auto& [id, r] : refused) report_refused(id, r);
  for (const uint32_t id : ids) {
    auto it = conns_.find(id);
    if (it == conns_.end()) continue;
    Conn& c = *it->second;
    if (c.out->queued() == 0) continue;  // discarded meanwhile (reply timeout)
    c.want_out = true;
    update_interest(c);
  }
}

void ReaderEngine::flush_replies(Conn& c) {
  const ReplyQueue::Flush f = c.out->flush(now_ms());
  if (f.refused.frames > 0) report_refused(c.id, f.refused);
  if (!f.drained) return;
  c.want_out = false;
  update_interest(c);
  if (c.ack_due && c.session && c.session->conn == c.id) send_ack(*c.session);
  ReaderItem item{ReaderItem::kDrained};
  item.conn_id = c.id;
  push(std::move(item));
}

// Replies with descriptors that the writer refused (ReplyQueue::Refused):
// the connection stays.
void ReaderEngine::report_refused(uint32_t conn_id, const ReplyQueue::Refused& r) {
  m_errors_.fetch_add(1, std::memory_order_relaxed);
  ReaderItem err{ReaderItem::kError};
  err.conn_id = conn_id;
  err.error = CoreError::sys("ERR_FDS_REFUSED", EPERM, "sendmsg",
                             "the writer does not accept file descriptors (its acceptFds is off): " +
                                 std::to_string(r.frames) + (r.frames == 1 ? " reply" : " replies") + " with " +
                                 std::to_string(r.fds) + " descriptor(s) dropped");
  push(std::move(err));
}

// Reply queues that made no progress for reply_timeout_ms: the writer does
// not read (a Go writer never does). Dropped, so that they cannot hold
// memory or descriptors; the connection goes on being read.
void ReaderEngine::close_stalled_replies(int64_t now) {
  if (cfg_.reply_timeout_ms == 0) return;
  for (auto& [id, c] : conns_) {
    if (!c->want_out || now - c->out->last_progress_ms() < cfg_.reply_timeout_ms) continue;
    ReaderItem item{ReaderItem::kDrained};
    item.conn_id = id;
    item.dropped = c->out->discard();
    if (item.dropped == 0) continue;  // drained meanwhile: its EPOLLOUT reports it
    c->want_out = false;
    update_interest(*c);
    push(std::move(item));
  }
}

void ReaderEngine::pause(Conn& c) {
  if (c.hot) {
    c.hot = false;  // update_interest() below: out of the set until resumed
    hot_.erase(std::find(hot_.begin(), hot_.end(), c.id));
  }
  c.paused = true;
  trim_due_ = true;
  trim_wake_.store(true, std::memory_order_relaxed);
  if (cfg_.frame_timeout_ms > 0) c.paused_at_ms = now_ms();
  // The consumer may ack between these two lines: it sees paused_count_
  // and wakes us, and the next loop round applies the ack.
  paused_count_.fetch_add(1);
  update_interest(c);
  m_pauses_.fetch_add(1, std::memory_order_relaxed);
}

bool ReaderEngine::deliver(Conn& c, Batch&& b, uint64_t* frames) {
  if (cfg_.acked) {
    if (!sequence(c, b)) return false;
    if (b.count() == 0) return true;  // only a hello, or copies: nothing to hand over
  }
  ReaderItem item{ReaderItem::kBatch};
  item.conn_id = c.id;
  item.batch = std::move(b);
  item.batch.conn_id = c.id;
  const uint64_t charge = item.batch.charge();
  c.pending += charge;
  unacked_total_ += charge;
  c.unacked.emplace_back(item.batch.length, charge - item.batch.length);
  c.handed_len += item.batch.length;
  if (!item.batch.fds.empty()) {
    const size_t k = item.batch.fd_count();
    c.pending_fds += k;
    c.fd_marks.emplace_back(c.handed_len, static_cast<uint32_t>(k));
    m_fds_received_.fetch_add(k, std::memory_order_relaxed);
  }
  *frames += item.batch.count();
  m_frames_.fetch_add(item.batch.count(), std::memory_order_relaxed);
  m_batches_.fetch_add(1, std::memory_order_relaxed);
  if (item.batch.acked) {
    AckTrack& t = ack_tracks_[c.id];
    if (!t.session) t.session = c.session;
    t.handed += item.batch.length;
    if (t.marks.empty()) t.session->pending_tracks.push_back(c.id);
    t.marks.push_back({t.handed, item.batch.first_seq, item.batch.first_seq + item.batch.count() - 1});
  }
  push(std::move(item));
  return true;
}

// Acked mode. The first frame of a connection says what it is: a hello
// (acked) or a message of a plain writer. On an acked connection every frame
// has the next sequence number of its session; one at or below the highest
// already handed over in this reader's life (on this connection or an
// earlier one of the same session) is a copy and is dropped. A batch's
// numbers are consecutive and that bound is one number, so what is dropped
// is always a prefix of the batch: the offsets table loses its first
// entries, the region (and the length acks count) stays as cut.
bool ReaderEngine::sequence(Conn& c, Batch& b) {
  size_t drop = 0;
  const size_t n = b.count();
  if (c.delivery == Delivery::kAwaitHello) {
    acked::Hello h;
    const uint8_t* p = b.base + b.offsets[0];
    const size_t len = b.offsets[1] - b.offsets[0];
    if (acked::parse_hello(p, len, &h)) {
      std::shared_ptr<Session> found = find_session(h.session, c.peer_uid);
      Session& s = *found;
      if (!s.fresh && h.first_seq > s.delivered + 1) {
        // A writer's hello starts after the last acknowledgement it had, and
        // every acknowledgement of a session met in this life came from this
        // life: never past what it handed over. Only a session forgotten and
        // met again (fresh) may start past that. This is a peer of the same
        // user presenting another writer's session id and claiming what it
        // never got; taken at its word it would make the reader drop that
        // writer's next messages as copies.
        close_conn(c.id, CoreError::plain("ERR_PROTOCOL_MISMATCH",
                                          "an acked hello starts at message " + std::to_string(h.first_seq) +
                                              " of a session this reader handed over only " +
                                              std::to_string(s.delivered) + " messages of; closed unread"));
        return false;
      }
      c.delivery = Delivery::kAcked;
      c.session = std::move(found);
      c.session->conn = c.id;
      c.next_seq = h.first_seq;
      c.resent_below = h.resent_below;
      // A gap (the writer had acknowledgements this life never sent: a
      // session forgotten and met again) starts the count afresh.
      if (h.first_seq > s.delivered + 1) s.delivered = s.released = h.first_seq - 1;
      s.fresh = false;
      ReaderItem item{ReaderItem::kSession};
      item.conn_id = c.id;
      item.session = h.session;
      item.first_seq = h.first_seq;
      item.resent_below = h.resent_below;
      push(std::move(item));
      // Copies of what was done with already: the writer may free them now.
      if (s.released >= h.first_seq) send_ack(s);
      drop = 1;
    } else if (len >= sizeof acked::kMagic - 1 && std::memcmp(p, acked::kMagic, sizeof acked::kMagic - 1) == 0) {
      // The acked magic, but not a hello this reader understands (cut short,
      // another kind or version, sequence number 0): a peer that means to
      // speak the mode and does not speak it right. Never a plain message.
      close_conn(c.id, CoreError::plain("ERR_PROTOCOL_MISMATCH",
                                        "the writer's first message starts with the acked magic but is not a valid "
                                        "acked hello (version " + std::to_string(len >= sizeof acked::kMagic ? p[sizeof acked::kMagic - 1] : 0) +
                                            ", " + std::to_string(len) + " bytes); closed unread"));
      return false;
    } else if (cfg_.require_acked) {
      close_conn(c.id, CoreError::plain("ERR_PROTOCOL_MISMATCH",
                                        "a writer that does not speak acknowledged delivery (its first message "
                                        "is not the acked hello) was refused: requireAcked is set"));
      return false;
    } else {
      c.delivery = Delivery::kPlain;
      m_plain_peers_.fetch_add(1, std::memory_order_relaxed);
      ReaderItem item{ReaderItem::kSession};
      item.conn_id = c.id;
      item.plain = true;
      push(std::move(item));
      return true;
    }
  }
  if (c.delivery != Delivery::kAcked) return true;
  Session& s = *c.session;
  const uint64_t first = c.next_seq;  // of frame `drop`
  if (n - drop > acked::kMaxSeq - first) {
    // Numbers from 2^53 on are not exact as JavaScript numbers, and a
    // (session, sequence) pair must name one message: the hello was refused
    // past it, and so is a connection that would get there.
    close_conn(c.id, CoreError::plain("ERR_PROTOCOL_MISMATCH",
                                      "an acked writer's sequence numbers reached 2^53 (the largest a reader hands "
                                      "over exactly); closed"));
    return false;
  }
  c.next_seq += n - drop;
  const uint64_t copies = s.delivered >= first ? std::min<uint64_t>(s.delivered - first + 1, n - drop) : 0;
  drop += copies;
  if (copies) m_duplicates_.fetch_add(copies, std::memory_order_relaxed);
  if (drop > 0) {
    // Descriptors of copies (sent again with them) or of the hello: closed.
    if (const size_t closed = drop_first_messages(b, drop)) m_fds_refused_.fetch_add(closed, std::memory_order_relaxed);
  }
  const size_t k = b.count();
  if (k == 0) return true;
  b.acked = true;
  b.first_seq = first + copies;
  b.redelivered = c.resent_below > b.first_seq ? std::min<uint64_t>(c.resent_below - b.first_seq, k) : 0;
  if (b.redelivered) m_redelivered_.fetch_add(b.redelivered, std::memory_order_relaxed);
  s.delivered = b.first_seq + k - 1;
  s.last_used = ++session_clock_;
  return true;
}

std::shared_ptr<ReaderEngine::Session> ReaderEngine::find_session(const acked::SessionId& id, int uid) {
  std::string key(reinterpret_cast<const char*>(id.data()), id.size());
  key.append(reinterpret_cast<const char*>(&uid), sizeof uid);
  auto it = sessions_.find(key);
  if (it != sessions_.end()) {
    it->second->last_used = ++session_clock_;
    return it->second;
  }
  if (sessions_.size() >= cfg_.max_sessions) {
    // Forget the least recently used session nobody holds: no open
    // connection, no batch of it unacknowledged (only this map refers to it).
    auto victim = sessions_.end();
    for (auto j = sessions_.begin(); j != sessions_.end(); ++j) {
      if (j->second->conn != 0 || j->second.use_count() > 1) continue;
      if (victim == sessions_.end() || j->second->last_used < victim->second->last_used) victim = j;
    }
    if (victim != sessions_.end()) sessions_.erase(victim);
  }
  auto s = std::make_shared<Session>();
  s->id = id;
  s->last_used = ++session_clock_;
  sessions_.emplace(key, s);
  return s;
}

void ReaderEngine::send_ack(Session& s) {
  if (s.conn == 0) return;  // none open: the next hello is answered with it
  auto it = conns_.find(s.conn);
  if (it == conns_.end()) return;
  Conn& c = *it->second;
  if (c.out->queued() > 0) {
    // The writer is not reading: one acknowledgement waits at most (the
    // newest, once the queue drains), not one per round.
    c.ack_due = true;
    return;
  }
  c.ack_due = false;
  uint8_t a[1 + acked::kAckSize];
  const ReplyQueue::Offer r = c.out->offer(a, acked::put_ack(a, s.released), now_ms());
  if (r.want_out && !c.want_out) {
    c.want_out = true;
    update_interest(c);
  }
}

bool ReaderEngine::hand_over(Conn& c, bool ok, uint64_t* frames) {
  const uint32_t id = c.id;
  for (;;) {
    while (c.assembler.has_batch()) {
      if (!deliver(c, c.assembler.take_batch(), frames)) return false;  // closed (acked mode)
    }
    if (!ok) {
      if (c.assembler.error() == FrameError::kUnexpectedFds) {
        m_fds_refused_.fetch_add(c.assembler.refused_fds(), std::memory_order_relaxed);
        close_conn(id, CoreError::plain("ERR_UNEXPECTED_FDS",
                                        "peer sent descriptors with bytes in which no message starts "
                                        "(they must come with a sendmsg of one whole message)"));
        return false;
      }
      const bool too_large = c.assembler.error() == FrameError::kTooLarge;
      close_conn(id, too_large
                         ? CoreError::plain("ERR_MESSAGE_TOO_LARGE",
                                            "peer announced a message of at least " +
                                                std::to_string(c.assembler.error_length()) +
                                                " bytes, above maxMessageSize " +
                                                std::to_string(cfg_.assembler.max_message_size))
                         : CoreError::plain("ERR_INVALID_FRAME",
                                            "peer sent an invalid length prefix (varint overflow)"));
      return false;
    }
    // The assembler stops cutting frames at the budget it was given; the
    // caller pauses the connection once the budget is used up.
    if (!c.assembler.backlogged() || c.pending >= cfg_.max_pending_bytes) return true;
    ok = c.assembler.resume(cfg_.max_pending_bytes - c.pending);
  }
}

void ReaderEngine::track_frame(Conn& c, uint64_t frames) {
  if (cfg_.frame_timeout_ms == 0) return;
  if (c.assembler.at_frame_boundary()) {
    c.frame_start_ms = -1;
  } else if (c.frame_start_ms < 0 || frames > 0) {
    // A new partial frame: its first byte came with the bytes just handled.
    c.frame_start_ms = now_ms();
  }
}

int ReaderEngine::step(std::vector<epoll_event>& events, int max_wait_ms, bool try_direct) {
  apply_acks();
  apply_reply_requests();
  if (stop_requested_.load() && !stopping_) {
    stopping_ = true;
    for (auto& [id, c] : conns_)
      if (!c->held) ::shutdown(c->fd.get(), SHUT_RD);
  }
  // While stopping, the listener stays open until the backlog is empty
  // (closing it would reset the clients still waiting there and lose what
  // they wrote). Out of descriptors, accepting resumes as connections read
  // to their end close.
  if (stopping_ && listening_ && (cfg_.type == SOCK_DGRAM || accept_all())) stop_listening();
  flush_overflow();
  if (stopping_ && !listening_ && conns_.empty() && overflow_.empty() && !stopped_sent_) {
    stopped_sent_ = true;
    push(ReaderItem{ReaderItem::kStopped});
  }
  notify_if_pushed();
  int timeout = -1;
  if (accept_retry_at_ != 0) {
    const int64_t now = now_ms();
    if (now >= accept_retry_at_) {
      accept_retry_at_ = 0;
      if (listening_) loop_.add(cfg_.listen_fd.get(), EPOLLIN, kListenTag);
    } else {
      timeout = static_cast<int>(accept_retry_at_ - now);
    }
  }
  if (trim_at_ != 0) {
    const int64_t now = now_ms();
    if (!trim_due_ || unacked_total_ != 0) {
      trim_at_ = 0;  // traffic came back: the next flood's end asks again
    } else if (now >= trim_at_) {
      maybe_trim(now);
    } else {
      const int wait = static_cast<int>(trim_at_ - now);
      timeout = timeout < 0 ? wait : std::min(timeout, wait);
    }
  }
  if (scan_period_ms_ > 0) {
    const int64_t now = now_ms();
    if (now >= next_idle_scan_) {
      close_idle(now);
      close_stalled_replies(now);
      // Scan a few times per timeout period: closes within ~1.25x of it.
      next_idle_scan_ = now + scan_period_ms_;
      return 1;  // items may have been pushed: notify first
    }
    const int wait = static_cast<int>(next_idle_scan_ - now);
    timeout = timeout < 0 ? wait : std::min(timeout, wait);
  }
  if (max_wait_ms >= 0 && (timeout < 0 || timeout > max_wait_ms)) timeout = max_wait_ms;
  full_read_ = false;
  const uint64_t bytes_before = m_bytes_.load(std::memory_order_relaxed);
  if (try_direct && conns_.size() == 1) {
    // The JS thread's poll of our epoll set fired, and with one connection
    // that is almost always its data: read() answers as fast as epoll_wait()
    // would and brings the data too (one syscall per message instead of two
    // when messages come one at a time). If it brings nothing (a new
    // connection, a wake-up), the round goes on through the epoll set; what
    // else is ready keeps the set readable, so the JS thread polls again.
    // Every kMaxDirectStreak-th round asks the set anyway, so that a new
    // connection is accepted promptly while this one streams without pause.
    Conn& c = *conns_.begin()->second;
    if (!c.paused && !c.held && direct_streak_ < kMaxDirectStreak) {
      const uint64_t reads_before = m_reads_.load(std::memory_order_relaxed);
      read_conn(c);
      if (m_reads_.load(std::memory_order_relaxed) != reads_before) {
        ++direct_streak_;
        last_round_bytes_ = m_bytes_.load(std::memory_order_relaxed) - bytes_before;
        notify_if_pushed();
        keep_polled_if_hot();
        return 1;
      }
    }
  }
  direct_streak_ = 0;
  if (!hot_.empty()) timeout = 0;  // they are read below, whatever else is ready
  int n = loop_.wait(events.data(), static_cast<int>(events.size()), timeout);
  for (int i = 0; i < n; ++i) {
    const uint64_t tag = events[i].data.u64;
    if (tag == EventLoop::kWakeTag) continue;
    if (tag == kListenTag) {
      if (listening_) accept_all();
      continue;
    }
    auto it = conns_.find(static_cast<uint32_t>(tag));
    if (it == conns_.end()) continue;
    Conn& c = *it->second;
    const uint32_t ev = events[i].events;
    // EPOLLOUT: replies can go on. A failed send (EPOLLERR, EPOLLHUP: the
    // peer is gone) discards them; the read side then reports the close.
    if (c.want_out && (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))) flush_replies(c);
    if (!c.paused && !c.held && (ev & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP))) read_conn(c);
  }
  n += read_hot();
  if (n > 0) last_round_bytes_ = m_bytes_.load(std::memory_order_relaxed) - bytes_before;
  notify_if_pushed();
  keep_polled_if_hot();
  return n;
}

void ReaderEngine::read_conn(Conn& c) {
  const uint32_t id = c.id;
  try {
    on_readable(c);
  } catch (const std::bad_alloc&) {
    // No memory for this connection's next slab or message: drop it
    // rather than take the process down from the IO thread.
    close_conn(id, CoreError::sys("ERR_SOCKET", ENOMEM, "malloc", "out of memory reading from a connection"));
  }
}

void ReaderEngine::notify_if_pushed() {
  if (!pushed_) return;
  pushed_ = false;
  // Inside js_thread_poll() the JS thread itself is told on return: no call.
  if (in_js_thread_poll_) js_thread_items_ = true;
  else if (!call_pending_.exchange(true)) notify_();
}

// Owner of the loop (own_mu_ held). The JS thread may poll when the last
// round's reads were small and nothing waits for queue space or shutdown.
bool ReaderEngine::handoff_to_js_thread_ok() const {
  const bool light = cfg_.js_thread_under_load || (!full_read_ && last_round_bytes_ < kLightRoundBytes);
  return cfg_.js_thread_polling && light && overflow_.empty() && !stopping_ && accept_retry_at_ == 0 &&
         !stop_requested_.load() && !exit_now_.load();
}

bool ReaderEngine::js_thread_poll(bool* items) {
  if (items) *items = false;
  // Never wait for the loop: the IO thread may own it and sleep in
  // epoll_wait (it took the loop back after our poll fired), and events it
  // waits for may need this very thread (acks, a writer in this process).
  std::unique_lock<std::mutex> own(own_mu_, std::try_to_lock);
  if (!own.owns_lock()) {
    // JS-thread mode: the IO thread is only running its timers; the fd
    // stays readable, so the next poll comes back. Otherwise it is its loop.
    return mode_.load() == kJsThread && !exit_now_.load();
  }
  if (mode_.load() != kJsThread || exit_now_.load()) return false;
  js_thread_polls_.fetch_add(1, std::memory_order_relaxed);
  if (js_thread_events_.empty()) js_thread_events_.resize(64);
  const uint64_t reads_before = m_reads_.load(std::memory_order_relaxed);
  const uint64_t bytes_before = m_bytes_.load(std::memory_order_relaxed);
  in_js_thread_poll_ = items != nullptr;
  js_thread_items_ = false;
  step(js_thread_events_, 0, /*try_direct=*/true);
  in_js_thread_poll_ = false;
  if (items) *items = js_thread_items_;
  m_js_thread_reads_.fetch_add(m_reads_.load(std::memory_order_relaxed) - reads_before, std::memory_order_relaxed);
  // Heavy traffic (a read filled its whole span, or much arrived at once),
  // a queue backed up, or a stop: the IO thread takes the loop back, so
  // reading runs beside the JS thread's handlers.
  const bool heavy = !cfg_.js_thread_under_load &&
                     (full_read_ || m_bytes_.load(std::memory_order_relaxed) - bytes_before >= kHandBackBytes);
  if (!heavy && handoff_to_js_thread_ok()) return true;
  {
    std::lock_guard<std::mutex> lk(mode_mu_);
    mode_.store(kIoThread);
  }
  m_handoffs_.fetch_add(1, std::memory_order_relaxed);
  mode_cv_.notify_one();
  return false;
}

void ReaderEngine::run() {
  std::vector<epoll_event> events(64);
  std::unique_lock<std::mutex> own(own_mu_);
  while (!exit_now_.load()) {
    if (mode_.load() == kJsThread) {
      // The JS thread polls; sleep until it hands the loop back, a timer of
      // ours is due (accept retry, inactivity scan), or close().
      // Also look every kJsThreadWatchMs: a JS thread that is busy
      // (a long handler, a blocked event loop) leaves events unhandled, and
      // then the IO thread takes the loop back so that reading goes on.
      int64_t due = now_ms() + kJsThreadWatchMs;
      if (accept_retry_at_ != 0) due = std::min(due, accept_retry_at_);
      if (scan_period_ms_ > 0) due = std::min(due, next_idle_scan_);
      if (trim_at_ != 0) due = std::min(due, trim_at_);
      const uint64_t polls = js_thread_polls_.load();
      own.unlock();
      {
        std::unique_lock<std::mutex> lk(mode_mu_);
        mode_cv_.wait_for(lk, std::chrono::milliseconds(std::max<int64_t>(0, due - now_ms())),
                          [this] { return exit_now_.load() || mode_.load() != kJsThread; });
      }
      own.lock();
      if (mode_.load() == kJsThread && !exit_now_.load()) {
        const int n = step(events, 0);  // timers, and whatever the JS thread left
        if (n > 0 && js_thread_polls_.load() == polls) {
          std::lock_guard<std::mutex> lk(mode_mu_);
          mode_.store(kIoThread);
          m_handoffs_.fetch_add(1, std::memory_order_relaxed);
        }
      }
      continue;
    }
    // With JS-thread polling, first look without blocking.
    const int n = step(events, cfg_.js_thread_polling ? 0 : -1);
    if (!cfg_.js_thread_polling || n > 0) continue;
    // Nothing was ready (the wait did not block): hand the loop to the
    // JS thread if the load is light, else block as usual.
    if (handoff_to_js_thread_ok()) {
      {
        std::lock_guard<std::mutex> lk(mode_mu_);
        mode_.store(kJsThread);
      }
      m_handoffs_.fetch_add(1, std::memory_order_relaxed);
      if (!hot_.empty()) loop_.wake();  // see keep_polled_if_hot()
      poll_request_.store(true);
      call_pending_.store(true);
      notify_();
      continue;
    }
    step(events, -1);
  }
  // Exit. After a graceful stop began, every connection's read side is shut,
  // so what the kernel still holds is bounded: read it and count its whole
  // frames as discarded rather than lose them silently.
  if (stopping_) {
    for (auto& [id, c] : conns_)
      if (!c->held) discarded_.fetch_add(count_unread_frames(*c), std::memory_order_relaxed);
  }
  // Everything closes here (RAII); unread items stay in the queue until the
  // engine is destroyed.
  conns_.clear();
  cfg_.listen_fd.reset();
  if (listening_) {
    listening_ = false;
    if (!cfg_.path.empty()) unlink_if_same(cfg_.path, cfg_.dev, cfg_.ino);
  }
}

uint64_t ReaderEngine::count_unread_frames(Conn& c) {
  uint64_t frames = 0;
  if (c.packets) {
    try {
      while (c.packets->receive().status == RecvStatus::kOk) {
        while (c.packets->has_batch()) frames += c.packets->take().batch.count();
      }
    } catch (const std::bad_alloc&) {
      // what was counted
    }
    while (c.packets->has_batch()) frames += c.packets->take().batch.count();
    return frames;
  }
  try {
    if (c.assembler.resume()) {  // frames held back by backpressure first
      for (;;) {
        while (c.assembler.has_batch()) frames += c.assembler.take_batch().count();
        auto [ptr, len] = c.assembler.prepare_read();
        const ssize_t n = ::read(c.fd.get(), ptr, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0 || !c.assembler.commit(static_cast<size_t>(n))) break;
      }
    }
  } catch (const std::bad_alloc&) {
    // No memory to go on counting (a large frame's buffer): what was counted.
  }
  while (c.assembler.has_batch()) frames += c.assembler.take_batch().count();
  return frames;
}

void ReaderEngine::stop_listening() {
  if (!listening_) return;
  listening_ = false;
  loop_.remove(cfg_.listen_fd.get());
  cfg_.listen_fd.reset();
  accept_retry_at_ = 0;
  if (!cfg_.path.empty()) unlink_if_same(cfg_.path, cfg_.dev, cfg_.ino);
}

bool ReaderEngine::accept_all() {
  if (!listening_ || accept_retry_at_ != 0) return false;
  for (int i = 0; i < kMaxAcceptsPerEvent || stopping_; ++i) {
    const int fd = ::accept4(cfg_.listen_fd.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      const int e = errno;
      if (e == EINTR || e == ECONNABORTED) continue;
      if (e == EAGAIN || e == EWOULDBLOCK) return true;
      m_accept_errors_.fetch_add(1, std::memory_order_relaxed);
      if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
        // Level-triggered epoll would report the listener forever: stop
        // watching it for a while instead of spinning.
        loop_.remove(cfg_.listen_fd.get());
        accept_retry_at_ = now_ms() + kAcceptRetryMs;
        ReaderItem item{ReaderItem::kError};
        item.error = CoreError::sys("ERR_SOCKET", e, "accept4", "cannot accept a connection");
        push(std::move(item));
      }
      return false;
    }
    const uint32_t id = next_id_++;
    if (next_id_ == 0) next_id_ = 1;
    const PeerCred cred = peer_credentials(fd);
    {
      if (!allowed(cred.uid, cred.gid)) {
        // Closed before a single byte of it is read.
        ::close(fd);
        m_rejected_.fetch_add(1, std::memory_order_relaxed);
        ReaderItem item{ReaderItem::kRejected};
        item.cred = cred;
        push(std::move(item));
        continue;
      }
    }
    auto conn = std::make_unique<Conn>(id, UniqueFd(fd), cfg_.assembler, &reply_stats_);
    if (cfg_.acked) {
      // The reader speaks first: a writer in acked mode waits for this; a
      // plain one never reads it. A fresh socket takes 10 bytes at once.
      uint8_t g[1 + acked::kGreetingSize];
      if (conn->out->offer(g, acked::put_greeting(g), now_ms()).want_out) conn->want_out = true;
    }
    if (cfg_.type == SOCK_SEQPACKET) {
      PacketReceiverConfig pc = packet_config();
      pc.accept_fds = cfg_.accept_fds;
      conn->packets = std::make_unique<PacketReceiver>(pc);
      if (CoreError e = conn->packets->attach(fd)) {
        m_accept_errors_.fetch_add(1, std::memory_order_relaxed);
        ReaderItem item{ReaderItem::kError};
        item.error = std::move(e);
        push(std::move(item));
        continue;  // conn closes the socket
      }
    }
    conn->last_active_ms = now_ms();
    conn->peer_uid = cred.uid;
    conn->held = cfg_.hold_for_authorize;
    if (!conn->held) {
      if (stopping_) ::shutdown(fd, SHUT_RD);
      update_interest(*conn);
    }
    {
      std::lock_guard<std::mutex> lk(replies_mu_);
      replies_.emplace(id, conn->out);
    }
    conns_.emplace(id, std::move(conn));
    m_accepted_.fetch_add(1, std::memory_order_relaxed);
    m_active_.fetch_add(1, std::memory_order_relaxed);
    ReaderItem item{ReaderItem::kOpen};
    item.conn_id = id;
    item.cred = cred;
    push(std::move(item));
  }
  return false;  // more may be waiting: level-triggered epoll reports it again
}

// SOCK_SEQPACKET: recvmmsg() of up to 64 packets per call
// (packet_io.h); packets too large close the connection as a frame above
// maxMessageSize does. No byte budget per call: what one call can bring is
// bounded by the kernel: a seqpacket connection's queued packets are
// charged to the sender's SO_SNDBUF (at most twice net.core.wmem_max), and a
// datagram socket queues max_dgram_qlen + 1 datagrams; a budget that assumed
// every packet as large as allowed would read one packet per call. Calls
// stop once they have read what the connection may still hold, so it goes
// past max_pending_bytes by one call at most before it is paused.
void ReaderEngine::on_readable_packets(Conn& c) {
  const uint32_t id = c.id;
  // Up to kMaxReadsPerEvent calls, their packets in one batch (a reader
  // that keeps up finds a few dozen packets per call: one batch per call
  // would cost a handler call per few dozen messages).
  RecvResult res;
  bool more = false;
  const uint64_t refused_before = c.packets->stats().refused;
  const uint64_t too_large_before = c.packets->stats().too_large;
  const uint64_t fds_closed_before = c.packets->stats().fds_closed;
  // A datagram reader is the engine's only connection: no one to be fair to.
  const int max_reads = cfg_.type == SOCK_DGRAM ? 4 * kMaxReadsPerEvent : kMaxReadsPerEvent;
  // Calls stop once what they read reaches what the connection may still
  // hold: the overshoot is one call (what the kernel holds for us).
  const uint64_t room = c.pending < cfg_.max_pending_bytes ? cfg_.max_pending_bytes - c.pending : 0;
  uint64_t got = 0;
  // Descriptors too (acceptFds): what one call can bring stays within what
  // the connection may still hold, max_pending_fds (see receive()).
  const uint64_t fd_room = c.pending_fds < cfg_.max_pending_fds ? cfg_.max_pending_fds - c.pending_fds : 0;
  uint64_t fds_got = 0;
  for (int r = 0; r < max_reads; ++r) {
    res = c.packets->receive(kNoBudget, /*close_batch=*/false, fd_room > fds_got ? fd_room - fds_got : 0);
    got += res.bytes + res.delivered * 2 * sizeof(uint32_t);
    fds_got += res.fds;
    if (res.packets > 0) {
      if (cfg_.inactivity_timeout_ms > 0) c.last_active_ms = now_ms();
      m_reads_.fetch_add(1, std::memory_order_relaxed);
      m_bytes_.fetch_add(res.bytes, std::memory_order_relaxed);
    }
    // A datagram reader's queue holds only max_dgram_qlen + 1 datagrams, so
    // a call rarely fills up: read on while calls bring anything (writers
    // refill the queue meanwhile), up to the cap, into the same batch.
    more = res.status == RecvStatus::kOk && (res.maybe_more || (cfg_.type == SOCK_DGRAM && res.packets > 0));
    if (!more || got >= room || (fds_got > 0 && fds_got >= fd_room)) break;
  }
  c.packets->flush();
  if (const uint64_t refused = c.packets->stats().refused - refused_before)
    m_rejected_datagrams_.fetch_add(refused, std::memory_order_relaxed);
  if (const uint64_t closed = c.packets->stats().fds_closed - fds_closed_before)
    m_fds_refused_.fetch_add(closed, std::memory_order_relaxed);
  const uint64_t dropped = c.packets->stats().too_large - too_large_before;
  if (dropped > 0 && cfg_.type == SOCK_DGRAM) {
    // SOCK_DGRAM: datagrams too large are dropped, never cut short; reported
    // once per readable event (a flood of them is one error per read round).
    m_errors_.fetch_add(1, std::memory_order_relaxed);
    ReaderItem err{ReaderItem::kError};
    err.conn_id = id;
    err.error = CoreError::plain("ERR_MESSAGE_TOO_LARGE", std::to_string(dropped) + " datagram" +
                                                              (dropped == 1 ? " was" : "s were") +
                                                              " above maxMessageSize " +
                                                              std::to_string(cfg_.assembler.max_message_size) +
                                                              " and dropped");
    push(std::move(err));
  }
  uint64_t frames = 0;
  while (c.packets->has_batch()) {
    PacketBatch pb = c.packets->take();
    if (!pb.creds.empty()) {
      pb.batch.creds.reserve(3 * pb.creds.size());
      for (const PeerCred& cr : pb.creds) {
        pb.batch.creds.push_back(cr.pid);
        pb.batch.creds.push_back(cr.uid);
        pb.batch.creds.push_back(cr.gid);
      }
    }
    deliver(c, std::move(pb.batch), &frames);
  }
  // A stopping datagram reader: its socket was shut for reading, so no
  // sender can add to the queue; once it is read empty, it is done.
  const bool dgram_done = cfg_.type == SOCK_DGRAM && stopping_ && res.status == RecvStatus::kAgain;
  if (dgram_done || res.status == RecvStatus::kEof || (res.status == RecvStatus::kOk && c.packets->eof())) {
    close_conn(id, CoreError{});
    return;
  }
  if (res.status == RecvStatus::kError) {
    if (c.packets->fd_error()) {
      close_conn(id, c.packets->fd_error());
    } else if (c.packets->failed()) {
      close_conn(id, CoreError::plain("ERR_MESSAGE_TOO_LARGE", "peer sent a packet of " +
                                                                   std::to_string(c.packets->error_length()) +
                                                                   " bytes, above maxMessageSize " +
                                                                   std::to_string(cfg_.assembler.max_message_size)));
    } else {
      close_conn(id, CoreError::sys("ERR_SOCKET", res.err, "recvmmsg", "connection failed"));
    }
    return;
  }
  if (full(c)) {
    pause(c);
    return;
  }
  if (more) full_read_ = true;
  // Not a datagram reader: its queue holds max_dgram_qlen + 1 datagrams, so
  // rounds drain it all the time, and leaving and rejoining the set that
  // often cost what it saved (5 alternating runs at 64 B: no gain, +5 % CPU).
  if (cfg_.type == SOCK_SEQPACKET) set_hot(c, more);
}

void ReaderEngine::on_readable(Conn& c) {
  if (c.packets) {
    on_readable_packets(c);
    return;
  }
  const uint32_t id = c.id;
  for (int r = 0; r < kMaxReadsPerEvent && !c.paused; ++r) {
    auto [ptr, len] = c.assembler.prepare_read();
    std::vector<UniqueFd> fds;
    const ssize_t n = receive(c, ptr, len, &fds);
    if (n < 0 && errno == EPROTO) return;  // closed for its descriptors
    if (n > 0) {
      if (cfg_.inactivity_timeout_ms > 0) c.last_active_ms = now_ms();
      m_reads_.fetch_add(1, std::memory_order_relaxed);
      m_bytes_.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
    }
    // Frames are cut only up to what the connection may still hold (not
    // paused means pending < max_pending_bytes; at least one frame is cut).
    const uint64_t budget = c.pending < cfg_.max_pending_bytes ? cfg_.max_pending_bytes - c.pending : 1;
    const bool ok = n > 0 ? c.assembler.commit(static_cast<size_t>(n), budget, &fds) : true;
    uint64_t frames = 0;
    if (!hand_over(c, ok, &frames)) return;  // closed: framing error
    if (n > 0) track_frame(c, frames);
    if (n == 0) {
      if (!c.assembler.at_frame_boundary() && !stopping_) {
        // While stopping, our own shutdown(SHUT_RD) cut the writer short: it
        // sees EPIPE and sends that frame again, whole, elsewhere. Not an error.
        close_conn(id, CoreError::plain("ERR_TRUNCATED_FRAME",
                                        "peer closed the connection in the middle of a frame (" +
                                            std::to_string(c.assembler.partial_bytes()) +
                                            " bytes of it received)"));
      } else if (auto t = ack_tracks_.find(id); t != ack_tracks_.end() && !t->second.marks.empty() && !peer_hung_up(c.fd.get())) {
        // Its batches are still with the consumer: keep the connection
        // (unread) until they are done with and acknowledged (apply_acks()),
        // so that the writer gets the acknowledgement (a graceful stop of this
        // reader, or a writer that half-closed after its last message) and
        // does not send them again.
        c.lingering = true;
        update_interest(c);
      } else {
        close_conn(id, CoreError{});
      }
      return;
    }
    if (n < 0) {
      const int e = errno;
      if (e == EINTR) continue;
      if (e == EAGAIN || e == EWOULDBLOCK) break;
      CoreError why = CoreError::sys("ERR_SOCKET", e, "read", "connection failed");
      if (!c.assembler.at_frame_boundary()) {
        why.code = "ERR_TRUNCATED_FRAME";
        why.message = "connection failed in the middle of a frame: " + why.message;
      }
      close_conn(id, why);
      return;
    }
    if (full(c)) {
      pause(c);
      return;
    }
    if (static_cast<size_t>(n) < len) break;  // the kernel buffer is empty
    full_read_ = true;
  }
}

// After EOF: whether the peer closed its socket altogether (POLLHUP: both
// directions shut), rather than only its sending side (shutdown(SHUT_WR)),
// so that nothing we send can reach it any more.
bool ReaderEngine::peer_hung_up(int fd) {
  pollfd p{fd, POLLOUT, 0};
  return ::poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLERR)) != 0;
}

// One read of c; see recv_with_fds(). A read can bring descriptors only
// from a sendmsg that carried them (the kernel never merges such data with
// what follows it), so a read stays the unit they are tied to.
ssize_t ReaderEngine::receive(Conn& c, uint8_t* p, size_t len, std::vector<UniqueFd>* fds) {
  CoreError why;
  const ssize_t n = recv_with_fds(c.fd.get(), p, len, cfg_.accept_fds, fds, &why);
  if (!why) return n;
  // At least one: a truncated read may have installed none.
  m_fds_refused_.fetch_add(std::max<size_t>(1, fds->size()), std::memory_order_relaxed);
  fds->clear();  // closes them
  // Acked, not accepting them (a kernel that cannot refuse them, start()):
  // the writer's frames are numbered and re-sent until acknowledged, so
  // closing the connection would only bring the same message back, forever.
  // The message is taken without them.
  if (cfg_.acked && !cfg_.accept_fds && n > 0 && why.code == std::string("ERR_UNEXPECTED_FDS")) return n;
  close_conn(c.id, why);
  errno = EPROTO;
  return -1;
}

void ReaderEngine::close_idle(int64_t now) {
  // Bytes already waiting in the kernel mean that we, not the peer, are late
  // (the IO thread or the whole process was held up: SIGSTOP, a frozen
  // cgroup, swapping): read them before judging the connection.
  std::vector<uint32_t> late;
  for (auto& [id, c] : conns_) {
    if (c->paused || c->held) continue;
    const bool idle = cfg_.inactivity_timeout_ms > 0 && now - c->last_active_ms >= cfg_.inactivity_timeout_ms;
    const bool slow = cfg_.frame_timeout_ms > 0 && c->frame_start_ms >= 0 && now - c->frame_start_ms >= cfg_.frame_timeout_ms;
    int waiting = 0;
    if ((idle || slow) && ::ioctl(c->fd.get(), FIONREAD, &waiting) == 0 && waiting > 0) late.push_back(id);
  }
  for (uint32_t id : late) {
    auto it = conns_.find(id);
    if (it != conns_.end()) read_conn(*it->second);
  }
  std::vector<std::pair<uint32_t, CoreError>> close;
  for (auto& [id, c] : conns_) {
    // A paused connection is silent (and its frame late) because of us, not
    // the peer; a held one is not read yet.
    if (c->paused || c->held) continue;
    if (cfg_.inactivity_timeout_ms > 0 && now - c->last_active_ms >= cfg_.inactivity_timeout_ms) {
      close.emplace_back(id, CoreError::plain("ERR_INACTIVITY_TIMEOUT", "no data for " +
                                                                            std::to_string(cfg_.inactivity_timeout_ms) +
                                                                            " ms (inactivityTimeoutMs)"));
    } else if (cfg_.frame_timeout_ms > 0 && c->frame_start_ms >= 0 && now - c->frame_start_ms >= cfg_.frame_timeout_ms) {
      close.emplace_back(
          id, CoreError::plain("ERR_FRAME_TIMEOUT", "a frame took longer than " + std::to_string(cfg_.frame_timeout_ms) +
                                                        " ms to arrive (frameTimeoutMs); " +
                                                        std::to_string(c->assembler.partial_bytes()) +
                                                        " bytes of it received"));
    }
  }
  for (auto& [id, why] : close) close_conn(id, CoreError{}, why);
}

void ReaderEngine::close_conn(uint32_t id, CoreError why, CoreError reason) {
  auto it = conns_.find(id);
  if (it == conns_.end()) return;
  Conn& c = *it->second;
  // Counted out before the consumer can see the close.
  m_active_.fetch_sub(1, std::memory_order_relaxed);
  if (c.paused) paused_count_.fetch_sub(1);
  if (c.hot) hot_.erase(std::find(hot_.begin(), hot_.end(), id));
  if (c.interest != 0) loop_.remove(c.fd.get());
  c.interest = 0;
  // No reply can reach the descriptor once it is closed (below, with c).
  c.out->close();
  {
    std::lock_guard<std::mutex> lk(replies_mu_);
    replies_.erase(id);
  }
  if (why) {
    m_errors_.fetch_add(1, std::memory_order_relaxed);
    ReaderItem err{ReaderItem::kError};
    err.conn_id = id;
    err.error = why;
    push(std::move(err));
  }
  ReaderItem item{ReaderItem::kClose};
  item.conn_id = id;
  item.error = why ? why : reason;
  push(std::move(item));
  // Its batches stay charged to the reader until the consumer acks them.
  if (!c.unacked.empty()) closed_unacked_.emplace(id, std::move(c.unacked));
  if (c.session && c.session->conn == id) {
    // Acknowledgements go to the session's newest connection; when it goes,
    // to another one still open (a peer of the same user presented this
    // writer's session, then left: the writer must not wait for good).
    Session& s = *c.session;
    s.conn = 0;
    for (auto& [oid, o] : conns_) {
      if (oid != id && o->session.get() == &s && o->delivery == Delivery::kAcked) s.conn = std::max(s.conn, oid);
    }
    if (s.conn != 0 && s.released > 0) send_ack(s);
  }
  if (auto t = ack_tracks_.find(id); t != ack_tracks_.end()) {
    if (t->second.marks.empty()) ack_tracks_.erase(t);
    else t->second.closed = true;
  }
  conns_.erase(it);
}

}  // namespace udsipc
