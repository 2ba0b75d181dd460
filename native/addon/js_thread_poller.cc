#include "js_thread_poller.h"

namespace udsipc {

struct JsThreadPoller::Poll {
  uv_poll_t handle;  // first: the callbacks get a pointer to it
  JsThreadPoller* owner = nullptr;  // null once detached
  napi_async_cleanup_hook_handle hook = nullptr;  // spins the loop at env teardown until closed
};

// Env teardown: close the handle and keep the loop turning until it is closed.
void JsThreadPoller::TeardownHook(napi_async_cleanup_hook_handle, void* poll) { Close(static_cast<Poll*>(poll)); }

void JsThreadPoller::Close(Poll* p) {
  uv_handle_t* h = reinterpret_cast<uv_handle_t*>(&p->handle);
  if (uv_is_closing(h)) return;
  uv_poll_stop(&p->handle);  // a no-op when not started
  uv_close(h, [](uv_handle_t* closed) {
    auto* poll = reinterpret_cast<Poll*>(closed);  // handle is the first member
    if (poll->hook) napi_remove_async_cleanup_hook(poll->hook);
    delete poll;
  });
}

uv_loop_t* JsThreadPoller::LoopOf(napi_env env) {
  uv_loop_t* loop = nullptr;
  return napi_get_uv_event_loop(env, &loop) == napi_ok ? loop : nullptr;
}

void JsThreadPoller::Attach(Napi::Env env, uv_loop_t* loop, Napi::Function on_ready, ReaderEngine* engine,
                            std::function<void()> fallback, TakeSource* source) {
  env_ = env;
  engine_ = engine;
  fallback_ = std::move(fallback);
  source_ = source;
  napi_create_reference(env, on_ready, 0, &on_ready_);
  if (napi_async_init(env, Napi::Object::New(env), Napi::String::New(env, "uds-ipc reader"), &async_ctx_) != napi_ok)
    async_ctx_ = nullptr;
  poll_ = new Poll{};
  poll_->owner = this;
  if (uv_poll_init(loop, &poll_->handle, engine->poll_fd()) != 0) {
    delete poll_;
    poll_ = nullptr;
    throw Napi::Error::New(env, "uv_poll_init failed");
  }
  uv_unref(reinterpret_cast<uv_handle_t*>(&poll_->handle));
  napi_add_async_cleanup_hook(env, TeardownHook, poll_, &poll_->hook);
}

void JsThreadPoller::Watch() {
  if (!poll_) return;
  const uv_handle_t* h = reinterpret_cast<const uv_handle_t*>(&poll_->handle);
  if (!uv_is_active(h) && !uv_is_closing(h)) uv_poll_start(&poll_->handle, UV_READABLE, OnPoll);
}

void JsThreadPoller::Detach() {
  engine_ = nullptr;
  if (poll_) {
    poll_->owner = nullptr;
    Close(poll_);
    poll_ = nullptr;
  }
  if (on_ready_) {
    napi_delete_reference(env_, on_ready_);
    on_ready_ = nullptr;
  }
  if (async_ctx_) {
    napi_async_destroy(env_, async_ctx_);
    async_ctx_ = nullptr;
  }
  fallback_ = nullptr;
  source_ = nullptr;
}

void JsThreadPoller::OnPoll(uv_poll_t* h, int, int) {
  JsThreadPoller* self = reinterpret_cast<Poll*>(h)->owner;
  bool items = false;
  // Keep polling only while the engine says the load is light; otherwise
  // its IO thread has the loop again and will ask for polling when idle.
  const bool keep = self && self->engine_ && self->engine_->js_thread_poll(&items);
  if (!keep) uv_poll_stop(h);
  // What was read is delivered now, without a trip through the TSFN's
  // async handle. JavaScript may stop the reader in there (Detach()): the
  // poller's state is not touched afterwards.
  if (items) self->CallOnReady();
}

void JsThreadPoller::CallOnReady() {
  call_on_ready(env_, on_ready_, async_ctx_, &source_, &fallback_);
}

}  // namespace udsipc
