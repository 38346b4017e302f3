// `safetune inspect MODEL` and `safetune forward MODEL --ids ...`: look at a checkpoint, run it
// once.
#include <cstdio>
#include <map>
#include <sstream>

#include <torch/torch.h>

#include "adapter_args.hpp"
#include "commands.hpp"
#include "safetune/error.hpp"
#include "safetune/io/safetensors.hpp"
#include "safetune/lora/model_adapters.hpp"
#include "safetune/model/causal_lm.hpp"
#include "safetune/recipes/session.hpp"

namespace safetune::cli {

namespace {

std::vector<std::int64_t> parse_ids(const std::string& text) {
  std::vector<std::int64_t> ids;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != item.size() || v < 0)
      throw UsageError("--ids: '" + item + "' is not a non-negative integer", "--ids");
    ids.push_back(v);
  }
  if (ids.empty()) throw UsageError("--ids needs at least one token id", "--ids");
  return ids;
}

std::string shape_str(at::IntArrayRef s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

int run_inspect(const std::string& path) {
  model::Checkpoint ckpt = model::load_checkpoint(path);
  // Building the model (without conversion) checks the tensors against the config.
  model::CausalLM model(ckpt);
  const auto& c = model.config();
  std::printf("architecture: %s\n", c.architecture.c_str());
  std::printf(
      "layers: %lld  hidden: %lld  intermediate: %lld  heads: %lld  kv_heads: %lld  head_dim: "
      "%lld\n",
      (long long)c.num_hidden_layers, (long long)c.hidden_size, (long long)c.intermediate_size,
      (long long)c.num_attention_heads, (long long)c.num_key_value_heads, (long long)c.head_dim);
  std::printf("vocab: %lld  rope_theta: %g  rope_scaling: %s  tied embeddings: %s\n",
              (long long)c.vocab_size, c.rope_theta,
              c.rope_scaling.type.empty() ? "none" : c.rope_scaling.type.c_str(),
              c.tie_word_embeddings ? "yes" : "no");
  std::printf("parameters: %lld\n", (long long)model.parameter_count());
  std::map<std::string, std::int64_t> by_dtype;
  size_t width = 4;
  for (const auto& [name, t] : ckpt.tensors) {
    by_dtype[c10::toString(t.scalar_type())] += t.numel();
    width = std::max(width, name.size());
  }
  std::printf("dtypes:");
  for (const auto& [d, n] : by_dtype) std::printf(" %s (%lld)", d.c_str(), (long long)n);
  std::printf("\n\n%-*s  %-9s  %s\n", (int)width, "name", "dtype", "shape");
  for (const auto& [name, t] : ckpt.tensors)
    std::printf("%-*s  %-9s  %s\n", (int)width, name.c_str(), c10::toString(t.scalar_type()),
                shape_str(t.sizes()).c_str());
  return 0;
}

struct ForwardArgs : AdapterArgs {
  std::string model, ids, out, dtype = "float32", device = "cpu";
};

int run_forward(const ForwardArgs& a) {
  auto ids = parse_ids(a.ids);
  auto dt = recipes::parse_dtype(a.dtype);
  auto dev = recipes::parse_device(a.device);
  auto model = model::load(a.model, dt, dev);
  lora::ModelAdapters adapters(*model);
  auto names = apply_adapter_options(adapters, a, "forward");
  if (!names.empty()) {
    std::printf("adapters:");
    for (const auto& n : names)
      std::printf(" %s%s", n.c_str(),
                  adapters.stacks(n).front()->get(n).enabled ? "" : " (disabled)");
    std::printf("\n");
  }
  torch::NoGradGuard no_grad;
  model->eval();
  const std::string& out = a.out;
  auto input = at::tensor(ids, at::TensorOptions().dtype(at::kLong)).unsqueeze(0);
  auto logits = model->forward(input).to(at::kCPU, at::kFloat);
  auto last = logits[0][logits.size(1) - 1];
  auto k = std::min<std::int64_t>(5, last.size(0));
  auto [vals, idx] = last.topk(k);
  std::printf("top-%lld next tokens after %zu input ids:\n", (long long)k, ids.size());
  for (std::int64_t i = 0; i < k; ++i)
    std::printf("  %lld  id %lld  logit %.6f\n", (long long)(i + 1),
                (long long)idx[i].item<std::int64_t>(), vals[i].item<double>());
  if (!out.empty()) {
    io::safetensors_save(out, {{"logits", logits.contiguous()}, {"input_ids", input}});
    std::printf("logits %s written to %s\n", shape_str(logits.sizes()).c_str(), out.c_str());
  }
  return 0;
}

}  // namespace

void register_model_commands(CLI::App& app, Action& action) {
  auto args = std::make_shared<ForwardArgs>();

  auto* inspect =
      app.add_subcommand("inspect", "print a model's architecture, parameter count and tensors");
  inspect->add_option("model", args->model, "HF directory, .safetensors or .gguf")->required();
  inspect->callback([&action, args] { action = [args] { return run_inspect(args->model); }; });

  auto* forward =
      app.add_subcommand("forward", "run the model on token ids and print the top-5 next tokens");
  forward->add_option("model", args->model, "HF directory, .safetensors or .gguf")->required();
  forward->add_option("--ids", args->ids, "comma-separated token ids, e.g. 1,2,3")->required();
  forward->add_option("--out", args->out,
                      "write the logits [1,T,V] (fp32) to this .safetensors file");
  forward->add_option("--dtype", args->dtype, "float32, bfloat16 or float16")
      ->capture_default_str();
  forward->add_option("--device", args->device, "cpu or cuda[:N]")->capture_default_str();
  add_adapter_options(forward, *args);
  forward->callback([&action, args] { action = [args] { return run_forward(*args); }; });
}

}  // namespace safetune::cli
