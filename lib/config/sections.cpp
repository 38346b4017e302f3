// The key descriptions of every config section: the single source of truth for the schema.
#include <regex>

#include "safetune/config.hpp"

namespace safetune {

void RunSection::describe(ConfigVisitor& v) {
  v.field("name", name, Field("Run name, used in logs and reports."));
  v.field(
      "output_dir", output_dir,
      Field("Directory for checkpoints, adapters, metrics.jsonl and reports; locked while a run "
            "writes "
            "it, and a previous run in it is continued only with --resume or replaced only with "
            "--overwrite.")
          .path()
          .check(
              [](const std::string& v) -> std::optional<std::string> {
                if (v.empty()) return "must not be empty";
                return std::nullopt;
              },
              "not empty"));
  v.field("seed", seed, Field("Seed for initialisation, shuffling and dropout.").at_least(0));
}

void ModelSection::describe(ConfigVisitor& v) {
  v.field("path", path,
          Field("Base model: a Hugging Face directory (config.json + safetensors) or a .gguf file.")
              .path()
              .required());
  v.field("dtype", dtype,
          Field("Compute dtype of the base weights.").one_of({"float32", "bfloat16", "float16"}));
  v.field("device", device,
          Field("Device to run on.")
              .check(
                  [](const std::string& s) -> std::optional<std::string> {
                    static const std::regex re("cpu|cuda(:[0-9]+)?");
                    if (std::regex_match(s, re)) return std::nullopt;
                    return "expected cpu, cuda or cuda:N; got '" + s + "'";
                  },
                  "cpu, cuda or cuda:N"));
  v.field("tokenizer", tokenizer,
          Field("tokenizer.json, SentencePiece .model or a .gguf model; empty uses the model's own "
                "(GGUF metadata or the directory).")
              .path());
  v.field(
      "chat_template", chat_template,
      Field(
          "Jinja source, or a built-in renderer for models that ship none: chatml, smollm2, qwen2, "
          "llama3, "
          "deepseek-r1, llama2. Empty runs the model's own template (GGUF tokenizer.chat_template, "
          "chat_template.jinja or tokenizer_config.json) as transformers' apply_chat_template "
          "does."));
  v.field("activation_checkpointing", activation_checkpointing,
          Field("Recompute each decoder layer in backward instead of keeping its activations: less "
                "memory "
                "for about one more forward per step (training only; the recompute runs under the "
                "forward's autocast state and dropout masks)."));
}

}  // namespace safetune
