// Helpers shared by the N-API wrappers: turning core errors into JS values.
#pragma once

#include <napi.h>

#include "core/error.h"

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

// Reads an optional numeric property (validated in TypeScript already).
inline double get_number(const Napi::Object& o, const char* key, double def) {
  Napi::Value v = o.Get(key);
  return v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : def;
}

}  // namespace udsipc
