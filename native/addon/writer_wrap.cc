#include "writer_wrap.h"

#include "core/protocol.h"

#include "common.h"

namespace udsipc {

Napi::Function WriterWrap::Init(Napi::Env env) {
  return DefineClass(env, "WriterHandle",
                     {
                         InstanceMethod<&WriterWrap::Start>("start"),
                         InstanceMethod<&WriterWrap::Wake>("wake"),
                         InstanceMethod<&WriterWrap::SendDirect>("sendDirect"),
                         InstanceMethod<&WriterWrap::Drain>("drain"),
                         InstanceMethod<&WriterWrap::BeginStop>("beginStop"),
                         InstanceMethod<&WriterWrap::Close>("close"),
                         InstanceMethod<&WriterWrap::Ref>("ref"),
                         InstanceMethod<&WriterWrap::Unref>("unref"),
                         InstanceMethod<&WriterWrap::Metrics>("metrics"),
                     });
}

WriterWrap::WriterWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<WriterWrap>(info), env_(info.Env()) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsString() || !info[1].IsObject() || !info[2].IsArrayBuffer())
    throw Napi::TypeError::New(env, "WriterHandle(path, options, shared)");
  cfg_.path = info[0].As<Napi::String>().Utf8Value();
  Napi::Object o = info[1].As<Napi::Object>();
  Napi::ArrayBuffer shared = info[2].As<Napi::ArrayBuffer>();
  const size_t total = shared.ByteLength();
  const size_t cap = total > protocol::ctrl::kBytes ? total - protocol::ctrl::kBytes : 0;
  if (cap == 0 || (cap & (cap - 1)) != 0 || cap > (size_t{1} << 31))
    throw Napi::RangeError::New(env, "ring capacity must be a power of two up to 2 GiB");
  shared_ref_ = Napi::Persistent(shared);
  cfg_.ctrl = static_cast<uint32_t*>(shared.Data());
  cfg_.ring = static_cast<uint8_t*>(shared.Data()) + protocol::ctrl::kBytes;
  cfg_.capacity = static_cast<uint32_t>(cap);
  cfg_.send_buffer_size = static_cast<int>(get_number(o, "sendBufferSize", 0));
  cfg_.write_timeout_ms = static_cast<uint32_t>(get_number(o, "writeTimeoutMs", 0));
  Napi::Value eo = o.Get("expectOwner");
  if (eo.IsObject()) {
    Napi::Object e = eo.As<Napi::Object>();
    // Validated in TypeScript: -1 (not checked) or an integer up to 2^32 - 2.
    cfg_.expect_uid = static_cast<int64_t>(get_number(e, "uid", -1));
    cfg_.expect_gid = static_cast<int64_t>(get_number(e, "gid", -1));
    cfg_.expect_mode = static_cast<int>(get_number(e, "mode", -1));
  }
  Napi::Value rc = o.Get("reconnect");
  if (rc.IsObject()) {
    Napi::Object r = rc.As<Napi::Object>();
    cfg_.reconnect.enabled = true;
    cfg_.reconnect.initial_delay_ms = static_cast<uint32_t>(get_number(r, "initialDelayMs", 100));
    cfg_.reconnect.max_delay_ms = static_cast<uint32_t>(get_number(r, "maxDelayMs", 5000));
    cfg_.reconnect.multiplier = get_number(r, "multiplier", 2);
    cfg_.reconnect.max_attempts = static_cast<uint32_t>(get_number(r, "maxAttempts", 0));
  } else {
    cfg_.reconnect.enabled = false;
  }
}

WriterWrap::~WriterWrap() { Shutdown(); }

void WriterWrap::CleanupHook(void* self) { static_cast<WriterWrap*>(self)->Shutdown(); }

void WriterWrap::Shutdown() {
  if (engine_) {
    engine_->close();  // joins: the ring is not touched after this
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
}

Napi::Value WriterWrap::Start(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (engine_) return env.Undefined();
  if (!info[0].IsFunction()) throw Napi::TypeError::New(env, "start(onEvent)");
  // Held only by the TSFN (released on stop): a persistent reference here
  // would keep the JS Writer, which holds this handle, alive forever.
  tsfn_ = Napi::ThreadSafeFunction::New(env, info[0].As<Napi::Function>(), "uds-ipc writer", 0, 1);
  tsfn_live_ = true;
  if (!refed_) tsfn_.Unref(env);
  napi_add_env_cleanup_hook(env_, CleanupHook, this);  // after the TSFN: runs before its teardown
  hook_ = true;
  Napi::ThreadSafeFunction tsfn = tsfn_;
  engine_ = std::make_unique<WriterEngine>(cfg_, [tsfn]() mutable { tsfn.NonBlockingCall(); });
  engine_->start();
  return env.Undefined();
}

void WriterWrap::Wake(const Napi::CallbackInfo&) {
  if (engine_) engine_->wake();
}

// sendDirect(frames, payload): the counts of what was appended up to the
// tail just published, so a send that empties the ring skips walking it;
// the ring is also rewound once empty, and the tail to continue from is
// returned (see WriterEngine::send_direct).
Napi::Value WriterWrap::SendDirect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!engine_) return env.Undefined();
  const uint32_t tail = engine_->send_direct(
      WriterEngine::Appended{info[0].As<Napi::Number>().Uint32Value(), info[1].As<Napi::Number>().Uint32Value()},
      true);
  return Napi::Number::New(env, static_cast<int32_t>(tail));  // int32, as JavaScript keeps positions
}

Napi::Value WriterWrap::Drain(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<WriterEvent> evs;
  if (engine_) evs = engine_->take_events();
  // Flat: [type, a, b, c] per event.
  Napi::Array out = Napi::Array::New(env, evs.size() * 4);
  uint32_t k = 0;
  for (const WriterEvent& e : evs) {
    out.Set(k++, static_cast<uint32_t>(e.type));
    switch (e.type) {
      case WriterEvent::kDisconnect:
      case WriterEvent::kError:
        out.Set(k++, error_to_object(env, e.error));
        out.Set(k++, env.Undefined());
        out.Set(k++, env.Undefined());
        break;
      case WriterEvent::kReconnecting:
        out.Set(k++, error_to_object(env, e.error));
        out.Set(k++, e.attempt);
        out.Set(k++, e.delay_ms);
        break;
      case WriterEvent::kStopped:
        out.Set(k++, static_cast<double>(e.discarded));
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

void WriterWrap::BeginStop(const Napi::CallbackInfo& info) {
  if (engine_) engine_->begin_stop(static_cast<int64_t>(info[0].As<Napi::Number>().Int64Value()));
}

void WriterWrap::Close(const Napi::CallbackInfo&) { Shutdown(); }

void WriterWrap::Ref(const Napi::CallbackInfo& info) {
  refed_ = true;
  if (tsfn_live_) tsfn_.Ref(info.Env());
}

void WriterWrap::Unref(const Napi::CallbackInfo& info) {
  refed_ = false;
  if (tsfn_live_) tsfn_.Unref(info.Env());
}

Napi::Value WriterWrap::Metrics(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  WriterMetrics m = engine_ ? engine_->metrics() : WriterMetrics{};
  Napi::Object o = Napi::Object::New(env);
  namespace p = protocol;
  double v[p::kWriterMetricCount];
  v[p::kSentFrames] = static_cast<double>(m.sent);
  v[p::kBytesSent] = static_cast<double>(m.bytes_sent);
  v[p::kSendCalls] = static_cast<double>(m.send_calls);
  v[p::kConnects] = static_cast<double>(m.connects);
  v[p::kDisconnects] = static_cast<double>(m.disconnects);
  v[p::kConnectAttempts] = static_cast<double>(m.connect_attempts);
  v[p::kUntrustedPeers] = static_cast<double>(m.untrusted_peers);
  v[p::kSendBufferSize] = static_cast<double>(m.send_buffer_size);
  for (int i = 0; i < p::kWriterMetricCount; ++i) {
    if (i == p::kConnected) o.Set(p::kWriterMetricNames[i], m.connected);
    else o.Set(p::kWriterMetricNames[i], v[i]);
  }
  return o;
}

}  // namespace udsipc
