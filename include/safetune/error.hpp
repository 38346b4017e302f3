// safetune's error types: what went wrong, where (file, line, key, tensor) and a hint.
#pragma once
#include <stdexcept>
#include <string>

namespace safetune {

class Error : public std::runtime_error {
 public:
  Error(std::string what, std::string where = {}, std::string hint = {});
  const std::string& what_only() const noexcept { return what_; }
  const std::string& where() const noexcept { return where_; }
  const std::string& hint() const noexcept { return hint_; }

 private:
  std::string what_, where_, hint_;
};

// One subclass per area, so callers can catch what they can handle.
class UsageError : public Error {
  using Error::Error;
};  // bad command line: exit code 2
class ConfigError : public Error {
  using Error::Error;
};
class IoError : public Error {
  using Error::Error;
};  // missing files, failed writes
class FormatError : public Error {
  using Error::Error;
};  // malformed safetensors/GGUF/JSON/...
class ModelError : public Error {
  using Error::Error;
};
class TokenizerError : public Error {
  using Error::Error;
};
class DataError : public Error {
  using Error::Error;
};
class AdapterError : public Error {
  using Error::Error;
};
class KernelError : public Error {
  using Error::Error;
};
class SafetyError : public Error {
  using Error::Error;
};

// A run stopped by SIGINT/SIGTERM after saving its checkpoint; nothing was released. The CLI prints
// it as one line and exits 128 + signal (130 for SIGINT, 143 for SIGTERM), like a shell would.
class Interrupted : public Error {
 public:
  Interrupted(int signal, std::string what, std::string where = {}, std::string hint = {})
      : Error(std::move(what), std::move(where), std::move(hint)), signal_(signal) {}
  int signal() const noexcept { return signal_; }

 private:
  int signal_;
};

}  // namespace safetune
