// JS handle of a WriterEngine: new WriterHandle(path, options, shared);
// start(onEvent); take() the events onEvent announces. `shared` is an
// ArrayBuffer holding the control block (protocol::ctrl::kBytes) followed by
// the frame ring (a power of two bytes); JavaScript appends frames there and
// hands the send over with sendDirect() (see writer_engine.h). With the
// `receive` option (onMessage) take() also returns BATCH events, exported as
// a reader's batches are (batch_export), and ack() gives their memory back;
// those are read on JavaScript's thread whenever N-API gives us its libuv
// loop (JsReceiver), else on the IO thread.
// Translation only: the lifecycle is EngineHandle's.
#pragma once

#include <napi.h>

#include <memory>
#include <string>

#include "core/writer_engine.h"
#include "batch_export.h"
#include "engine_handle.h"
#include "js_receiver.h"

namespace udsipc {

class WriterWrap : public Napi::ObjectWrap<WriterWrap>, EngineHandle<WriterWrap>, TakeSource {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit WriterWrap(const Napi::CallbackInfo& info);
  ~WriterWrap() override;

 private:
  friend class EngineHandle<WriterWrap>;

  Napi::Value Start(const Napi::CallbackInfo& info);
  Napi::Value SendDirect(const Napi::CallbackInfo& info);
  void AttachFds(const Napi::CallbackInfo& info);
  Napi::Value Take(const Napi::CallbackInfo& info);
  Napi::Value TakeWordsOf(const Napi::CallbackInfo& info);
  Napi::Value TakeValue(Napi::Env env) override;  // take()'s result
  void Idle(Napi::Env env) override { words_.Idle(env); }
  void Ack(const Napi::CallbackInfo& info);
  void BeginStop(const Napi::CallbackInfo& info);
  void Close(const Napi::CallbackInfo& info);
  void Ref(const Napi::CallbackInfo& info);
  void Unref(const Napi::CallbackInfo& info);
  Napi::Value Metrics(const Napi::CallbackInfo& info);

  void Shutdown();  // joins the IO thread, releases the TSFN; idempotent

  // All members: JS thread only. The IO thread uses the engine, the ring and
  // control block memory (kept alive by shared_ref_ until after the join) and
  // a copy of the TSFN handle.
  WriterConfig cfg_;
  Napi::Reference<Napi::ArrayBuffer> shared_ref_;
  // Descriptors of queued frames (attachFds()), from before start() on;
  // the engine sends and releases them (cfg_.fds). JS thread, and the
  // engine's send-state holder (it is internally locked).
  FdOutbox fds_;
  // Receiving: the reader's descriptors (read by receiver_ only).
  bool accept_fds_ = false;
  uint32_t max_pending_fds_ = 0;
  std::unique_ptr<WriterEngine> engine_;
  // Receiving on this thread (cfg_.receive_on_consumer; see js_receiver.h).
  JsReceiver receiver_;
  TakeWords words_;  // take()'s fast path (batch_export.h)
};

}  // namespace udsipc
