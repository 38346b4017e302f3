// A run's output directory: resolved, locked for the life of the run, never silently overwritten;
// and the up-front check of every input a run will read, so bad data fails before any training.
#pragma once
#include <filesystem>
#include <string>

#include "safetune/io/dir_lock.hpp"

namespace safetune::recipes {

struct TwoStageConfig;

struct RunDirOptions {
  bool resume = false;  // continue the run already in the directory
  bool overwrite =
      false;  // replace the previous run in the directory (never one holding a release)
  // The release registry the run is configured with (empty: none); a directory holding one of its
  // releases (or the registry itself) is never resumed into or overwritten.
  std::filesystem::path registry;
};

struct RunDir {
  std::filesystem::path path;  // symlinks resolved, absolute
  io::DirectoryLock lock;      // held until the RunDir is destroyed
};

// Creates `requested` if needed, resolves it (logging the resolved path), takes its exclusive lock
// (IoError naming the directory and the holder's pid when another run holds it), then decides:
// an empty directory (or one holding only the config of a run that failed before producing
// anything) is used as is; one that safetune did not write (no lock file) is refused;
// a previous run is refused unless `resume` (continue it) or `overwrite` (its contents are removed
// first) -- and both are refused when it holds a release of `registry`. ConfigError naming the
// directory and the way out otherwise; a directory refused on first contact gets no lock file.
RunDir open_run_dir(const std::filesystem::path& requested, const RunDirOptions& options);

// Reads every input the configured stages will use -- all datasets of both stages parsed in full
// (invalid UTF-8 included), the anchor data, task_eval, the probe suite and guard subset, a given
// safety adapter -- and throws the first problem (DataError/IoError/ConfigError naming file, line
// or key). Runs before anything is trained or written.
void validate_run_inputs(const TwoStageConfig& cfg);

}  // namespace safetune::recipes
