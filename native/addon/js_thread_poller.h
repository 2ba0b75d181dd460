// JS-thread polling, the addon's half (the engine's half: ReaderEngine::
// js_thread_poll() and the notes above it). While the load is light, a
// ReaderEngine hands its event loop to JavaScript's thread: this watches the
// engine's epoll fd with a uv_poll on the thread's libuv loop and, each time
// it is readable, runs a round of the engine's loop right there and calls
// onReady at once if the round brought items (no trip through the TSFN's
// async handle: a message wakes one thread, not two). When the engine wants
// its loop back, js_thread_poll() says so and the watch stops until the
// engine asks again (ReaderWrap's take() sees take_poll_request() and calls
// Watch()).
//
// The uv_poll never keeps the loop alive (unref'd); the TSFN does that. All
// of it runs on JavaScript's thread.
#pragma once

#include <napi.h>
#include <uv.h>

#include <functional>

#include "batch_export.h"
#include "core/reader_engine.h"

namespace udsipc {

class JsThreadPoller {
 public:
  JsThreadPoller() = default;
  ~JsThreadPoller() { Detach(); }
  JsThreadPoller(const JsThreadPoller&) = delete;
  JsThreadPoller& operator=(const JsThreadPoller&) = delete;

  // The loop of env's thread, or null if N-API cannot give it (then the
  // engine must not hand its loop over).
  static uv_loop_t* LoopOf(napi_env env);

  // Prepares to watch engine->poll_fd() on `loop` (not yet watching: see
  // Watch()). `on_ready` is called when a round brought items, with one
  // argument: source->TakeValue() (the handle's take() result, taken here
  // so that JavaScript need not call back for it), and source->Idle()
  // after it; `fallback` when it cannot be called directly. Throws a JS
  // Error if libuv refuses the fd. The engine and the source must outlive
  // Detach().
  void Attach(Napi::Env env, uv_loop_t* loop, Napi::Function on_ready, ReaderEngine* engine,
              std::function<void()> fallback, TakeSource* source);

  // The engine asked for polling: watch its fd (no-op if watching already
  // or not attached).
  void Watch();

  // For good: no callback runs after this (also from within onReady).
  // Idempotent. The uv_poll closes asynchronously; its memory goes with its
  // close callback, which an async cleanup hook waits for at env teardown.
  void Detach();

 private:
  // The uv_poll_t and a way back to its poller; owned by its close callback
  // once closing.
  struct Poll;
  static void OnPoll(uv_poll_t* h, int status, int events);
  static void Close(Poll* p);
  static void TeardownHook(napi_async_cleanup_hook_handle, void* poll);
  void CallOnReady();  // JS thread, outside JavaScript: runs onReady now

  napi_env env_ = nullptr;
  ReaderEngine* engine_ = nullptr;  // null once detached
  // onReady, weakly (the TSFN keeps the function alive), and an async
  // context for napi_make_callback (microtasks and ticks run after the call).
  napi_ref on_ready_ = nullptr;
  napi_async_context async_ctx_ = nullptr;
  std::function<void()> fallback_;
  TakeSource* source_ = nullptr;  // null once detached
  Poll* poll_ = nullptr;
};

}  // namespace udsipc
