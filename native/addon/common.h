// Helpers shared by the N-API wrappers: core errors into JS values, options
// out of JS objects.
#pragma once

#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <napi.h>

#include <algorithm>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/unique_fd.h"

namespace udsipc {

// A plain object {code, message, errno?, syscall?} that JavaScript turns into
// an IpcError (policy and wording live in core and TypeScript, not here).
inline Napi::Object error_to_object(Napi::Env env, const CoreError& e) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("code", e.code);
  o.Set("message", e.message);
  if (e.err) o.Set("errno", e.err);
  if (!e.syscall.empty()) o.Set("syscall", e.syscall);
  return o;
}

// Throws a JS Error carrying code/errno/syscall.
[[noreturn]] inline void throw_core_error(Napi::Env env, const CoreError& e) {
  Napi::Error err = Napi::Error::New(env, e.message);
  err.Set("code", Napi::String::New(env, e.code));
  if (e.err) err.Set("errno", Napi::Number::New(env, e.err));
  if (!e.syscall.empty()) err.Set("syscall", Napi::String::New(env, e.syscall));
  throw err;
}

// Dups (F_DUPFD_CLOEXEC) of the descriptors in `a`, to send with a message:
// the caller may close its own once this returns. Throws (none kept) if one
// is not an open descriptor (ERR_INVALID_ARG_VALUE) or none can be made.
inline std::vector<UniqueFd> dup_fds(Napi::Env env, const Napi::Int32Array& a) {
  std::vector<UniqueFd> dups;
  dups.reserve(a.ElementLength());
  // The dups are numbered above every descriptor passed: a dup of fds[0]
  // must not take the number of a closed fds[1], which would then dup our
  // own dup instead of failing.
  int above = 0;
  for (size_t i = 0; i < a.ElementLength(); ++i) above = std::max(above, a[i] + 1);
  for (size_t i = 0; i < a.ElementLength(); ++i) {
    const int fd = ::fcntl(a[i], F_DUPFD_CLOEXEC, above);
    if (fd < 0) {
      const int e = errno;
      throw_core_error(env, e == EBADF ? CoreError::sys("ERR_INVALID_ARG_VALUE", e, "fcntl",
                                                         "fds[" + std::to_string(i) + "] (" + std::to_string(a[i]) +
                                                             ") is not an open file descriptor")
                                       : CoreError::sys("ERR_SOCKET", e, "fcntl", "cannot duplicate a descriptor to send"));
    }
    dups.emplace_back(fd);
  }
  return dups;
}

// A socket type named as TypeScript names it ('stream', 'seqpacket', 'dgram').
inline int socket_type(const std::string& name) {
  if (name == "seqpacket") return SOCK_SEQPACKET;
  if (name == "dgram") return SOCK_DGRAM;
  return SOCK_STREAM;
}

// Options arrive from TypeScript validated and complete (src/options.ts
// resolves every default; the reader and writer pass each option). A
// missing or mistyped one is a bug in that caller: a TypeError naming it,
// never a default guessed here.
inline Napi::Value option(const Napi::Object& o, const char* key, bool (Napi::Value::*is)() const, const char* what) {
  Napi::Value v = o.Get(key);
  if (!(v.*is)()) throw Napi::TypeError::New(o.Env(), std::string("option \"") + key + "\" must be " + what);
  return v;
}
inline double number_option(const Napi::Object& o, const char* key) {
  return option(o, key, &Napi::Value::IsNumber, "a number").As<Napi::Number>().DoubleValue();
}
inline bool bool_option(const Napi::Object& o, const char* key) {
  return option(o, key, &Napi::Value::IsBoolean, "a boolean").As<Napi::Boolean>().Value();
}
inline std::string string_option(const Napi::Object& o, const char* key) {
  return option(o, key, &Napi::Value::IsString, "a string").As<Napi::String>().Utf8Value();
}
// A user or group id, or -1: as the kernel's uid_t/gid_t bits in an int (ids
// up to 2^32 - 2 are validated in TypeScript; a double above INT_MAX must not
// be cast to int directly).
inline int id_option(const Napi::Object& o, const char* key) {
  const double v = number_option(o, key);
  return v < 0 ? -1 : static_cast<int>(static_cast<uint32_t>(v));
}
inline std::vector<uint32_t> id_list_option(const Napi::Object& o, const char* key) {
  Napi::Array a = option(o, key, &Napi::Value::IsArray, "an array of ids").As<Napi::Array>();
  std::vector<uint32_t> out;
  out.reserve(a.Length());
  for (uint32_t i = 0; i < a.Length(); ++i) out.push_back(a.Get(i).As<Napi::Number>().Uint32Value());
  return out;
}

}  // namespace udsipc
