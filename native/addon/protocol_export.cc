#include "protocol_export.h"

#include "core/protocol.h"

namespace udsipc {

namespace {

Napi::Object frozen(Napi::Object o) {
  o.Freeze();
  return o;
}

template <size_t N>
Napi::Array names(Napi::Env env, const char* const (&list)[N]) {
  Napi::Array a = Napi::Array::New(env, N);
  for (size_t i = 0; i < N; ++i) a.Set(static_cast<uint32_t>(i), list[i]);
  a.Freeze();
  return a;
}

}  // namespace

Napi::Object export_protocol(Napi::Env env) {
  namespace p = protocol;
  Napi::Object o = Napi::Object::New(env);
  o.Set("version", p::kVersion);

  Napi::Object c = Napi::Object::New(env);
  c.Set("TAIL", p::ctrl::kTail);
  c.Set("HEAD", p::ctrl::kHead);
  c.Set("SENT", p::ctrl::kSent);
  c.Set("SLEEP", p::ctrl::kSleep);
  c.Set("NOTIFY_ARMED", p::ctrl::kNotifyArmed);
  c.Set("NOTIFY_HEAD", p::ctrl::kNotifyHead);
  c.Set("NOTIFY_SENT", p::ctrl::kNotifySent);
  c.Set("ACK_HEAD", p::ctrl::kAckHead);
  c.Set("ACKED", p::ctrl::kAcked);
  c.Set("ACK_NOTIFY_ARMED", p::ctrl::kAckNotifyArmed);
  c.Set("ACK_NOTIFY_HEAD", p::ctrl::kAckNotifyHead);
  c.Set("ACK_NOTIFY_SENT", p::ctrl::kAckNotifySent);
  c.Set("WORDS", p::ctrl::kWords);
  c.Set("BYTES", static_cast<double>(p::ctrl::kBytes));
  o.Set("ctrl", frozen(c));

  Napi::Object turn = Napi::Object::New(env);
  turn.Set("IO_THREAD_SENDS", static_cast<uint32_t>(p::kIoThreadSends));
  turn.Set("IDLE", static_cast<uint32_t>(p::kIdle));
  turn.Set("PRODUCER_SENDS", static_cast<uint32_t>(p::kProducerSends));
  o.Set("sendTurn", frozen(turn));

  Napi::Object notify = Napi::Object::New(env);
  notify.Set("DISARMED", static_cast<uint32_t>(p::kDisarmed));
  notify.Set("ARMED", static_cast<uint32_t>(p::kArmed));
  o.Set("notify", frozen(notify));

  Napi::Object item = Napi::Object::New(env);
  item.Set("BATCH", static_cast<uint32_t>(p::kItemBatch));
  item.Set("OPEN", static_cast<uint32_t>(p::kItemOpen));
  item.Set("CLOSE", static_cast<uint32_t>(p::kItemClose));
  item.Set("ERROR", static_cast<uint32_t>(p::kItemError));
  item.Set("STOPPED", static_cast<uint32_t>(p::kItemStopped));
  item.Set("REJECTED", static_cast<uint32_t>(p::kItemRejected));
  item.Set("DRAINED", static_cast<uint32_t>(p::kItemDrained));
  item.Set("FDS", static_cast<uint32_t>(p::kItemFds));
  item.Set("CREDS", static_cast<uint32_t>(p::kItemCreds));
  item.Set("SESSION", static_cast<uint32_t>(p::kItemSession));
  item.Set("SEQ", static_cast<uint32_t>(p::kItemSeq));
  item.Set("SLOTS", p::kItemSlots);
  item.Set("COPY_BATCH_UP_TO", static_cast<double>(p::kCopyBatchUpTo));
  o.Set("item", frozen(item));

  Napi::Object event = Napi::Object::New(env);
  event.Set("CONNECT", static_cast<uint32_t>(p::kEventConnect));
  event.Set("DISCONNECT", static_cast<uint32_t>(p::kEventDisconnect));
  event.Set("RECONNECTING", static_cast<uint32_t>(p::kEventReconnecting));
  event.Set("ERROR", static_cast<uint32_t>(p::kEventError));
  event.Set("NOTIFY", static_cast<uint32_t>(p::kEventNotify));
  event.Set("STOPPED", static_cast<uint32_t>(p::kEventStopped));
  event.Set("BATCH", static_cast<uint32_t>(p::kEventBatch));
  event.Set("FDS", static_cast<uint32_t>(p::kEventFds));
  event.Set("SLOTS", p::kEventSlots);
  o.Set("event", frozen(event));

  Napi::Object metrics = Napi::Object::New(env);
  metrics.Set("reader", names(env, p::kReaderMetricNames));
  metrics.Set("writer", names(env, p::kWriterMetricNames));
  o.Set("metrics", frozen(metrics));

  Napi::Object d = Napi::Object::New(env);
  d.Set("maxMessageSize", static_cast<double>(p::defaults::kMaxMessageSize));
  d.Set("slabSize", static_cast<double>(p::defaults::kSlabSize));
  d.Set("maxPendingBytes", static_cast<double>(p::defaults::kMaxPendingBytes));
  d.Set("frameTimeoutMs", p::defaults::kFrameTimeoutMs);
  d.Set("backlog", p::defaults::kBacklog);
  d.Set("reconnectInitialDelayMs", p::defaults::kReconnectInitialDelayMs);
  d.Set("reconnectMaxDelayMs", p::defaults::kReconnectMaxDelayMs);
  d.Set("reconnectMultiplier", p::defaults::kReconnectMultiplier);
  d.Set("maxReplyBytes", static_cast<double>(p::defaults::kMaxReplyBytes));
  d.Set("replyTimeoutMs", p::defaults::kReplyTimeoutMs);
  d.Set("maxPendingFds", p::defaults::kMaxPendingFds);
  d.Set("maxBufferedFds", p::defaults::kMaxBufferedFds);
  d.Set("maxFdsPerMessage", protocol::limits::kMaxFdsPerMessage);
  d.Set("handshakeTimeoutMs", p::defaults::kHandshakeTimeoutMs);
  d.Set("maxSessions", p::defaults::kMaxSessions);
  o.Set("defaults", frozen(d));

  Napi::Object l = Napi::Object::New(env);
  l.Set("maxMessageSize", static_cast<double>(p::limits::kMaxMessageSize));
  l.Set("minSlabSize", static_cast<double>(p::limits::kMinSlabSize));
  l.Set("maxSlabSize", static_cast<double>(p::limits::kMaxSlabSize));
  l.Set("maxPathBytes", static_cast<double>(p::limits::kMaxPathBytes));
  o.Set("limits", frozen(l));

  return frozen(o);
}

}  // namespace udsipc
