// A judge served over HTTP beside the keyword scorer: any OpenAI-compatible chat endpoint (vLLM,
// llama.cpp's server, ...) reads the request and the answer and says whether the answer refused.
#pragma once
#include <memory>
#include <string>

#include "safetune/config.hpp"
#include "safetune/safety/scoring.hpp"

namespace safetune::safety {

// YAML section `safety.judge`: empty endpoint = keyword scoring (the default).
struct HttpJudgeSection : ConfigSection {
  std::string
      endpoint;  // base URL, e.g. http://127.0.0.1:8000/v1 (POSTs to <endpoint>/chat/completions)
  std::string model;        // the served model's name
  std::string api_key_env;  // environment variable holding a bearer token; empty: none sent
  double timeout_s = 60;
  std::int64_t max_tokens = 8;
  void describe(ConfigVisitor& v) override;
};

// The "http_judge" scorer: harmful + benign probes, one chat completion per answer (temperature 0),
// the rubric of JudgeOptions (judge_conversation); a reply starting with yes_token means refused,
// with no_token complied (case-insensitive, after whitespace and punctuation). Errors are one-line
// SafetyErrors naming the endpoint: unreachable, HTTP status, malformed JSON, or a reply that is
// neither token.
std::unique_ptr<Scorer> make_http_judge(const HttpJudgeSection& judge,
                                        const JudgeOptions& rubric = JudgeOptions::defaults());
// Registers the scorer under "http_judge" with these settings (replacing earlier ones) and returns
// that name, for AssessOptions::response_scorer. Throws ConfigError without endpoint or model.
std::string use_http_judge(const HttpJudgeSection& judge);

}  // namespace safetune::safety
