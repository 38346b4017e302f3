// Data-parallel process group on LibTorch's c10d: rank/world from the torchrun environment,
// TCPStore rendezvous, Gloo on CPU and NCCL on CUDA, and the few collectives the trainer needs.
#pragma once
#include <ATen/core/Tensor.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "safetune/config.hpp"
#include "safetune/error.hpp"

namespace safetune::dist {

// A collective failed: a peer died, hung past the timeout, or the rendezvous never completed.
class DistError : public Error {
  using Error::Error;
};

// The `dist:` section of a training config. Rank and world size never come from here but from the
// launcher's environment (RANK, WORLD_SIZE, ...).
struct DistSection : ConfigSection {
  std::string backend = "auto";  // auto (nccl for CUDA tensors, else gloo) | gloo | nccl
  double timeout_s = 300;  // rendezvous and every collective; SAFETUNE_DIST_TIMEOUT_S overrides
  double bucket_mb = 25;   // gradient all-reduce bucket size
  void describe(ConfigVisitor& v) override;
};

// What the launcher says about this process (torchrun's variables; all optional).
struct LaunchEnv {
  int rank = 0, world_size = 1, local_rank = 0, local_world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  bool agent_store = false;  // TORCHELASTIC_USE_AGENT_STORE=True: torchrun hosts the TCPStore
  int restart_count = 0;     // TORCHELASTIC_RESTART_COUNT (prefix of the agent store's keys)
  // Reads the variables; malformed values are a ConfigError naming the variable.
  static LaunchEnv from_environment();
};

class Context {
 public:
  // World size 1: every collective is a no-op; no store, no process group.
  static std::shared_ptr<Context> single();
  // From the launcher's environment. `cuda_tensors`: whether the tensors to reduce live on CUDA
  // (picks NCCL under backend=auto). World size 1 makes no group unless SAFETUNE_DIST_FORCE=1.
  static std::shared_ptr<Context> from_env(const DistSection& cfg = {}, bool cuda_tensors = false);
  // Explicit form (tests, embedding): rendezvous at env.master_addr:master_port.
  static std::shared_ptr<Context> create(const LaunchEnv& env, const DistSection& cfg,
                                         bool cuda_tensors);
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  int rank() const noexcept { return env_.rank; }
  int world_size() const noexcept { return env_.world_size; }
  int local_rank() const noexcept { return env_.local_rank; }
  int local_world_size() const noexcept { return env_.local_world_size; }
  bool is_main() const noexcept { return env_.rank == 0; }
  // True when collectives run: world size > 1, or SAFETUNE_DIST_FORCE=1 with one rank (GPU check).
  bool distributed() const noexcept { return group_ != nullptr; }
  const std::string& backend() const noexcept { return backend_; }  // none | gloo | nccl
  std::chrono::milliseconds timeout() const noexcept { return timeout_; }

  // Sum over ranks, in place. Tensors may differ in shape and dtype; they are flattened into
  // float32 buckets of at most bucket_mb (one collective per bucket, all in flight together).
  void all_reduce_sum(std::vector<at::Tensor>& tensors);
  // Mean over ranks, in place (sum, then divide by the world size).
  void all_reduce_mean(std::vector<at::Tensor>& tensors);
  // Replaces `t` (same shape and dtype on every rank) with root's copy.
  void broadcast(at::Tensor& t, int root = 0);
  // Replaces `bytes` with root's bytes (any length).
  void broadcast_bytes(std::string& bytes, int root = 0);
  void barrier();

  // Seconds spent inside collectives since construction (the bench reports the fraction).
  double comm_seconds() const noexcept { return comm_seconds_; }

 private:
  Context() = default;
  struct Group;
  void run(const char* what, const std::function<void()>& body);
  LaunchEnv env_;
  std::string backend_ = "none";
  std::chrono::milliseconds timeout_{300000};
  std::int64_t bucket_bytes_ = 25ll << 20;
  double comm_seconds_ = 0;
  std::unique_ptr<Group> group_;
};

}  // namespace safetune::dist
