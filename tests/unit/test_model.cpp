// Model core without reference files: config.json parsing, bad checkpoints, hooks, sampling,
// checkpointing.
#include <torch/torch.h>
#include <catch2/catch.hpp>

#include "safetune/error.hpp"
#include "safetune/model/causal_lm.hpp"
#include "safetune/model/config.hpp"
#include "safetune/model/generate.hpp"
#include "safetune/train/autocast.hpp"
#include "support.hpp"
#include "tiny_model.hpp"

using namespace safetune;
using Catch::Matchers::Contains;

namespace {

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

// Adds a trainable low-rank term, like a LoRA adapter would.
struct TestHook : model::LinearHook {
  at::Tensor A, B;
  bool on = true;
  TestHook(std::int64_t in, std::int64_t out) {
    A = (torch::randn({2, in}) * 0.1).set_requires_grad(true);
    B = (torch::randn({out, 2}) * 0.1).set_requires_grad(true);
  }
  bool active() const override { return on; }
  at::Tensor apply(const at::Tensor& x, const at::Tensor& base) override {
    return base + at::linear(at::linear(at::dropout(x, 0.3, true), A), B);
  }
};

}  // namespace

TEST_CASE("model config: transformers v5 rope_parameters, head_dim, eos list", "[model]") {
  auto c = model::config_from_json(R"({
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256,
    "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
    "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
    "rms_norm_eps": 1e-05, "max_position_embeddings": 131072, "tie_word_embeddings": true,
    "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009],
    "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
      "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
    "dtype": "bfloat16"})");
  CHECK(c.architecture == "llama");
  CHECK(c.head_dim == 64);
  CHECK(c.num_key_value_heads == 8);
  CHECK(c.rope_theta == 500000.0);
  CHECK(c.rope_scaling.type == "llama3");
  CHECK(c.rope_scaling.factor == 32.0);
  CHECK(c.rope_scaling.original_max_position_embeddings == 8192);
  CHECK(c.tie_word_embeddings);
  CHECK(c.eos_token_ids == std::vector<std::int64_t>{128001, 128008, 128009});
  CHECK(c.torch_dtype == "bfloat16");
  CHECK(c.rms_norm_eps == 1e-5);
}

TEST_CASE("model config: legacy rope_scaling, qwen2 by architectures, defaults", "[model]") {
  auto c = model::config_from_json(R"({
    "architectures": ["Qwen2ForCausalLM"], "vocab_size": 151936, "hidden_size": 896,
    "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
    "num_key_value_heads": 2, "rope_theta": 1000000.0, "eos_token_id": 151645,
    "rope_scaling": {"type": "linear", "factor": 2.0}, "use_sliding_window": false})");
  CHECK(c.architecture == "qwen2");
  CHECK(c.qkv_bias);
  CHECK_FALSE(c.attention_bias);
  CHECK(c.head_dim == 64);  // 896 / 14
  CHECK(c.rope_theta == 1e6);
  CHECK(c.rope_scaling.type == "linear");
  CHECK(c.rope_scaling.factor == 2.0);
  CHECK(c.eos_token_ids == std::vector<std::int64_t>{151645});
  CHECK_FALSE(c.tie_word_embeddings);

  auto m = model::config_from_json(R"({"model_type": "llama", "vocab_size": 10, "hidden_size": 8,
    "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
    "attention_bias": true, "mlp_bias": true})");
  CHECK(m.num_key_value_heads == 2);  // defaults to the attention heads
  CHECK(m.attention_bias);
  CHECK(m.mlp_bias);
  CHECK(m.rope_scaling.type.empty());
}

TEST_CASE("model config: to_hf_json reads back to the same config", "[model]") {
  auto c = test::tiny_config();
  c.rope_scaling.type = "llama3";
  c.rope_scaling.factor = 8;
  c.rope_scaling.original_max_position_embeddings = 64;
  c.eos_token_ids = {5, 7};
  c.tie_word_embeddings = true;
  c.mlp_bias = true;
  auto back = model::config_from_json(model::to_hf_json(c));
  CHECK(back.architecture == c.architecture);
  CHECK(back.head_dim == c.head_dim);
  CHECK(back.num_key_value_heads == c.num_key_value_heads);
  CHECK(back.rope_scaling.type == "llama3");
  CHECK(back.rope_scaling.factor == 8);
  CHECK(back.rope_scaling.original_max_position_embeddings == 64);
  CHECK(back.eos_token_ids == c.eos_token_ids);
  CHECK(back.tie_word_embeddings);
  CHECK(back.mlp_bias);
}

TEST_CASE("model config: bad config.json files are named in the error", "[model]") {
  test::TempDir dir;
  test::write_text(dir / "config.json", R"({"model_type": "gpt2", "vocab_size": 10})");
  auto msg = error_of([&] { model::load_config(dir.path()); });
  CHECK_THAT(msg, Contains("unsupported model_type 'gpt2'"));
  CHECK_THAT(msg, Contains((dir / "config.json").string()));

  test::write_text(dir / "config.json", R"({"model_type": "llama", "vocab_size": )");
  CHECK_THAT(error_of([&] { model::load_config(dir.path()); }), Contains("malformed JSON"));

  test::write_text(dir / "config.json",
                   R"({"model_type": "llama", "vocab_size": 10, "hidden_size": 12,
    "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 3})");
  CHECK_THAT(error_of([&] { model::load_config(dir.path()); }),
             Contains("not a multiple of num_key_value_heads"));

  test::write_text(dir / "config.json", R"({"model_type": "llama", "vocab_size": "ten"})");
  CHECK_THAT(error_of([&] { model::load_config(dir.path()); }),
             Contains("'vocab_size' must be an integer"));

  test::TempDir empty;
  auto missing = error_of([&] { model::load(empty.path()); });
  CHECK_THAT(missing, Contains("config.json not found"));
  CHECK_THAT(missing, Contains((empty / "config.json").string()));
}

TEST_CASE("model: missing, extra and misshapen tensors are named", "[model]") {
  auto c = test::tiny_config();
  {
    auto ck = test::make_checkpoint(c);
    ck.tensors.erase(std::find_if(ck.tensors.begin(), ck.tensors.end(), [](auto& p) {
      return p.first == "model.layers.1.mlp.up_proj.weight";
    }));
    auto msg = error_of([&] { model::CausalLM m(ck); });
    CHECK_THAT(msg, Contains("model.layers.1.mlp.up_proj.weight"));
    CHECK_THAT(msg, Contains("missing tensor"));
  }
  {
    auto ck = test::make_checkpoint(c);
    ck.tensors.emplace_back("model.layers.7.self_attn.q_proj.weight", torch::zeros({16, 16}));
    auto msg = error_of([&] { model::CausalLM m(ck); });
    CHECK_THAT(msg, Contains("model.layers.7.self_attn.q_proj.weight"));
    CHECK_THAT(msg, Contains("unexpected tensor"));
  }
  {
    auto ck = test::make_checkpoint(c);
    for (auto& [n, t] : ck.tensors)
      if (n == "model.layers.0.self_attn.k_proj.weight") t = torch::zeros({16, 16});
    auto msg = error_of([&] { model::CausalLM m(ck); });
    CHECK_THAT(msg, Contains("model.layers.0.self_attn.k_proj.weight"));
    CHECK_THAT(msg, Contains("wrong shape [16, 16], the config implies [8, 16]"));
  }
  {
    auto ck = test::make_checkpoint(c);
    ck.tensors[0].second = ck.tensors[0].second.to(at::kLong);
    CHECK_THAT(error_of([&] { model::CausalLM m(ck); }), Contains("floating point"));
  }
  {
    // Qwen2 requires q/k/v biases.
    auto q = c;
    q.architecture = "qwen2";
    auto ck = test::make_checkpoint(q);  // qkv_bias false in the struct: no bias tensors written
    q.qkv_bias = true;
    ck.config = q;
    CHECK_THAT(error_of([&] { model::CausalLM m(ck); }),
               Contains("model.layers.0.self_attn.q_proj.bias"));
  }
}

TEST_CASE("model: forward shapes, input validation, names", "[model]") {
  model::CausalLM m(test::make_checkpoint(test::tiny_config()));
  torch::NoGradGuard ng;
  auto ids = torch::tensor({{3, 4, 5}}, torch::kLong);
  CHECK(m.forward(ids).sizes() == at::IntArrayRef({1, 3, 50}));
  CHECK(m.forward(ids, {}, {}, nullptr, 1).sizes() == at::IntArrayRef({1, 1, 50}));
  CHECK_THAT(error_of([&] {
               m.forward(torch::tensor({{3, 50}}, torch::kLong));
             }),
             Contains("outside the vocabulary"));
  CHECK_THAT(error_of([&] {
               m.forward(torch::tensor({{3, -1}}, torch::kLong));
             }),
             Contains("outside the vocabulary"));
  CHECK_THAT(error_of([&] {
               m.forward(torch::tensor({3, 4}, torch::kLong));
             }),
             Contains("[batch, seq]"));
  CHECK_THAT(error_of([&] {
               m.forward(ids, torch::ones({1, 2}, torch::kLong));
             }),
             Contains("attention_mask"));

  auto lin = m.linears();
  REQUIRE(lin.size() == 2 * 7 + 1);
  CHECK(lin[0].first == "model.layers.0.self_attn.q_proj");
  CHECK(lin[6].first == "model.layers.0.mlp.down_proj");
  CHECK(lin.back().first == "lm_head");
  auto sd = m.state_dict_hf();
  CHECK(sd.size() == test::make_checkpoint(test::tiny_config()).tensors.size());
  std::int64_t n = 0;
  for (auto& [name, t] : test::make_checkpoint(test::tiny_config()).tensors) n += t.numel();
  CHECK(m.parameter_count() == n);
  // Weights are frozen.
  for (auto& [name, t] : sd) CHECK_FALSE(t.requires_grad());
}

TEST_CASE("model: tied embeddings share one tensor and hooks change the output", "[model]") {
  auto c = test::tiny_config();
  c.tie_word_embeddings = true;
  model::CausalLM m(test::make_checkpoint(c));
  torch::NoGradGuard ng;
  CHECK(m.linears().back().second->weight.data_ptr() ==
        m.state_dict_hf().front().second.data_ptr());
  CHECK(m.state_dict_hf().back().first == "model.norm.weight");
  auto ids = torch::tensor({{3, 4, 5, 6}}, torch::kLong);
  auto base = m.forward(ids);
  auto hook = std::make_shared<TestHook>(16, 16);
  m.linears()[3].second->hook = hook;  // o_proj of layer 0
  m.eval();
  auto with = m.forward(ids);
  CHECK_FALSE(at::allclose(with, base));
  hook->on = false;
  CHECK(at::equal(m.forward(ids), base));
}

TEST_CASE("model: activation checkpointing gives the same gradients", "[model]") {
  // Under bf16 autocast too: the recompute in backward (outside the autocast region, as the trainer
  // runs it) must use the forward's autocast state, or it differentiates another (fp32) network.
  const bool autocast = GENERATE(false, true);
  INFO("autocast " << autocast);
  model::CausalLM m(test::make_checkpoint(test::tiny_config()));
  std::vector<std::shared_ptr<TestHook>> hooks;
  for (auto& [name, lin] : m.linears()) {
    if (name.find("v_proj") == std::string::npos && name.find("down_proj") == std::string::npos)
      continue;
    hooks.push_back(std::make_shared<TestHook>(lin->in_features(), lin->out_features()));
    lin->hook = hooks.back();
  }
  auto ids = torch::tensor({{3, 4, 5, 6, 7}, {8, 9, 10, 11, 12}}, torch::kLong);
  auto mask = torch::tensor({{0, 1, 1, 1, 1}, {1, 1, 1, 1, 1}}, torch::kLong);
  m.train();
  auto grads = [&](bool ckpt) {
    m.set_activation_checkpointing(ckpt);
    for (auto& h : hooks) {
      h->A.mutable_grad() = at::Tensor();
      h->B.mutable_grad() = at::Tensor();
    }
    torch::manual_seed(42);  // same dropout masks in both runs
    at::Tensor loss;
    {
      train::AutocastRegion ac(at::kCPU, autocast);
      loss = m.forward(ids, mask).to(at::kFloat).logsumexp(-1).sum();
    }
    loss.backward();
    std::vector<at::Tensor> g;
    for (auto& h : hooks) {
      REQUIRE(h->A.grad().defined());
      g.push_back(h->A.grad().clone());
      g.push_back(h->B.grad().clone());
    }
    return std::make_pair(loss.item<double>(), g);
  };
  auto [l0, g0] = grads(false);
  auto [l1, g1] = grads(true);
  CHECK(l0 == Approx(l1).epsilon(1e-6));
  for (size_t i = 0; i < g0.size(); ++i) CHECK(at::allclose(g0[i], g1[i], 1e-4, 1e-6));
  if (autocast) {  // and the autocast run really differs from fp32 (bf16 was in effect)
    m.set_activation_checkpointing(false);
    torch::manual_seed(42);
    CHECK(m.forward(ids, mask).logsumexp(-1).sum().item<double>() != l0);
  }
}

TEST_CASE("model: seeded sampling, top_k=1 and tiny top_p reduce to greedy", "[model]") {
  model::CausalLM m(test::make_checkpoint(test::tiny_config(), 3));
  model::GenerateOptions greedy;
  greedy.max_new_tokens = 12;
  greedy.stop_tokens = std::vector<std::int64_t>{};
  auto g = model::generate(m, {{3, 4, 5}, {6}}, greedy);
  REQUIRE(g.sequences.sizes() == at::IntArrayRef({2, 3 + 12}));

  auto s = greedy;
  s.do_sample = true;
  s.temperature = 1.5;
  s.seed = 123;
  auto a = model::generate(m, {{3, 4, 5}, {6}}, s);
  auto b = model::generate(m, {{3, 4, 5}, {6}}, s);
  CHECK(at::equal(a.sequences, b.sequences));
  s.seed = 124;
  auto c = model::generate(m, {{3, 4, 5}, {6}}, s);
  CHECK_FALSE(at::equal(a.sequences, c.sequences));

  auto k1 = s;
  k1.top_k = 1;
  CHECK(at::equal(model::generate(m, {{3, 4, 5}, {6}}, k1).sequences, g.sequences));
  auto p0 = s;
  p0.top_p = 1e-9;
  CHECK(at::equal(model::generate(m, {{3, 4, 5}, {6}}, p0).sequences, g.sequences));

  auto bad = s;
  bad.top_p = 0;
  CHECK_THAT(error_of([&] { model::generate(m, {{3}}, bad); }), Contains("top_p"));
  CHECK_THAT(
      error_of([&] { model::generate(m, std::vector<std::vector<std::int64_t>>{}, greedy); }),
      Contains("no prompts"));
}
