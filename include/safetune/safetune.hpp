// The whole public API of safetune in one include.
#pragma once
#include "safetune/config.hpp"
#include "safetune/error.hpp"
#include "safetune/io/atomic_file.hpp"
#include "safetune/log.hpp"
#include "safetune/train/trainer.hpp"
