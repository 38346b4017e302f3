// The Llama/Qwen2 decoder: weights checked against the config, RoPE, GQA attention via SDPA,
// SwiGLU.
#include "safetune/model/causal_lm.hpp"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/autocast_mode.h>
#include <torch/torch.h>

#include <cmath>
#include <map>
#include <set>

#include "safetune/error.hpp"

namespace safetune::model {

namespace {

std::string shape_str(at::IntArrayRef s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

// Computes RMSNorm in fp32 and casts back before the weight multiply, exactly as transformers.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  auto h = x.to(at::kFloat);
  auto var = h.pow(2).mean(-1, /*keepdim=*/true);
  h = h * at::rsqrt(var + eps);
  return weight * h.to(x.scalar_type());
}

at::Tensor rotate_half(const at::Tensor& x) {
  auto half = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

// Mirrors transformers' default / linear / llama3 inverse-frequency computations, in fp32 tensors
// so that the rounding matches too.
at::Tensor rope_inv_freq(const ModelConfig& c) {
  auto dim = c.head_dim;
  auto exponents = at::arange(0, dim, 2, at::TensorOptions().dtype(at::kLong)).to(at::kFloat) /
                   static_cast<double>(dim);
  at::Tensor inv_freq = 1.0 / at::pow(c.rope_theta, exponents);
  const auto& s = c.rope_scaling;
  if (s.type == "linear") {
    inv_freq = inv_freq / s.factor;
  } else if (s.type == "llama3") {
    double old_ctx = static_cast<double>(s.original_max_position_embeddings);
    double low_freq_wavelen = old_ctx / s.low_freq_factor;
    double high_freq_wavelen = old_ctx / s.high_freq_factor;
    auto wavelen = 2 * M_PI / inv_freq;
    auto scaled = at::where(wavelen > low_freq_wavelen, inv_freq / s.factor, inv_freq);
    auto smooth =
        (old_ctx / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
    auto smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled;
    auto medium =
        (wavelen < high_freq_wavelen).logical_not() & (wavelen > low_freq_wavelen).logical_not();
    inv_freq = at::where(medium, smoothed, scaled);
  }
  if (!c.rope_freq_factors.empty()) {
    if (static_cast<std::int64_t>(c.rope_freq_factors.size()) != inv_freq.size(0))
      throw ModelError("rope frequency factors: " + std::to_string(c.rope_freq_factors.size()) +
                       " values for " + std::to_string(inv_freq.size(0)) +
                       " rotary frequencies (head_dim / 2)");
    auto factors =
        at::from_blob(const_cast<float*>(c.rope_freq_factors.data()),
                      {static_cast<std::int64_t>(c.rope_freq_factors.size())}, at::kFloat);
    inv_freq = inv_freq / factors;
  }
  return inv_freq.contiguous();
}

// Reads tensors by name, remembering which were used so leftovers can be reported.
class TensorTable {
 public:
  TensorTable(const Checkpoint& ckpt, const c10::ScalarType* dtype, const c10::Device* device)
      : dtype_(dtype), device_(device) {
    for (const auto& [name, t] : ckpt.tensors) {
      if (!map_.emplace(name, t).second) throw ModelError("duplicate tensor", name);
    }
  }
  bool has(const std::string& name) const { return map_.count(name) != 0; }
  at::Tensor take(const std::string& name, std::vector<std::int64_t> shape) {
    auto it = map_.find(name);
    if (it == map_.end()) throw ModelError("missing tensor (the config implies it)", name);
    const at::Tensor& t = it->second;
    if (!t.defined()) throw ModelError("tensor is undefined", name);
    if (t.sizes() != at::IntArrayRef(shape))
      throw ModelError(
          "wrong shape " + shape_str(t.sizes()) + ", the config implies " + shape_str(shape), name);
    if (!at::isFloatingType(t.scalar_type()))
      throw ModelError(
          "tensor must be floating point, got " + std::string(c10::toString(t.scalar_type())),
          name);
    used_.insert(name);
    at::Tensor r = t;
    if (dtype_ && device_) r = r.to(*device_, *dtype_);
    return r.detach().set_requires_grad(false);
  }
  void ignore(const std::string& name) { used_.insert(name); }
  void check_all_used() const {
    for (const auto& [name, t] : map_)
      if (!used_.count(name))
        throw ModelError("unexpected tensor (not part of this architecture)", name);
  }

 private:
  std::map<std::string, at::Tensor> map_;
  std::set<std::string> used_;
  const c10::ScalarType* dtype_;
  const c10::Device* device_;
};

}  // namespace

// ---- Linear
// --------------------------------------------------------------------------------------

Linear::Linear(at::Tensor w, at::Tensor b) : weight(std::move(w)), bias(std::move(b)) {
  register_buffer("weight", weight);
  if (bias.defined()) register_buffer("bias", bias);
}

at::Tensor Linear::forward(const at::Tensor& x) {
  if (hook && hook->active()) return hook->forward(x, weight, bias);
  return at::linear(x, weight, bias);
}

// ---- KvCache
// -------------------------------------------------------------------------------------

KvCache::KvCache(std::int64_t num_layers) : k_(num_layers), v_(num_layers) {}

void KvCache::clear() {
  for (auto& t : k_) t = at::Tensor();
  for (auto& t : v_) t = at::Tensor();
  length_ = 0;
}

std::pair<at::Tensor, at::Tensor> KvCache::update(std::int64_t layer, const at::Tensor& k,
                                                  const at::Tensor& v) {
  if (layer < 0 || layer >= num_layers())
    throw ModelError("KV cache has no layer " + std::to_string(layer));
  auto& K = k_[layer];
  auto& V = v_[layer];
  const std::int64_t add = k.size(2);
  const std::int64_t need = length_ + add;
  if (K.defined() && (K.size(0) != k.size(0) || K.size(1) != k.size(1) || K.size(3) != k.size(3)))
    throw ModelError("KV cache batch/head shape changed between calls; clear() the cache first");
  if (!K.defined() || K.size(2) < need) {
    // Grow geometrically (at least 256 positions) so decoding appends in place almost always.
    std::int64_t cap = std::max<std::int64_t>({need, 256, K.defined() ? K.size(2) * 2 : 0});
    auto nk = at::empty({k.size(0), k.size(1), cap, k.size(3)}, k.options());
    auto nv = at::empty({v.size(0), v.size(1), cap, v.size(3)}, v.options());
    if (K.defined() && length_ > 0) {
      nk.narrow(2, 0, length_).copy_(K.narrow(2, 0, length_));
      nv.narrow(2, 0, length_).copy_(V.narrow(2, 0, length_));
    }
    K = nk;
    V = nv;
  }
  K.narrow(2, length_, add).copy_(k);
  V.narrow(2, length_, add).copy_(v);
  return {K.narrow(2, 0, need), V.narrow(2, 0, need)};
}

// ---- decoder layer
// -------------------------------------------------------------------------------

struct CausalLM::Layer : torch::nn::Module {
  std::shared_ptr<Linear> q, k, v, o, gate, up, down;
  at::Tensor input_norm, post_norm;
  std::int64_t index = 0;
};

namespace {

struct AttnInputs {
  at::Tensor cos, sin;  // [B,T,head_dim] in activation dtype
  at::Tensor mask;      // [B,1,T,S] bool, or undefined
  bool is_causal = false;
};

at::Tensor layer_forward(CausalLM::Layer& L, const ModelConfig& c, const at::Tensor& x,
                         const AttnInputs& a, KvCache* cache) {
  const auto B = x.size(0), T = x.size(1);
  auto h = rms_norm(x, L.input_norm, c.rms_norm_eps);
  auto q = L.q->forward(h).view({B, T, c.num_attention_heads, c.head_dim}).transpose(1, 2);
  auto k = L.k->forward(h).view({B, T, c.num_key_value_heads, c.head_dim}).transpose(1, 2);
  auto v = L.v->forward(h).view({B, T, c.num_key_value_heads, c.head_dim}).transpose(1, 2);
  auto cos = a.cos.unsqueeze(1), sin = a.sin.unsqueeze(1);
  q = q * cos + rotate_half(q) * sin;
  k = k * cos + rotate_half(k) * sin;
  if (cache) std::tie(k, v) = cache->update(L.index, k, v);
  const bool gqa = c.num_key_value_heads != c.num_attention_heads;
  std::optional<at::Tensor> mask;
  if (a.mask.defined()) mask = a.mask;
  auto attn = at::scaled_dot_product_attention(
      q, k, v, mask, 0.0, a.is_causal, 1.0 / std::sqrt(static_cast<double>(c.head_dim)), gqa);
  attn = attn.transpose(1, 2).reshape({B, T, c.num_attention_heads * c.head_dim});
  auto out = x + L.o->forward(attn);
  h = rms_norm(out, L.post_norm, c.rms_norm_eps);
  h = L.down->forward(at::silu(L.gate->forward(h)) * L.up->forward(h));
  return out + h;
}

at::Tensor or_undefined(const at::Tensor& mask) { return mask.numel() == 0 ? at::Tensor() : mask; }

// Recomputes one layer in backward. The extra `anchor` input requires grad so that backward runs
// even when the layer's input does not (layer 0 is fed by frozen embeddings); gradients for the
// adapter parameters inside the layer accumulate through the inner backward call.
struct CheckpointedLayer : torch::autograd::Function<CheckpointedLayer> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, at::Tensor x, at::Tensor anchor,
                            at::Tensor cos, at::Tensor sin, at::Tensor mask, bool is_causal,
                            std::int64_t layer_ptr, std::int64_t config_ptr) {
    ctx->save_for_backward({x, cos, sin, mask});
    ctx->saved_data["is_causal"] = is_causal;
    ctx->saved_data["layer"] = layer_ptr;
    ctx->saved_data["config"] = config_ptr;
    // The recompute in backward must see the autocast state of this forward (torch.utils.checkpoint
    // does the same): the trainer's autocast region has ended by the time backward runs.
    const auto dev = x.device().type();
    ctx->saved_data["autocast"] = at::autocast::is_autocast_enabled(dev);
    ctx->saved_data["autocast_dtype"] =
        static_cast<std::int64_t>(at::autocast::get_autocast_dtype(dev));
    ctx->saved_data["cpu_rng"] = at::detail::getDefaultCPUGenerator().get_state();
    if (x.is_cuda())
      ctx->saved_data["dev_rng"] = at::globalContext().defaultGenerator(x.device()).get_state();
    auto* L = reinterpret_cast<CausalLM::Layer*>(layer_ptr);
    auto* c = reinterpret_cast<const ModelConfig*>(config_ptr);
    return layer_forward(*L, *c, x, AttnInputs{cos, sin, or_undefined(mask), is_causal}, nullptr);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    auto* L = reinterpret_cast<CausalLM::Layer*>(ctx->saved_data["layer"].toInt());
    auto* c = reinterpret_cast<const ModelConfig*>(ctx->saved_data["config"].toInt());
    // Same random stream as the first pass, so adapter dropout masks are identical.
    at::Generator cpu_gen = at::detail::getDefaultCPUGenerator();
    auto cpu_state_now = cpu_gen.get_state();
    cpu_gen.set_state(ctx->saved_data["cpu_rng"].toTensor());
    at::Tensor dev_state_now;
    if (saved[0].is_cuda()) {
      at::Generator g = at::globalContext().defaultGenerator(saved[0].device());
      dev_state_now = g.get_state();
      g.set_state(ctx->saved_data["dev_rng"].toTensor());
    }
    at::Tensor x = saved[0].detach().requires_grad_(true);
    at::Tensor out;
    {
      torch::AutoGradMode enable(true);
      const auto dev = x.device().type();
      const bool was_on = at::autocast::is_autocast_enabled(dev);
      const auto was_dtype = at::autocast::get_autocast_dtype(dev);
      const bool on = ctx->saved_data["autocast"].toBool();
      at::autocast::set_autocast_enabled(dev, on);
      at::autocast::set_autocast_dtype(
          dev, static_cast<at::ScalarType>(ctx->saved_data["autocast_dtype"].toInt()));
      struct Restore {
        at::DeviceType dev;
        bool on;
        at::ScalarType dtype;
        ~Restore() {
          at::autocast::set_autocast_enabled(dev, on);
          at::autocast::set_autocast_dtype(dev, dtype);
        }
      } restore{dev, was_on, was_dtype};
      out = layer_forward(*L, *c, x,
                          AttnInputs{saved[1], saved[2], or_undefined(saved[3]),
                                     ctx->saved_data["is_causal"].toBool()},
                          nullptr);
    }
    cpu_gen.set_state(cpu_state_now);
    if (dev_state_now.defined()) {
      at::Generator g = at::globalContext().defaultGenerator(saved[0].device());
      g.set_state(dev_state_now);
    }
    torch::autograd::backward({out}, {grads[0]});
    return {x.grad(),     at::Tensor(), at::Tensor(), at::Tensor(),
            at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor checkpoint_anchor() {
  static at::Tensor anchor = at::zeros({}, at::kFloat).set_requires_grad(true);
  return anchor;
}

}  // namespace

// ---- CausalLM
// ------------------------------------------------------------------------------------

CausalLM::CausalLM(const Checkpoint& checkpoint) { build(checkpoint, nullptr, nullptr); }

CausalLM::CausalLM(const Checkpoint& checkpoint, c10::ScalarType dtype, c10::Device device) {
  build(checkpoint, &dtype, &device);
}

void CausalLM::build(const Checkpoint& ckpt, const c10::ScalarType* dtype,
                     const c10::Device* device) {
  config_ = ckpt.config;
  validate_config(config_, "config");
  if (dtype && !at::isFloatingType(*dtype))
    throw ModelError(std::string("model dtype must be floating point, got ") +
                     c10::toString(*dtype));
  const auto& c = config_;
  TensorTable tt(ckpt, dtype, device);
  const auto H = c.hidden_size, I = c.intermediate_size, D = c.head_dim;
  const auto Q = c.num_attention_heads * D, KV = c.num_key_value_heads * D;

  embed_ = tt.take("model.embed_tokens.weight", {c.vocab_size, H});
  register_buffer("embed_tokens", embed_);
  final_norm_ = tt.take("model.norm.weight", {H});
  register_buffer("norm", final_norm_);

  auto linear = [&](const std::string& prefix, std::int64_t out, std::int64_t in, bool has_bias) {
    at::Tensor w = tt.take(prefix + ".weight", {out, in});
    at::Tensor b;
    if (has_bias) b = tt.take(prefix + ".bias", {out});
    return std::make_shared<Linear>(w, b);
  };
  const bool qkv_bias = c.qkv_bias || c.attention_bias;
  for (std::int64_t i = 0; i < c.num_hidden_layers; ++i) {
    auto L = std::make_shared<Layer>();
    L->index = i;
    std::string p = "model.layers." + std::to_string(i);
    L->q = L->register_module("q_proj", linear(p + ".self_attn.q_proj", Q, H, qkv_bias));
    L->k = L->register_module("k_proj", linear(p + ".self_attn.k_proj", KV, H, qkv_bias));
    L->v = L->register_module("v_proj", linear(p + ".self_attn.v_proj", KV, H, qkv_bias));
    L->o = L->register_module("o_proj", linear(p + ".self_attn.o_proj", H, Q, c.attention_bias));
    L->gate = L->register_module("gate_proj", linear(p + ".mlp.gate_proj", I, H, c.mlp_bias));
    L->up = L->register_module("up_proj", linear(p + ".mlp.up_proj", I, H, c.mlp_bias));
    L->down = L->register_module("down_proj", linear(p + ".mlp.down_proj", H, I, c.mlp_bias));
    L->input_norm = tt.take(p + ".input_layernorm.weight", {H});
    L->post_norm = tt.take(p + ".post_attention_layernorm.weight", {H});
    L->register_buffer("input_layernorm", L->input_norm);
    L->register_buffer("post_attention_layernorm", L->post_norm);
    layers_.push_back(register_module("layer" + std::to_string(i), L));
  }
  if (c.tie_word_embeddings) {
    // transformers omits lm_head.weight for tied models, but some exporters write it anyway.
    if (tt.has("lm_head.weight")) tt.take("lm_head.weight", {c.vocab_size, H});
    lm_head_ = std::make_shared<Linear>(embed_, at::Tensor());
  } else {
    lm_head_ = linear("lm_head", c.vocab_size, H, false);
  }
  register_module("lm_head", lm_head_);
  tt.check_all_used();
  inv_freq_ = rope_inv_freq(c).to(embed_.device());
}

c10::ScalarType CausalLM::dtype() const { return embed_.scalar_type(); }
c10::Device CausalLM::device() const { return embed_.device(); }

void CausalLM::to_device(c10::Device device, c10::ScalarType dtype) {
  if (!at::isFloatingType(dtype)) throw ModelError("model dtype must be floating point");
  // Module::to replaces each buffer's data in place, so the member handles stay valid and the
  // tied lm_head keeps sharing the embedding.
  this->to(device, dtype);
  inv_freq_ = inv_freq_.to(device);
}

std::vector<std::pair<std::string, Linear*>> CausalLM::linears() {
  std::vector<std::pair<std::string, Linear*>> out;
  for (auto& L : layers_) {
    std::string p = "model.layers." + std::to_string(L->index);
    out.emplace_back(p + ".self_attn.q_proj", L->q.get());
    out.emplace_back(p + ".self_attn.k_proj", L->k.get());
    out.emplace_back(p + ".self_attn.v_proj", L->v.get());
    out.emplace_back(p + ".self_attn.o_proj", L->o.get());
    out.emplace_back(p + ".mlp.gate_proj", L->gate.get());
    out.emplace_back(p + ".mlp.up_proj", L->up.get());
    out.emplace_back(p + ".mlp.down_proj", L->down.get());
  }
  out.emplace_back("lm_head", lm_head_.get());
  return out;
}

std::vector<std::pair<std::string, at::Tensor>> CausalLM::state_dict_hf() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  out.emplace_back("model.embed_tokens.weight", embed_);
  auto add_linear = [&](const std::string& name, const Linear& l) {
    out.emplace_back(name + ".weight", l.weight);
    if (l.bias.defined()) out.emplace_back(name + ".bias", l.bias);
  };
  for (const auto& L : layers_) {
    std::string p = "model.layers." + std::to_string(L->index);
    out.emplace_back(p + ".input_layernorm.weight", L->input_norm);
    add_linear(p + ".self_attn.q_proj", *L->q);
    add_linear(p + ".self_attn.k_proj", *L->k);
    add_linear(p + ".self_attn.v_proj", *L->v);
    add_linear(p + ".self_attn.o_proj", *L->o);
    out.emplace_back(p + ".post_attention_layernorm.weight", L->post_norm);
    add_linear(p + ".mlp.gate_proj", *L->gate);
    add_linear(p + ".mlp.up_proj", *L->up);
    add_linear(p + ".mlp.down_proj", *L->down);
  }
  out.emplace_back("model.norm.weight", final_norm_);
  if (!config_.tie_word_embeddings) out.emplace_back("lm_head.weight", lm_head_->weight);
  return out;
}

std::int64_t CausalLM::parameter_count() const {
  std::int64_t n = 0;
  for (const auto& [name, t] : state_dict_hf()) n += t.numel();
  return n;
}

at::Tensor CausalLM::hidden_states(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                   const at::Tensor& position_ids, KvCache* cache) {
  const auto& c = config_;
  if (!input_ids.defined() || input_ids.dim() != 2 || input_ids.size(0) < 1 ||
      input_ids.size(1) < 1)
    throw ModelError("input_ids must be a non-empty [batch, seq] tensor");
  if (input_ids.scalar_type() != at::kLong && input_ids.scalar_type() != at::kInt)
    throw ModelError("input_ids must be int64 or int32");
  const auto B = input_ids.size(0), T = input_ids.size(1);
  const auto past = cache ? cache->seq_len() : 0;
  const auto S = past + T;
  if (cache && cache->num_layers() != c.num_hidden_layers)
    throw ModelError("KV cache was made for a different model");
  auto dev = device();
  auto ids = input_ids.to(dev, at::kLong);
  {
    auto mn = ids.min().item<std::int64_t>(), mx = ids.max().item<std::int64_t>();
    if (mn < 0 || mx >= c.vocab_size)
      throw ModelError("token id " + std::to_string(mn < 0 ? mn : mx) +
                       " outside the vocabulary [0, " + std::to_string(c.vocab_size) + ")");
  }
  at::Tensor mask;  // [B,S] bool, undefined = no padding
  if (attention_mask.defined()) {
    if (attention_mask.dim() != 2 || attention_mask.size(0) != B || attention_mask.size(1) != S)
      throw ModelError("attention_mask must be [batch, past + seq] = [" + std::to_string(B) + ", " +
                       std::to_string(S) + "], got " + shape_str(attention_mask.sizes()));
    mask = attention_mask.to(dev).ne(0);
    if (mask.all().item<bool>()) mask = at::Tensor();
  }
  at::Tensor pos;
  if (position_ids.defined()) {
    if (position_ids.dim() != 2 || position_ids.size(0) != B || position_ids.size(1) != T)
      throw ModelError("position_ids must be [batch, seq], got " + shape_str(position_ids.sizes()));
    pos = position_ids.to(dev, at::kLong);
  } else if (mask.defined()) {
    // transformers' generate: positions count real tokens only; padding gets position 1.
    pos = (mask.to(at::kLong).cumsum(-1) - 1).masked_fill(mask.logical_not(), 1).narrow(1, past, T);
  } else {
    pos = at::arange(past, S, at::TensorOptions().dtype(at::kLong).device(dev))
              .unsqueeze(0)
              .expand({B, T});
  }

  auto x = at::embedding(embed_, ids);
  auto act_dtype = x.scalar_type();
  auto freqs = pos.unsqueeze(-1).to(at::kFloat) * inv_freq_.to(dev);
  auto emb = at::cat({freqs, freqs}, -1);
  AttnInputs a;
  a.cos = emb.cos().to(act_dtype);
  a.sin = emb.sin().to(act_dtype);
  if (mask.defined()) {
    // Query i sits at absolute position past+i and may see keys j <= past+i that are real tokens.
    // It may always see itself, so rows of padding queries are never fully masked (which would
    // make NaNs that leak through later layers).
    auto opts = at::TensorOptions().dtype(at::kLong).device(dev);
    auto qpos = at::arange(past, S, opts).unsqueeze(1);      // [T,1]
    auto kpos = at::arange(0, S, opts).unsqueeze(0);         // [1,S]
    auto causal = kpos.le(qpos);                             // [T,S]
    auto allowed = causal.unsqueeze(0) & mask.unsqueeze(1);  // [B,T,S]
    allowed = allowed | kpos.eq(qpos).unsqueeze(0);
    a.mask = allowed.unsqueeze(1);
  } else {
    a.is_causal = T > 1;
    if (T > 1 && past > 0) {
      // SDPA's is_causal aligns the triangle top-left; with a cache the queries sit at the end.
      auto opts = at::TensorOptions().dtype(at::kLong).device(dev);
      a.mask = at::arange(0, S, opts)
                   .unsqueeze(0)
                   .le(at::arange(past, S, opts).unsqueeze(1))
                   .view({1, 1, T, S});
      a.is_causal = false;
    }
  }

  const bool ckpt = checkpointing_ && is_training() && torch::GradMode::is_enabled() && !cache;
  for (auto& L : layers_) {
    if (ckpt) {
      // autograd inputs must be defined: "no mask" travels as an empty tensor
      const at::Tensor mask =
          a.mask.defined() ? a.mask : at::empty({0}, x.options().dtype(at::kBool));
      x = CheckpointedLayer::apply(x, checkpoint_anchor(), a.cos, a.sin, mask, a.is_causal,
                                   reinterpret_cast<std::int64_t>(L.get()),
                                   reinterpret_cast<std::int64_t>(&config_));
    } else {
      x = layer_forward(*L, c, x, a, cache);
    }
  }
  if (cache) cache->advance(T);
  return rms_norm(x, final_norm_, c.rms_norm_eps);
}

at::Tensor CausalLM::project(const at::Tensor& hidden) { return lm_head_->forward(hidden); }

at::Tensor CausalLM::plain_projection_weight() const {
  if (lm_head_->bias.defined() || (lm_head_->hook && lm_head_->hook->active())) return {};
  return lm_head_->weight;
}

at::Tensor CausalLM::forward(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                             const at::Tensor& position_ids, KvCache* cache,
                             std::int64_t logits_to_keep) {
  auto h = hidden_states(input_ids, attention_mask, position_ids, cache);
  if (logits_to_keep > 0 && logits_to_keep < h.size(1))
    h = h.narrow(1, h.size(1) - logits_to_keep, logits_to_keep);
  return lm_head_->forward(h);
}

}  // namespace safetune::model
