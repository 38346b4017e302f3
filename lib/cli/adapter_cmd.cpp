// `safetune merge` (adapters into a Hugging Face model), `safetune export` (one adapter as a GGUF
// LoRA, or several packed into one PEFT or GGUF LoRA adapter) and `safetune project` (post-hoc Safe
// LoRA on saved adapters).
#include <cstdio>
#include <nlohmann/json.hpp>
#include <set>

#include "adapter_args.hpp"
#include "commands.hpp"
#include "safetune/error.hpp"
#include "safetune/io/atomic_file.hpp"
#include "safetune/log.hpp"
#include "safetune/lora/gguf_lora.hpp"
#include "safetune/lora/model_adapters.hpp"
#include "safetune/lora/peft.hpp"
#include "safetune/model/export.hpp"
#include "safetune/recipes/session.hpp"
#include "safetune/tokenizer/discovery.hpp"
#include "safetune/train/regularizer.hpp"

namespace safetune::cli {
namespace fs = std::filesystem;

namespace {

struct MergeArgs : AdapterArgs {
  std::string model, out, dtype = "float32", device = "cpu";
  std::uint64_t max_shard_mb = 2048;
};

int run_merge(const MergeArgs& a) {
  auto dt = recipes::parse_dtype(a.dtype);
  auto model = model::load(a.model, dt, recipes::parse_device(a.device));
  lora::ModelAdapters adapters(*model);
  auto names = apply_adapter_options(adapters, a, "merge");
  if (names.empty()) throw UsageError("--adapters names no adapter directory", "--adapters");
  adapters.merge(names, lora::MergeCopy::none, /*safe=*/true);  // refuses non-finite results
  model::ExportOptions opt;
  opt.dtype = dt;
  opt.max_shard_bytes = a.max_shard_mb << 20;
  model::export_hf(*model, a.out, opt);
  auto copied = tokenizer::save_tokenizer_files(a.model, a.out);
  for (const auto& n : names) {
    const auto& spec = adapters.stacks(n).front()->get(n).spec;
    std::printf("merged %s (role %s%s, %zu modules)\n", n.c_str(), lora::role_name(spec.role),
                spec.required_at_inference ? ", required at inference" : "",
                adapters.stacks(n).size());
  }
  std::printf("wrote %s (%s%s%s)\n", a.out.c_str(), a.dtype.c_str(),
              copied.empty() ? "" : ", tokenizer files: ",
              [&] {
                std::string s;
                for (const auto& c : copied) s += (s.empty() ? "" : " ") + c;
                return s;
              }()
                  .c_str());
  return 0;
}

struct ExportArgs : AdapterArgs {
  std::string adapter, format, model, out, dtype = "float32";
};

// One adapter, or several packed into one (safety + task: deployable outside safetune as one file).
int run_export(const ExportArgs& a) {
  if (a.format != "gguf-lora" && a.format != "peft")
    throw UsageError("unknown export format '" + a.format + "'", "--format", "gguf-lora or peft");
  ExportArgs args = a;
  if (!a.adapter.empty()) args.adapters = a.adapter + (a.adapters.empty() ? "" : "," + a.adapters);
  if (recipes::split_paths(args.adapters).empty())
    throw UsageError("name the adapter(s) to export: ADAPTER or --adapters SAFETY,TASK",
                     "--adapters");
  auto model = model::load(a.model);
  lora::ModelAdapters adapters(*model);
  auto names = apply_adapter_options(
      adapters, args, "export");  // refuses a task adapter without its safety adapter
  const auto& c = model->config();
  if (a.format == "gguf-lora" && names.size() == 1) {
    auto s = lora::export_gguf_lora(adapters, names.front(), c.architecture, c.num_attention_heads,
                                    c.num_key_value_heads, a.out, recipes::parse_dtype(a.dtype));
    std::printf("wrote %s: adapter %s, arch %s, %zu modules, alpha %g, %s%s\n", a.out.c_str(),
                names.front().c_str(), c.architecture.c_str(), s.modules, s.alpha, a.dtype.c_str(),
                s.rescaled.empty()
                    ? ""
                    : (", " + std::to_string(s.rescaled.size()) + " modules rescaled").c_str());
    return 0;
  }
  std::string packed_name;
  for (const auto& n : names) packed_name += (packed_name.empty() ? "" : "+") + n;
  auto packed = lora::pack_adapters(adapters, names, packed_name);
  std::int64_t max_rank = 0;
  for (const auto& m : packed.modules) max_rank = std::max(max_rank, m.spec.rank);
  if (a.format == "peft") {
    if (a.dtype != "float32")
      throw UsageError("the packed PEFT adapter is written in float32", "--dtype");
    lora::write_peft(packed, a.out, a.model);
  } else {
    lora::export_gguf_lora(packed, c.architecture, c.num_attention_heads, c.num_key_value_heads,
                           a.out, recipes::parse_dtype(a.dtype));
  }
  std::printf("wrote %s: %s packed as one %s adapter (%zu modules, ranks up to %lld, role %s%s)\n",
              a.out.c_str(), packed_name.c_str(), a.format == "peft" ? "PEFT" : "GGUF LoRA",
              packed.modules.size(), static_cast<long long>(max_rank), lora::role_name(packed.role),
              packed.required_at_inference ? ", required at inference" : "");
  return 0;
}

struct ProjectArgs {
  std::string safety, task, out, model;
  double threshold = train::RegularizerSection{}.threshold;
};

// The base model a PEFT adapter names, when that is a local path.
std::string base_model_of(const fs::path& adapter_dir) {
  const std::string base = lora::peft_base_model(adapter_dir);
  std::error_code ec;
  if (base.empty() || !fs::exists(base, ec))
    throw UsageError("the task adapter names no local base model ('" + base + "')",
                     (adapter_dir / "adapter_config.json").string(), "pass --model MODEL");
  return base;
}

int run_project(const ProjectArgs& a) {
  const std::string model_path = a.model.empty() ? base_model_of(a.task) : a.model;
  auto model = model::load(model_path);
  lora::ModelAdapters adapters(*model);
  adapters.load_peft(a.safety, "safety");
  adapters.load_peft(a.task, "task");
  // Cosines before projection, per Linear holding both (what safe_lora_project decides on).
  const auto plan = train::safe_lora_plan(adapters, "task", "safety");
  auto projected = train::safe_lora_project(adapters, "task", "safety", a.threshold);
  std::set<std::string> proj(projected.begin(), projected.end());
  nlohmann::json layers = nlohmann::json::array();
  std::printf("%-48s %9s  %s\n", "module", "cosine", "projected");
  for (const auto& l : plan.layers) {
    const bool p = proj.count(l.module) > 0;
    std::printf("%-48s %9.6f  %s\n", l.module.c_str(), l.cosine, p ? "yes" : "no");
    layers.push_back({{"module", l.module}, {"cosine", l.cosine}, {"projected", p}});
  }
  adapters.save_peft("task", a.out, model_path);
  nlohmann::json summary = {{"threshold", a.threshold},
                            {"safety", a.safety},
                            {"task", a.task},
                            {"model", model_path},
                            {"layers", layers},
                            {"projected", projected.size()},
                            {"paired", plan.layers.size()},
                            {"task_layers_without_safety", plan.unpaired}};
  io::atomic_write(fs::path(a.out) / "safe_lora.json", summary.dump(2) + "\n");
  std::printf(
      "projected %zu of %zu layers (threshold %g); %zu task layers have no safety adapter\n",
      projected.size(), plan.layers.size(), a.threshold, plan.unpaired);
  std::printf("wrote %s (PEFT adapter + safe_lora.json)\n", a.out.c_str());
  return 0;
}

}  // namespace

void register_adapter_commands(CLI::App& app, Action& action) {
  auto m = std::make_shared<MergeArgs>();
  auto* merge = app.add_subcommand(
      "merge", "merge adapters into the base weights; write a Hugging Face directory");
  merge->add_option("model", m->model, "HF directory, .safetensors or .gguf")->required();
  add_adapter_options(merge, *m, /*with_disable=*/false);
  merge->get_option("--adapters")->required();
  merge->add_option("--out", m->out, "output directory (config.json, safetensors, tokenizer files)")
      ->required();
  merge->add_option("--dtype", m->dtype, "float32, bfloat16 or float16 (load, merge and write)")
      ->capture_default_str();
  merge->add_option("--device", m->device, "cpu or cuda[:N]")->capture_default_str();
  merge->add_option("--max-shard-mb", m->max_shard_mb, "safetensors shard size")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 20));
  merge->callback([&action, m] { action = [m] { return run_merge(*m); }; });

  auto e = std::make_shared<ExportArgs>();
  auto* exp = app.add_subcommand("export",
                                 "write adapters in another format: one GGUF LoRA (llama.cpp), or "
                                 "several packed into one PEFT or GGUF LoRA adapter");
  exp->add_option("adapter", e->adapter, "PEFT adapter directory (or use --adapters)");
  add_adapter_options(exp, *e, /*with_disable=*/false);
  exp->add_option("--format", e->format, "gguf-lora or peft (peft: the adapters packed into one)")
      ->required();
  exp->add_option("--model", e->model,
                  "the base model (names, heads and the Q/K permutation come from it)")
      ->required();
  exp->add_option("--out", e->out, "output .gguf file (gguf-lora) or directory (peft)")->required();
  exp->add_option("--dtype", e->dtype, "float32, float16 or bfloat16 tensors (gguf-lora)")
      ->capture_default_str();
  exp->callback([&action, e] { action = [e] { return run_export(*e); }; });

  auto p = std::make_shared<ProjectArgs>();
  auto* proj = app.add_subcommand(
      "project", "post-hoc Safe LoRA: project task-adapter layers onto the safety subspace");
  proj->add_option("--safety", p->safety, "the safety adapter (PEFT directory)")->required();
  proj->add_option("--task", p->task, "the task adapter (PEFT directory)")->required();
  proj->add_option("--out", p->out, "output PEFT directory (+ safe_lora.json)")->required();
  proj->add_option("--threshold", p->threshold, "project layers whose cosine is below this")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  proj->add_option("--model", p->model,
                   "base model (default: the task adapter's base_model_name_or_path)");
  proj->callback([&action, p] { action = [p] { return run_project(*p); }; });
}

}  // namespace safetune::cli
