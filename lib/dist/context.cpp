// dist::Context: torchrun environment -> TCPStore rendezvous -> c10d Gloo/NCCL process group, and
// bucketed all-reduce / broadcast with one-line errors when a peer dies or times out.
#include "safetune/dist/context.hpp"

#include <ATen/ATen.h>

#include <arpa/inet.h>
#include <charconv>
#include <cstdlib>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

// The c10d backends are compiled into libtorch (Gloo in libtorch_cpu, NCCL in libtorch_cuda); their
// headers are enabled only where we can compile them: Gloo needs gloo's headers (Debian
// libgloo-dev; headers only, the library is never linked), NCCL needs a CUDA build.
#if defined(SAFETUNE_HAVE_GLOO)
#define USE_C10D_GLOO 1
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#if defined(SAFETUNE_WITH_CUDA) && defined(SAFETUNE_HAVE_NCCL)
#define USE_C10D_NCCL 1
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include "safetune/log.hpp"

namespace safetune::dist {

void DistSection::describe(ConfigVisitor& v) {
  v.field("backend", backend,
          Field("Collective backend for data-parallel runs: auto (nccl when the model is on CUDA, "
                "else gloo), "
                "gloo or nccl. Rank and world size come from the launcher (RANK, WORLD_SIZE, ...).")
              .one_of({"auto", "gloo", "nccl"}));
  v.field("timeout_s", timeout_s,
          Field("Seconds a rank waits for the others (rendezvous and each collective) before "
                "failing with an "
                "error; the environment variable SAFETUNE_DIST_TIMEOUT_S overrides it.")
              .range(1, 86400));
  v.field("bucket_mb", bucket_mb,
          Field("Size of the flattened gradient buckets all-reduced together (MiB).")
              .range(0.001, 4096));
}

namespace {

const char* env_or(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

int env_int(const char* name, int fallback, int lo, int hi) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  int out = 0;
  const char* end = v + std::strlen(v);
  auto [p, ec] = std::from_chars(v, end, out);
  if (ec != std::errc() || p != end || out < lo || out > hi)
    throw ConfigError("environment variable " + std::string(name) + "='" + v +
                          "' is not an integer in [" + std::to_string(lo) + ", " +
                          std::to_string(hi) + "]",
                      name);
  return out;
}

// First line of a c10 error, without the C++ backtrace torch appends.
std::string first_line(const std::exception& e) {
  std::string s;
  if (const auto* ce = dynamic_cast<const c10::Error*>(&e)) s = ce->what_without_backtrace();
  else s = e.what();
  auto nl = s.find('\n');
  if (nl != std::string::npos) s.resize(nl);
  return s;
}

bool is_loopback(const std::string& host) {
  if (host == "localhost") return true;
  in_addr a{};
  return inet_pton(AF_INET, host.c_str(), &a) == 1 && (ntohl(a.s_addr) >> 24) == 127;
}

std::string seconds_text(std::chrono::milliseconds t) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g s", static_cast<double>(t.count()) / 1000.0);
  return buf;
}

}  // namespace

LaunchEnv LaunchEnv::from_environment() {
  LaunchEnv e;
  e.world_size = env_int("WORLD_SIZE", 1, 1, 1 << 20);
  e.rank = env_int("RANK", 0, 0, e.world_size - 1);
  e.local_world_size = env_int("LOCAL_WORLD_SIZE", e.world_size, 1, e.world_size);
  e.local_rank = env_int("LOCAL_RANK", e.rank % e.local_world_size, 0, e.local_world_size - 1);
  e.master_addr = env_or("MASTER_ADDR", "127.0.0.1");
  e.master_port = env_int("MASTER_PORT", 29500, 1, 65535);
  const std::string agent = env_or("TORCHELASTIC_USE_AGENT_STORE", "");
  e.agent_store = agent == "True" || agent == "true" || agent == "1";
  e.restart_count = env_int("TORCHELASTIC_RESTART_COUNT", 0, 0, 1 << 20);
  return e;
}

struct Context::Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> pg;
  at::Device device{at::kCPU};
};

Context::~Context() = default;

std::shared_ptr<Context> Context::single() { return std::shared_ptr<Context>(new Context()); }

std::shared_ptr<Context> Context::from_env(const DistSection& cfg, bool cuda_tensors) {
  return create(LaunchEnv::from_environment(), cfg, cuda_tensors);
}

std::shared_ptr<Context> Context::create(const LaunchEnv& env, const DistSection& cfg,
                                         bool cuda_tensors) {
  std::shared_ptr<Context> ctx(new Context());
  ctx->env_ = env;
  double timeout_s = cfg.timeout_s;
  if (const char* t = std::getenv("SAFETUNE_DIST_TIMEOUT_S"); t && *t) {
    char* end = nullptr;
    timeout_s = std::strtod(t, &end);
    if (end == t || *end || !(timeout_s > 0))
      throw ConfigError(
          "SAFETUNE_DIST_TIMEOUT_S='" + std::string(t) + "' is not a positive number of seconds",
          "SAFETUNE_DIST_TIMEOUT_S");
  }
  ctx->timeout_ = std::chrono::milliseconds(static_cast<std::int64_t>(timeout_s * 1000));
  ctx->bucket_bytes_ =
      std::max<std::int64_t>(4, static_cast<std::int64_t>(cfg.bucket_mb * 1024 * 1024));
  const char* force = std::getenv("SAFETUNE_DIST_FORCE");
  if (env.world_size <= 1 && !(force && std::string(force) == "1")) return ctx;

  std::string backend = cfg.backend;
  if (backend == "auto") backend = cuda_tensors ? "nccl" : "gloo";
  if (backend == "nccl" && !cuda_tensors)
    throw ConfigError("dist.backend nccl needs the model on CUDA", "dist.backend",
                      "use gloo for CPU runs");
  ctx->backend_ = backend;
  const std::string where = env.master_addr + ":" + std::to_string(env.master_port);
  log_info("dist: rank " + std::to_string(env.rank) + " of " + std::to_string(env.world_size) +
           " (local " + std::to_string(env.local_rank) + "), " + backend + ", rendezvous at " +
           where + (env.agent_store ? " (torchrun's store)" : "") + ", timeout " +
           seconds_text(ctx->timeout_));
  auto group = std::make_unique<Group>();
  try {
    c10d::TCPStoreOptions so;
    so.port = static_cast<std::uint16_t>(env.master_port);
    so.timeout = ctx->timeout_;
    c10::intrusive_ptr<c10d::Store> store;
    if (env.agent_store) {
      // torchrun's agent hosts the store; its workers' keys live under /worker/attempt_<restart>.
      so.isServer = false;
      store = c10::make_intrusive<c10d::PrefixStore>(
          "/worker/attempt_" + std::to_string(env.restart_count),
          c10::make_intrusive<c10d::TCPStore>(env.master_addr, so));
    } else {
      so.isServer = env.rank == 0;
      so.numWorkers = static_cast<std::size_t>(env.world_size);
      so.waitWorkers = true;
      store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, so);
    }
    group->store = c10::make_intrusive<c10d::PrefixStore>("safetune/", store);

    if (backend == "gloo") {
#if defined(SAFETUNE_HAVE_GLOO)
      auto opts = c10d::ProcessGroupGloo::Options::create(ctx->timeout_);
      if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname && *ifname)
        opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
      else if (is_loopback(env.master_addr))
        opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
      else opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      group->pg =
          c10::make_intrusive<c10d::ProcessGroupGloo>(group->store, env.rank, env.world_size, opts);
#else
      throw ConfigError(
          "this build of safetune has no Gloo support (gloo headers were missing at build time)",
          "dist.backend", "install libgloo-dev (scripts/bootstrap.sh does) and rebuild");
#endif
    } else {
#if defined(SAFETUNE_WITH_CUDA) && defined(SAFETUNE_HAVE_NCCL)
      c10::cuda::set_device(static_cast<c10::DeviceIndex>(env.local_rank));
      group->device = at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(env.local_rank));
      auto opts = c10d::ProcessGroupNCCL::Options::create();
      opts->timeout = ctx->timeout_;
      group->pg =
          c10::make_intrusive<c10d::ProcessGroupNCCL>(group->store, env.rank, env.world_size, opts);
#else
      throw ConfigError("this build of safetune has no NCCL support (built without CUDA)",
                        "dist.backend");
#endif
    }
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw DistError("rank " + std::to_string(env.rank) + " of " + std::to_string(env.world_size) +
                        ": rendezvous failed: " + first_line(e),
                    where,
                    "start every rank with the same MASTER_ADDR/MASTER_PORT/WORLD_SIZE within " +
                        seconds_text(ctx->timeout_) + " (dist.timeout_s)");
  }
  ctx->group_ = std::move(group);
  return ctx;
}

void Context::run(const char* what, const std::function<void()>& body) {
  const auto t0 = std::chrono::steady_clock::now();
  try {
    body();
  } catch (const std::exception& e) {
    throw DistError(
        "rank " + std::to_string(rank()) + " of " + std::to_string(world_size()) + ": " + what +
            " failed (a peer died or did not answer within " + seconds_text(timeout_) +
            "): " + first_line(e),
        "dist", "see the other ranks' logs; raise dist.timeout_s if steps are legitimately slow");
  }
  comm_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void Context::all_reduce_sum(std::vector<at::Tensor>& tensors) {
  if (!distributed() || tensors.empty()) return;
  run("all-reduce", [&] {
    // Buckets of consecutive tensors, flattened into float32 buffers, all in flight at once.
    struct Bucket {
      std::size_t begin, end;
      std::vector<at::Tensor> buffer;
      c10::intrusive_ptr<c10d::Work> work;
    };
    std::vector<Bucket> buckets;
    std::size_t i = 0;
    while (i < tensors.size()) {
      std::size_t j = i;
      std::int64_t bytes = 0;
      while (j < tensors.size() && (j == i || bytes + 4 * tensors[j].numel() <= bucket_bytes_))
        bytes += 4 * tensors[j++].numel();
      std::vector<at::Tensor> flat;
      for (std::size_t k = i; k < j; ++k)
        flat.push_back(tensors[k].detach().reshape({-1}).to(group_->device, at::kFloat));
      Bucket b{i, j, {at::cat(flat)}, {}};
      b.work = group_->pg->allreduce(b.buffer);
      buckets.push_back(std::move(b));
      i = j;
    }
    for (auto& b : buckets) {
      b.work->wait(timeout_);
      std::int64_t off = 0;
      for (std::size_t k = b.begin; k < b.end; ++k) {
        const auto n = tensors[k].numel();
        tensors[k].copy_(b.buffer[0].narrow(0, off, n).view(tensors[k].sizes()));
        off += n;
      }
    }
  });
}

void Context::all_reduce_mean(std::vector<at::Tensor>& tensors) {
  if (!distributed()) return;
  all_reduce_sum(tensors);
  for (auto& t : tensors) t.div_(static_cast<double>(world_size()));
}

void Context::broadcast(at::Tensor& t, int root) {
  if (!distributed()) return;
  run("broadcast", [&] {
    std::vector<at::Tensor> v{t.to(group_->device).contiguous()};
    c10d::BroadcastOptions o;
    o.rootRank = root;
    group_->pg->broadcast(v, o)->wait(timeout_);
    if (!v[0].is_same(t)) t.copy_(v[0]);
  });
}

void Context::broadcast_bytes(std::string& bytes, int root) {
  if (!distributed()) return;
  at::Tensor size = at::tensor({static_cast<std::int64_t>(bytes.size())}, at::kLong);
  broadcast(size, root);
  const auto n = size.item<std::int64_t>();
  at::Tensor data = at::empty({n}, at::kByte);
  if (rank() == root && n > 0)
    std::memcpy(data.data_ptr(), bytes.data(), static_cast<std::size_t>(n));
  broadcast(data, root);
  bytes.assign(reinterpret_cast<const char*>(data.data_ptr()), static_cast<std::size_t>(n));
}

void Context::barrier() {
  if (!distributed()) return;
  run("barrier", [&] {
    // A one-element all-reduce rather than barrier(): it honours the timeout on every backend.
    std::vector<at::Tensor> v{at::zeros({1}, at::TensorOptions().device(group_->device))};
    group_->pg->allreduce(v)->wait(timeout_);
  });
}

}  // namespace safetune::dist
