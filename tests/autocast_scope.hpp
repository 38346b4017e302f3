// bf16 autocast on one device type for a scope, as the trainer sets it for a forward pass; header
// only, so that the gpu test executable (which does not link support.cpp) can use it too.
#pragma once
#include <ATen/autocast_mode.h>

namespace safetune::test {

class AutocastScope {
 public:
  explicit AutocastScope(at::DeviceType device, bool enable = true) : device_(device), on_(enable) {
    if (!on_) return;
    at::autocast::set_autocast_dtype(device_, at::kBFloat16);
    at::autocast::set_autocast_enabled(device_, true);
  }
  ~AutocastScope() {
    if (!on_) return;
    at::autocast::set_autocast_enabled(device_, false);
    at::autocast::clear_cache();
  }
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  at::DeviceType device_;
  bool on_;
};

}  // namespace safetune::test
