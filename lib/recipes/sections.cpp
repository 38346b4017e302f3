// The two-stage config's sections: their keys, documentation and checks, and their translation
// into the library's own types.
#include "safetune/recipes/two_stage_steps.hpp"

namespace safetune::recipes {

void Stage1Section::describe(ConfigVisitor& v) {
  v.field("enabled", enabled, Field("Run stage 1 (train the safety adapter)."));
  v.section("lora", lora, Field("The safety adapter."));
  v.section(
      "data", data,
      Field("Safety alignment data (refusals + helpful answers; deep-alignment files allowed)."));
  v.section("train", train, Field("Optimisation of stage 1."));
}

void Stage2Section::describe(ConfigVisitor& v) {
  v.field("enabled", enabled, Field("Run stage 2 (train the task adapter)."));
  v.field("safety_mode", safety_mode,
          Field("separate: safety adapter frozen and active beside the task adapter; merged: "
                "folded into the "
                "base weights first (the reactive baseline).")
              .one_of({"separate", "merged"}));
  v.field("safety_adapter", safety_adapter,
          Field("PEFT directory of a safety adapter, used when stage 1 is off.").path());
  v.section("lora", lora, Field("The task adapter."));
  v.section("data", data, Field("Task data."));
  v.section(
      "anchor", anchor,
      Field("Safety anchor batches for kl_anchor and gradient_projection; empty: stage 1's data."));
  v.list("regularizers", regularizers,
         Field("Safety regularizers added to the task loss (docs/regularizers.md)."));
  v.section("train", train, Field("Optimisation of stage 2."));
  v.field(
      "task_eval", task_eval,
      Field("Held-out JSONL; the task metric is the exact-match rate of the JSON answer.").path());
  v.field("task_eval_limit", task_eval_limit,
          Field("Use the first N task_eval examples; 0: all.").at_least(0));
  v.field("task_eval_max_new_tokens", task_eval_max_new_tokens,
          Field("Greedy tokens generated per task_eval example.").range(1, 4096));
  v.field("safe_lora_threshold", safe_lora_threshold,
          Field("Post-hoc Safe LoRA projection of layers whose cosine is below this; 0 disables.")
              .range(0, 1));
}

void ReleaseSection::describe(ConfigVisitor& v) {
  v.field(
      "registry", registry,
      Field("Release registry JSON; a finished run is registered there (empty: not registered).")
          .path());
  v.field("id", id, Field("Release id; default: <run.name>-<UTC time>."));
  v.field("promote", promote, Field("Make a run that passes its gates the current release."));
  v.field("prometheus_file", prometheus_file,
          Field("`safetune monitor`: node_exporter textfile to write (empty: none).").path());
  v.field("rollback_on_regression", rollback_on_regression,
          Field("`safetune monitor`: re-point to the last passing release on a regression."));
}

void SafetySection::describe(ConfigVisitor& v) {
  v.field("assess", assess,
          Field("Assess safety before stage 1, after stage 1 and after stage 2."));
  v.field("suite", suite,
          Field("Probe suite: a directory holding harmful.jsonl, benign.jsonl, "
                "discrimination.jsonl, or a suite spec "
                "joining files by ',', each [FORMAT[:KIND]:]PATH, e.g. "
                "data/probes,advbench:harmful_behaviors.csv,xstest:xstest_prompts.csv "
                "(docs/public-benchmarks.md)")
              .path());
  v.field("max_new_tokens", max_new_tokens,
          Field("Greedy tokens generated per probe.").range(1, 4096));
  v.field("batch_size", batch_size, Field("Probes per generation batch.").range(1, 1024));
  v.field("limit", limit, Field("Probes used per kind; 0: all.").at_least(0));
  v.section("judge", judge,
            Field("An OpenAI-compatible chat endpoint that judges refusals instead of the refusal "
                  "phrases."));
  v.section("gates", gates, Field("Promotion gates against the aligned model."));
  v.section("guard", guard, Field("In-training safety guard for stage 2."));
  v.section("release", release, Field("Release registry and post-deployment monitoring."));
}

void TwoStageConfig::describe(ConfigVisitor& v) {
  v.section("run", run, Field("Run identity and output location."));
  v.section("model", model, Field("The base model."));
  v.section("stage1", stage1, Field("Stage 1: safety alignment pass."));
  v.section("stage2", stage2, Field("Stage 2: task LoRA under the safety regularizers."));
  v.section("safety", safety, Field("Safety assessment, gates and guard."));
  v.section("dist", dist, Field("Data-parallel runs under torchrun (docs/distributed.md)."));
}

SessionOptions session_options(const ModelSection& m) {
  SessionOptions so;
  so.dtype = m.dtype;
  so.device = m.device;
  so.tokenizer = m.tokenizer;
  so.chat_template = m.chat_template;
  return so;
}

}  // namespace safetune::recipes
