// JS handle of a ReaderEngine: new ReaderHandle(path, options); listen(onReady);
// take() the items onReady announces. Translation only: the lifecycle is
// EngineHandle's, JS-thread polling JsThreadPoller's, a batch's way into
// JavaScript batch_export's.
#pragma once

#include <napi.h>

#include <memory>
#include <string>

#include "core/reader_engine.h"
#include "core/socket_util.h"
#include "engine_handle.h"
#include "batch_export.h"
#include "js_thread_poller.h"

namespace udsipc {

class ReaderWrap : public Napi::ObjectWrap<ReaderWrap>, EngineHandle<ReaderWrap>, TakeSource {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit ReaderWrap(const Napi::CallbackInfo& info);
  ~ReaderWrap() override;

 private:
  friend class EngineHandle<ReaderWrap>;

  Napi::Value Listen(const Napi::CallbackInfo& info);
  Napi::Value Take(const Napi::CallbackInfo& info);
  Napi::Value TakeWordsOf(const Napi::CallbackInfo& info);
  Napi::Value TakeValue(Napi::Env env) override;  // take()'s result
  void Idle(Napi::Env env) override { words_.Idle(env); }
  void Ack(const Napi::CallbackInfo& info);
  Napi::Value Reply(const Napi::CallbackInfo& info);
  void Authorize(const Napi::CallbackInfo& info);
  void BeginStop(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);  // -> messages never delivered
  void Ref(const Napi::CallbackInfo& info);
  void Unref(const Napi::CallbackInfo& info);
  Napi::Value Metrics(const Napi::CallbackInfo& info);
  void RemoveSocketFile(const Napi::CallbackInfo& info);  // process 'exit': synchronous cleanup

  uint64_t Shutdown();  // joins the IO thread, releases the TSFN; idempotent

  // All members: JS thread only (the IO thread sees the engine and a copy of
  // the TSFN handle, both thread-safe to use as documented).
  std::string path_;
  ReaderConfig cfg_;      // from the options; its listen_fd and socket file set by listen()
  bool listened_ = false;  // cfg_ was handed to the engine
  ListenOptions listen_;
  int adopt_fd_ = -1;     // a listening fd handed over (systemd), instead of binding
  dev_t sock_dev_ = 0;    // the socket file listen() created (0/0: none, e.g. systemd's)
  ino_t sock_ino_ = 0;
  JsThreadPoller poller_;  // detached before the engine goes
  std::unique_ptr<ReaderEngine> engine_;
  TakeWords words_;                 // take()'s fast path (batch_export.h)
  std::vector<ReaderItem> taken_;   // take()'s items, kept for its capacity (empty between calls)
};

}  // namespace udsipc
