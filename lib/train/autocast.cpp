// AutocastRegion: set, nest and restore ATen's per-thread autocast state.
#include "safetune/train/autocast.hpp"

#include <ATen/autocast_mode.h>

namespace safetune::train {

AutocastRegion::AutocastRegion(c10::DeviceType device, bool enable, c10::ScalarType dtype)
    : device_(device), on_(enable) {
  if (!on_) return;
  was_enabled_ = at::autocast::is_autocast_enabled(device_);
  was_dtype_ = at::autocast::get_autocast_dtype(device_);
  at::autocast::set_autocast_dtype(device_, dtype);
  at::autocast::set_autocast_enabled(device_, true);
  at::autocast::increment_nesting();
}

AutocastRegion::~AutocastRegion() {
  if (!on_) return;
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  at::autocast::set_autocast_enabled(device_, was_enabled_);
  at::autocast::set_autocast_dtype(device_, was_dtype_);
}

}  // namespace safetune::train
