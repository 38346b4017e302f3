// Benchmarks the fused LoRA kernels side by side with the naive ATen formulation and PEFT itself:
// merge of two rank-16 adapters into a 4096x14336 weight, and the fused forward+backward against a
// plain Linear (CPU: 1024 tokens, 1024x1024 fp32; CUDA: 4096 tokens, 4096x4096 bf16, plus copy
// bandwidth). Prints times and ratios.
#include "safetune/kernels/lora.hpp"

#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <string>

namespace k = safetune::kernels;

namespace {

struct Options {
  std::string device = "cpu";
  int iters = 5;
  std::int64_t out = 4096, in = 14336, rank = 16;
  bool peft = true;
};

void sync(const at::Device& dev) {
  if (dev.is_cuda()) torch::cuda::synchronize();
}

// Median-free simple timing: one warm-up, then the mean over iters, in milliseconds.
double time_ms(const at::Device& dev, int iters, const std::function<void()>& fn) {
  fn();
  sync(dev);
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) fn();
  sync(dev);
  const auto t1 = std::chrono::steady_clock::now();
  return std::chrono::duration<double, std::milli>(t1 - t0).count() / iters;
}

// PEFT's own merge of the same problem, timed in the venv's Python (the reference stack).
double peft_merge_ms(const Options& o, const std::string& device, const std::string& dtype) {
  const auto script = std::filesystem::temp_directory_path() / "safetune_bench_peft_merge.py";
  {
    std::ofstream f(script);
    f << "import sys, time, torch\n"
         "from torch import nn\n"
         "from peft import LoraConfig, get_peft_model\n"
         "out, inn, r, iters, dev, dt = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), "
         "int(sys.argv[4]), sys.argv[5], sys.argv[6]\n"
         "torch.set_num_threads(int(sys.argv[7]))\n"
         "class M(nn.Module):\n"
         "    def __init__(s):\n"
         "        super().__init__(); s.proj = nn.Linear(inn, out, bias=False)\n"
         "m = M().to(dev, getattr(torch, dt))\n"
         "p = get_peft_model(m, LoraConfig(r=r, lora_alpha=2*r, target_modules=['proj']), "
         "adapter_name='a')\n"
         "p.add_adapter('b', LoraConfig(r=r, lora_alpha=2*r, target_modules=['proj']))\n"
         "layer = p.base_model.model.proj\n"
         "with torch.no_grad():\n"
         "    for n in ('a', 'b'): layer.lora_B[n].weight.normal_()\n"
         "def sync():\n"
         "    if dev == 'cuda': torch.cuda.synchronize()\n"
         "def once():\n"
         "    layer.merge(adapter_names=['a', 'b']); layer.unmerge()\n"
         "once(); sync()\n"
         "t = time.perf_counter()\n"
         "for _ in range(iters): once()\n"
         "sync()\n"
         "print((time.perf_counter() - t) * 1000 / iters / 2)\n";  // merge and unmerge cost alike
  }
  const std::string cmd =
      std::string(SAFETUNE_BENCH_PYTHON) + " " + script.string() + " " + std::to_string(o.out) +
      " " + std::to_string(o.in) + " " + std::to_string(o.rank) + " " + std::to_string(o.iters) +
      " " + device + " " + dtype + " " + std::to_string(at::get_num_threads()) + " 2>/dev/null";
  FILE* pipe = popen(cmd.c_str(), "r");
  if (!pipe) return -1;
  char buf[256] = {0};
  std::string text;
  while (fgets(buf, sizeof buf, pipe)) text += buf;
  const int rc = pclose(pipe);
  std::filesystem::remove(script);
  if (rc != 0 || text.empty()) return -1;
  try {
    return std::stod(text);
  } catch (...) {
    return -1;
  }
}

std::vector<k::LoraFactors> make(const Options& o, at::Device dev, at::ScalarType dt) {
  std::vector<k::LoraFactors> f;
  for (int i = 0; i < 2; ++i) {
    k::LoraFactors a;
    a.A = torch::randn({o.rank, o.in}, torch::dtype(dt).device(dev)) * 0.01;
    a.B = torch::randn({o.out, o.rank}, torch::dtype(dt).device(dev)) * 0.01;
    a.scale = 2.0;
    f.push_back(a);
  }
  return f;
}

void naive_merge(at::Tensor& W, const std::vector<k::LoraFactors>& f) {
  for (const auto& a : f) W.add_(at::mm(a.B, a.A) * a.scale);
}

// A Linear with two unmerged adapters (the frozen safety adapter of stage 2 and the trainable task
// adapter), forward + backward, against the plain Linear and PEFT's per-adapter formulation.
void bench_linear(const at::Device& dev, std::int64_t T, std::int64_t H, at::ScalarType dt,
                  const Options& o) {
  auto opts = torch::dtype(dt).device(dev);
  const auto W = torch::randn({H, H}, opts) * 0.02;
  auto x = torch::randn({T, H}, opts).set_requires_grad(true);
  auto f = make(Options{o.device, 1, H, H, o.rank, false}, dev, at::kFloat);  // fp32 master weights
  f[1].A.set_requires_grad(true);
  f[1].B.set_requires_grad(true);
  const auto gy = torch::randn({T, H}, opts);
  auto step = [&](int mode) {
    at::Tensor y = mode == 3 ? k::lora_linear(x, W, at::Tensor(), f, true) : at::linear(x, W);
    if (mode == 1) y = k::lora_linear_add(x, y, f, true);
    if (mode == 2)  // PEFT: x cast to the adapter dtype, each adapter's product cast back and added
      for (const auto& a : f)
        y = y + (at::linear(at::linear(x.to(at::kFloat), a.A), a.B) * a.scale).to(dt);
    y.backward(gy);
    x.mutable_grad().reset();
    for (auto& a : f) {
      a.A.mutable_grad().reset();
      a.B.mutable_grad().reset();
    }
  };
  const int iters = dev.is_cuda() ? o.iters * 4 : o.iters;
  const double plain = time_ms(dev, iters, [&] { step(0); });
  const double fused = time_ms(dev, iters, [&] { step(1); });
  const double peft_style = time_ms(dev, iters, [&] { step(2); });
  const double whole = time_ms(dev, iters, [&] { step(3); });
  std::printf(
      "Linear %lldx%lld, %lld tokens, 2 x rank-%lld adapters (one frozen), %s weights, fp32 "
      "adapters, "
      "forward+backward\n",
      (long long)H, (long long)H, (long long)T, (long long)o.rank, c10::toString(dt));
  std::printf(
      "  plain Linear      %9.3f ms\n  lora_linear       %9.3f ms  overhead %+.1f%% (base GEMM "
      "inside the op)\n"
      "  lora_linear_add   %9.3f ms  overhead %+.1f%% (adapters added to a computed base output)\n"
      "  per-adapter ATen  %9.3f ms  overhead %+.1f%% (PEFT's formulation)\n",
      plain, whole, 100.0 * (whole / plain - 1), fused, 100.0 * (fused / plain - 1), peft_style,
      100.0 * (peft_style / plain - 1));
}

void bench_cpu_merge(const Options& o, const at::Device& dev);

void bench_cpu(const Options& o) {
  const at::Device dev(at::kCPU);
  bench_cpu_merge(o, dev);
  bench_linear(dev, 1024, 1024, at::kFloat, o);
}

void bench_cpu_merge(const Options& o, const at::Device& dev) {
  at::NoGradGuard g;
  at::Tensor W = torch::randn({o.out, o.in});
  const auto f = make(o, dev, at::kFloat);
  std::printf("merge 2 x rank-%lld into %lldx%lld fp32 on CPU (%d threads)\n", (long long)o.rank,
              (long long)o.out, (long long)o.in, at::get_num_threads());
  const double fused = time_ms(dev, o.iters, [&] { k::lora_merge_(W, f, 1.0); });
  const double naive = time_ms(dev, o.iters, [&] { naive_merge(W, f); });
  std::printf(
      "  fused kernel      %9.2f ms\n  naive ATen W+=sBA %9.2f ms   ratio naive/fused %.2fx\n",
      fused, naive, naive / fused);
  if (o.peft) {
    const double peft = peft_merge_ms(o, "cpu", "float32");
    if (peft > 0)
      std::printf("  PEFT merge        %9.2f ms   ratio PEFT/fused %.2fx\n", peft, peft / fused);
    else std::printf("  PEFT merge        (could not run the venv python)\n");
  }
}

void bench_cuda(const Options& o) {
  if (!torch::cuda::is_available() || !k::cuda_kernels_built()) {
    std::printf("no CUDA device visible (or no CUDA kernels built): GPU figures outstanding\n");
    return;
  }
  const at::Device dev(at::kCUDA);
  {
    at::NoGradGuard g;
    for (auto dt : {at::kBFloat16, at::kHalf, at::kFloat}) {
      at::Tensor W = torch::randn({o.out, o.in}, torch::dtype(dt).device(dev));
      at::Tensor dst = torch::empty_like(W);
      const auto f = make(o, dev, dt);
      const double bytes = 2.0 * W.numel() * W.element_size();  // one read + one write
      const double copy = time_ms(dev, o.iters * 4, [&] { dst.copy_(W); });
      const double fused = time_ms(dev, o.iters * 4, [&] { k::lora_merge_(W, f, 1.0); });
      const double naive = time_ms(dev, o.iters * 4, [&] { naive_merge(W, f); });
      std::printf("merge 2 x rank-%lld into %lldx%lld %s on CUDA\n", (long long)o.rank,
                  (long long)o.out, (long long)o.in, c10::toString(dt));
      std::printf("  device copy       %9.3f ms  %7.1f GB/s\n", copy, bytes / copy / 1e6);
      std::printf("  fused kernel      %9.3f ms  %7.1f GB/s  = %.0f%% of copy bandwidth\n", fused,
                  bytes / fused / 1e6, 100.0 * copy / fused);
      std::printf("  naive ATen        %9.3f ms  ratio naive/fused %.2fx\n", naive, naive / fused);
      if (o.peft) {
        const double peft = peft_merge_ms(o, "cuda",
                                          dt == at::kBFloat16 ? "bfloat16"
                                          : dt == at::kHalf   ? "float16"
                                                              : "float32");
        if (peft > 0)
          std::printf("  PEFT merge        %9.3f ms  ratio PEFT/fused %.2fx\n", peft, peft / fused);
      }
    }
  }
  bench_linear(dev, 4096, 4096, at::kBFloat16, o);
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "missing value after %s\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    try {
      if (a == "--device") o.device = next();
      else if (a == "--iters") o.iters = std::max(1, std::stoi(next()));
      else if (a == "--out") o.out = std::stoll(next());
      else if (a == "--in") o.in = std::stoll(next());
      else if (a == "--rank") o.rank = std::stoll(next());
      else if (a == "--no-peft") o.peft = false;
      else {
        std::fprintf(stderr,
                     "usage: bench_kernels [--device cpu|cuda] [--iters N] [--out N] [--in N] "
                     "[--rank R] [--no-peft]\n");
        return a == "--help" ? 0 : 2;
      }
    } catch (const std::exception&) {
      std::fprintf(stderr, "bad value for %s\n", a.c_str());
      return 2;
    }
  }
  if (o.out <= 0 || o.in <= 0 || o.rank <= 0) {
    std::fprintf(stderr, "sizes must be positive\n");
    return 2;
  }
  try {
    if (o.device == "cpu") bench_cpu(o);
    else if (o.device == "cuda") bench_cuda(o);
    else {
      std::fprintf(stderr, "unknown device %s\n", o.device.c_str());
      return 2;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
