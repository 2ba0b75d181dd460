// The lifecycle ReaderWrap and WriterWrap share: the thread-safe function
// through which an engine's IO thread wakes JavaScript, its ref/unref (a
// running handle keeps the event loop alive like a net.Server unless
// unref()ed), and the environment cleanup hook that shuts the engine down
// when its environment (a worker, or the main thread at exit) goes away.
//
// Derived (CRTP) provides Shutdown(): joins the engine's IO thread, then
// calls ReleaseTsfn(); idempotent. Everything here runs on JavaScript's
// thread; the IO thread only ever holds a copy of the TSFN handle (the
// engine's notify callback), whose NonBlockingCall is thread-safe.
#pragma once

#include <napi.h>

#include <functional>

namespace udsipc {

template <typename Derived>
class EngineHandle {
 protected:
  explicit EngineHandle(napi_env env) : env_(env) {}
  ~EngineHandle() = default;  // Derived's destructor calls Shutdown()

  // Creates the TSFN that calls `fn` (no arguments), unref()ed if unref()
  // came first, and registers the cleanup hook. The hook is registered after
  // the TSFN: hooks run in reverse order, so ours joins the IO thread before
  // Node tears the TSFN down. Returns the engine's notify callback.
  std::function<void()> StartTsfn(Napi::Env env, Napi::Function fn, const char* name) {
    // The callback is held only by the TSFN (released on stop), never by a
    // persistent reference of ours: that would keep the JS object that holds
    // this handle alive forever.
    tsfn_ = Napi::ThreadSafeFunction::New(env, fn, name, 0, 1);
    tsfn_live_ = true;
    if (!refed_) tsfn_.Unref(env);
    napi_add_env_cleanup_hook(env_, CleanupHook, static_cast<Derived*>(this));
    hook_ = true;
    Napi::ThreadSafeFunction tsfn = tsfn_;
    return [tsfn]() mutable { tsfn.NonBlockingCall(); };
  }

  // After the IO thread was joined (nothing calls the TSFN any more):
  // releases the TSFN and removes the cleanup hook. Idempotent.
  void ReleaseTsfn() {
    if (tsfn_live_) {
      tsfn_live_ = false;
      tsfn_.Release();
    }
    if (hook_) {
      hook_ = false;
      napi_remove_env_cleanup_hook(env_, CleanupHook, static_cast<Derived*>(this));
    }
  }

  // Queues a call of the TSFN's function from this thread (a fallback for
  // a direct call that could not be made). False once released.
  bool CallThroughTsfn() {
    if (!tsfn_live_) return false;
    tsfn_.NonBlockingCall();
    return true;
  }

  // ref()/unref() of the JS handle: remembered for a TSFN created later.
  void RefTsfn(Napi::Env env) {
    refed_ = true;
    if (tsfn_live_) tsfn_.Ref(env);
  }
  void UnrefTsfn(Napi::Env env) {
    refed_ = false;
    if (tsfn_live_) tsfn_.Unref(env);
  }

  const napi_env env_;

 private:
  static void CleanupHook(void* self) { static_cast<Derived*>(self)->Shutdown(); }

  Napi::ThreadSafeFunction tsfn_;
  bool tsfn_live_ = false;
  bool hook_ = false;
  bool refed_ = true;
};

}  // namespace udsipc
