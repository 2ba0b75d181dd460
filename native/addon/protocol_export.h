// binding().protocol: core/protocol.h as a frozen JavaScript object, so that
// TypeScript reads the contract instead of restating it.
#pragma once

#include <napi.h>

namespace udsipc {

Napi::Object export_protocol(Napi::Env env);

}  // namespace udsipc
