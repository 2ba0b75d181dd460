#include "writer_wrap.h"

#include <errno.h>
#include <fcntl.h>

#include "batch_export.h"
#include "common.h"
#include "core/protocol.h"
#include "js_thread_poller.h"

namespace udsipc {

Napi::Function WriterWrap::Init(Napi::Env env) {
  return DefineClass(env, "WriterHandle",
                     {
                         InstanceMethod<&WriterWrap::Start>("start"),
                         InstanceMethod<&WriterWrap::SendDirect>("sendDirect"),
                         InstanceMethod<&WriterWrap::AttachFds>("attachFds"),
                         InstanceMethod<&WriterWrap::Take>("take"),
                         InstanceMethod<&WriterWrap::TakeWordsOf>("takeWords"),
                         InstanceMethod<&WriterWrap::Ack>("ack"),
                         InstanceMethod<&WriterWrap::BeginStop>("beginStop"),
                         InstanceMethod<&WriterWrap::Close>("close"),
                         InstanceMethod<&WriterWrap::Ref>("ref"),
                         InstanceMethod<&WriterWrap::Unref>("unref"),
                         InstanceMethod<&WriterWrap::Metrics>("metrics"),
                     });
}

// new WriterHandle(path, options, shared): every option present (see
// number_option()); expectOwner undefined or {uid, gid, mode}, reconnect
// false or {initialDelayMs, maxDelayMs, multiplier, maxAttempts}, receive
// undefined (the writer never reads: one-way) or {maxMessageSize,
// maxPendingBytes} (onMessage).
WriterWrap::WriterWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<WriterWrap>(info), EngineHandle(info.Env()) {
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
  cfg_.send_buffer_size = static_cast<int>(number_option(o, "sendBufferSize"));
  cfg_.type = socket_type(string_option(o, "type"));
  cfg_.write_timeout_ms = static_cast<uint32_t>(number_option(o, "writeTimeoutMs"));
  // delivery: 'acked' (validated in TypeScript), with session: 32 hex digits ('' otherwise).
  const bool acked = string_option(o, "delivery") == "acked";
  cfg_.handshake_timeout_ms = static_cast<uint32_t>(number_option(o, "handshakeTimeoutMs"));
  const std::string hex = string_option(o, "session");
  if (acked) {
    cfg_.acked = true;
    if (hex.size() != 2 * cfg_.session.size() || hex.find_first_not_of("0123456789abcdef") != std::string::npos)
      throw Napi::TypeError::New(env, "option \"session\" must be 32 hex digits");
    for (size_t i = 0; i < cfg_.session.size(); ++i)
      cfg_.session[i] = static_cast<uint8_t>(std::stoul(hex.substr(2 * i, 2), nullptr, 16));
  }
  Napi::Value eo = o.Get("expectOwner");
  if (!eo.IsUndefined()) {
    if (!eo.IsObject()) throw Napi::TypeError::New(env, "option \"expectOwner\" must be an object or undefined");
    Napi::Object e = eo.As<Napi::Object>();
    // Validated in TypeScript: -1 (not checked) or an integer up to 2^32 - 2.
    cfg_.expect_uid = static_cast<int64_t>(number_option(e, "uid"));
    cfg_.expect_gid = static_cast<int64_t>(number_option(e, "gid"));
    cfg_.expect_mode = static_cast<int>(number_option(e, "mode"));
  }
  Napi::Value rv = o.Get("receive");
  if (!rv.IsUndefined()) {
    if (!rv.IsObject()) throw Napi::TypeError::New(env, "option \"receive\" must be an object or undefined");
    Napi::Object r = rv.As<Napi::Object>();
    cfg_.receive = true;
    cfg_.assembler.max_message_size = static_cast<uint64_t>(number_option(r, "maxMessageSize"));
    cfg_.max_pending_bytes = static_cast<uint64_t>(number_option(r, "maxPendingBytes"));
    accept_fds_ = bool_option(r, "acceptFds");
    cfg_.accept_fds = accept_fds_;  // otherwise the socket refuses them (SO_PASSRIGHTS off)
    max_pending_fds_ = static_cast<uint32_t>(number_option(r, "maxPendingFds"));
  }
  Napi::Value rc = o.Get("reconnect");
  if (rc.IsObject()) {
    Napi::Object r = rc.As<Napi::Object>();
    cfg_.reconnect.enabled = true;
    cfg_.reconnect.initial_delay_ms = static_cast<uint32_t>(number_option(r, "initialDelayMs"));
    cfg_.reconnect.max_delay_ms = static_cast<uint32_t>(number_option(r, "maxDelayMs"));
    cfg_.reconnect.multiplier = number_option(r, "multiplier");
    cfg_.reconnect.max_attempts = static_cast<uint32_t>(number_option(r, "maxAttempts"));
  } else if (rc.IsBoolean() && !rc.As<Napi::Boolean>().Value()) {
    cfg_.reconnect.enabled = false;
  } else {
    throw Napi::TypeError::New(env, "option \"reconnect\" must be false or an object");
  }
  shared_ref_ = Napi::Persistent(shared);
  cfg_.ctrl = static_cast<uint32_t*>(shared.Data());
  cfg_.ring = static_cast<uint8_t*>(shared.Data()) + protocol::ctrl::kBytes;
  cfg_.fds = &fds_;
  cfg_.capacity = static_cast<uint32_t>(cap);
}

WriterWrap::~WriterWrap() { Shutdown(); }

void WriterWrap::Shutdown() {
  receiver_.Detach();  // nothing is polled or called any more; before the engine goes
  if (engine_) {
    engine_->close();  // joins: the ring is not touched after this
    engine_.reset();
  }
  fds_.clear();  // what was not sent by now never will be
  ReleaseTsfn();
}

// start(onEvent): connects and starts sending; onEvent is called whenever
// take() has something.
Napi::Value WriterWrap::Start(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (engine_) return env.Undefined();
  if (!info[0].IsFunction()) throw Napi::TypeError::New(env, "start(onEvent)");
  // Replies are read on this thread when we can watch a socket here.
  uv_loop_t* loop = cfg_.receive ? JsThreadPoller::LoopOf(env) : nullptr;
  cfg_.receive_on_consumer = loop != nullptr;
  engine_ = std::make_unique<WriterEngine>(cfg_, StartTsfn(env, info[0].As<Napi::Function>(), "uds-ipc writer"));
  if (loop) {
    receiver_.Attach(env, loop, info[0].As<Napi::Function>(), engine_.get(), cfg_.assembler, cfg_.max_pending_bytes,
                     accept_fds_, max_pending_fds_, [this] { CallThroughTsfn(); }, this);
  }
  engine_->start();
  return env.Undefined();
}

// sendDirect(frames, payload): only after JavaScript swapped kSleep kIdle ->
// kProducerSends. The counts are those of what was appended up to the tail
// just published, so a send that empties the ring skips walking it; the
// ring is also rewound once empty, and the tail to continue from is
// returned (see WriterEngine::send_direct).
// attachFds(start, end, fds: Int32Array): the frame about to be written at
// ring span [start, end) (positions mod 2^32, as int32) carries dups of
// `fds`, made here with F_DUPFD_CLOEXEC: the caller may close its own once
// this returns. Throws (nothing attached) if one is not an open descriptor
// or none can be made: {code, errno, syscall} as the other native errors.
void WriterWrap::AttachFds(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const uint32_t start = static_cast<uint32_t>(info[0].As<Napi::Number>().Int64Value());
  const uint32_t end = static_cast<uint32_t>(info[1].As<Napi::Number>().Int64Value());
  std::vector<UniqueFd> dups = dup_fds(env, info[2].As<Napi::Int32Array>());
  fds_.push(start, end, std::move(dups));
}

Napi::Value WriterWrap::SendDirect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!engine_) return env.Undefined();
  const uint32_t tail = engine_->send_direct(
      WriterEngine::Appended{info[0].As<Napi::Number>().Uint32Value(), info[1].As<Napi::Number>().Uint32Value()},
      true);
  return Napi::Number::New(env, static_cast<int32_t>(tail));  // int32, as JavaScript keeps positions
}

namespace {

// WriterHandle.take()'s flat array: protocol::kEventSlots values per event.
struct EventWriter {
  static_assert(protocol::kEventSlots == 4, "event(): [tag, a, b, c]");
  Napi::Array out;
  uint32_t k = 0;
  void event(WriterEvent::Type tag, Napi::Value a, Napi::Value b, Napi::Value c) {
    out.Set(k++, static_cast<uint32_t>(tag));
    out.Set(k++, a);
    out.Set(k++, b);
    out.Set(k++, c);
  }
};

// {pid, uid, gid}: uid_t/gid_t bits in an int, ids >= 2^31 as the unsigned
// numbers they are (as the reader reports its peers).
Napi::Object credentials(Napi::Env env, const PeerCred& cred) {
  Napi::Object c = Napi::Object::New(env);
  c.Set("pid", cred.pid);
  c.Set("uid", cred.uid == -1 ? -1.0 : static_cast<double>(static_cast<uint32_t>(cred.uid)));
  c.Set("gid", cred.gid == -1 ? -1.0 : static_cast<double>(static_cast<uint32_t>(cred.gid)));
  return c;
}

}  // namespace

// take(): every event since the last call, as [tag, a, b, c, ...] (protocol.h).
// Receiving on this thread, the batches the receiver cut come first (their
// connection's CONNECT went out with an earlier take()), and every end of a
// connection (DISCONNECT, STOPPED, or a new CONNECT) first reads the last
// connection to EOF, so that its batches precede it.
//
// Exactly one plain small batch and no other event (once takeWords() was
// called): its region alone, with [0, offsets entries, payload bytes] in
// the take words.
Napi::Value WriterWrap::Take(const Napi::CallbackInfo& info) { return TakeValue(info.Env()); }

Napi::Value WriterWrap::TakeValue(Napi::Env env) {
  std::vector<WriterEvent> evs;
  if (engine_) evs = engine_->take_events();
  const bool local = receiver_.attached();
  if (double* w = words_.data()) {
    Batch* lone = nullptr;
    if (local && evs.empty()) lone = receiver_.LoneBatch();
    else if (!local && evs.size() == 1 && evs[0].type == WriterEvent::kBatch) lone = &evs[0].batch;
    if (lone && plain_small(*lone)) {
      w[0] = 0;
      w[1] = static_cast<double>(lone->offsets.size());
      w[2] = static_cast<double>(lone->payload_bytes);
      Napi::Value region = export_plain_small(env, *lone, words_);
      std::vector<uint32_t> offsets = std::move(lone->offsets);
      if (local) {
        receiver_.TakeBatches();  // that one batch: its slab reference goes (the bytes were copied)
        receiver_.RecycleOffsets(std::move(offsets));
      } else if (engine_) {
        engine_->recycle_offsets(std::move(offsets));
      }
      return region;
    }
  }
  EventWriter w{Napi::Array::New(env, local ? 0 : evs.size() * protocol::kEventSlots)};
  const Napi::Value none = env.Undefined();
  auto batch = [&](Batch& b) {
    if (!b.fds.empty()) w.event(static_cast<WriterEvent::Type>(protocol::kEventFds), export_fds(env, b), none, none);
    ExportedBatch x = export_batch(env, b);
    w.event(WriterEvent::kBatch, x.region, x.offsets, Napi::Number::New(env, static_cast<double>(b.payload_bytes)));
  };
  auto flush_local = [&] {
    std::vector<Batch> bs = receiver_.TakeBatches();
    for (Batch& b : bs) {
      batch(b);
      receiver_.RecycleOffsets(std::move(b.offsets));  // copied out either way
    }
  };
  if (local) flush_local();
  for (WriterEvent& e : evs) {
    if (local && (e.type == WriterEvent::kConnect || e.type == WriterEvent::kDisconnect ||
                  e.type == WriterEvent::kStopped)) {
      receiver_.Finish();
      flush_local();
      // Replies that end left unread beyond the end cap: reported here, before
      // the event that ends the connection (even STOPPED).
      CoreError dropped = receiver_.TakeDropReport();
      if (dropped) w.event(WriterEvent::kError, error_to_object(env, dropped), none, none);
      if (e.type == WriterEvent::kDisconnect && engine_) engine_->consumer_finished();
    }
    switch (e.type) {
      case WriterEvent::kBatch: {
        batch(e.batch);
        // Copied out either way: the table goes back for the next batch.
        if (engine_) engine_->recycle_offsets(std::move(e.batch.offsets));
        break;
      }
      case WriterEvent::kConnect:
        // a: the listening process's {pid, uid, gid}; b: the connection's id.
        w.event(e.type, credentials(env, e.cred), Napi::Number::New(env, e.conn_id), none);
        if (local) receiver_.Open(std::move(e.dup), e.conn_id);
        break;
      case WriterEvent::kDisconnect:
        // b: frames fully sent since start when the connection ended.
        w.event(e.type, error_to_object(env, e.error), Napi::Number::New(env, static_cast<double>(e.sent)), none);
        break;
      case WriterEvent::kError:
        w.event(e.type, error_to_object(env, e.error), none, none);
        break;
      case WriterEvent::kReconnecting:
        w.event(e.type, error_to_object(env, e.error), Napi::Number::New(env, e.attempt),
                Napi::Number::New(env, e.delay_ms));
        break;
      case WriterEvent::kStopped:
        w.event(e.type, Napi::Number::New(env, static_cast<double>(e.discarded)), none, none);
        break;
      case WriterEvent::kNotify:
        w.event(e.type, none, none, none);
        break;
    }
  }
  return w.out;
}

// takeWords(): the Float64Array in which take() returns a lone batch's
// slots (see Take()).
Napi::Value WriterWrap::TakeWordsOf(const Napi::CallbackInfo& info) { return words_.Get(info.Env()); }

// ack(bytes[, region[, table]]): received batches are done with, `bytes`
// being the sum of their lengths (acked in the order they were taken). A
// region or table passed in is detached (every view of it becomes empty) so
// that its slab reference goes now rather than at some later collection.
void WriterWrap::Ack(const Napi::CallbackInfo& info) {
  for (size_t i = 1; i < 3 && i < info.Length(); ++i) {
    if (info[i].IsArrayBuffer()) napi_detach_arraybuffer(info.Env(), info[i]);
  }
  if (!engine_ || info.Length() < 1 || !info[0].IsNumber()) return;
  const auto bytes = static_cast<uint64_t>(info[0].As<Napi::Number>().DoubleValue());
  if (receiver_.attached()) receiver_.Ack(bytes);
  else engine_->ack(bytes);
}

// beginStop(timeoutMs): send what is queued for up to timeoutMs, then stop
// (event STOPPED).
void WriterWrap::BeginStop(const Napi::CallbackInfo& info) {
  if (engine_) engine_->begin_stop(static_cast<int64_t>(info[0].As<Napi::Number>().Int64Value()));
}

void WriterWrap::Close(const Napi::CallbackInfo&) { Shutdown(); }

void WriterWrap::Ref(const Napi::CallbackInfo& info) { RefTsfn(info.Env()); }

void WriterWrap::Unref(const Napi::CallbackInfo& info) { UnrefTsfn(info.Env()); }

Napi::Value WriterWrap::Metrics(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  WriterMetrics m = engine_ ? engine_->metrics() : WriterMetrics{};
  m.fds_buffered = fds_.held();
  // Reads on this thread count as reads (also after the engine is gone).
  m.read_calls += receiver_.reads();
  m.bytes_read += receiver_.bytes_read();
  m.pauses += receiver_.pauses();
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
  v[p::kWriterReadCalls] = static_cast<double>(m.read_calls);
  v[p::kWriterBytesRead] = static_cast<double>(m.bytes_read);
  v[p::kWriterPauses] = static_cast<double>(m.pauses);
  v[p::kWriterJsThreadReads] = static_cast<double>(receiver_.reads());
  v[p::kFdsSent] = static_cast<double>(m.fds_sent);
  v[p::kFdsBuffered] = static_cast<double>(m.fds_buffered);
  v[p::kWriterFdsReceived] = static_cast<double>(receiver_.fds_received());
  v[p::kWriterFdsRefused] = static_cast<double>(receiver_.fds_refused());
  v[p::kWriterAcked] = static_cast<double>(m.acked);
  v[p::kResent] = static_cast<double>(m.resent);
  v[p::kWriterReplyBytesDropped] = static_cast<double>(m.reply_bytes_dropped + receiver_.reply_bytes_dropped());
  for (int i = 0; i < p::kWriterMetricCount; ++i) {
    if (i == p::kConnected) o.Set(p::kWriterMetricNames[i], m.connected);
    else o.Set(p::kWriterMetricNames[i], v[i]);
  }
  return o;
}

}  // namespace udsipc
