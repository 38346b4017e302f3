// Precompiled header: the heavy, stable includes shared by every translation unit.
#pragma once
#include <torch/torch.h>
#include <algorithm>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>
