// Module entry point. Context-aware: no per-process state, so the addon loads
// in the main thread and in any number of worker_threads.
#include <napi.h>

#include "common.h"
#include "core/packet_io.h"
#include "core/slab.h"
#include "core/socket_util.h"
#include "core/writer_engine.h"
#include "protocol_export.h"
#include "reader_wrap.h"
#include "writer_wrap.h"

namespace udsipc {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("ReaderHandle", ReaderWrap::Init(env));
  exports.Set("WriterHandle", WriterWrap::Init(env));
  exports.Set("protocol", export_protocol(env));
  exports.Set("lookupUser", Napi::Function::New(env, [](const Napi::CallbackInfo& info) {
                return Napi::Number::New(info.Env(), lookup_uid(info[0].As<Napi::String>().Utf8Value()));
              }));
  exports.Set("lookupGroup", Napi::Function::New(env, [](const Napi::CallbackInfo& info) {
                return Napi::Number::New(info.Env(), lookup_gid(info[0].As<Napi::String>().Utf8Value()));
              }));
  // (fd) -> null if fd is a listening AF_UNIX stream socket, else an error object.
  exports.Set("checkListeningFd", Napi::Function::New(env, [](const Napi::CallbackInfo& info) -> Napi::Value {
                CoreError e = check_listening_unix(info[0].As<Napi::Number>().Int32Value());
                if (!e) return info.Env().Null();
                Napi::Object o = Napi::Object::New(info.Env());
                o.Set("code", e.code);
                o.Set("message", e.message);
                return o;
              }));
  exports.Set("boundPath", Napi::Function::New(env, [](const Napi::CallbackInfo& info) {
                return Napi::String::New(info.Env(), bound_path(info[0].As<Napi::Number>().Int32Value()));
              }));
  // (address, message) -> errno (0 = sent)
  exports.Set("notifyDatagram", Napi::Function::New(env, [](const Napi::CallbackInfo& info) {
                return Napi::Number::New(info.Env(), notify_datagram(info[0].As<Napi::String>().Utf8Value(),
                                                                     info[1].As<Napi::String>().Utf8Value()));
              }));
  // () -> whether this kernel refuses descriptors to a socket that asks it to
  // (SO_PASSRIGHTS, Linux 6.16): a Reader without acceptFds then never gets any.
  exports.Set("kernelRefusesFds", Napi::Function::New(env, [](const Napi::CallbackInfo& info) {
                return Napi::Boolean::New(info.Env(), kernel_refuses_rights());
              }));
  // (arrayBuffer) -> detaches a received batch region: its views become empty
  // and its slab reference is dropped without waiting for a garbage collection.
  exports.Set("release", Napi::Function::New(env, [](const Napi::CallbackInfo& info) {
                if (info[0].IsArrayBuffer()) napi_detach_arraybuffer(info.Env(), info[0]);
              }));
  // (type: 'seqpacket' | 'dgram', sendBufferSize) -> the largest packet a
  // socket of that type can send once its SO_SNDBUF is raised to
  // sendBufferSize as the Writer does (0 if it cannot be told).
  exports.Set("packetLimit", Napi::Function::New(env, [](const Napi::CallbackInfo& info) {
                const int type = socket_type(info[0].As<Napi::String>().Utf8Value());
                UniqueFd fd(::socket(AF_UNIX, type | SOCK_CLOEXEC, 0));
                size_t limit = 0;
                if (fd.valid()) {
                  raise_send_buffer(fd.get(), static_cast<int>(info[1].As<Napi::Number>().Int64Value()));
                  limit = effective_max_packet(fd.get());
                }
                return Napi::Number::New(info.Env(), static_cast<double>(limit));
              }));
  // (fds: Int32Array) -> Int32Array of dups (F_DUPFD_CLOEXEC), owned by the
  // caller: a send() that waits for room takes its descriptors when called.
  // Throws (none kept) for a descriptor that is not open.
  exports.Set("dupFds", Napi::Function::New(env, [](const Napi::CallbackInfo& info) {
                std::vector<UniqueFd> dups = dup_fds(info.Env(), info[0].As<Napi::Int32Array>());
                Napi::Int32Array out = Napi::Int32Array::New(info.Env(), dups.size());
                for (size_t i = 0; i < dups.size(); ++i) out[i] = dups[i].release();
                return out;
              }));
  exports.Set("liveSlabs", Napi::Function::New(env, [](const Napi::CallbackInfo& info) {
                return Napi::Number::New(info.Env(), static_cast<double>(Slab::live()));
              }));
  return exports;
}

}  // namespace udsipc

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return udsipc::Init(env, exports); }

NODE_API_MODULE(uds_ipc, InitModule)
