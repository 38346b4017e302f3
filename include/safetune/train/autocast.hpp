// A mixed-precision autocast region for C++ code, with torch.autocast's semantics.
#pragma once
#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>

namespace safetune::train {

// Turns autocast on for one device type (at `dtype`, bf16 by default) until the end of the scope,
// then restores what was there before. Regions nest; leaving the outermost one frees the cache of
// cast weights, as `with torch.autocast(...)` does. `enable = false` makes it a no-op, so callers
// can write one code path for both precisions. Autocast state is per thread.
class AutocastRegion {
 public:
  explicit AutocastRegion(c10::DeviceType device, bool enable = true,
                          c10::ScalarType dtype = c10::kBFloat16);
  ~AutocastRegion();
  AutocastRegion(const AutocastRegion&) = delete;
  AutocastRegion& operator=(const AutocastRegion&) = delete;

 private:
  c10::DeviceType device_;
  bool on_;
  bool was_enabled_ = false;
  c10::ScalarType was_dtype_ = c10::kBFloat16;
};

}  // namespace safetune::train
