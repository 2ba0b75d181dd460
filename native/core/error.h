// Errors the core reports: a stable code (the same strings JavaScript users
// see), the errno and syscall when a syscall failed, and a message.
#pragma once

#include <cstring>
#include <string>

namespace udsipc {

struct CoreError {
  std::string code;     // e.g. "ERR_ADDRESS_IN_USE"; empty = no error
  int err = 0;          // errno, 0 if none
  std::string syscall;  // e.g. "bind", empty if none
  std::string message;

  explicit operator bool() const { return !code.empty(); }

  static CoreError sys(const char* code, int err, const char* syscall, const std::string& what) {
    CoreError e;
    e.code = code;
    e.err = err;
    e.syscall = syscall;
    e.message = what + ": " + syscall + " failed: " + std::strerror(err);
    return e;
  }
  static CoreError plain(const char* code, const std::string& message) {
    CoreError e;
    e.code = code;
    e.message = message;
    return e;
  }
};

}  // namespace udsipc
