// libFuzzer target: the safetensors header parser must reject bad input with safetune::Error only.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "io/safetensors_header.hpp"
#include "safetune/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  try {
    safetune::io::safetensors_parse_header(bytes, size, "fuzz");
  } catch (const safetune::Error&) {
  }
  return 0;
}
