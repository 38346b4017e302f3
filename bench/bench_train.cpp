// Training and loading benchmarks, safetune side by side with the reference stack in one run:
//   step: one LoRA training step (r 16 on all linear layers, AdamW) against transformers + PEFT in
//         eager PyTorch, same model, batch, sequence length and threads; tokens/s and the ratio.
//   kl:   the same step with the kl_anchor regularizer (one anchor batch) against without it.
//   load: load time and peak RSS of a checkpoint (each load in a fresh process) against
//         safetensors.torch.load_file and transformers' from_pretrained.
//
// usage: bench_train [step|kl|load|all] [--model PATH] [--threads N] [--batch B] [--seq T] [--iters
// N]
//                    [--device cpu|cuda] [--dtype fp32|bf16] [--prompt-share F]
//                    [--activation-checkpointing]
//                    [--python PATH]
// Models: the tiny Llama and SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized to fp32) from the
// bootstrap cache; `load` exports SmolLM2 as fp32 and bf16 Hugging Face directories under /tmp
// first.
// --device cuda --dtype bf16: both sides hold the base weights in bf16 on the GPU with fp32 adapter
// weights and run the forward under bf16 autocast (HF Trainer's bf16=True; safetune's precision
// auto), and both report their peak CUDA memory (torch's caching allocator, each process its own).
// --prompt-share F masks the first F of each row out of the loss on both sides, as chat data does.
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <torch/csrc/autograd/profiler_legacy.h>
#include <torch/cuda.h>
#include <torch/torch.h>
#ifdef SAFETUNE_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "safetune/data/dataset.hpp"
#include "safetune/lora/model_adapters.hpp"
#include "safetune/model/causal_lm.hpp"
#include "safetune/model/export.hpp"
#include "safetune/train/autocast.hpp"
#include "safetune/train/regularizer.hpp"

extern char** environ;
namespace fs = std::filesystem;
using namespace safetune;

namespace {

struct Options {
  std::string mode = "all", python = SAFETUNE_BENCH_PYTHON, model;  // model: only this one
  std::string device = "cpu", dtype = "fp32";
  double prompt_share = 0.0;
  bool checkpointing = false;  // safetune side only: recompute the layers in backward
  int threads = 2, iters = 3;
  std::int64_t batch = 4, seq = 128;
  bool autocast() const { return device == "cuda" || dtype == "bf16"; }
};

const fs::path kHome = SAFETUNE_BENCH_HOME;
fs::path tiny() { return kHome / "models" / "tiny-llama"; }
fs::path smollm2() { return kHome / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"; }

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Best of `iters` after one warm-up, in seconds.
double best_of(int iters, const std::function<void()>& fn) {
  fn();
  double best = 1e300;
  for (int i = 0; i < iters; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    fn();
    best = std::min(best, seconds_since(t0));
  }
  return best;
}

// The value printed after `key ` by a child, or -1.
double value_of(const std::string& out, const std::string& key) {
  auto p = out.find(key + " ");
  return p == std::string::npos ? -1.0 : std::atof(out.c_str() + p + key.size() + 1);
}

struct Child {
  int status = -1;
  double max_rss_mb = 0;  // the child's own VmHWM report
  std::string out;
};

// Starts args[0] with args and the file actions (which it destroys); the pid, or -1.
pid_t spawn(const std::vector<std::string>& args, posix_spawn_file_actions_t& fa) {
  std::vector<std::string> a = args;
  std::vector<char*> argv;
  for (auto& s : a) argv.push_back(s.data());
  argv.push_back(nullptr);
  pid_t pid = -1;
  const bool ok = posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ) == 0;
  posix_spawn_file_actions_destroy(&fa);
  return ok ? pid : -1;
}

// Runs argv in a fresh process, capturing stdout (the child reports its own peak RSS).
Child run_child(const std::vector<std::string>& args) {
  fs::path out =
      fs::temp_directory_path() / ("safetune_bench_train_" + std::to_string(::getpid()) + ".out");
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  Child c;
  const pid_t pid = spawn(args, fa);
  if (pid < 0) return c;
  waitpid(pid, &c.status, 0);
  std::ifstream in(out);
  std::stringstream ss;
  ss << in.rdbuf();
  c.out = ss.str();
  c.max_rss_mb = value_of(c.out, "HWM_KB") / 1024.0;
  fs::remove(out);
  return c;
}

fs::path write_script(const std::string& name, const char* code) {
  fs::path p = fs::temp_directory_path() /
               ("safetune_bench_" + name + "_" + std::to_string(::getpid()) + ".py");
  std::ofstream(p) << code;
  return p;
}

// ---------------------------------------------------------------------------------------------
// step / kl

const char* kPythonStep = R"PY(
import pathlib, sys, time, torch
from transformers import AutoModelForCausalLM
from peft import LoraConfig, get_peft_model
path, threads, B, T = pathlib.Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
dev, dtype, share = sys.argv[5], torch.bfloat16 if sys.argv[6] == "bf16" else torch.float32, float(sys.argv[7])
autocast = dev == "cuda" or dtype == torch.bfloat16
torch.set_num_threads(threads)
torch.manual_seed(0)
if path.suffix == ".gguf":
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
else:
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
model = model.to(dev, dtype)
# PEFT keeps the adapter weights in fp32 (autocast_adapter_dtype), as safetune does.
model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", lora_dropout=0.0))
model.train()
params = [p for p in model.parameters() if p.requires_grad]
opt = torch.optim.AdamW(params, lr=1e-4)
ids = torch.randint(0, model.config.vocab_size, (B, T), device=dev)
labels = ids.clone()
labels[:, : int(T * share)] = -100
mask = torch.ones_like(ids)
sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
def step():
    with torch.autocast(dev, dtype=torch.bfloat16, enabled=autocast):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
step(); sync()
if dev == "cuda":
    torch.cuda.reset_peak_memory_stats()
import os
if os.environ.get("SAFETUNE_BENCH_PROFILE"):
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    prof.export_chrome_trace(os.environ["SAFETUNE_BENCH_PROFILE"] + ".reference.json")
# Paired protocol: the C++ side alternates its own step with one of ours, so that load changes on
# the machine hit both sides alike. One line per request: "step" -> "STEP_S <seconds>".
print("READY", flush=True)
for line in sys.stdin:
    if line.strip() == "peak":
        print("PEAK_MB", torch.cuda.max_memory_allocated() / 2**20 if dev == "cuda" else -1, flush=True)
        continue
    if line.strip() != "step":
        break
    t0 = time.perf_counter(); step(); sync(); print("STEP_S", time.perf_counter() - t0, flush=True)
)PY";

// A child process that answers requests on a pipe (the Python step server above).
class Server {
 public:
  explicit Server(const std::vector<std::string>& args) {
    int to[2], from[2];
    if (::pipe(to) != 0) return;
    if (::pipe(from) != 0) {
      ::close(to[0]);
      ::close(to[1]);
      return;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, to[0], 0);
    posix_spawn_file_actions_adddup2(&fa, from[1], 1);
    posix_spawn_file_actions_addclose(&fa, to[1]);
    posix_spawn_file_actions_addclose(&fa, from[0]);
    pid_ = spawn(args, fa);
    ::close(to[0]);
    ::close(from[1]);
    if (pid_ < 0) {
      ::close(to[1]);
      ::close(from[0]);
      return;
    }
    in_ = ::fdopen(to[1], "w");
    out_ = ::fdopen(from[0], "r");
  }
  ~Server() {
    if (in_) std::fclose(in_);  // EOF ends the server's loop
    if (out_) std::fclose(out_);
    if (pid_ > 0) ::waitpid(pid_, nullptr, 0);
  }
  // The value after `key ` on the next line that has it; -1 when the child died first.
  double wait_for(const std::string& key) {
    char line[4096];
    while (out_ && std::fgets(line, sizeof line, out_)) {
      std::string l(line);
      if (l.rfind(key, 0) == 0)
        return l.size() > key.size() ? std::atof(l.c_str() + key.size()) : 0.0;
    }
    return -1.0;
  }
  double request(const char* what, const std::string& key) {
    if (!in_) return -1.0;
    std::fprintf(in_, "%s\n", what);
    std::fflush(in_);
    return wait_for(key);
  }

 private:
  pid_t pid_ = -1;
  FILE* in_ = nullptr;
  FILE* out_ = nullptr;
};

double median(std::vector<double> v) {
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  const auto n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// bf16 autocast on `dev` for its scope, as the trainer's precision bf16/auto sets it.
void reset_peak(const c10::Device& d) {
#ifdef SAFETUNE_WITH_CUDA
  if (d.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(d.index() < 0 ? 0 : d.index());
#endif
}

// Peak bytes allocated by torch's CUDA caching allocator since reset_peak, in MiB; -1 off CUDA.
double peak_mb(const c10::Device& d) {
#ifdef SAFETUNE_WITH_CUDA
  if (d.is_cuda()) {
    const auto stats =
        c10::cuda::CUDACachingAllocator::getDeviceStats(d.index() < 0 ? 0 : d.index());
    return static_cast<double>(stats.allocated_bytes[0].peak) / (1 << 20);
  }
#endif
  return -1;
}

struct StepTimes {
  double plain = 0, plain_best = 0, kl = 0, two_batches = 0, nograd_forward = 0;  // kl...: best of
  double peak_mb = -1, kl_peak_mb = -1;  // CUDA: peak allocated over the plain / kl_anchor steps
  std::vector<double> ours, theirs;      // paired plain steps: ours[i] then theirs[i]
};

// `partner` (optional) runs one reference step and returns its seconds; it is called after each
// of our timed plain steps, so the two sides alternate.
StepTimes safetune_step(const fs::path& path, const Options& o, bool with_kl,
                        const std::function<double()>& partner = {}) {
  const auto dtype = o.dtype == "bf16" ? torch::kBFloat16 : torch::kFloat;
  const c10::Device device(o.device);
  auto model = model::load(path, torch::kFloat);
  if (device.is_cuda() || dtype != torch::kFloat) model->to_device(device, dtype);
  model->set_activation_checkpointing(o.checkpointing);
  lora::ModelAdapters adapters(
      *model);  // adapter (master) weights in fp32 whatever the model's dtype
  lora::LoraConfig cfg;
  cfg.all_linear = true;
  cfg.rank = 16;
  cfg.alpha = 32;
  // The step comparison has one trainable adapter on each side, as PEFT's get_peft_model makes;
  // the kl_anchor run adds the frozen safety adapter of stage 2.
  if (with_kl) adapters.add("safety", cfg, lora::AdapterRole::safety, /*trainable=*/false);
  adapters.add("task", cfg, lora::AdapterRole::task, /*trainable=*/true);
  adapters.train(true);
  model->train();
  std::vector<at::Tensor> params;
  for (auto& [n, t] : adapters.trainable_parameters()) params.push_back(t);
  torch::optim::AdamW opt(params, torch::optim::AdamWOptions(1e-4));
  torch::manual_seed(0);
  auto batch = [&] {
    data::Batch b;
    b.input_ids =
        torch::randint(0, model->config().vocab_size, {o.batch, o.seq}, torch::kLong).to(device);
    b.attention_mask = torch::ones_like(b.input_ids);
    b.labels = b.input_ids.clone();
    b.supervised_tokens = o.batch * o.seq;
    return b;
  };
  data::Batch task = batch(), anchor = batch();
  if (const auto masked = static_cast<std::int64_t>(o.prompt_share * static_cast<double>(o.seq));
      masked > 0) {
    task.labels.narrow(1, 0, masked).fill_(-100);
    task.supervised_tokens = o.batch * (o.seq - masked);
  }
  // Anchor batches are conversations: the loss (and kl_anchor) covers the response only. Here the
  // second half of each row, as in a prompt/response pair of equal length.
  anchor.labels.narrow(1, 0, o.seq / 2).fill_(-100);
  anchor.supervised_tokens = o.batch * (o.seq - o.seq / 2);
  train::RegularizerSection rs;
  rs.name = "kl_anchor";
  auto reg = train::make_regularizer(rs);
  reg->setup(adapters, "task", "safety");
  auto sync = [&] {
    if (device.is_cuda()) torch::cuda::synchronize();
  };
  auto step = [&](bool kl, bool two = false) {
    at::Tensor loss;
    {
      // The trainer's precision: bf16 autocast for the forward pass, backward outside it.
      safetune::train::AutocastRegion ac(device.type(), o.autocast());
      // The trainer's path: lm_head and the loss on the supervised rows only, fused and chunked.
      loss = train::response_lm_loss(*model, task);
      // The anchor batch's own forward/backward without the reference: what kl_anchor adds beyond
      // it is the no-grad reference forward and the KL over the vocabulary.
      if (two) loss = loss + train::response_lm_loss(*model, anchor);
      if (kl) {
        train::RegContext ctx;
        ctx.model = model.get();
        ctx.adapters = &adapters;
        ctx.task_batch = &task;
        ctx.anchor = [&]() -> const data::Batch& { return anchor; };
        loss = loss + reg->lambda * reg->loss(ctx);
      }
    }
    loss.backward();
    torch::nn::utils::clip_grad_norm_(params, 1.0);
    opt.step();
    opt.zero_grad();
    sync();
  };
  StepTimes t;
  step(false);  // warm-up
  reset_peak(device);
  for (int i = 0; i < o.iters; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    step(false);
    t.ours.push_back(seconds_since(t0));
    if (partner) t.theirs.push_back(partner());
  }
  t.peak_mb = peak_mb(device);
  t.plain = median(t.ours);
  t.plain_best = *std::min_element(t.ours.begin(), t.ours.end());
  // SAFETUNE_BENCH_PROFILE=FILE: one more plain step under the autograd profiler (a Chrome trace).
  if (const char* prof = std::getenv("SAFETUNE_BENCH_PROFILE")) {
    torch::autograd::profiler::RecordProfile guard(std::string(prof) + ".safetune.json");
    step(false);
  }
  if (with_kl) {
    reset_peak(device);
    t.kl = best_of(o.iters, [&] { step(true); });
    t.kl_peak_mb = peak_mb(device);
    t.two_batches = best_of(o.iters, [&] { step(false, true); });
    t.nograd_forward = best_of(o.iters, [&] {
      torch::NoGradGuard ng;
      safetune::train::AutocastRegion ac(device.type(), o.autocast());
      model->forward(anchor.input_ids, anchor.attention_mask);
      sync();
    });
  }
  return t;
}

void report_kl(const StepTimes& ours, bool with_kl);

void bench_step(const fs::path& model, const Options& o, bool with_kl, bool with_python) {
  const double tokens = static_cast<double>(o.batch * o.seq);
  std::printf(
      "\n== %s  (batch %lld x seq %lld, prompt share %.2f, r 16 all-linear, %s %s%s, %d threads, "
      "%d paired steps)\n",
      model.filename().c_str(), (long long)o.batch, (long long)o.seq, o.prompt_share,
      o.device.c_str(), o.dtype.c_str(), o.autocast() ? " + bf16 autocast" : "", o.threads,
      o.iters);
  if (o.checkpointing)
    std::printf("safetune with activation checkpointing (the reference without)\n");
  if (!with_python) {
    auto ours = safetune_step(model, o, with_kl);
    std::printf("safetune step          %8.3f s  %9.1f tokens/s (median)\n", ours.plain,
                tokens / ours.plain);
    return report_kl(ours, with_kl);
  }
  // The reference runs in a server process that stays loaded; the steps alternate with ours.
  auto script = write_script("step", kPythonStep);
  Server py({o.python, script.string(), model.string(), std::to_string(o.threads),
             std::to_string(o.batch), std::to_string(o.seq), o.device, o.dtype,
             std::to_string(o.prompt_share)});
  const bool ready = py.wait_for("READY") >= 0;
  fs::remove(script);
  if (!ready) {
    std::printf("transformers+PEFT: the reference process failed to start\n");
    return;
  }
  bool failed = false;
  auto ours = safetune_step(model, o, with_kl, [&] {
    double s = py.request("step", "STEP_S");
    failed = failed || s < 0;
    return s;
  });
  if (failed) {
    std::printf("transformers+PEFT step: the reference process died\n");
    return;
  }
  std::vector<double> ratios;
  for (size_t i = 0; i < ours.ours.size(); ++i) ratios.push_back(ours.theirs[i] / ours.ours[i]);
  const double theirs = median(ours.theirs);
  std::printf("safetune step          %8.3f s  %9.1f tokens/s (median; best %.3f s)\n", ours.plain,
              tokens / ours.plain, *std::min_element(ours.ours.begin(), ours.ours.end()));
  std::printf("transformers+PEFT step %8.3f s  %9.1f tokens/s (median; best %.3f s)\n", theirs,
              tokens / theirs, *std::min_element(ours.theirs.begin(), ours.theirs.end()));
  std::printf(
      "ratio (safetune tokens/s / PEFT tokens/s): %.2fx median of %zu pairs (range %.2f-%.2f)\n",
      median(ratios), ratios.size(), *std::min_element(ratios.begin(), ratios.end()),
      *std::max_element(ratios.begin(), ratios.end()));
  if (ours.peak_mb >= 0) {
    const double theirs_mb = py.request("peak", "PEAK_MB");
    std::printf("peak CUDA memory: safetune %.0f MiB, transformers+PEFT %.0f MiB (ratio %.2fx)\n",
                ours.peak_mb, theirs_mb, theirs_mb > 0 ? ours.peak_mb / theirs_mb : -1.0);
  }
  report_kl(ours, with_kl);
}

void report_kl(const StepTimes& ours, bool with_kl) {
  if (with_kl) {
    std::printf("safetune step + kl_anchor         %8.3f s  (%.2fx the plain step, best of both)\n",
                ours.kl, ours.kl / ours.plain_best);
    if (ours.kl_peak_mb >= 0)
      std::printf("peak CUDA memory with kl_anchor   %8.0f MiB\n", ours.kl_peak_mb);
    std::printf(
        "step on task + anchor batch (CE)  %8.3f s  (the anchor batch's own forward/backward)\n",
        ours.two_batches);
    std::printf("one no-grad forward (anchor)      %8.3f s\n", ours.nograd_forward);
    std::printf(
        "kl_anchor overhead beyond the anchor batch's forward/backward: %.3f s = %.2f no-grad "
        "forwards\n",
        ours.kl - ours.two_batches, (ours.kl - ours.two_batches) / ours.nograd_forward);
  }
}

// ---------------------------------------------------------------------------------------------
// load

const char* kPythonLoad = R"PY(
import pathlib, sys, time
what, path = sys.argv[1], pathlib.Path(sys.argv[2])
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM
from gguf import GGUFReader
from gguf.quants import dequantize
t0 = time.perf_counter()
if what == "safetensors":
    files = [path] if path.is_file() else sorted(path.glob("*.safetensors"))
    ts = [t for f in files for t in load_file(str(f)).values()]
elif what == "transformers":
    if path.suffix == ".gguf":
        m = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    else:
        m = AutoModelForCausalLM.from_pretrained(str(path), dtype="auto")
    ts = list(m.parameters())
elif what == "gguf":
    r = GGUFReader(str(path))
    ts = [torch.from_numpy(dequantize(t.data, t.tensor_type)) for t in r.tensors]
else:
    ts = []
t1 = time.perf_counter()
s = sum(float(t.float().sum()) for t in ts)  # touch every weight once
print("LOAD_S", t1 - t0)
print("TOUCH_S", time.perf_counter() - t1)
print("ELEMENTS", sum(t.numel() for t in ts))
print("HWM_KB", [l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM")][0])
)PY";

std::uint64_t size_of(const fs::path& p) {
  if (fs::is_regular_file(p)) return fs::file_size(p);
  std::uint64_t n = 0;
  for (const auto& e : fs::directory_iterator(p))
    if (e.path().extension() == ".safetensors") n += e.file_size();
  return n;
}

void bench_load(const Options& o, const std::string& self) {
  fs::path dir = fs::temp_directory_path() / "safetune_bench_models";
  fs::create_directories(dir);
  struct Case {
    std::string name;
    fs::path path;
    std::string dtype;  // what safetune loads it as
  };
  std::vector<Case> cases;
  for (auto [name, dt] :
       {std::pair{"smollm2-f32", torch::kFloat}, {"smollm2-bf16", torch::kBFloat16}}) {
    fs::path d = dir / name;
    if (!fs::exists(d / "config.json")) {
      auto m = model::load(smollm2(), torch::kFloat);
      model::ExportOptions eo;
      eo.dtype = dt;
      model::export_hf(*m, d, eo);
    }
    cases.push_back({name, d, dt == torch::kFloat ? "float32" : "bfloat16"});
  }
  cases.push_back({"smollm2-q4_1.gguf", smollm2(), "float32"});
  auto script = write_script("load", kPythonLoad);
  auto py = [&](const std::string& what, const fs::path& p) {
    return run_child({o.python, script.string(), what, p.string()});
  };
  auto base_ours = run_child({self, "load-one", "", "float32"});
  auto base_py = py("none", ".");
  std::printf(
      "\n== checkpoint loading (fresh process each; peak RSS = the process's VmHWM; idle process: "
      "safetune %.0f MB, "
      "python+torch %.0f MB)\n",
      base_ours.max_rss_mb, base_py.max_rss_mb);
  std::printf(
      "(time: the load call, imports excluded; then every weight is read once, so mapped pages "
      "count in RSS)\n");
  std::printf("%-18s %8s  %-30s %8s %8s %11s  %s\n", "file", "size MB", "loader", "load s",
              "touch s", "peak RSS MB", "RSS - idle");
  auto row = [&](const Case& c, const std::string& loader, const Child& r, double idle) {
    double t = value_of(r.out, "LOAD_S");
    if (t < 0) {
      std::printf("%-18s %8s  %-30s  failed (status %d)\n", c.name.c_str(), "", loader.c_str(),
                  r.status);
      return;
    }
    std::printf("%-18s %8.1f  %-30s %8.3f %8.3f %11.0f  %+.0f\n", c.name.c_str(),
                size_of(c.path) / 1048576.0, loader.c_str(), t, value_of(r.out, "TOUCH_S"),
                r.max_rss_mb, r.max_rss_mb - idle);
  };
  for (const auto& c : cases) {
    auto ours = run_child({self, "load-one", c.path.string(), c.dtype});
    row(c, "safetune model::load " + c.dtype, ours, base_ours.max_rss_mb);
    if (c.dtype ==
        "bfloat16")  // the same file converted on load: a copy, for contrast with zero-copy
      row(c, "safetune model::load float32",
          run_child({self, "load-one", c.path.string(), "float32"}), base_ours.max_rss_mb);
    if (c.path.extension() == ".gguf") {
      row(c, "gguf GGUFReader+dequantize", py("gguf", c.path), base_py.max_rss_mb);
    } else {
      row(c, "safetensors load_file", py("safetensors", c.path), base_py.max_rss_mb);
    }
    row(c, "transformers from_pretrained", py("transformers", c.path), base_py.max_rss_mb);
  }
  fs::remove(script);
}

// Peak resident set of this process (VmHWM: reset by exec, unlike rusage of a spawned child).
long long hwm_kb() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::atoll(line.c_str() + 6);
  return -1;
}

// Child mode: load one checkpoint as a model (or nothing, for the idle baseline) and print the
// time.
int load_one(const std::string& path, const std::string& dtype) {
  auto t0 = std::chrono::steady_clock::now();
  std::int64_t n = 0;
  double load_s = 0, touch_s = 0, sum = 0;
  if (!path.empty()) {
    auto m = model::load(path, dtype == "bfloat16" ? torch::kBFloat16 : torch::kFloat);
    load_s = seconds_since(t0);
    auto t1 = std::chrono::steady_clock::now();
    for (const auto& [name, t] : m->state_dict_hf())
      sum += t.to(torch::kFloat).sum().item<double>();  // touch
    touch_s = seconds_since(t1);
    n = m->parameter_count();
  }
  std::printf("LOAD_S %.6f\nTOUCH_S %.6f\nELEMENTS %lld\nHWM_KB %lld\nSUM %g\n", load_s, touch_s,
              (long long)n, hwm_kb(), sum);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  std::vector<std::string> rest;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--threads") o.threads = std::atoi(next().c_str());
    else if (a == "--batch") o.batch = std::atoll(next().c_str());
    else if (a == "--seq") o.seq = std::atoll(next().c_str());
    else if (a == "--iters") o.iters = std::atoi(next().c_str());
    else if (a == "--python") o.python = next();
    else if (a == "--model") o.model = next();
    else if (a == "--device") o.device = next();
    else if (a == "--dtype") o.dtype = next();
    else if (a == "--prompt-share") o.prompt_share = std::atof(next().c_str());
    else if (a == "--activation-checkpointing") o.checkpointing = true;
    else if (a == "--help" || a == "-h") {
      std::printf(
          "usage: bench_train [step|kl|load|all] [--model PATH] [--threads N] [--batch B] [--seq "
          "T] [--iters N]\n"
          "                   [--device cpu|cuda] [--dtype fp32|bf16] [--prompt-share F] "
          "[--activation-checkpointing]\n"
          "                   [--python PATH]\n");
      return 0;
    } else rest.push_back(a);
  }
  if (!rest.empty() && rest[0] == "load-one")
    return load_one(rest.size() > 1 ? rest[1] : "", rest.size() > 2 ? rest[2] : "float32");
  if (!rest.empty()) o.mode = rest[0];
  if (o.threads < 1 || o.batch < 1 || o.seq < 2 || o.iters < 1) {
    std::fprintf(stderr,
                 "error: --threads, --batch, --iters must be positive and --seq at least 2\n");
    return 2;
  }
  if ((o.device != "cpu" && o.device != "cuda") || (o.dtype != "fp32" && o.dtype != "bf16") ||
      !(o.prompt_share >= 0 && o.prompt_share < 1)) {
    std::fprintf(
        stderr, "error: --device is cpu or cuda, --dtype fp32 or bf16, --prompt-share in [0, 1)\n");
    return 2;
  }
  if (o.device == "cuda" && !torch::cuda::is_available()) {
    std::fprintf(stderr, "error: --device cuda: no CUDA device is available to this process\n");
    return 1;
  }
  at::set_num_threads(o.threads);
  at::set_num_interop_threads(1);
  try {
    if (o.mode == "step" || o.mode == "kl" || o.mode == "all") {
      std::vector<fs::path> models{tiny(), smollm2()};
      if (!o.model.empty()) models = {o.model};
      for (const auto& m : models) bench_step(m, o, o.mode != "step", o.mode != "kl");
    }
    if (o.mode == "load" || o.mode == "all")
      bench_load(o, fs::canonical("/proc/self/exe").string());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
