#include "reader_wrap.h"

#include <cstring>

#include "batch_export.h"
#include "common.h"
#include "core/protocol.h"

namespace udsipc {

Napi::Function ReaderWrap::Init(Napi::Env env) {
  return DefineClass(env, "ReaderHandle",
                     {
                         InstanceMethod<&ReaderWrap::Listen>("listen"),
                         InstanceMethod<&ReaderWrap::Take>("take"),
                         InstanceMethod<&ReaderWrap::TakeWordsOf>("takeWords"),
                         InstanceMethod<&ReaderWrap::Ack>("ack"),
                         InstanceMethod<&ReaderWrap::Reply>("reply"),
                         InstanceMethod<&ReaderWrap::Authorize>("authorize"),
                         InstanceMethod<&ReaderWrap::BeginStop>("beginStop"),
                         InstanceMethod<&ReaderWrap::Close>("close"),
                         InstanceMethod<&ReaderWrap::Ref>("ref"),
                         InstanceMethod<&ReaderWrap::Unref>("unref"),
                         InstanceMethod<&ReaderWrap::Metrics>("metrics"),
                         InstanceMethod<&ReaderWrap::RemoveSocketFile>("removeSocketFile"),
                     });
}

// new ReaderHandle(path, options): every option present (see number_option()).
ReaderWrap::ReaderWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ReaderWrap>(info), EngineHandle(info.Env()) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsObject())
    throw Napi::TypeError::New(env, "ReaderHandle(path, options)");
  path_ = info[0].As<Napi::String>().Utf8Value();
  Napi::Object o = info[1].As<Napi::Object>();
  cfg_.assembler.max_message_size = static_cast<uint64_t>(number_option(o, "maxMessageSize"));
  cfg_.assembler.slab_size = static_cast<size_t>(number_option(o, "slabSize"));
  cfg_.max_pending_bytes = static_cast<uint64_t>(number_option(o, "maxPendingBytes"));
  cfg_.inactivity_timeout_ms = static_cast<uint32_t>(number_option(o, "inactivityTimeoutMs"));
  cfg_.frame_timeout_ms = static_cast<uint32_t>(number_option(o, "frameTimeoutMs"));
  cfg_.reply_timeout_ms = static_cast<uint32_t>(number_option(o, "replyTimeoutMs"));
  cfg_.accept_fds = bool_option(o, "acceptFds");
  cfg_.max_pending_fds = static_cast<uint32_t>(number_option(o, "maxPendingFds"));
  cfg_.allow_uids = id_list_option(o, "allowUids");
  cfg_.allow_gids = id_list_option(o, "allowGids");
  cfg_.hold_for_authorize = bool_option(o, "authorize");
  cfg_.js_thread_polling = bool_option(o, "jsThreadPolling");
  cfg_.js_thread_under_load = bool_option(o, "jsThreadUnderLoad");
  listen_.backlog = static_cast<int>(number_option(o, "backlog"));
  listen_.mode = static_cast<int>(number_option(o, "mode"));
  listen_.uid = id_option(o, "uid");
  listen_.gid = id_option(o, "gid");
  listen_.dir_mode = static_cast<int>(number_option(o, "directoryMode"));
  adopt_fd_ = static_cast<int>(number_option(o, "fd"));
  cfg_.type = listen_.type = socket_type(string_option(o, "type"));
  cfg_.dgram_credentials = bool_option(o, "passCredentials");
  cfg_.acked = string_option(o, "delivery") == "acked";
  cfg_.require_acked = bool_option(o, "requireAcked");
  cfg_.max_sessions = static_cast<uint32_t>(number_option(o, "maxSessions"));
  // As ReaderEngine::start() sets it, but from before bind(): connections
  // that queue before the engine starts are covered too.
  listen_.pass_rights = cfg_.type == SOCK_DGRAM || !cfg_.accept_fds ? 0 : 1;
}

ReaderWrap::~ReaderWrap() { Shutdown(); }

uint64_t ReaderWrap::Shutdown() {
  poller_.Detach();  // no poll callback runs once the engine is gone
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
  ReleaseTsfn();
  return undelivered;
}

// Removes the socket file now if it is still the one listen() created (same
// device and inode, checked relative to its directory): for process.exit(),
// which ends the process without running environment cleanup hooks.
void ReaderWrap::RemoveSocketFile(const Napi::CallbackInfo&) {
  if (sock_ino_ != 0) unlink_if_same(path_, sock_dev_, sock_ino_);
  sock_ino_ = 0;
}

// listen(onReady): binds (or adopts options.fd) and starts the engine;
// onReady is called whenever take() has something: with no argument (then
// it calls take()), or, from the JS-thread poller, with what take() would
// have returned.
Napi::Value ReaderWrap::Listen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (engine_) return env.Undefined();
  if (listened_) throw Napi::Error::New(env, "listen() after close()");
  if (!info[0].IsFunction()) throw Napi::TypeError::New(env, "listen(onReady)");
  Listener l;
  if (adopt_fd_ >= 0) {
    // A listener handed over by the service manager: never ours to unlink.
    if (CoreError e = adopt_listening_fd(adopt_fd_)) throw_core_error(env, e);
    l.fd = UniqueFd(adopt_fd_);
    adopt_fd_ = -1;
  } else {
    l = listen_unix(path_, listen_);
    if (l.error) throw_core_error(env, l.error);
  }

  sock_dev_ = l.dev;
  sock_ino_ = l.ino;
  cfg_.listen_fd = std::move(l.fd);
  cfg_.path = l.ino ? path_ : "";
  cfg_.dev = l.dev;
  cfg_.ino = l.ino;
  uv_loop_t* loop = cfg_.js_thread_polling ? JsThreadPoller::LoopOf(env) : nullptr;
  cfg_.js_thread_polling = loop != nullptr;
  const bool polling = cfg_.js_thread_polling;

  std::function<void()> notify = StartTsfn(env, info[0].As<Napi::Function>(), "uds-ipc reader");
  listened_ = true;
  engine_ = std::make_unique<ReaderEngine>(std::move(cfg_), std::move(notify));
  if (polling) {
    poller_.Attach(env, loop, info[0].As<Napi::Function>(), engine_.get(), [this] { CallThroughTsfn(); }, this);
  }
  engine_->start();
  return env.Undefined();
}

namespace {

// ReaderHandle.take()'s flat array: protocol::kItemSlots values per item.
struct ItemWriter {
  static_assert(protocol::kItemSlots == 5, "item(): [tag, connId, a, b, c]");
  Napi::Array out;
  uint32_t k = 0;
  void item(ReaderItem::Type tag, uint32_t conn_id, Napi::Value a, Napi::Value b, Napi::Value c) {
    out.Set(k++, static_cast<uint32_t>(tag));
    out.Set(k++, conn_id);
    out.Set(k++, a);
    out.Set(k++, b);
    out.Set(k++, c);
  }
};

// {pid, uid, gid}: uid_t/gid_t bits in an int, ids >= 2^31 as the unsigned
// numbers they are.
Napi::Object credentials(Napi::Env env, const PeerCred& cred) {
  Napi::Object c = Napi::Object::New(env);
  c.Set("pid", cred.pid);
  c.Set("uid", cred.uid == -1 ? -1.0 : static_cast<double>(static_cast<uint32_t>(cred.uid)));
  c.Set("gid", cred.gid == -1 ? -1.0 : static_cast<double>(static_cast<uint32_t>(cred.gid)));
  return c;
}

}  // namespace

// takeWords(): the Float64Array in which take() returns a lone batch's
// slots (see Take()).
Napi::Value ReaderWrap::TakeWordsOf(const Napi::CallbackInfo& info) { return words_.Get(info.Env()); }

// take(): every item ready, as [tag, connId, a, b, c, ...] (protocol.h).
// Exactly one plain small batch and nothing else (once takeWords() was
// called): its region alone, with [connId, offsets entries, payload bytes]
// in the take words.
Napi::Value ReaderWrap::Take(const Napi::CallbackInfo& info) { return TakeValue(info.Env()); }

Napi::Value ReaderWrap::TakeValue(Napi::Env env) {
  // The items vector is taken_'s (its capacity, not a fresh allocation per
  // call) and goes back emptied on every way out.
  struct Recycle {
    std::vector<ReaderItem>& home;
    std::vector<ReaderItem> items;
    ~Recycle() {
      items.clear();
      home = std::move(items);
    }
  } r{taken_, std::move(taken_)};
  std::vector<ReaderItem>& items = r.items;
  if (engine_) {
    engine_->take(items);
    if (engine_->take_poll_request()) poller_.Watch();
  }
  if (items.size() == 1 && items[0].type == ReaderItem::kBatch && words_.data() && plain_small(items[0].batch)) {
    ReaderItem& it = items[0];
    double* w = words_.data();
    w[0] = it.conn_id;
    w[1] = static_cast<double>(it.batch.offsets.size());
    w[2] = static_cast<double>(it.batch.payload_bytes);
    Napi::Value region = export_plain_small(env, it.batch, words_);
    if (engine_) engine_->recycle_offsets(std::move(it.batch.offsets));
    return region;
  }
  ItemWriter w{Napi::Array::New(env, items.size() * protocol::kItemSlots)};
  const Napi::Value none = env.Undefined();
  for (ReaderItem& it : items) {
    switch (it.type) {
      case ReaderItem::kBatch: {
        if (!it.batch.fds.empty()) w.item(protocol::kItemFds, it.conn_id, export_fds(env, it.batch), none, none);
        if (!it.batch.creds.empty()) {
          Napi::Int32Array t = Napi::Int32Array::New(env, it.batch.creds.size());
          std::memcpy(t.Data(), it.batch.creds.data(), it.batch.creds.size() * sizeof(int32_t));
          w.item(protocol::kItemCreds, it.conn_id, t, none, none);
        }
        if (it.batch.acked) {
          w.item(protocol::kItemSeq, it.conn_id, Napi::Number::New(env, static_cast<double>(it.batch.first_seq)),
                 Napi::Number::New(env, static_cast<double>(it.batch.redelivered)), none);
        }
        ExportedBatch e = export_batch(env, it.batch);
        // Copied out either way: the table goes back for the next batch.
        if (engine_) engine_->recycle_offsets(std::move(it.batch.offsets));
        w.item(it.type, it.conn_id, e.region, e.offsets,
               Napi::Number::New(env, static_cast<double>(it.batch.payload_bytes)));
        break;
      }
      case ReaderItem::kOpen:
      case ReaderItem::kRejected:
        w.item(it.type, it.conn_id, credentials(env, it.cred), none, none);
        break;
      case ReaderItem::kClose:
        w.item(it.type, it.conn_id, it.error ? Napi::Value(error_to_object(env, it.error)) : none, none, none);
        break;
      case ReaderItem::kError:
        w.item(it.type, it.conn_id, error_to_object(env, it.error), none, none);
        break;
      case ReaderItem::kStopped:
        w.item(it.type, it.conn_id, none, none, none);
        break;
      case ReaderItem::kDrained:
        w.item(it.type, it.conn_id, Napi::Number::New(env, static_cast<double>(it.dropped)), none, none);
        break;
      case ReaderItem::kSession: {
        if (it.plain) {
          w.item(it.type, it.conn_id, none, none, none);
          break;
        }
        static const char* kHex = "0123456789abcdef";
        std::string hex;
        for (uint8_t b : it.session) {
          hex += kHex[b >> 4];
          hex += kHex[b & 15];
        }
        w.item(it.type, it.conn_id, Napi::String::New(env, hex), Napi::Number::New(env, static_cast<double>(it.first_seq)),
               Napi::Number::New(env, static_cast<double>(it.resent_below)));
        break;
      }
      case ReaderItem::Type::kItemFds:  // never queued: written above, with their batch
      case ReaderItem::Type::kItemCreds:
      case ReaderItem::Type::kItemSeq:
        break;
    }
  }
  return w.out;
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

// reply(connId, bytes: Uint8Array) -> bytes left queued for that connection
// (0: all sent), or -1 if it is closed. bytes holds whole frames; it is sent
// or copied before this returns. An empty array only asks the queued count.
Napi::Value ReaderWrap::Reply(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!engine_) return Napi::Number::New(env, -1);
  const uint32_t id = info[0].As<Napi::Number>().Uint32Value();
  Napi::Uint8Array a = info[1].As<Napi::Uint8Array>();
  if (info.Length() > 2 && info[2].IsTypedArray()) {
    // reply(connId, frame, fds): one frame that carries dups of fds.
    std::vector<UniqueFd> dups = dup_fds(env, info[2].As<Napi::Int32Array>());
    return Napi::Number::New(env, static_cast<double>(engine_->reply(id, a.Data(), a.ByteLength(), &dups)));
  }
  // reply(connId, bytes, undefined, length): the first `length` bytes (the
  // tick's buffer as it is, without a view made for it per hand-over).
  size_t len = a.ByteLength();
  if (info.Length() > 3 && info[3].IsNumber()) {
    const double n = info[3].As<Napi::Number>().DoubleValue();
    if (n >= 0 && n < static_cast<double>(len)) len = static_cast<size_t>(n);
  }
  return Napi::Number::New(env, static_cast<double>(engine_->reply(id, a.Data(), len)));
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

void ReaderWrap::Ref(const Napi::CallbackInfo& info) { RefTsfn(info.Env()); }

void ReaderWrap::Unref(const Napi::CallbackInfo& info) { UnrefTsfn(info.Env()); }

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
  v[p::kReplyBytesSent] = static_cast<double>(m.reply_bytes_sent);
  v[p::kReplySendCalls] = static_cast<double>(m.reply_send_calls);
  v[p::kReplyBytesDropped] = static_cast<double>(m.reply_bytes_dropped);
  v[p::kFdsReceived] = static_cast<double>(m.fds_received);
  v[p::kFdsRefused] = static_cast<double>(m.fds_refused);
  v[p::kReaderFdsSent] = static_cast<double>(m.fds_sent);
  v[p::kRejectedDatagrams] = static_cast<double>(m.rejected_datagrams);
  v[p::kReaderAcked] = static_cast<double>(m.acked);
  v[p::kDuplicatesDropped] = static_cast<double>(m.duplicates_dropped);
  v[p::kRedelivered] = static_cast<double>(m.redelivered);
  v[p::kPlainPeers] = static_cast<double>(m.plain_peers);
  Napi::Object o = Napi::Object::New(env);
  for (int i = 0; i < p::kReaderMetricCount; ++i) o.Set(p::kReaderMetricNames[i], v[i]);
  return o;
}

}  // namespace udsipc
