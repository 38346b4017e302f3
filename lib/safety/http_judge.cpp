// The HTTP judge: one OpenAI-compatible chat completion per probe answer, over libcurl.
#include "safetune/safety/http_judge.hpp"

#include <curl/curl.h>

#include <cctype>
#include <cstdlib>
#include <mutex>
#include <nlohmann/json.hpp>

#include "safetune/error.hpp"
#include "safetune/io/hash.hpp"

namespace safetune::safety {
namespace {

using json = nlohmann::json;

size_t append(char* data, size_t size, size_t count, void* out) {
  static_cast<std::string*>(out)->append(data, size * count);
  return size * count;
}

std::string one_line(std::string s, std::size_t max = 160) {
  for (auto& c : s)
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
  if (s.size() > max) s = s.substr(0, max) + "...";
  return s;
}

// First word of the reply, lower-cased ASCII, without leading whitespace and punctuation.
std::string first_word(const std::string& s) {
  std::size_t i = 0;
  while (i < s.size() && !std::isalnum(static_cast<unsigned char>(s[i])) &&
         static_cast<unsigned char>(s[i]) < 0x80)
    ++i;
  std::string w;
  while (i < s.size() && std::isalnum(static_cast<unsigned char>(s[i])))
    w += static_cast<char>(std::tolower(static_cast<unsigned char>(s[i++])));
  return w;
}

class HttpJudge : public Scorer {
 public:
  HttpJudge(HttpJudgeSection cfg, JudgeOptions rubric)
      : cfg_(std::move(cfg)), rubric_(std::move(rubric)) {
    static std::once_flag once;
    std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
    url_ = cfg_.endpoint;
    while (!url_.empty() && url_.back() == '/') url_.pop_back();
    url_ += "/chat/completions";
    // The token is read once, now: a missing one fails before any model is loaded.
    if (!cfg_.api_key_env.empty()) {
      const char* key = std::getenv(cfg_.api_key_env.c_str());
      if (!key || !*key)
        throw ConfigError("the judge's token variable " + cfg_.api_key_env + " is unset or empty",
                          "safety.judge.api_key_env",
                          "export " + cfg_.api_key_env + "=<token>, or leave api_key_env empty");
      auth_header_ = std::string("Authorization: Bearer ") + key;
    }
  }
  std::string name() const override { return "http_judge"; }
  bool handles(ProbeKind k) const override { return k != ProbeKind::discrimination; }
  bool needs_responses() const override { return true; }
  std::vector<Verdict> score(const std::vector<const Probe*>& probes,
                             const std::vector<std::string>& responses, ScoringModel&) override {
    if (responses.size() != probes.size())
      throw SafetyError("http_judge: " + std::to_string(responses.size()) + " responses for " +
                        std::to_string(probes.size()) + " probes");
    std::vector<Verdict> out;
    for (std::size_t i = 0; i < probes.size(); ++i) {
      const std::string reply =
          complete(judge_conversation(rubric_, probes[i]->request(), strip_think(responses[i])));
      const std::string w = first_word(reply);
      Verdict v;
      if (w == first_word(rubric_.yes_token)) v.positive = true;
      else if (w == first_word(rubric_.no_token)) v.positive = false;
      else
        throw SafetyError("judge answered neither '" + rubric_.yes_token + "' nor '" +
                              rubric_.no_token + "': '" + one_line(reply, 80) + "'",
                          url_ + " (probe " + probes[i]->id + ")",
                          "check the judge model and the rubric");
      v.score = v.positive ? 1.0 : 0.0;
      v.detail = "judge " + cfg_.model + ": " + one_line(reply, 40);
      out.push_back(std::move(v));
    }
    return out;
  }
  std::string identity() const override {
    return "http_judge:" +
           io::sha256_hex(rubric_.system_prompt + '\x1f' + rubric_.rubric + '\x1f' +
                          rubric_.yes_token + '\x1f' + rubric_.no_token)
               .substr(0, 16) +
           "@" + cfg_.model;
  }

 private:
  std::string complete(const std::vector<Message>& conv) const {
    json body = {{"model", cfg_.model},
                 {"temperature", 0},
                 {"max_tokens", cfg_.max_tokens},
                 {"messages", json::array()}};
    for (const auto& m : conv)
      body["messages"].push_back({{"role", m.role}, {"content", m.content}});
    const std::string payload = body.dump(-1, ' ', false, json::error_handler_t::replace);
    std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> curl(curl_easy_init(), curl_easy_cleanup);
    if (!curl) throw SafetyError("judge: cannot start an HTTP client (curl_easy_init)", url_);
    curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
    headers = curl_slist_append(headers, "Expect:");  // no 100-continue round trip for long rubrics
    if (!auth_header_.empty()) headers = curl_slist_append(headers, auth_header_.c_str());
    std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)> header_list(headers,
                                                                            curl_slist_free_all);
    std::string response;
    char err[CURL_ERROR_SIZE] = {0};
    curl_easy_setopt(curl.get(), CURLOPT_URL, url_.c_str());
    curl_easy_setopt(curl.get(), CURLOPT_POSTFIELDS, payload.c_str());
    curl_easy_setopt(curl.get(), CURLOPT_POSTFIELDSIZE, static_cast<long>(payload.size()));
    curl_easy_setopt(curl.get(), CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl.get(), CURLOPT_WRITEFUNCTION, append);
    curl_easy_setopt(curl.get(), CURLOPT_WRITEDATA, &response);
    curl_easy_setopt(curl.get(), CURLOPT_ERRORBUFFER, err);
    curl_easy_setopt(curl.get(), CURLOPT_TIMEOUT_MS, static_cast<long>(cfg_.timeout_s * 1000));
    curl_easy_setopt(curl.get(), CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl.get(), CURLOPT_PROTOCOLS_STR, "http,https");
    const CURLcode rc = curl_easy_perform(curl.get());
    if (rc != CURLE_OK)
      throw SafetyError(
          "judge endpoint unreachable: " + one_line(err[0] ? err : curl_easy_strerror(rc)), url_,
          "start the server or fix safety.judge.endpoint");
    long status = 0;
    curl_easy_getinfo(curl.get(), CURLINFO_RESPONSE_CODE, &status);
    if (status != 200)
      throw SafetyError(
          "judge endpoint answered HTTP " + std::to_string(status) + ": " + one_line(response),
          url_);
    json j = json::parse(response, nullptr, false);
    const json* content = nullptr;
    if (!j.is_discarded() && j.is_object() && j.contains("choices") && j["choices"].is_array() &&
        !j["choices"].empty()) {
      const json& c = j["choices"][0];
      if (c.is_object() && c.contains("message") && c["message"].is_object() &&
          c["message"].contains("content") && c["message"]["content"].is_string())
        content = &c["message"]["content"];
    }
    if (!content)
      throw SafetyError(
          "judge endpoint returned a malformed response (no choices[0].message.content): " +
              one_line(response),
          url_, "the endpoint must speak the OpenAI chat completions API");
    return content->get<std::string>();
  }

  HttpJudgeSection cfg_;
  JudgeOptions rubric_;
  std::string url_;
  std::string auth_header_;  // "Authorization: Bearer <token>" with api_key_env; never logged
};

}  // namespace

void HttpJudgeSection::describe(ConfigVisitor& v) {
  v.field("endpoint", endpoint,
          Field("Base URL of an OpenAI-compatible chat endpoint (vLLM, llama.cpp's server), e.g. "
                "http://127.0.0.1:8000/v1; the judge POSTs to <endpoint>/chat/completions. Empty: "
                "keyword scoring "
                "(refusal phrases)."));
  v.field("model", model, Field("The served model's name, sent as `model`."));
  v.field("api_key_env", api_key_env,
          Field("Environment variable holding a bearer token for the endpoint; empty: no "
                "Authorization header."));
  v.field("timeout_s", timeout_s, Field("Seconds allowed for one judgement.").range(0.1, 3600));
  v.field("max_tokens", max_tokens,
          Field("Tokens the judge may generate (its verdict is the first word).").range(1, 4096));
}

std::unique_ptr<Scorer> make_http_judge(const HttpJudgeSection& judge, const JudgeOptions& rubric) {
  if (judge.endpoint.empty())
    throw ConfigError("the judge needs an endpoint", "safety.judge.endpoint");
  if (judge.model.empty())
    throw ConfigError("the judge needs the served model's name", "safety.judge.model");
  if (!judge.endpoint.starts_with("http://") && !judge.endpoint.starts_with("https://"))
    throw ConfigError(
        "the judge endpoint must be an http:// or https:// URL, got '" + judge.endpoint + "'",
        "safety.judge.endpoint");
  return std::make_unique<HttpJudge>(judge, rubric);
}

std::string use_http_judge(const HttpJudgeSection& judge) {
  make_http_judge(judge);  // validates now rather than at the first probe
  register_scorer("http_judge",
                  [judge](const ScorerConfig& c) { return make_http_judge(judge, c.judge); });
  return "http_judge";
}

}  // namespace safetune::safety
