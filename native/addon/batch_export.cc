#include "batch_export.h"

#include <cstring>

#include "core/protocol.h"

namespace udsipc {

namespace {

// V8 frees an external ArrayBuffer only when a GC finds it dead. Batches
// are detached when acknowledged, so this matters for retained ones. V8
// already counts an external ArrayBuffer's bytes as external memory (its
// backing store's length, in process.memoryUsage().external) and weighs
// them in its GC heuristics; young ones die in scavenges. They used to be
// reported again with napi_adjust_external_memory (released only when the
// finalizer ran, after the collection that found them dead): measured with
// an RPC client receiving 100 KiB replies, 64 in flight, that ran ~290 full
// mark-compacts per 100k calls and ~30 % more CPU per call; without it, none
// (scavenges free the same buffers) and the same peak RSS.
void finalize_slab(napi_env, void*, void* hint) { static_cast<Slab*>(hint)->unref(); }

// A fresh ArrayBuffer of `size` bytes, which the caller fills in full. It is
// zero-filled first: N-API has no uninitialized ArrayBuffer, and
// napi_create_buffer (which skips the fill) also makes a Buffer object and
// sets its prototype, a fixed cost per batch far above that of filling a
// small one.
Napi::ArrayBuffer fresh_buffer(Napi::Env env, size_t size, uint8_t** data) {
  Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(env, size);
  *data = static_cast<uint8_t*>(ab.Data());
  return ab;
}

Napi::Value copy_of(Napi::Env env, const Batch& b) {
  uint8_t* data;
  Napi::ArrayBuffer copy = fresh_buffer(env, b.length, &data);
  if (b.length) std::memcpy(data, b.base, b.length);
  return copy;
}

// A small batch copied out: its offsets table (shifted to be absolute), then
// the region. b.slab is released with b.
Napi::Value small_batch(Napi::Env env, const Batch& b) {
  const size_t table = b.offsets.size() * sizeof(uint32_t);
  uint8_t* data;
  Napi::ArrayBuffer ab = fresh_buffer(env, table + b.length, &data);
  auto* offs = reinterpret_cast<uint32_t*>(data);
  for (size_t i = 0; i < b.offsets.size(); ++i) offs[i] = b.offsets[i] + static_cast<uint32_t>(table);
  if (b.length) std::memcpy(data + table, b.base, b.length);
  return ab;
}

// The batch region as an ArrayBuffer that keeps its slab alive, or a copy
// where external buffers are not allowed (e.g. under a V8 sandbox).
Napi::Value batch_buffer(Napi::Env env, Batch& b) {
  napi_value ab;
  if (napi_create_external_arraybuffer(env, const_cast<uint8_t*>(b.base), b.length, finalize_slab, b.slab.get(),
                                       &ab) == napi_ok) {
    b.slab.release();  // now owned by the finalizer
    return Napi::Value(env, ab);
  }
  return copy_of(env, b);
}

}  // namespace

Napi::Int32Array export_fds(Napi::Env env, Batch& b) {
  size_t n = 0;
  for (const MessageFds& m : b.fds) n += 2 + m.fds.size();
  Napi::Int32Array t = Napi::Int32Array::New(env, n);
  size_t k = 0;
  for (MessageFds& m : b.fds) {
    t[k++] = static_cast<int32_t>(m.index);
    t[k++] = static_cast<int32_t>(m.fds.size());
    for (UniqueFd& fd : m.fds) t[k++] = fd.release();
  }
  b.fds.clear();
  return t;
}

bool plain_small(const Batch& b) {
  return b.length <= protocol::kCopyBatchUpTo && b.fds.empty() && b.creds.empty() && !b.acked;
}

Napi::Value export_plain_small(Napi::Env env, const Batch& b, TakeWords& w) {
  const size_t table = b.offsets.size() * sizeof(uint32_t);
  uint8_t* data;
  Napi::ArrayBuffer ab = w.Region(env, table + b.length, &data);
  auto* offs = reinterpret_cast<uint32_t*>(data);
  for (size_t i = 0; i < b.offsets.size(); ++i) offs[i] = b.offsets[i] + static_cast<uint32_t>(table);
  if (b.length) std::memcpy(data + table, b.base, b.length);
  return ab;
}

Napi::ArrayBuffer TakeWords::Region(Napi::Env env, size_t size, uint8_t** out) {
  size_before_ = last_size_;
  last_size_ = size;
  if (!spare_.IsEmpty() && spare_size_ == size) {
    Napi::ArrayBuffer ab = spare_.Value();
    spare_.Reset();
    *out = spare_data_;
    return ab;
  }
  spare_.Reset();  // the wrong size: the garbage collector takes it
  return fresh_buffer(env, size, out);
}

void TakeWords::Idle(Napi::Env env) {
  if (!spare_.IsEmpty() || last_size_ == 0 || last_size_ != size_before_ || last_size_ > kMaxSpare) return;
  Napi::ArrayBuffer ab = fresh_buffer(env, last_size_, &spare_data_);
  spare_ = Napi::Persistent(ab);
  spare_size_ = last_size_;
}

Napi::Value TakeWords::Get(Napi::Env env) {
  if (ref_.IsEmpty()) {
    // An ArrayBuffer's backing store never moves (unlike a small typed
    // array's on-heap elements): data_ stays valid while ref_ holds it.
    Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(env, kCount * sizeof(double));
    data_ = static_cast<double*>(ab.Data());
    ref_ = Napi::Persistent(ab);
  }
  return Napi::Float64Array::New(env, kCount, ref_.Value(), 0);
}

void call_on_ready(napi_env env, napi_ref on_ready, napi_async_context ctx, TakeSource* const* source,
                   const std::function<void()>* fallback) {
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value fn = nullptr;
  if (on_ready) napi_get_reference_value(env, on_ready, &fn);
  if (fn) {
    napi_value recv;
    napi_get_global(env, &recv);  // MakeCallback wants an object receiver
    napi_value taken = nullptr;
    if (*source) {
      try {
        taken = (*source)->TakeValue(Napi::Env(env));
      } catch (const Napi::Error&) {
        taken = nullptr;
      }
    }
    const napi_status st = napi_make_callback(env, ctx, recv, fn, taken ? 1 : 0, taken ? &taken : nullptr, nullptr);
    if (st != napi_ok && st != napi_pending_exception && *fallback) (*fallback)();  // not called: fall back
    if (st == napi_pending_exception) {
      napi_value err;
      napi_get_and_clear_last_exception(env, &err);
      napi_fatal_exception(env, err);  // as an exception thrown from any callback: 'uncaughtException'
    }
    // A spare region that cannot be made is simply not there next time.
    if (st == napi_ok && *source) {
      try {
        (*source)->Idle(Napi::Env(env));
      } catch (const Napi::Error&) {
      }
    }
  } else if (*fallback) {
    (*fallback)();
  }
  napi_close_handle_scope(env, scope);
}

ExportedBatch export_batch(Napi::Env env, Batch& b) {
  if (b.length <= protocol::kCopyBatchUpTo) {
    // One allocation: [offsets (u32, absolute) | region]; JavaScript views
    // the table in place (the slot after the buffer is its length, a
    // number, instead of a Uint32Array).
    return {small_batch(env, b), Napi::Number::New(env, static_cast<double>(b.offsets.size()))};
  }
  uint8_t* data;
  const size_t n = b.offsets.size();
  Napi::ArrayBuffer table = fresh_buffer(env, n * sizeof(uint32_t), &data);
  if (n) std::memcpy(data, b.offsets.data(), n * sizeof(uint32_t));
  Napi::Value region = batch_buffer(env, b);
  return {region, Napi::Uint32Array::New(env, n, table, 0)};
}

}  // namespace udsipc
