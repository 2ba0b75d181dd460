// Module entry point. Context-aware: no per-process state, so the addon loads
// in the main thread and in any number of worker_threads.
#include <napi.h>

#include "core/slab.h"
#include "core/socket_util.h"
#include "core/writer_engine.h"
#include "reader_wrap.h"
#include "writer_wrap.h"

namespace udsipc {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("ReaderHandle", ReaderWrap::Init(env));
  exports.Set("WriterHandle", WriterWrap::Init(env));
  exports.Set("MAX_PATH_BYTES", static_cast<double>(kMaxPathBytes));
  Napi::Object c = Napi::Object::New(env);
  c.Set("TAIL", ctrl::kTail);
  c.Set("HEAD", ctrl::kHead);
  c.Set("SENT", ctrl::kSent);
  c.Set("SLEEP", ctrl::kSleep);
  c.Set("NOTIFY_ARMED", ctrl::kNotifyArmed);
  c.Set("NOTIFY_HEAD", ctrl::kNotifyHead);
  c.Set("NOTIFY_SENT", ctrl::kNotifySent);
  c.Set("BYTES", static_cast<double>(ctrl::kBytes));
  exports.Set("ctrl", c);
  exports.Set("liveSlabs", Napi::Function::New(env, [](const Napi::CallbackInfo& info) {
                return Napi::Number::New(info.Env(), static_cast<double>(Slab::live()));
              }));
  return exports;
}

}  // namespace udsipc

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return udsipc::Init(env, exports); }

NODE_API_MODULE(uds_ipc, InitModule)
