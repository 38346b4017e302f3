// Encoding throughput (MB/s, one thread) of safetune's tokenizer vs Hugging Face `tokenizers`.
#include <unistd.h>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "safetune/tokenizer/tokenizer.hpp"

namespace {
std::vector<std::string> read_corpus(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "error: cannot open corpus %s\n", path.c_str());
    std::exit(1);
  }
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(in, line)) {
    std::string out;
    for (size_t i = 0; i < line.size(); ++i) {
      if (line[i] == '\\' && i + 1 < line.size() &&
          std::string_view("nrt\\").find(line[i + 1]) != std::string_view::npos) {
        char c = line[++i];
        out.push_back(c == 'n' ? '\n' : c == 'r' ? '\r' : c == 't' ? '\t' : '\\');
      } else {
        out.push_back(line[i]);
      }
    }
    lines.push_back(out);
  }
  return lines;
}

// The reference side runs in the venv's Python: encode_batch on one Rayon thread, same lines.
const char* kPython = R"PY(
import os, sys, time
os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[1]); reps = int(sys.argv[3])
lines = []
for l in open(sys.argv[2], encoding="utf-8").read().split("\n")[:-1]:
    out, i = [], 0
    while i < len(l):
        if l[i] == "\\" and i + 1 < len(l) and l[i + 1] in "nrt\\":
            out.append({"n": "\n", "r": "\r", "t": "\t", "\\": "\\"}[l[i + 1]]); i += 2
        else:
            out.append(l[i]); i += 1
    lines.append("".join(out))
nbytes = sum(len(l.encode()) for l in lines)
tok.encode_batch(lines, add_special_tokens=False)
best_batch = best_loop = 1e9
for _ in range(reps):
    t = time.perf_counter(); tok.encode_batch(lines, add_special_tokens=False); best_batch = min(best_batch, time.perf_counter() - t)
    t = time.perf_counter()
    for l in lines: tok.encode(l, add_special_tokens=False)
    best_loop = min(best_loop, time.perf_counter() - t)
print(nbytes / best_batch / 1e6, nbytes / best_loop / 1e6)
)PY";
}  // namespace

int main(int argc, char** argv) {
  std::string tok_path = SAFETUNE_BENCH_TOKENIZER, corpus = SAFETUNE_BENCH_CORPUS,
              python = SAFETUNE_BENCH_PYTHON;
  int reps = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i];
    if (k == "--tokenizer") tok_path = argv[i + 1];
    else if (k == "--corpus") corpus = argv[i + 1];
    else if (k == "--python") python = argv[i + 1];
    else if (k == "--reps") reps = std::max(1, std::atoi(argv[i + 1]));
    else {
      std::fprintf(stderr,
                   "usage: bench_tokenizer [--tokenizer tokenizer.json] [--corpus FILE] [--python "
                   "PY] [--reps N]\n");
      return 2;
    }
  }
  auto lines = read_corpus(corpus);
  size_t nbytes = 0;
  for (auto& l : lines) nbytes += l.size();
  std::unique_ptr<safetune::tokenizer::Tokenizer> tok;
  try {
    tok = safetune::tokenizer::load_tokenizer(tok_path);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s (run the reference_fixtures test first)\n", e.what());
    return 1;
  }
  size_t ntok = 0;
  for (auto& l : lines) ntok += tok->encode(l, false).size();  // warm-up, like the reference's
  double best = 1e9;
  for (int r = 0; r < reps; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    size_t n = 0;
    for (auto& l : lines) n += tok->encode(l, false).size();
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::min(best, s);
    if (n != ntok) return 1;
  }
  double ours = static_cast<double>(nbytes) / best / 1e6;
  std::printf("corpus: %zu lines, %.2f MB, %zu tokens; tokenizer %s\n", lines.size(), nbytes / 1e6,
              ntok, tok_path.c_str());
  std::printf("safetune  (1 thread):                 %8.2f MB/s\n", ours);

  std::string script_path = (std::filesystem::temp_directory_path() /
                             ("safetune_bench_tokenizer_" + std::to_string(::getpid()) + ".py"))
                                .string();
  {
    std::ofstream s(script_path);
    s << kPython;
  }
  std::string cmd = "'" + python + "' '" + script_path + "' '" + tok_path + "' '" + corpus + "' " +
                    std::to_string(reps);
  FILE* p = popen(cmd.c_str(), "r");
  double batch = 0, loop = 0;
  if (!p || std::fscanf(p, "%lf %lf", &batch, &loop) != 2) {
    std::fprintf(stderr, "error: reference run failed: %s\n", cmd.c_str());
    if (p) pclose(p);
    std::remove(script_path.c_str());
    return 1;
  }
  pclose(p);
  std::remove(script_path.c_str());
  std::printf("tokenizers encode_batch (1 thread):   %8.2f MB/s   ratio %.2fx\n", batch,
              ours / batch);
  std::printf("tokenizers encode per line (python):  %8.2f MB/s   ratio %.2fx\n", loop,
              ours / loop);
  return 0;
}
