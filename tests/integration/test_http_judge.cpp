// The HTTP judge against a local OpenAI-compatible server process (tests/integration/
// judge_server.py, canned judgements): verdicts, the request it sends (with the bearer token of
// api_key_env), and one-line errors for a malformed response, an HTTP error, a reply that is no
// verdict, an unreachable endpoint and a missing token.
#include <signal.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <thread>

#include "safetune/error.hpp"
#include "safetune/io/atomic_file.hpp"
#include "safetune/safety/assessment.hpp"
#include "safetune/safety/http_judge.hpp"
#include "support.hpp"

using namespace safetune;
using namespace safetune::safety;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

// Replies by the last user message, as the model under assessment would.
class CannedModel : public ScoringModel {
 public:
  std::vector<std::string> generate(const std::vector<std::vector<Message>>& convs, int) override {
    std::vector<std::string> out;
    for (const auto& c : convs)
      out.push_back(c.back().content == "harmful" ? "I'm sorry, I can't." : "Sure: kill -9 1234.");
    return out;
  }
  std::vector<double> choice_logprobs(const std::vector<Message>&,
                                      const std::vector<std::string>& c) override {
    return std::vector<double>(c.size(), 0.0);
  }
  std::string identity() const override { return "canned"; }
};

struct Server {
  test::TempDir dir;
  pid_t pid = -1;
  int port = 0;
  Server() {
    pid = test::spawn_program(test::python().string(),
                              {(test::source_dir() / "tests/integration/judge_server.py").string(),
                               (dir / "port").string(), (dir / "requests.jsonl").string()},
                              {}, dir / "out.txt", dir / "err.txt");
    for (int i = 0; i < 200 && !fs::exists(dir / "port"); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    REQUIRE(fs::exists(dir / "port"));
    port = std::stoi(io::read_file(dir / "port"));
  }
  void stop() {
    if (pid > 0) {
      kill(pid, SIGTERM);
      test::wait_exit_code(pid);
      pid = -1;
    }
  }
  ~Server() { stop(); }
  HttpJudgeSection judge(const std::string& model) const {
    HttpJudgeSection j;
    j.endpoint = "http://127.0.0.1:" + std::to_string(port) + "/v1/";
    j.model = model;
    j.timeout_s = 10;
    return j;
  }
};

Probe probe(const std::string& id, ProbeKind kind, const std::string& prompt) {
  Probe p;
  p.id = id;
  p.kind = kind;
  p.category = "c";
  p.lang = "en";
  p.messages = {{"user", prompt}};
  return p;
}

}  // namespace

TEST_CASE("http judge: verdicts from a local OpenAI-compatible server, one-line errors",
          "[http_judge]") {
  Server server;
  ProbeSuite suite;
  suite.name = "mini";
  suite.probes = {probe("h1", ProbeKind::harmful, "harmful"),
                  probe("b1", ProbeKind::benign, "benign")};
  CannedModel model;
  AssessOptions opt;
  opt.max_new_tokens = 8;
  opt.response_scorer = use_http_judge(server.judge("canned-judge"));
  Assessment a = assess(suite, model, opt);
  CHECK(a.refusal.overall.k == 1);            // "I'm sorry" judged a refusal
  CHECK(a.benign_compliance.overall.k == 1);  // the benign answer judged compliant
  CHECK_THAT(a.decoding, Contains("response_scorer=http_judge:") && Contains("@canned-judge"));
  // What was sent: the model name, temperature 0, the rubric with the request and the answer.
  auto lines = io::read_file(server.dir / "requests.jsonl");
  auto first = nlohmann::json::parse(lines.substr(0, lines.find('\n')));
  CHECK(first["model"] == "canned-judge");
  CHECK(first["temperature"] == 0);
  CHECK(first["messages"][0]["role"] == "system");
  CHECK_THAT(first["messages"][1]["content"].get<std::string>(),
             Contains("Request:\nharmful") && Contains("I'm sorry, I can't."));
  CHECK(first["authorization"].is_null());  // no api_key_env: no Authorization header

  // api_key_env: the token from the environment as a bearer header on every request, never in the
  // assessment; an unset or empty variable fails when the judge is made, naming the key.
  ::setenv("SAFETUNE_TEST_JUDGE_TOKEN", "tok-123", 1);
  HttpJudgeSection keyed = server.judge("canned-judge");
  keyed.api_key_env = "SAFETUNE_TEST_JUDGE_TOKEN";
  opt.response_scorer = use_http_judge(keyed);
  Assessment ak = assess(suite, model, opt);
  CHECK(ak.refusal.overall.k == 1);
  CHECK(safety::assessment_to_json(ak).find("tok-123") == std::string::npos);
  {
    auto log = io::read_file(server.dir / "requests.jsonl");
    log.pop_back();
    auto last = nlohmann::json::parse(log.substr(log.rfind('\n') + 1));
    CHECK(last["authorization"] == "Bearer tok-123");
  }
  ::setenv("SAFETUNE_TEST_JUDGE_TOKEN", "", 1);
  CHECK_THROWS_WITH(make_http_judge(keyed),
                    Contains("safety.judge.api_key_env") && Contains("SAFETUNE_TEST_JUDGE_TOKEN"));
  ::unsetenv("SAFETUNE_TEST_JUDGE_TOKEN");
  CHECK_THROWS_AS(make_http_judge(keyed), ConfigError);

  auto one_line_error = [&](const std::string& judge_model, const std::string& expected) {
    auto scorer = make_http_judge(server.judge(judge_model));
    const Probe p = probe("h9", ProbeKind::harmful, "harmful");
    try {
      scorer->score({&p}, {"an answer"}, model);
      FAIL("no error for " << judge_model);
    } catch (const SafetyError& e) {
      const std::string what = e.what();
      CHECK_THAT(what, Contains(expected) && Contains("/v1/chat/completions"));
      CHECK(what.find('\n') == std::string::npos);
    }
  };
  one_line_error("malformed", "malformed response");
  one_line_error("broken", "HTTP 500");
  one_line_error("rambling", "neither 'yes' nor 'no'");
  CHECK_THROWS_AS(make_http_judge(HttpJudgeSection{}), ConfigError);
  HttpJudgeSection no_scheme = server.judge("x");
  no_scheme.endpoint = "127.0.0.1:1/v1";
  CHECK_THROWS_WITH(make_http_judge(no_scheme), Contains("http://"));

  server.stop();
  one_line_error("canned-judge", "judge endpoint unreachable");
}
