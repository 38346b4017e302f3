// Greedy-generation throughput on CPU: safetune vs transformers on the same model, threads and
// prompt.
//
// usage: bench_generate [--threads N] [--tokens N] [--python PATH] [MODEL...]
// Without MODELs: the tiny fixture model (build/fixtures/model/llama_gqa_llama3) and, when GGUF
// loading is built in and the file exists, SmolLM2-135M-Instruct Q4_1 from the bootstrap cache.
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "safetune/model/causal_lm.hpp"
#include "safetune/model/generate.hpp"

namespace fs = std::filesystem;
using namespace safetune;

namespace {

// The reference side: same prompt, same number of new tokens, greedy with the KV cache.
const char* kPythonBench = R"PY(
import pathlib, sys, time, torch
from transformers import AutoModelForCausalLM, GenerationConfig
path, threads, tokens, prompt = pathlib.Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
torch.set_num_threads(threads)
if path.suffix == ".gguf":
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
else:
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
model.eval()
model.generation_config.eos_token_id = None  # no early stop: both sides make exactly `tokens`
model.config.eos_token_id = None
ids = torch.tensor([[int(t) for t in prompt.split(",")]])
gc = GenerationConfig(do_sample=False, max_new_tokens=tokens, eos_token_id=None, pad_token_id=0)
with torch.no_grad():
    model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=GenerationConfig(do_sample=False, max_new_tokens=4, eos_token_id=None, pad_token_id=0))
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        out = model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=gc)
        best = min(best, time.perf_counter() - t0)
print("TOKENS_PER_S", tokens / best)
print("IDS", ",".join(str(int(t)) for t in out[0, ids.shape[1]:]))
)PY";

struct PyResult {
  double tokens_per_s = 0;
  std::string ids;
};

PyResult run_python(const std::string& python, const fs::path& model, int threads, int tokens,
                    const std::string& prompt) {
  fs::path script =
      fs::temp_directory_path() / ("safetune_bench_" + std::to_string(::getpid()) + ".py");
  fs::path out = script;
  out.replace_extension(".out");
  {
    std::ofstream f(script);
    f << kPythonBench;
  }
  std::string cmd = "'" + python + "' '" + script.string() + "' '" + model.string() + "' " +
                    std::to_string(threads) + " " + std::to_string(tokens) + " " + prompt + " > '" +
                    out.string() + "' 2>/dev/null";
  int rc = std::system(cmd.c_str());
  PyResult r;
  std::ifstream in(out);
  std::string key;
  while (in >> key) {
    if (key == "TOKENS_PER_S") in >> r.tokens_per_s;
    else if (key == "IDS") in >> r.ids;
  }
  fs::remove(script);
  fs::remove(out);
  if (rc != 0) std::fprintf(stderr, "  transformers side failed (exit %d)\n", rc);
  return r;
}

void bench(const fs::path& model_path, int threads, int tokens, const std::string& python) {
  std::printf("== %s (threads %d, %d new tokens, prompt 16 tokens, batch 1, fp32)\n",
              model_path.string().c_str(), threads, tokens);
  auto t0 = std::chrono::steady_clock::now();
  auto model = model::load(model_path);
  double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::vector<std::int64_t> prompt;
  for (int i = 0; i < 16; ++i) prompt.push_back(3 + (i * 37) % (model->config().vocab_size - 3));
  std::string prompt_text;
  for (auto id : prompt) prompt_text += (prompt_text.empty() ? "" : ",") + std::to_string(id);

  model::GenerateOptions opt;
  opt.max_new_tokens = tokens;
  opt.stop_tokens = std::vector<std::int64_t>{};
  opt.pad_token_id = 0;
  model::GenerateOptions warm = opt;
  warm.max_new_tokens = 4;
  model::generate(*model, {prompt}, warm);
  double best = 1e30;
  model::GenerateResult res;
  for (int rep = 0; rep < 3; ++rep) {
    auto s = std::chrono::steady_clock::now();
    res = model::generate(*model, {prompt}, opt);
    best =
        std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - s).count());
  }
  double ours = tokens / best;
  std::string our_ids;
  for (auto id : res.new_tokens[0]) our_ids += (our_ids.empty() ? "" : ",") + std::to_string(id);
  std::printf("  safetune     : %8.1f tokens/s (load %.2f s)\n", ours, load_s);
  auto py = run_python(python, model_path, threads, tokens, prompt_text);
  if (py.tokens_per_s > 0) {
    std::printf("  transformers : %8.1f tokens/s\n", py.tokens_per_s);
    std::printf("  ratio safetune/transformers: %.2fx   same tokens: %s\n", ours / py.tokens_per_s,
                py.ids == our_ids ? "yes" : "NO");
  }
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 1, tokens = 64;
  std::string python = SAFETUNE_BENCH_PYTHON;
  std::vector<fs::path> models;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (a == "--tokens" && i + 1 < argc) tokens = std::atoi(argv[++i]);
    else if (a == "--python" && i + 1 < argc) python = argv[++i];
    else if (a == "--help" || a == "-h") {
      std::printf("usage: bench_generate [--threads N] [--tokens N] [--python PATH] [MODEL...]\n");
      return 0;
    } else models.emplace_back(a);
  }
  if (threads < 1 || tokens < 1) {
    std::fprintf(stderr, "error: --threads and --tokens must be positive\n");
    return 2;
  }
  if (models.empty()) {
    models.push_back(fs::path(SAFETUNE_BENCH_FIXTURES) / "model" / "llama_gqa_llama3");
#if __has_include("safetune/io/gguf.hpp")
    fs::path smol = fs::path(SAFETUNE_BENCH_HOME) / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf";
    if (fs::exists(smol)) models.push_back(smol);
#endif
  }
  at::set_num_threads(threads);
  at::set_num_interop_threads(1);
  for (const auto& m : models) {
    try {
      bench(m, threads, tokens, python);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "error: %s: %s\n", m.string().c_str(), e.what());
      return 1;
    }
  }
  return 0;
}
