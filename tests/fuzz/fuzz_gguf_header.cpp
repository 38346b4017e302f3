// libFuzzer target: the GGUF header parser must reject bad input with safetune::Error only.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "io/gguf_format.hpp"
#include "safetune/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  try {
    safetune::io::gguf::parse_header(bytes, "fuzz");
  } catch (const safetune::Error&) {
  }
  return 0;
}
