// How a received batch crosses into JavaScript: the (a, b) slots of a
// protocol::kItemBatch item in ReaderHandle.take()'s array.
//
// A region of at most protocol::kCopyBatchUpTo bytes is copied, with its
// offsets table in front, into one V8-owned ArrayBuffer (b: the table's
// length, a number) and its slab reference dropped at once. A larger one is
// handed over in place, as an external ArrayBuffer that keeps its slab alive
// until JavaScript detaches it (ack(), release()) or the GC collects it, with
// its offsets table copied into a Uint32Array of its own (b). Copying a small
// batch is cheaper than an external buffer's finalizer, which Node runs
// through a thread-safe immediate (one more event-loop turn per batch).
#pragma once

#include <napi.h>

#include <functional>

#include "core/frame_assembler.h"

namespace udsipc {

struct ExportedBatch {
  Napi::Value region;   // slot a: ArrayBuffer
  Napi::Value offsets;  // slot b: the table's length (copied) or its Uint32Array (external)
};

// JS thread. Takes what it needs of `b`: its slab reference (kept by an
// external ArrayBuffer, or dropped with b after a copy). b.offsets is left
// for the caller to recycle: it has been copied either way.
ExportedBatch export_batch(Napi::Env env, Batch& b);

// Whether b is a "plain small" batch: copied out (at most
// protocol::kCopyBatchUpTo bytes) and with nothing beside its bytes (no
// descriptors, credentials or acked sequence numbers). A take() that finds
// exactly one such batch and nothing else returns its region alone (the
// other slots go into TakeWords), which is what a reader or a receiving
// writer sees for every message in light traffic.
bool plain_small(const Batch& b);

class TakeWords;

// JS thread. The region of a plain_small() batch: ArrayBuffer
// [u32 offsets (absolute) | bytes], as export_batch() makes it, in w's
// spare region when that has the right size.
Napi::Value export_plain_small(Napi::Env env, const Batch& b, TakeWords& w);

// The Float64Array that a handle's take() and JavaScript share (JS thread
// only; made on the first takeWords() call, kept by a reference for the
// handle's life). When take() returns a region alone (see plain_small()),
// the item's other slots are here: [connection id, offsets entries, payload
// bytes]. Setting the elements of a fresh array costs a V8 runtime call
// each (microseconds in all per message when messages come one at a time);
// these are plain stores.
//
// It also keeps a spare region: a fresh ArrayBuffer made while the thread is
// idle (Idle(), after onReady returned), of the size of the last lone
// batch when the two before had the same size, as when messages of one
// size come one at a time. The next lone batch of that size is copied into
// it instead of a buffer allocated then, which takes the allocation off the
// path from a message's arrival to its handler. The spare is never seen by
// JavaScript before it is handed out whole, filled.
class TakeWords {
 public:
  static constexpr size_t kCount = 4;
  static constexpr size_t kMaxSpare = 4096;  // no spare for larger regions
  Napi::Value Get(Napi::Env env);
  double* data() const { return data_; }  // null until Get()
  // A fresh ArrayBuffer of `size` bytes for a lone batch's region (the
  // spare when it fits exactly), its memory in *out.
  Napi::ArrayBuffer Region(Napi::Env env, size_t size, uint8_t** out);
  // Makes the spare if the last lone batches suggest its size.
  void Idle(Napi::Env env);

 private:
  Napi::Reference<Napi::ArrayBuffer> ref_;
  double* data_ = nullptr;
  Napi::Reference<Napi::ArrayBuffer> spare_;
  uint8_t* spare_data_ = nullptr;
  size_t spare_size_ = 0;
  size_t last_size_ = 0, size_before_ = 0;  // the last two lone regions
};

// What a JS-thread poller (JsThreadPoller, JsReceiver) asks of its handle
// around onReady: TakeValue() for the argument (what take() returns), and
// Idle() once onReady returned, before libuv goes back to sleep.
class TakeSource {
 public:
  virtual Napi::Value TakeValue(Napi::Env env) = 0;
  virtual void Idle(Napi::Env env) = 0;

 protected:
  ~TakeSource() = default;
};

// JS thread, outside JavaScript (a libuv callback of a poller): calls
// `on_ready` (a weak reference) through napi_make_callback, with what
// (*source)->TakeValue() returns as its argument (the items go along: one
// call into the addon fewer), then (*source)->Idle(). Items that cannot be
// made into JS values (V8 out of memory) are lost, as from a take() that
// throws, and on_ready is called without any. (*fallback)() when on_ready is
// gone or cannot be called; an exception it throws goes to
// 'uncaughtException'. *source and *fallback are read again after the call:
// JavaScript may have detached their owner meanwhile (they are null then).
void call_on_ready(napi_env env, napi_ref on_ready, napi_async_context ctx, TakeSource* const* source,
                   const std::function<void()>* fallback);

// JS thread. The descriptors of b's messages as an Int32Array
// [index, count, fd x count, ...], released to JavaScript (which closes
// those nobody takes); b.fds is left empty.
Napi::Int32Array export_fds(Napi::Env env, Batch& b);

}  // namespace udsipc
