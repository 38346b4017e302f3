// Every bundled regularizer, built by name through make_regularizer, against its formula
// (docs/regularizers.md): value and gradient on small cases whose expected numbers are computed
// here in plain doubles (closed forms for the weight penalties, explicit sums over the logits for
// the anchor terms), not by the penalties' own code.
#include <torch/torch.h>
#include <catch2/catch.hpp>

#include <cmath>

#include "safetune/data/dataset.hpp"
#include "safetune/error.hpp"
#include "safetune/lora/model_adapters.hpp"
#include "safetune/model/causal_lm.hpp"
#include "safetune/train/regularizer.hpp"
#include "tiny_model.hpp"

using namespace safetune;

namespace {

using Vec = std::vector<double>;

double dot(const Vec& a, const Vec& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}
Vec scaled(const Vec& a, double k) {
  Vec o(a);
  for (auto& x : o) x *= k;
  return o;
}
Vec values(const at::Tensor& t) {
  auto c = t.detach().to(torch::kDouble).contiguous().reshape({-1});
  return Vec(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}
void check_close(const Vec& got, const Vec& want, double eps = 1e-5) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i)
    CHECK(got[i] == Approx(want[i]).epsilon(eps).margin(1e-7));
}

std::unique_ptr<train::Regularizer> make(const std::string& name, double lambda = 1.0) {
  train::RegularizerSection s;
  s.name = name;
  s.lambda = lambda;
  return train::make_regularizer(s);
}

// The tiny Llama with a frozen safety adapter and a trainable task adapter, both rank 1 on the two
// q_proj Linears (16 x 16), alpha 2: scale s = 2. Vectors are set by hand, distinct per layer.
struct Fixture {
  model::CausalLM model{test::make_checkpoint(test::tiny_config())};
  lora::ModelAdapters adapters{model};
  static constexpr double kScale = 2.0;
  Fixture() {
    lora::LoraConfig lc;
    lc.rank = 1;
    lc.alpha = 2;
    lc.target_suffixes = {"q_proj"};
    adapters.add("safety", lc, lora::AdapterRole::safety, /*trainable=*/false);
    adapters.add("task", lc, lora::AdapterRole::task, /*trainable=*/true);
    torch::NoGradGuard ng;
    int layer = 0;
    for (auto* st : adapters.stacks("task")) {
      auto set = [&](at::Tensor& t, double phase) {
        auto v =
            torch::arange(t.numel(), torch::kDouble).mul(0.7).add(phase + layer).sin().mul(0.3);
        t.copy_(v.reshape(t.sizes()).to(t.scalar_type()));
      };
      set(st->get("task").A, 0.1);
      set(st->get("task").B, 1.3);
      set(st->get("safety").A, 2.9);
      set(st->get("safety").B, 4.1);
      ++layer;
    }
  }
  // Per layer: the rank-1 vectors a_t (A is 1 x in), b_t (B is out x 1), a_s, b_s.
  struct Layer {
    Vec ta, tb, sa, sb;  // a_t, b_t, a_s, b_s
    lora::Adapter* task;
  };
  std::vector<Layer> layers() {
    std::vector<Layer> out;
    for (auto* st : adapters.stacks("task"))
      out.push_back({values(st->get("task").A), values(st->get("task").B),
                     values(st->get("safety").A), values(st->get("safety").B), &st->get("task")});
    return out;
  }
  // The term of the weight-space regularizer `name`, set up on these adapters (it reads no batch).
  at::Tensor term(const std::string& name) {
    train::RegContext c = context();
    return setup(name)->loss(c);
  }
  std::unique_ptr<train::Regularizer> setup(const std::string& name) {
    auto r = make(name);
    r->setup(adapters, "task", "safety");
    return r;
  }
  // What a regularizer sees; `anchor` (kept alive by the caller) serves every anchor draw.
  train::RegContext context(const data::Batch* anchor = nullptr) {
    train::RegContext c;
    c.model = &model;
    c.adapters = &adapters;
    if (anchor) c.anchor = [anchor]() -> const data::Batch& { return *anchor; };
    return c;
  }
};

// One row: a 3-token prompt and a 4-token answer, labels -100 on the prompt.
data::Batch batch() {
  data::Batch b;
  b.input_ids = torch::tensor({{1, 7, 12, 30, 4, 19, 8}}, torch::kLong);
  b.attention_mask = torch::ones_like(b.input_ids);
  b.labels = torch::tensor({{-100, -100, -100, 30, 4, 19, 8}}, torch::kLong);
  b.supervised_tokens = 4;
  return b;
}

// Position t of the logits predicts label t+1: the (position, target) pairs of the answer.
std::vector<std::pair<std::int64_t, std::int64_t>> predicted(const data::Batch& b) {
  std::vector<std::pair<std::int64_t, std::int64_t>> out;
  auto labels = b.labels[0];
  for (std::int64_t t = 0; t + 1 < labels.size(0); ++t)
    if (labels[t + 1].item<std::int64_t>() != -100)
      out.push_back({t, labels[t + 1].item<std::int64_t>()});
  return out;
}

// log softmax of one row of logits, in doubles.
Vec log_softmax_row(const Vec& z) {
  double m = z[0];
  for (double x : z) m = std::max(m, x);
  double s = 0;
  for (double x : z) s += std::exp(x - m);
  Vec o(z.size());
  for (std::size_t i = 0; i < z.size(); ++i) o[i] = z[i] - m - std::log(s);
  return o;
}

Vec logits_row(const at::Tensor& logits, std::int64_t t) { return values(logits[0][t]); }

// KL(p_ref || p_theta) summed over the vocabulary, averaged over the batch's answer positions.
double mean_kl(const at::Tensor& logits_ref, const at::Tensor& logits_theta, const data::Batch& b) {
  double kl = 0;
  const auto rows = predicted(b);
  for (auto [t, y] : rows) {
    const Vec pt = log_softmax_row(logits_row(logits_theta, t)),
              pr = log_softmax_row(logits_row(logits_ref, t));
    for (std::size_t v = 0; v < pt.size(); ++v) kl += std::exp(pr[v]) * (pr[v] - pt[v]);
  }
  return kl / static_cast<double>(rows.size());
}

at::Tensor forward(Fixture& f, const data::Batch& b, bool task_on) {
  f.adapters.set_enabled("task", task_on);
  torch::NoGradGuard ng;
  auto l = f.model.forward(b.input_ids, b.attention_mask);
  f.adapters.set_enabled("task", true);
  return l;
}

}  // namespace

TEST_CASE("regularizers: every bundled name builds through make_regularizer with its lambda",
          "[regularizer]") {
  for (const char* name : {"none", "kl_anchor", "token_constrained", "replay", "orthogonal",
                           "subspace", "l2_delta", "gradient_projection"}) {
    auto r = make(name, 0.25);
    CHECK(r->name() == name);
    CHECK(r->lambda == 0.25);
  }
  CHECK_THROWS_AS(make("kl_anchr"), ConfigError);
  // none adds nothing; replay adds no term either, only its ratio of safety rows.
  Fixture f;
  auto ctx = f.context();
  CHECK_FALSE(make("none")->loss(ctx).defined());
  train::RegularizerSection s;
  s.name = "replay";
  s.rho = 0.2;
  auto replay = train::make_regularizer(s);
  CHECK(replay->replay_ratio() == 0.2);
  CHECK_FALSE(replay->loss(ctx).defined());
}

TEST_CASE(
    "regularizers: l2_delta is sum ||s B A||^2 with gradients 2 s^2 |b|^2 a and 2 s^2 |a|^2 b",
    "[regularizer]") {
  Fixture f;
  auto loss = f.term("l2_delta");
  double want = 0;
  const double s2 = Fixture::kScale * Fixture::kScale;
  for (auto& l : f.layers()) want += s2 * dot(l.ta, l.ta) * dot(l.tb, l.tb);
  CHECK(loss.item<double>() == Approx(want).epsilon(1e-5));
  loss.backward();
  for (auto& l : f.layers()) {
    check_close(values(l.task->A.grad()), scaled(l.ta, 2 * s2 * dot(l.tb, l.tb)));
    check_close(values(l.task->B.grad()), scaled(l.tb, 2 * s2 * dot(l.ta, l.ta)));
  }
}

TEST_CASE("regularizers: orthogonal is sum ||A_t A_s^T||^2 with gradient 2 (a_t.a_s) a_s",
          "[regularizer]") {
  Fixture f;
  auto loss = f.term("orthogonal");
  double want = 0;
  for (auto& l : f.layers()) want += dot(l.ta, l.sa) * dot(l.ta, l.sa);
  CHECK(loss.item<double>() == Approx(want).epsilon(1e-5));
  loss.backward();
  for (auto& l : f.layers()) {
    check_close(values(l.task->A.grad()), scaled(l.sa, 2 * dot(l.ta, l.sa)));
    CHECK_FALSE(l.task->B.grad().defined());  // B_t does not enter the term
  }
}

TEST_CASE("regularizers: subspace is sum ||(I - q q^T) s B_t A_t||^2 for q = b_s / |b_s|",
          "[regularizer]") {
  Fixture f;
  auto loss = f.term("subspace");
  const double s2 = Fixture::kScale * Fixture::kScale;
  double want = 0;
  std::vector<Vec> outside;  // c = b_t - q (q . b_t): the part of b_t outside col(B_s)
  for (auto& l : f.layers()) {
    const Vec q = scaled(l.sb, 1 / std::sqrt(dot(l.sb, l.sb)));
    Vec c = l.tb;
    for (std::size_t i = 0; i < c.size(); ++i) c[i] -= q[i] * dot(q, l.tb);
    want += s2 * dot(l.ta, l.ta) * dot(c, c);
    outside.push_back(c);
  }
  CHECK(loss.item<double>() == Approx(want).epsilon(1e-4));
  loss.backward();
  auto layers = f.layers();
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const auto& l = layers[i];
    check_close(values(l.task->A.grad()), scaled(l.ta, 2 * s2 * dot(outside[i], outside[i])), 1e-4);
    check_close(values(l.task->B.grad()), scaled(outside[i], 2 * s2 * dot(l.ta, l.ta)), 1e-4);
  }
}

TEST_CASE(
    "regularizers: kl_anchor is the mean KL(p_ref || p_theta) over the anchor's answer tokens",
    "[regularizer]") {
  Fixture f;
  auto r = f.setup("kl_anchor");
  {
    // A task adapter ten times larger than the fixture's: a KL well away from 0 (about 1e-3).
    torch::NoGradGuard ng;
    for (auto& l : f.layers()) l.task->B.mul_(10);
  }
  const auto anchor = batch();
  auto ctx = f.context(&anchor);
  auto loss = r->loss(ctx);

  auto lt = forward(f, anchor, true), lr = forward(f, anchor, false);
  const double want = mean_kl(lr, lt, anchor);
  REQUIRE(want > 1e-4);  // the task adapter moved the network: the case is not trivially 0
  CHECK(loss.item<double>() == Approx(want).epsilon(1e-4));
  CHECK(r->metrics().at("kl_anchor") == Approx(want).epsilon(1e-4));

  // Gradient: central differences of the loss in one task-adapter weight.
  loss.backward();
  auto& B = f.layers()[0].task->B;
  const double analytic = B.grad()[3][0].item<double>();
  const double h = 1e-2;
  auto kl_with = [&](double delta) {
    torch::NoGradGuard ng;
    auto saved = B[3][0].item<double>();
    B[3][0] = saved + delta;
    auto v = forward(f, anchor, true);
    B[3][0] = saved;
    return mean_kl(lr, v, anchor);
  };
  CHECK(analytic == Approx((kl_with(h) - kl_with(-h)) / (2 * h)).epsilon(2e-2).margin(1e-6));
}

TEST_CASE(
    "regularizers: token_constrained's value and gradient follow (2/beta_t) softplus(-beta_t "
    "delta_t)",
    "[regularizer]") {
  Fixture f;
  train::RegularizerSection s;
  s.name = "token_constrained";
  s.beta_first = 0.5;
  s.beta_early = 2.0;
  s.beta_late = 0.1;
  s.early_until = 2;  // answer tokens 1, 2, 3, 4 get betas 0.5, 2, 0.1, 0.1
  auto r = train::make_regularizer(s);
  CHECK(r->replaces_task_loss());
  const auto b = batch();
  auto lt = forward(f, b, true).requires_grad_(true), lr = forward(f, b, false);
  auto ctx = f.context();
  ctx.task_batch = &b;
  ctx.task_logits = lt;
  auto loss = r->loss(ctx);
  loss.backward();

  const double betas[] = {0.5, 2.0, 0.1, 0.1};
  const auto rows = predicted(b);
  const double n = static_cast<double>(rows.size());
  double want = 0;
  at::Tensor grad = torch::zeros_like(lt, torch::kDouble);
  for (std::size_t i = 0; i < rows.size(); ++i) {
    auto [t, y] = rows[i];
    const Vec pt = log_softmax_row(logits_row(lt, t)), pr = log_softmax_row(logits_row(lr, t));
    const double beta = betas[i], delta = pt[y] - pr[y];
    want += (2 / beta) * std::log1p(std::exp(-beta * delta));
    // d/dz_v of (2/beta) softplus(-beta delta) = -2 sigmoid(-beta delta) (1[v = y] - p_theta(v)).
    const double w = 2 / (1 + std::exp(beta * delta));
    for (std::size_t v = 0; v < pt.size(); ++v)
      grad[0][t][static_cast<std::int64_t>(v)] =
          -w * ((static_cast<std::int64_t>(v) == y ? 1.0 : 0.0) - std::exp(pt[v])) / n;
  }
  CHECK(r->metrics().at("token_constrained") == Approx(want / n).epsilon(1e-5));
  check_close(values(lt.grad()), values(grad), 1e-4);
}

TEST_CASE(
    "regularizers: gradient_projection removes the task gradient's conflict with the safety "
    "gradient",
    "[regularizer]") {
  Fixture f;
  auto r = f.setup("gradient_projection");
  const auto anchor = batch();
  auto ctx = f.context(&anchor);
  std::vector<at::Tensor> params;
  for (auto& [n, t] : f.adapters.trainable_parameters()) params.push_back(t);

  // The safety gradient g_s: mean cross-entropy of the anchor's answer tokens, by autograd over
  // the full logits (the regularizer takes the fused, chunked path).
  auto logits = f.model.forward(anchor.input_ids, anchor.attention_mask);
  auto ce = train::lm_loss(logits, anchor.labels);
  auto gs = torch::autograd::grad({ce}, params);
  Vec s;
  for (auto& g : gs)
    for (double x : values(g)) s.push_back(x);

  auto set_grads = [&](double k,
                       std::size_t skew) {  // g = k g_s + a component orthogonal-ish to it
    std::size_t i = 0;
    for (std::size_t p = 0; p < params.size(); ++p) {
      Vec g = values(gs[p]);
      for (auto& x : g) x = k * x + (i++ == skew ? 0.01 : 0.0);
      params[p].mutable_grad() =
          torch::tensor(g, torch::kDouble).reshape(params[p].sizes()).to(params[p].scalar_type());
    }
  };
  auto flat_grads = [&] {
    Vec o;
    for (auto& p : params)
      for (double x : values(p.grad())) o.push_back(x);
    return o;
  };

  // Conflicting (g . g_s < 0): g <- g - (g . g_s / |g_s|^2) g_s.
  set_grads(-1.0, 5);
  Vec g = flat_grads();
  Vec want = g;
  const double k = dot(g, s) / dot(s, s);
  for (std::size_t i = 0; i < want.size(); ++i) want[i] -= k * s[i];
  r->on_gradients(ctx, params);
  check_close(flat_grads(), want, 1e-3);
  CHECK(r->metrics().at("grad_dot") == Approx(dot(g, s)).epsilon(1e-3));
  CHECK(r->metrics().at("grad_conflicts") == 1);

  // Agreeing (g . g_s > 0): untouched.
  set_grads(0.5, 7);
  g = flat_grads();
  r->on_gradients(ctx, params);
  check_close(flat_grads(), g, 1e-6);
  CHECK(r->metrics().at("grad_conflicts") == 1);
}
