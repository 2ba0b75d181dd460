// JS handle of a WriterEngine: new WriterHandle(path, options, shared); start(onEvent)
// where `shared` is an ArrayBuffer holding the control block (protocol::ctrl::kBytes)
// followed by the frame ring (a power of two bytes).
#pragma once

#include <napi.h>

#include <memory>
#include <string>

#include "core/writer_engine.h"

namespace udsipc {

class WriterWrap : public Napi::ObjectWrap<WriterWrap> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit WriterWrap(const Napi::CallbackInfo& info);
  ~WriterWrap() override;

 private:
  Napi::Value Start(const Napi::CallbackInfo& info);
  void Wake(const Napi::CallbackInfo& info);
  Napi::Value SendDirect(const Napi::CallbackInfo& info);
  Napi::Value Drain(const Napi::CallbackInfo& info);
  void BeginStop(const Napi::CallbackInfo& info);
  void Close(const Napi::CallbackInfo& info);
  void Ref(const Napi::CallbackInfo& info);
  void Unref(const Napi::CallbackInfo& info);
  Napi::Value Metrics(const Napi::CallbackInfo& info);

  static void CleanupHook(void* self);
  void Shutdown();  // joins the IO thread, releases the TSFN; idempotent

  // All members: JS thread only. The IO thread uses the engine, the ring and
  // control block memory (kept alive by shared_ref_ until after the join) and
  // a copy of the TSFN handle.
  napi_env env_;
  WriterConfig cfg_;
  Napi::Reference<Napi::ArrayBuffer> shared_ref_;
  Napi::ThreadSafeFunction tsfn_;
  bool tsfn_live_ = false;
  bool hook_ = false;
  bool refed_ = true;
  std::unique_ptr<WriterEngine> engine_;
};

}  // namespace udsipc
