#include "reader_wrap.h"

#include "common.h"
#include <fcntl.h>

#include "core/protocol.h"
#include "core/socket_util.h"

namespace udsipc {

Napi::Function ReaderWrap::Init(Napi::Env env) {
  return DefineClass(env, "ReaderHandle",
                     {
                         InstanceMethod<&ReaderWrap::Listen>("listen"),
                         InstanceMethod<&ReaderWrap::Drain>("drain"),
                         InstanceMethod<&ReaderWrap::Ack>("ack"),
                         InstanceMethod<&ReaderWrap::Authorize>("authorize"),
                         InstanceMethod<&ReaderWrap::BeginStop>("beginStop"),
                         InstanceMethod<&ReaderWrap::Close>("close"),
                         InstanceMethod<&ReaderWrap::Ref>("ref"),
                         InstanceMethod<&ReaderWrap::Unref>("unref"),
                         InstanceMethod<&ReaderWrap::Metrics>("metrics"),
                         InstanceMethod<&ReaderWrap::RemoveSocketFile>("removeSocketFile"),
                     });
}

ReaderWrap::ReaderWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ReaderWrap>(info), env_(info.Env()) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsObject())
    throw Napi::TypeError::New(env, "ReaderHandle(path, options)");
  path_ = info[0].As<Napi::String>().Utf8Value();
  Napi::Object o = info[1].As<Napi::Object>();
  asm_cfg_.max_message_size = static_cast<uint64_t>(get_number(o, "maxMessageSize", 10 * 1024 * 1024));
  asm_cfg_.slab_size = static_cast<size_t>(get_number(o, "slabSize", 512 * 1024));
  asm_cfg_.min_read = static_cast<size_t>(get_number(o, "minRead", 64 * 1024));
  asm_cfg_.large_threshold = static_cast<size_t>(get_number(o, "largeThreshold", 128 * 1024));
  max_pending_ = static_cast<uint64_t>(get_number(o, "maxPendingBytes", 8 * 1024 * 1024));
  inactivity_ms_ = static_cast<uint32_t>(get_number(o, "inactivityTimeoutMs", 0));
  frame_timeout_ms_ = static_cast<uint32_t>(get_number(o, "frameTimeoutMs", 30000));
  listen_.backlog = static_cast<int>(get_number(o, "backlog", 511));
  listen_.mode = static_cast<int>(get_number(o, "mode", -1));
  // Ids up to 2^32-2 (validated in TypeScript) stored as the kernel's uid_t
  // bits in an int: a double above INT_MAX must not be cast to int directly.
  const auto id = [&](const char* key) {
    const double v = get_number(o, key, -1);
    return v < 0 ? -1 : static_cast<int>(static_cast<uint32_t>(v));
  };
  listen_.uid = id("uid");
  listen_.gid = id("gid");
  listen_.dir_mode = static_cast<int>(get_number(o, "directoryMode", -1));
  adopt_fd_ = static_cast<int>(get_number(o, "fd", -1));
  hold_for_authorize_ = o.Get("authorize").ToBoolean();
  consumer_polling_ = o.Get("jsThreadPolling").IsBoolean() ? o.Get("jsThreadPolling").ToBoolean().Value() : true;
  consumer_under_load_ = o.Get("jsThreadUnderLoad").ToBoolean().Value();
  for (auto [key, out] : {std::pair{"allowUids", &allow_uids_}, std::pair{"allowGids", &allow_gids_}}) {
    Napi::Value v = o.Get(key);
    if (!v.IsArray()) continue;
    Napi::Array a = v.As<Napi::Array>();
    for (uint32_t i = 0; i < a.Length(); ++i) out->push_back(a.Get(i).As<Napi::Number>().Uint32Value());
  }
}

ReaderWrap::~ReaderWrap() { Shutdown(); }

void ReaderWrap::CleanupHook(void* self) { static_cast<ReaderWrap*>(self)->Shutdown(); }

namespace {
void close_poll(ReaderWrap::Poll* p);

// Env teardown: close the handle and keep the loop turning until it is closed.
void poll_teardown_hook(napi_async_cleanup_hook_handle, void* arg) {
  close_poll(static_cast<ReaderWrap::Poll*>(arg));
}

void close_poll(ReaderWrap::Poll* p) {
  uv_handle_t* h = reinterpret_cast<uv_handle_t*>(&p->handle);
  if (uv_is_closing(h)) return;
  uv_poll_stop(&p->handle);  // a no-op when not started
  uv_close(h, [](uv_handle_t* closed) {
    auto* poll = reinterpret_cast<ReaderWrap::Poll*>(closed);  // handle is the first member
    if (poll->hook) napi_remove_async_cleanup_hook(poll->hook);
    delete poll;
  });
}
}  // namespace

void ReaderWrap::ClosePoll() {
  if (!poll_) return;
  poll_->owner = nullptr;
  close_poll(poll_);
  poll_ = nullptr;
}

void ReaderWrap::StartPolling() {
  if (!poll_) return;
  const uv_handle_t* h = reinterpret_cast<const uv_handle_t*>(&poll_->handle);
  if (!uv_is_active(h) && !uv_is_closing(h)) uv_poll_start(&poll_->handle, UV_READABLE, OnPoll);
}

void ReaderWrap::OnPoll(uv_poll_t* h, int, int) {
  auto* poll = reinterpret_cast<Poll*>(h);
  ReaderWrap* self = poll->owner;
  bool items = false;
  // Keep polling only while the engine says the load is light; otherwise
  // its IO thread has the loop again and will ask for polling when idle.
  const bool keep = self && self->engine_ && self->engine_->js_thread_poll(&items);
  if (!keep) {
    uv_poll_stop(h);
  }
  // What was read is delivered now, without a trip through the TSFN's
  // async handle. JavaScript may stop the reader in there: self is not
  // touched afterwards.
  if (items) self->CallOnReady();
}

void ReaderWrap::CallOnReady() {
  napi_env env = env_;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value fn = nullptr;
  if (on_ready_) napi_get_reference_value(env, on_ready_, &fn);
  if (fn) {
    napi_value recv;
    napi_get_global(env, &recv);  // MakeCallback wants an object receiver
    const napi_status st = napi_make_callback(env, async_ctx_, recv, fn, 0, nullptr, nullptr);
    if (st != napi_ok && st != napi_pending_exception && tsfn_live_) tsfn_.NonBlockingCall();  // fall back
    if (st == napi_pending_exception) {
      napi_value err;
      napi_get_and_clear_last_exception(env, &err);
      napi_fatal_exception(env, err);  // as an exception thrown from any callback: 'uncaughtException'
    }
  } else if (tsfn_live_) {
    tsfn_.NonBlockingCall();
  }
  napi_close_handle_scope(env, scope);
}

uint64_t ReaderWrap::Shutdown() {
  ClosePoll();  // no poll callback runs once the engine is gone
  if (on_ready_) {
    napi_delete_reference(env_, on_ready_);
    on_ready_ = nullptr;
  }
  if (async_ctx_) {
    napi_async_destroy(env_, async_ctx_);
    async_ctx_ = nullptr;
  }
  uint64_t undelivered = 0;
  if (engine_) {
    engine_->close();  // joins the IO thread: nothing calls the TSFN after this
    std::vector<ReaderItem> left;
    engine_->take(left);
    for (const ReaderItem& it : left)
      if (it.type == ReaderItem::kBatch) undelivered += it.batch.count();
    undelivered += engine_->discarded_unread();
    engine_.reset();
  }
  if (tsfn_live_) {
    tsfn_live_ = false;
    tsfn_.Release();
  }
  if (hook_) {
    hook_ = false;
    napi_remove_env_cleanup_hook(env_, CleanupHook, this);
  }
  return undelivered;
}

// Removes the socket file now if it is still the one listen() created (same
// device and inode, checked relative to its directory): for process.exit(),
// which ends the process without running environment cleanup hooks.
void ReaderWrap::RemoveSocketFile(const Napi::CallbackInfo&) {
  if (sock_ino_ != 0) unlink_if_same(path_, sock_dev_, sock_ino_);
  sock_ino_ = 0;
}

Napi::Value ReaderWrap::Listen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (engine_) return env.Undefined();
  if (!info[0].IsFunction()) throw Napi::TypeError::New(env, "listen(onReady)");
  // The callback is held only by the TSFN (released on stop), never by a
  // persistent reference of ours: that would keep the JS Reader (which holds
  // this handle) alive forever.
  Listener l;
  if (adopt_fd_ >= 0) {
    // A listener handed over by the service manager: never ours to unlink.
    if (CoreError e = check_listening_unix(adopt_fd_)) throw_core_error(env, e);
    const int fl = ::fcntl(adopt_fd_, F_GETFL);
    ::fcntl(adopt_fd_, F_SETFL, fl | O_NONBLOCK);
    ::fcntl(adopt_fd_, F_SETFD, FD_CLOEXEC);
    l.fd = UniqueFd(adopt_fd_);
    adopt_fd_ = -1;
  } else {
    l = listen_unix(path_, listen_);
    if (l.error) throw_core_error(env, l.error);
  }

  sock_dev_ = l.dev;
  sock_ino_ = l.ino;
  ReaderConfig cfg;
  cfg.listen_fd = std::move(l.fd);
  cfg.path = l.ino ? path_ : "";
  cfg.dev = l.dev;
  cfg.ino = l.ino;
  cfg.assembler = asm_cfg_;
  cfg.max_pending_bytes = max_pending_;
  cfg.inactivity_timeout_ms = inactivity_ms_;
  cfg.frame_timeout_ms = frame_timeout_ms_;
  cfg.allow_uids = allow_uids_;
  cfg.allow_gids = allow_gids_;
  cfg.hold_for_authorize = hold_for_authorize_;
  uv_loop_t* loop = nullptr;
  cfg.js_thread_polling = consumer_polling_ && napi_get_uv_event_loop(env, &loop) == napi_ok && loop;
  cfg.js_thread_under_load = consumer_under_load_;

  tsfn_ = Napi::ThreadSafeFunction::New(env, info[0].As<Napi::Function>(), "uds-ipc reader", 0, 1);
  tsfn_live_ = true;
  if (!refed_) tsfn_.Unref(env);
  // Registered after the TSFN so that, hooks running in reverse order, ours
  // joins the IO thread before Node tears the TSFN down.
  napi_add_env_cleanup_hook(env_, CleanupHook, this);
  hook_ = true;
  Napi::ThreadSafeFunction tsfn = tsfn_;
  const bool cfg_polling = cfg.js_thread_polling;
  engine_ = std::make_unique<ReaderEngine>(std::move(cfg), [tsfn]() mutable { tsfn.NonBlockingCall(); });
  if (cfg_polling) {
    napi_create_reference(env, info[0], 0, &on_ready_);
    if (napi_async_init(env, Napi::Object::New(env), Napi::String::New(env, "uds-ipc reader"), &async_ctx_) != napi_ok)
      async_ctx_ = nullptr;
    poll_ = new Poll{};
    poll_->owner = this;
    if (uv_poll_init(loop, &poll_->handle, engine_->poll_fd()) != 0) {
      delete poll_;
      poll_ = nullptr;
      throw Napi::Error::New(env, "uv_poll_init failed");
    }
    uv_unref(reinterpret_cast<uv_handle_t*>(&poll_->handle));
    napi_add_async_cleanup_hook(env_, poll_teardown_hook, poll_, &poll_->hook);
  }
  engine_->start();
  return env.Undefined();
}

namespace {

// V8 frees an external ArrayBuffer only when a GC finds it dead, and with
// few JS allocations per batch that GC comes late: slabs pile up (memory,
// and fresh pages to fault in). Reporting each region as external memory
// kExternalWeight times over makes V8 collect sooner, so slabs return to the
// pool while still warm.
constexpr int64_t kExternalWeight = 1;

struct SlabView {
  Slab* slab;
  int64_t reported;
};

void finalize_slab(napi_env env, void*, void* hint) {
  SlabView* v = static_cast<SlabView*>(hint);
  int64_t ignored;
  napi_adjust_external_memory(env, -v->reported, &ignored);
  v->slab->unref();
  delete v;
}

// Regions up to this size are copied into a V8-owned ArrayBuffer and their
// slab bytes released at once. Node runs the finalizer of an external
// ArrayBuffer (on detach or GC) through a thread-safe immediate: an eventfd
// write and one more event-loop turn per batch, which cost more than copying
// a small batch and showed in the latency of one message at a time.
constexpr size_t kCopyUpTo = 16 * 1024;

// A fresh ArrayBuffer of `size` bytes, which the caller fills in full. It is
// zero-filled first: N-API has no uninitialized ArrayBuffer, and
// napi_create_buffer (which skips the fill) also makes a Buffer object and
// sets its prototype, which cost ~2.5 us per small batch in the latency case
// where the fill of a few hundred bytes costs nothing measurable.
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
  SlabView* view = new SlabView{b.slab.get(), static_cast<int64_t>(b.length) * kExternalWeight};
  napi_status st = napi_create_external_arraybuffer(env, const_cast<uint8_t*>(b.base), b.length,
                                                    finalize_slab, view, &ab);
  if (st == napi_ok) {
    b.slab.release();  // now owned by the finalizer
    int64_t ignored;
    napi_adjust_external_memory(env, view->reported, &ignored);
    return Napi::Value(env, ab);
  }
  delete view;
  return copy_of(env, b);
}

}  // namespace

Napi::Value ReaderWrap::Drain(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<ReaderItem> items;
  if (engine_) {
    engine_->take(items);
    if (engine_->take_poll_request()) StartPolling();
  }
  // Flat: [type, connId, a, b, c] per item.
  Napi::Array out = Napi::Array::New(env, items.size() * 5);
  uint32_t k = 0;
  for (ReaderItem& it : items) {
    out.Set(k++, static_cast<uint32_t>(it.type));
    out.Set(k++, it.conn_id);
    switch (it.type) {
      case ReaderItem::kBatch: {
        Batch& b = it.batch;
        if (b.length <= kCopyUpTo) {
          // One allocation: [offsets (u32, absolute) | region]; JavaScript
          // views the table in place (the entry after the buffer is its
          // length, a number, instead of a Uint32Array).
          out.Set(k++, small_batch(env, b));
          out.Set(k++, static_cast<double>(b.offsets.size()));
        } else {
          uint8_t* data;
          const size_t n = b.offsets.size();
          Napi::ArrayBuffer table = fresh_buffer(env, n * sizeof(uint32_t), &data);
          if (n) std::memcpy(data, b.offsets.data(), n * sizeof(uint32_t));
          out.Set(k++, batch_buffer(env, b));
          out.Set(k++, Napi::Uint32Array::New(env, n, table, 0));
        }
        // Copied out either way: the table goes back for the next batch.
        if (engine_) engine_->recycle_offsets(std::move(b.offsets));
        out.Set(k++, static_cast<double>(b.payload_bytes));
        break;
      }
      case ReaderItem::kOpen:
      case ReaderItem::kRejected: {
        Napi::Object c = Napi::Object::New(env);
        c.Set("pid", it.cred.pid);
        // uid_t/gid_t bits in an int: ids >= 2^31 as the unsigned numbers they are.
        c.Set("uid", it.cred.uid == -1 ? -1.0 : static_cast<double>(static_cast<uint32_t>(it.cred.uid)));
        c.Set("gid", it.cred.gid == -1 ? -1.0 : static_cast<double>(static_cast<uint32_t>(it.cred.gid)));
        out.Set(k++, c);
        out.Set(k++, env.Undefined());
        out.Set(k++, env.Undefined());
        break;
      }
      case ReaderItem::kClose:
        out.Set(k++, it.error ? Napi::Value(error_to_object(env, it.error)) : env.Undefined());
        out.Set(k++, env.Undefined());
        out.Set(k++, env.Undefined());
        break;
      case ReaderItem::kError:
        out.Set(k++, error_to_object(env, it.error));
        out.Set(k++, env.Undefined());
        out.Set(k++, env.Undefined());
        break;
      default:
        out.Set(k++, env.Undefined());
        out.Set(k++, env.Undefined());
        out.Set(k++, env.Undefined());
    }
  }
  return out;
}

void ReaderWrap::Ack(const Napi::CallbackInfo& info) {
  // ack(connId, bytes[, region[, table]]): the batch is done with. A region
  // passed in is detached, so every view of it becomes empty and its slab
  // reference is dropped now instead of at some later garbage collection; so
  // is a large batch's offsets table, whose memory is then reused at once.
  for (size_t i = 2; i < 4 && i < info.Length(); ++i) {
    if (info[i].IsArrayBuffer()) napi_detach_arraybuffer(info.Env(), info[i]);
  }
  if (!engine_) return;
  engine_->ack(info[0].As<Napi::Number>().Uint32Value(),
               static_cast<uint64_t>(info[1].As<Napi::Number>().DoubleValue()));
}

void ReaderWrap::Authorize(const Napi::CallbackInfo& info) {
  if (!engine_) return;
  engine_->authorize(info[0].As<Napi::Number>().Uint32Value(), info[1].ToBoolean());
}

void ReaderWrap::BeginStop(const Napi::CallbackInfo&) {
  if (engine_) engine_->begin_stop();
}

Napi::Value ReaderWrap::Close(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(Shutdown()));
}

void ReaderWrap::Ref(const Napi::CallbackInfo& info) {
  refed_ = true;
  if (tsfn_live_) tsfn_.Ref(info.Env());
}

void ReaderWrap::Unref(const Napi::CallbackInfo& info) {
  refed_ = false;
  if (tsfn_live_) tsfn_.Unref(info.Env());
}

Napi::Value ReaderWrap::Metrics(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ReaderMetrics m = engine_ ? engine_->metrics() : ReaderMetrics{};
  namespace p = protocol;
  double v[p::kReaderMetricCount];
  v[p::kConnections] = static_cast<double>(m.accepted);
  v[p::kActiveConnections] = static_cast<double>(m.active);
  v[p::kReadCalls] = static_cast<double>(m.read_calls);
  v[p::kBytesRead] = static_cast<double>(m.bytes_read);
  v[p::kPauses] = static_cast<double>(m.pauses);
  v[p::kJsThreadReads] = static_cast<double>(m.js_thread_reads);
  v[p::kHandoffs] = static_cast<double>(m.handoffs);
  Napi::Object o = Napi::Object::New(env);
  for (int i = 0; i < p::kReaderMetricCount; ++i) o.Set(p::kReaderMetricNames[i], v[i]);
  return o;
}

}  // namespace udsipc
