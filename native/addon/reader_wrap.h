// JS handle of a ReaderEngine: new ReaderHandle(path, options); listen(onReady).
#pragma once

#include <napi.h>
#include <uv.h>

#include <memory>
#include <string>

#include "core/reader_engine.h"
#include "core/socket_util.h"

namespace udsipc {

class ReaderWrap : public Napi::ObjectWrap<ReaderWrap> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit ReaderWrap(const Napi::CallbackInfo& info);
  ~ReaderWrap() override;

 private:
  Napi::Value Listen(const Napi::CallbackInfo& info);
  Napi::Value Drain(const Napi::CallbackInfo& info);
  void Ack(const Napi::CallbackInfo& info);
  void Authorize(const Napi::CallbackInfo& info);
  void BeginStop(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);  // -> messages never delivered
  void Ref(const Napi::CallbackInfo& info);
  void Unref(const Napi::CallbackInfo& info);
  Napi::Value Metrics(const Napi::CallbackInfo& info);
  void RemoveSocketFile(const Napi::CallbackInfo& info);  // process 'exit': synchronous cleanup

  static void CleanupHook(void* self);
  static void OnPoll(uv_poll_t* h, int status, int events);
  void StartPolling();
  void ClosePoll();
  void CallOnReady();  // JS thread, outside JS: runs onReady now (poll path)
  uint64_t Shutdown();  // joins the IO thread, releases the TSFN; idempotent

  // All members: JS thread only (the IO thread sees the engine and a copy of
  // the TSFN handle, both thread-safe to use as documented).
  napi_env env_;
  std::string path_;
  AssemblerConfig asm_cfg_;
  uint64_t max_pending_ = 0;
  uint32_t inactivity_ms_ = 0;
  uint32_t frame_timeout_ms_ = 30000;
  ListenOptions listen_;
  int adopt_fd_ = -1;  // a listening fd handed over (systemd), instead of binding
  dev_t sock_dev_ = 0;  // the socket file listen() created (0/0: none, e.g. systemd's)
  ino_t sock_ino_ = 0;
  std::vector<uint32_t> allow_uids_, allow_gids_;
  bool hold_for_authorize_ = false;
  Napi::ThreadSafeFunction tsfn_;
  bool tsfn_live_ = false;
  bool hook_ = false;
  bool refed_ = true;
  bool consumer_polling_ = true;
  bool consumer_under_load_ = false;
  // For calling onReady straight from the poll callback: a weak reference
  // (the TSFN keeps the function alive) and an async context for
  // napi_make_callback (microtasks and ticks run after the call).
  napi_ref on_ready_ = nullptr;
  napi_async_context async_ctx_ = nullptr;
 public:
  // Watches the engine's epoll fd on this thread's libuv loop while the
  // engine lets JavaScript's thread poll (consumer mode). Never keeps the
  // loop alive (unref'd). Owned by its close callback once closed.
  struct Poll {
    uv_poll_t handle;
    ReaderWrap* owner;  // null once the wrap let go
    napi_async_cleanup_hook_handle hook = nullptr;  // spins the loop at env teardown until closed
  };

 private:
  Poll* poll_ = nullptr;
  std::unique_ptr<ReaderEngine> engine_;
};

}  // namespace udsipc
