// The receiving Writer's read path on JavaScript's thread (WriterConfig::
// receive_on_consumer). The writer's IO thread connects and sends but never
// reads: each CONNECT event carries a dup of the connected socket, and
// WriterWrap's take() hands it to Open(). From then on this watches the dup
// with a uv_poll on the thread's libuv loop; when it is readable, it reads
// (up to the budget maxPendingBytes leaves), cuts batches with a
// FrameAssembler, keeps them here and calls onReady at once, so that a reply
// wakes one thread, not two (no trip through the IO thread and the TSFN's
// async handle). take() then returns them (TakeBatches()) in the same BATCH
// format as the IO thread's.
//
// Order: every batch of a connection precedes its DISCONNECT. The IO thread
// shuts the socket down before it reports the end of a connection (or
// STOPPED), so when take() meets that event, Finish() reads the dup to EOF
// (what the kernel still holds, beyond the budget up to the end cap,
// WriterEngine::end_cap(), as the IO thread's own drain does; beyond the cap
// the rest is dropped, counted and reported) and those batches go out first. A
// new CONNECT finishes the last connection the same way before Open(); the
// new one is not read while the batches held reach the limits (Full()).
//
// Backpressure: the charge (Batch::charge()) of the batches handed over and
// not acked, across connections, as the engine counts it; at
// max_pending_bytes the watch stops (a pause) until Ack() brings it below.
// A framing error (message above maxMessageSize, invalid length prefix)
// stops reading and asks the engine to replace the connection
// (WriterEngine::report_inbound_error(): ERROR, then DISCONNECT with that
// code). EOF or a read error just stops reading: the engine's DISCONNECT
// reports the end.
//
// Descriptors (SCM_RIGHTS) that come with replies: refused (ERR_UNEXPECTED_FDS,
// the connection is replaced) unless accept_fds; accepted ones travel with
// their batch (Batch::fds), and reading also pauses while the batches not
// acked hold max_pending_fds or more of them.
//
// The uv_poll never keeps the loop alive (unref'd); the TSFN does that. Env
// teardown closes it through an async cleanup hook, as JsThreadPoller does.
// Everything here runs on JavaScript's thread: no atomics.
#pragma once

#include <napi.h>
#include <uv.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <utility>
#include <vector>

#include "batch_export.h"
#include "core/frame_assembler.h"
#include "core/unique_fd.h"
#include "core/writer_engine.h"

namespace udsipc {

class JsReceiver {
 public:
  JsReceiver() = default;
  ~JsReceiver() { Detach(); }
  JsReceiver(const JsReceiver&) = delete;
  JsReceiver& operator=(const JsReceiver&) = delete;

  // Prepares to receive on `loop` for `engine` (which must outlive
  // Detach()). `on_ready` is called when batches were cut, with one
  // argument: source->TakeValue() (the handle's take() result, taken here
  // so that JavaScript need not call back for it), and source->Idle()
  // after it; `fallback` when it cannot be called directly (or from within
  // JavaScript: see Ack()). The source must outlive Detach().
  void Attach(Napi::Env env, uv_loop_t* loop, Napi::Function on_ready, WriterEngine* engine,
              const AssemblerConfig& assembler, uint64_t max_pending_bytes, bool accept_fds,
              uint32_t max_pending_fds, std::function<void()> fallback, TakeSource* source);
  bool attached() const { return engine_ != nullptr; }

  // take() met a CONNECT carrying `fd`: finishes the last connection (see
  // Finish()) and watches this one. Throws a JS Error if libuv refuses it.
  void Open(UniqueFd fd, uint32_t conn_id);
  // take() met the end of the current connection (DISCONNECT, STOPPED):
  // reads the dup to EOF, up to the end cap, cuts what is whole (a partial
  // frame is dropped; beyond the cap, what is unread is dropped, counted and
  // reported as ERR_REPLIES_DROPPED) and closes it. No-op without a
  // connection.
  void Finish();
  // The batches cut since the last call, in order.
  std::vector<Batch> TakeBatches() { return std::exchange(batches_, {}); }
  // The one batch cut and not taken, or null when there are none or several.
  Batch* LoneBatch() { return batches_.size() == 1 ? &batches_.front() : nullptr; }
  void RecycleOffsets(std::vector<uint32_t>&& v) { offsets_pool_.put(std::move(v)); }
  // From JavaScript: `bytes` of batch lengths are done with (in the order
  // the batches were handed over); releases their charge, resumes reading
  // below the limit.
  void Ack(uint64_t bytes);
  // For good: no callback runs after this (also from within onReady);
  // batches not taken are released. Idempotent.
  void Detach();

  uint64_t reads() const { return reads_; }
  uint64_t bytes_read() const { return bytes_read_; }
  uint64_t pauses() const { return pauses_; }
  uint64_t fds_received() const { return fds_received_; }
  uint64_t fds_refused() const { return fds_refused_; }
  uint64_t reply_bytes_dropped() const { return reply_bytes_dropped_; }
  // The ERR_REPLIES_DROPPED the last Finish() found, once (the caller
  // reports it in order, before the event that ended the connection).
  CoreError TakeDropReport() { return std::exchange(drop_report_, CoreError{}); }

 private:
  // One connection: the uv_poll_t on its dup, which owns the dup (closed
  // with the handle, so the fd number libuv watches is never reused under
  // it); owned by its close callback once closing.
  struct Conn;
  static void OnPoll(uv_poll_t* h, int status, int events);
  static void CloseConn(Conn* c);
  static void TeardownHook(napi_async_cleanup_hook_handle, void* conn);
  void Drop();              // closes the current connection (a partial frame goes with it)
  void Read();              // on readable: reads up to the budget
  // Moves the assembler's batches into batches_ (charging them), cutting
  // backlogged frames while the charge held stays below `limit`
  // (max_pending_, or the end cap in Finish()). False after a framing error
  // (reported to the engine; the connection is dropped by the caller).
  bool Cut(bool parsed_ok, uint64_t limit);
  void ReportError(CoreError why, bool report);
  uint64_t Budget() const { return pending_ < max_pending_ ? max_pending_ - pending_ : 1; }
  bool Full() const { return pending_ >= max_pending_ || pending_fds_ >= max_pending_fds_; }

  // One read of the current connection; false after it refused its
  // descriptors (reported; the caller drops the connection).
  ssize_t Receive(uint8_t* p, size_t len, std::vector<UniqueFd>* fds, bool* refused);
  void CallOnReady();       // JS thread, outside JavaScript: runs onReady now

  napi_env env_ = nullptr;
  uv_loop_t* loop_ = nullptr;
  WriterEngine* engine_ = nullptr;  // null once detached
  napi_ref on_ready_ = nullptr;     // weakly: the TSFN keeps the function alive
  napi_async_context async_ctx_ = nullptr;
  std::function<void()> fallback_;
  TakeSource* source_ = nullptr;  // the handle, for CallOnReady(); null once detached
  AssemblerConfig assembler_cfg_;
  uint64_t max_pending_ = 0;
  bool accept_fds_ = false;
  uint32_t max_pending_fds_ = 0;

  // The slab pool (one reference, released last: batches exported to
  // JavaScript keep their slabs, and the slabs the pool) and the offsets
  // tables' free list (outlives every assembler: it is ours).
  struct PoolRef {
    SlabPool* p = nullptr;
    ~PoolRef() { if (p) p->unref(); }
  } pool_;
  OffsetsPool offsets_pool_;

  Conn* conn_ = nullptr;  // the current connection, while its dup is open
  std::unique_ptr<FrameAssembler> assembler_;  // the current connection's
  uint32_t conn_id_ = 0;
  std::vector<Batch> batches_;  // cut, not yet taken
  bool first_batch_ = true;     // the connection's first batch is not cut yet (an acked greeting?)
  bool paused_ = false;         // at max_pending_bytes: not watching
  uint64_t pending_ = 0;        // charge handed over, not acked (all connections)
  // Per batch handed over and not fully acked, in order: its length not yet
  // acked, and the rest of its charge (released when the length is).
  UnackedBatches unacked_;
  // Descriptors handed over with batches and not acked: (sum of batch
  // lengths handed over up to theirs, count), in order (see ReaderEngine::Conn).
  uint64_t pending_fds_ = 0, handed_len_ = 0, acked_len_ = 0;
  std::deque<std::pair<uint64_t, uint32_t>> fd_marks_;
  uint64_t reads_ = 0, bytes_read_ = 0, pauses_ = 0, fds_received_ = 0, fds_refused_ = 0;
  uint64_t reply_bytes_dropped_ = 0;  // beyond the end cap when their connection ended (Finish())
  CoreError drop_report_;             // for TakeDropReport()
};

}  // namespace udsipc
