#include "js_receiver.h"

#include <errno.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <new>
#include <string>

#include "core/socket_util.h"

namespace udsipc {

namespace {

// Warm slabs kept for reuse (a writer usually has one connection), and reads
// per readable event before libuv looks at its other handles (level
// triggered: what is left makes the poll fire again).
constexpr size_t kPooledSlabs = 4;
constexpr int kMaxReadsPerEvent = 4;

CoreError out_of_memory() {
  return CoreError::sys("ERR_SOCKET", ENOMEM, "malloc", "out of memory receiving from the reader");
}

}  // namespace

struct JsReceiver::Conn {
  uv_poll_t handle;  // first: the callbacks get a pointer to it
  JsReceiver* owner = nullptr;  // null once dropped
  UniqueFd fd;                  // the dup; closed with the handle
  napi_async_cleanup_hook_handle hook = nullptr;  // closes the handle at env teardown
};

void JsReceiver::TeardownHook(napi_async_cleanup_hook_handle, void* conn) {
  Conn* c = static_cast<Conn*>(conn);
  if (c->owner) c->owner->Drop();  // forgets it, then closes it
  else CloseConn(c);
}

void JsReceiver::CloseConn(Conn* c) {
  uv_handle_t* h = reinterpret_cast<uv_handle_t*>(&c->handle);
  if (uv_is_closing(h)) return;
  uv_poll_stop(&c->handle);  // a no-op when not started
  uv_close(h, [](uv_handle_t* closed) {
    auto* conn = reinterpret_cast<Conn*>(closed);  // handle is the first member
    if (conn->hook) napi_remove_async_cleanup_hook(conn->hook);
    delete conn;  // closes the dup: libuv no longer watches it
  });
}

void JsReceiver::Attach(Napi::Env env, uv_loop_t* loop, Napi::Function on_ready, WriterEngine* engine,
                        const AssemblerConfig& assembler, uint64_t max_pending_bytes, bool accept_fds,
                        uint32_t max_pending_fds, std::function<void()> fallback,
                        TakeSource* source) {
  env_ = env;
  loop_ = loop;
  engine_ = engine;
  fallback_ = std::move(fallback);
  source_ = source;
  max_pending_ = max_pending_bytes;
  accept_fds_ = accept_fds;
  max_pending_fds_ = max_pending_fds;
  if (!pool_.p) pool_.p = SlabPool::create(assembler.slab_size, kPooledSlabs);
  assembler_cfg_ = assembler;
  assembler_cfg_.pool = pool_.p;
  assembler_cfg_.offsets_pool = &offsets_pool_;
  napi_create_reference(env, on_ready, 0, &on_ready_);
  if (napi_async_init(env, Napi::Object::New(env), Napi::String::New(env, "uds-ipc writer"), &async_ctx_) != napi_ok)
    async_ctx_ = nullptr;
}

void JsReceiver::Open(UniqueFd fd, uint32_t conn_id) {
  Finish();
  if (!engine_ || !fd.valid()) return;
  Conn* c = new Conn{};
  c->fd = std::move(fd);
  if (const int err = uv_poll_init(loop_, &c->handle, c->fd.get())) {
    delete c;
    // Nothing can read this connection: have it replaced (with backoff).
    ReportError(CoreError::sys("ERR_SOCKET", -err, "uv_poll_init", "cannot watch the connection for replies"),
                true);
    return;
  }
  c->owner = this;
  uv_unref(reinterpret_cast<uv_handle_t*>(&c->handle));
  napi_add_async_cleanup_hook(env_, TeardownHook, c, &c->hook);
  conn_ = c;
  conn_id_ = conn_id;
  assembler_ = std::make_unique<FrameAssembler>(assembler_cfg_);
  first_batch_ = true;
  // Batches of earlier connections may hold the limits already (the last
  // Finish() read beyond them): then this one waits for Ack() like a pause.
  if (!paused_ && Full()) {
    paused_ = true;
    ++pauses_;
  }
  if (!paused_) uv_poll_start(&c->handle, UV_READABLE, OnPoll);
}

void JsReceiver::Drop() {
  if (conn_) {
    conn_->owner = nullptr;
    CloseConn(conn_);
    conn_ = nullptr;
  }
  assembler_.reset();  // a partial frame goes with the connection
}

void JsReceiver::ReportError(CoreError why, bool report) {
  if (engine_) engine_->report_inbound_error(conn_id_, std::move(why), report);
}

bool JsReceiver::Cut(bool ok, uint64_t limit) {
  for (;;) {
    while (assembler_->has_batch()) {
      Batch b = assembler_->take_batch();
      b.conn_id = conn_id_;
      if (first_batch_) {
        // An acked reader's greeting is not a message (this Writer is not acked).
        first_batch_ = false;
        if (b.count() > 0 && acked::is_greeting_message(b.base + b.offsets[0], b.offsets[1] - b.offsets[0])) {
          drop_first_messages(b, 1);
          if (engine_) engine_->report_error(engine_->acked_reader_error());
          if (b.count() == 0) continue;
        }
      }
      const uint64_t charge = b.charge();
      pending_ += charge;
      unacked_.emplace_back(b.length, charge - b.length);
      handed_len_ += b.length;
      if (!b.fds.empty()) {
        const size_t k = b.fd_count();
        pending_fds_ += k;
        fds_received_ += k;
        fd_marks_.emplace_back(handed_len_, static_cast<uint32_t>(k));
      }
      batches_.push_back(std::move(b));
    }
    if (!ok) return false;
    if (!assembler_->backlogged() || pending_ >= limit) return true;
    ok = assembler_->resume(limit - pending_);
  }
}

// The assembler's framing error, as the engine's IO thread reports it.
static CoreError frame_error(const FrameAssembler& a, uint64_t max_message_size) {
  if (a.error() == FrameError::kUnexpectedFds) {
    return CoreError::plain("ERR_UNEXPECTED_FDS",
                            "the reader sent file descriptors with bytes in which no message starts; replacing the "
                            "connection");
  }
  if (a.error() == FrameError::kTooLarge) {
    return CoreError::plain("ERR_MESSAGE_TOO_LARGE", "the reader sent a message of at least " +
                                                         std::to_string(a.error_length()) +
                                                         " bytes, above maxMessageSize " +
                                                         std::to_string(max_message_size) +
                                                         "; replacing the connection");
  }
  return CoreError::plain("ERR_INVALID_FRAME",
                          "the reader sent an invalid length prefix (varint overflow); replacing the connection");
}

ssize_t JsReceiver::Receive(uint8_t* p, size_t len, std::vector<UniqueFd>* fds, bool* refused) {
  CoreError why;
  const ssize_t n = recv_with_fds(conn_->fd.get(), p, len, accept_fds_, fds, &why);
  *refused = static_cast<bool>(why);
  if (*refused) {
    fds_refused_ += std::max<size_t>(1, fds->size());
    fds->clear();  // closes them
    ReportError(std::move(why), true);
  }
  return n;
}

void JsReceiver::Read() {
  if (!conn_ || paused_) return;
  try {
    for (int r = 0; r < kMaxReadsPerEvent; ++r) {
      auto [ptr, len] = assembler_->prepare_read();
      std::vector<UniqueFd> fds;
      bool refused = false;
      const ssize_t n = Receive(ptr, len, &fds, &refused);
      if (refused) {
        Drop();
        return;
      }
      if (n > 0) {
        ++reads_;
        bytes_read_ += static_cast<uint64_t>(n);
        if (!Cut(assembler_->commit(static_cast<size_t>(n), Budget(), &fds), max_pending_)) {
          fds_refused_ += assembler_->refused_fds();
          ReportError(frame_error(*assembler_, assembler_cfg_.max_message_size), true);
          Drop();
          return;
        }
        // Cut() leaves frames backlogged only at the limit.
        if (Full()) {
          paused_ = true;
          ++pauses_;
          uv_poll_stop(&conn_->handle);
          return;
        }
        if (static_cast<size_t>(n) < len) return;  // the kernel buffer is empty
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
      // EOF or an error: the engine's DISCONNECT reports the end.
      Drop();
      return;
    }
  } catch (const std::bad_alloc&) {
    // No memory for the next slab or a large message's buffer: have the
    // connection replaced rather than take the process down.
    ReportError(out_of_memory(), false);
    Drop();
  }
}

void JsReceiver::Finish() {
  if (!conn_) return;
  // The engine shut the socket down before reporting the end: what the
  // kernel holds is all the reader sent. So that replies sent before a close
  // are not lost, it is read beyond maxPendingBytes, up to the end cap
  // (WriterEngine::end_cap(): by default one connection's end always fits);
  // what is left beyond goes with the connection,
  // counted (reply_bytes_dropped_) and reported. Reading every end whole
  // would let a reader that fills its send buffer (up to 2 x wmem_max) and
  // closes, again on every reconnect, grow this process's memory without
  // bound while the handler does not settle.
  const uint64_t cap = engine_ ? engine_->end_cap() : max_pending_;
  // Descriptors: an end may bring up to maxPendingFds more (each read up to 253).
  const uint64_t fd_cap = 2 * static_cast<uint64_t>(max_pending_fds_);
  const auto room = [&] { return pending_ < cap ? cap - pending_ : uint64_t{1}; };
  const auto at_cap = [&] { return pending_ >= cap || pending_fds_ >= fd_cap || assembler_->backlogged(); };
  try {
    bool ok = !assembler_->backlogged() || Cut(assembler_->resume(room()), cap);
    while (ok && !at_cap()) {
      auto [ptr, len] = assembler_->prepare_read();
      std::vector<UniqueFd> fds;
      bool refused = false;
      const ssize_t n = Receive(ptr, len, &fds, &refused);
      if (refused) break;
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      ++reads_;
      bytes_read_ += static_cast<uint64_t>(n);
      ok = Cut(assembler_->commit(static_cast<size_t>(n), room(), &fds), cap);
      if (!ok) {
        // As in Read(): descriptors against the wire rule (or a bad frame)
        // are counted and reported, even at the end of the connection.
        fds_refused_ += assembler_->refused_fds();
        ReportError(frame_error(*assembler_, assembler_cfg_.max_message_size), true);
      }
    }
    if (ok && at_cap()) {
      int unread = 0;
      if (::ioctl(conn_->fd.get(), FIONREAD, &unread) != 0 || unread < 0) unread = 0;
      const uint64_t lost = assembler_->partial_bytes() + static_cast<uint64_t>(unread);
      if (lost > 0) {
        reply_bytes_dropped_ += lost;
        drop_report_ = CoreError::plain(
            "ERR_REPLIES_DROPPED", "the connection ended with " + std::to_string(lost) +
                                       " bytes from the reader unread: onMessage held " + std::to_string(pending_) +
                                       " bytes in batches not yet done with (the most a connection's end may bring "
                                       "it to is " + std::to_string(cap) + "), and they went with it");
      }
    }
  } catch (const std::bad_alloc&) {
    // What was cut stays cut; the rest goes with the connection.
  }
  Drop();
}

void JsReceiver::Ack(uint64_t bytes) {
  const uint64_t released = release_acked(unacked_, bytes);
  pending_ -= std::min(pending_, released);
  acked_len_ += bytes;
  while (!fd_marks_.empty() && fd_marks_.front().first <= acked_len_) {
    pending_fds_ -= std::min<uint64_t>(pending_fds_, fd_marks_.front().second);
    fd_marks_.pop_front();
  }
  if (!paused_ || Full()) return;
  if (conn_ && assembler_->backlogged()) {
    // Frames read before the pause but not cut yet come first; they may use
    // up the budget again (then reading stays paused). We are inside
    // JavaScript (ack() from onMessage's inbox): they are announced through
    // the TSFN, not by calling onReady re-entrantly.
    const size_t before = batches_.size();
    try {
      if (!Cut(assembler_->resume(max_pending_ - pending_), max_pending_)) {
        ReportError(frame_error(*assembler_, assembler_cfg_.max_message_size), true);
        Drop();
      }
    } catch (const std::bad_alloc&) {
      ReportError(out_of_memory(), false);
      Drop();
    }
    if (batches_.size() > before && fallback_) fallback_();
    if (Full()) return;
  }
  paused_ = false;
  if (conn_) uv_poll_start(&conn_->handle, UV_READABLE, OnPoll);
}

void JsReceiver::Detach() {
  engine_ = nullptr;
  Drop();  // the assembler goes: nothing takes slabs from the pool after this
  batches_.clear();
  // Our pool reference goes now, not when the handle is collected: its warm
  // slabs are freed once the batches JavaScript still holds give theirs back
  // (each slab holds the pool), so a stopped Writer keeps no receive memory.
  if (pool_.p) {
    pool_.p->unref();
    pool_.p = nullptr;
  }
  unacked_.clear();
  pending_ = 0;
  fd_marks_.clear();
  pending_fds_ = handed_len_ = acked_len_ = 0;
  paused_ = false;
  if (on_ready_) {
    napi_delete_reference(env_, on_ready_);
    on_ready_ = nullptr;
  }
  if (async_ctx_) {
    napi_async_destroy(env_, async_ctx_);
    async_ctx_ = nullptr;
  }
  fallback_ = nullptr;
  source_ = nullptr;
}

void JsReceiver::OnPoll(uv_poll_t* h, int status, int) {
  Conn* c = reinterpret_cast<Conn*>(h);
  JsReceiver* self = c->owner;
  if (!self) {
    uv_poll_stop(h);
    return;
  }
  self->Read();
  // libuv stopped the watch (POLLERR): what Read() got is all we take.
  if (status < 0 && self->conn_ == c) self->Drop();
  // Delivered now, without a trip through the TSFN's async handle.
  // JavaScript may stop the writer in there (Detach()): nothing here is
  // touched afterwards.
  if (!self->batches_.empty()) self->CallOnReady();
}

void JsReceiver::CallOnReady() {
  call_on_ready(env_, on_ready_, async_ctx_, &source_, &fallback_);
}

}  // namespace udsipc
