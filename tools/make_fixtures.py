#!/usr/bin/env python3
# make_fixtures.py: writes tiny DeepSeek-V2/V3 checkpoints (official HF layout) + transformers float32 reference logits.
"""Generate the test fixtures under tests/fixtures/ (v2_lite, v2, v3, v3_fp8, v3_odd, v2_odd).

Each fixture directory holds config.json, two safetensors shards with their
model.safetensors.index.json (per-expert tensor names, as the real DeepSeek
checkpoints), and reference.json: greedy ids and float32 logits computed by
transformers (eager attention, eager experts, CPU float32) on the stored weights
(bf16 upcast; FP8 dequantized). v3/v3_fp8 also carry an MTP layer and its logits.

Needs torch, transformers 5.x (DeepseekV2/V3), safetensors. On the GPU machine:
    python3 tools/make_fixtures.py --out tests/fixtures
The run is seeded, so it reproduces the same files.
"""
import argparse
import copy
import inspect
import json
import math
import os
import re
import shutil
import sys
import tempfile
import traceback

import torch
import torch.nn.functional as F
import transformers
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoConfig, DeepseekV2Config, DeepseekV2ForCausalLM, DeepseekV3ForCausalLM
from transformers.masking_utils import create_causal_mask
from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3DecoderLayer, DeepseekV3RMSNorm

N_NEW, PROMPT_LEN, BLOCK, FP8_MAX = 6, 14, 128, 448.0
SHARDS = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
MTP_ONLY = ("enorm.weight", "hnorm.weight", "eh_proj.weight", "embed_tokens.weight",
            "shared_head.norm.weight", "shared_head.head.weight")

COMMON = dict(hidden_act="silu", rms_norm_eps=1e-6, attention_bias=False, attention_dropout=0.0,
              bos_token_id=0, eos_token_id=1, tie_word_embeddings=False, initializer_range=0.02,
              pretraining_tp=1, use_cache=True, num_hidden_layers=3, first_k_dense_replace=1,
              num_attention_heads=4, num_key_value_heads=4, qk_nope_head_dim=32, qk_rope_head_dim=16,
              v_head_dim=32)
# v2_lite: built as a DeepseekV2Config and written by config.save_pretrained (transformers v5 layout).
V2_LITE = dict(COMMON, vocab_size=272, hidden_size=128, intermediate_size=256, moe_intermediate_size=48,
               q_lora_rank=None, kv_lora_rank=48, n_routed_experts=8, n_shared_experts=2, num_experts_per_tok=2,
               topk_method="greedy", norm_topk_prob=False, routed_scaling_factor=1.0,
               max_position_embeddings=256, rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
# v2 / v3: config.json written verbatim in the official deepseek-ai layout.
OFFICIAL = dict(COMMON, aux_loss_alpha=0.001, moe_layer_freq=1, seq_aux=True, torch_dtype="bfloat16", rope_theta=10000)
V2 = dict(OFFICIAL, architectures=["DeepseekV2ForCausalLM"], model_type="deepseek_v2", vocab_size=320,
          hidden_size=160, intermediate_size=288, moe_intermediate_size=40, q_lora_rank=64, kv_lora_rank=48,
          n_routed_experts=8, n_shared_experts=2, num_experts_per_tok=3, n_group=4, topk_group=2,
          topk_method="group_limited_greedy", scoring_func="softmax", norm_topk_prob=False,
          routed_scaling_factor=4.0, max_position_embeddings=256,
          rope_scaling={"beta_fast": 32, "beta_slow": 1, "factor": 8, "mscale": 0.707, "mscale_all_dim": 0.707,
                        "original_max_position_embeddings": 32, "type": "yarn"})
V3 = dict(OFFICIAL, architectures=["DeepseekV3ForCausalLM"], model_type="deepseek_v3", ep_size=1, vocab_size=256,
          hidden_size=192, intermediate_size=160, moe_intermediate_size=24, q_lora_rank=96, kv_lora_rank=64,
          n_routed_experts=16, n_shared_experts=1, num_experts_per_tok=3, n_group=4, topk_group=2,
          topk_method="noaux_tc", scoring_func="sigmoid", norm_topk_prob=True, routed_scaling_factor=2.5,
          num_nextn_predict_layers=1, max_position_embeddings=128,
          rope_scaling={"beta_fast": 32, "beta_slow": 1, "factor": 4, "mscale": 1.0, "mscale_all_dim": 0.707,
                        "original_max_position_embeddings": 32, "type": "yarn"})
V3_FP8 = dict(V3, quantization_config={"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                                       "weight_block_size": [BLOCK, BLOCK]})
# Shapes no released checkpoint has but the architecture allows (issue 12): v_head_dim != qk_nope_head_dim,
# n_group not a power of two, kv_lora_rank not a multiple of 64, a longer prompt crossing 16-token pages.
V3_ODD = dict(V3, hidden_size=192, num_attention_heads=6, num_key_value_heads=6, q_lora_rank=96, kv_lora_rank=96,
              qk_nope_head_dim=32, qk_rope_head_dim=32, v_head_dim=48, n_routed_experts=24, n_group=6, topk_group=3,
              num_experts_per_tok=4, n_shared_experts=1, num_nextn_predict_layers=0,
              rope_scaling={"beta_fast": 32, "beta_slow": 1, "factor": 8, "mscale": 1.0, "mscale_all_dim": 1.0,
                            "original_max_position_embeddings": 64, "type": "yarn"})
V2_ODD = dict(V2, hidden_size=160, num_attention_heads=5, num_key_value_heads=5, q_lora_rank=None, kv_lora_rank=80,
              qk_nope_head_dim=48, qk_rope_head_dim=32, v_head_dim=40, n_routed_experts=12, n_group=3, topk_group=2,
              num_experts_per_tok=3, n_shared_experts=2, rope_scaling=None)
# name, config, seed, prompt length (v3_fp8 shares v3's seed: it is v3's weights, block-quantized)
FIXTURES = [("v2_lite", V2_LITE, 1, PROMPT_LEN), ("v2", V2, 2, PROMPT_LEN), ("v3", V3, 3, PROMPT_LEN),
            ("v3_fp8", V3_FP8, 3, PROMPT_LEN), ("v3_odd", V3_ODD, 4, 37), ("v2_odd", V2_ODD, 5, 37)]


# ----------------------------------------------------------------------------- weights
class Rand:
    def __init__(self, seed):
        self.g = torch.Generator().manual_seed(seed)

    def randn(self, *shape):
        return torch.randn(*shape, generator=self.g)

    def linear(self, out_f, in_f):  # std 1/sqrt(fan_in) keeps activations O(1)
        return self.randn(out_f, in_f) / math.sqrt(in_f)

    def norm(self, n):  # not all ones, so a missed norm weight shows
        return 1.0 + 0.1 * self.randn(n)


def mlp_weights(r, p, hidden, inter):
    return {p + "gate_proj.weight": r.linear(inter, hidden), p + "up_proj.weight": r.linear(inter, hidden),
            p + "down_proj.weight": r.linear(hidden, inter)}


def layer_weights(c, r, p, moe):
    H, nh = c.hidden_size, c.num_attention_heads
    qk_head = c.qk_nope_head_dim + c.qk_rope_head_dim
    a = p + "self_attn."
    w = {p + "input_layernorm.weight": r.norm(H)}
    if c.q_lora_rank is None:
        w[a + "q_proj.weight"] = r.linear(nh * qk_head, H)
    else:
        w[a + "q_a_proj.weight"] = r.linear(c.q_lora_rank, H)
        w[a + "q_a_layernorm.weight"] = r.norm(c.q_lora_rank)
        w[a + "q_b_proj.weight"] = r.linear(nh * qk_head, c.q_lora_rank)
    w[a + "kv_a_proj_with_mqa.weight"] = r.linear(c.kv_lora_rank + c.qk_rope_head_dim, H)
    w[a + "kv_a_layernorm.weight"] = r.norm(c.kv_lora_rank)
    w[a + "kv_b_proj.weight"] = r.linear(nh * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank)
    w[a + "o_proj.weight"] = r.linear(H, nh * c.v_head_dim)
    w[p + "post_attention_layernorm.weight"] = r.norm(H)
    m = p + "mlp."
    if not moe:
        w.update(mlp_weights(r, m, H, c.intermediate_size))
        return w
    w[m + "gate.weight"] = r.linear(c.n_routed_experts, H)
    if c.model_type == "deepseek_v3":  # noaux_tc: F32 bias, non-zero so it changes the selection
        w[m + "gate.e_score_correction_bias"] = 0.05 * r.randn(c.n_routed_experts)
    for e in range(c.n_routed_experts):
        w.update(mlp_weights(r, f"{m}experts.{e}.", H, c.moe_intermediate_size))
    w.update(mlp_weights(r, m + "shared_experts.", H, c.moe_intermediate_size * c.n_shared_experts))
    return w


def make_weights(c, seed):
    r, H, N = Rand(seed), c.hidden_size, c.num_hidden_layers
    w = {"model.embed_tokens.weight": r.randn(c.vocab_size, H)}
    for layer in range(N):
        w.update(layer_weights(c, r, f"model.layers.{layer}.", moe=layer >= c.first_k_dense_replace))
    w["model.norm.weight"] = r.norm(H)
    w["lm_head.weight"] = r.linear(c.vocab_size, H)
    if getattr(c, "num_nextn_predict_layers", 0):  # MTP module at index N, laid out as model.layers.61 of V3
        p = f"model.layers.{N}."
        w[p + "enorm.weight"], w[p + "hnorm.weight"] = r.norm(H), r.norm(H)
        w[p + "eh_proj.weight"] = r.linear(H, 2 * H)
        w[p + "embed_tokens.weight"] = w["model.embed_tokens.weight"].clone()  # shared with main model, as in V3
        w.update(layer_weights(c, r, p, moe=True))
        w[p + "shared_head.norm.weight"] = r.norm(H)
        w[p + "shared_head.head.weight"] = w["lm_head.weight"].clone()  # shared with main model, as in V3
    return {k: v if k.endswith("e_score_correction_bias") else v.to(torch.bfloat16) for k, v in w.items()}


FP8_LINEAR = re.compile(r"\.(q_proj|q_a_proj|q_b_proj|kv_a_proj_with_mqa|kv_b_proj|o_proj|gate_proj|up_proj|down_proj)"
                        r"\.weight$")  # not: router mlp.gate, eh_proj, shared_head.head, lm_head, embeddings, norms


def quantize_fp8(w):
    """128x128 block quantization: scale = amax/448 per block, q = clamp(w/scale) as e4m3."""
    out_f, in_f = w.shape
    so, si = math.ceil(out_f / BLOCK), math.ceil(in_f / BLOCK)
    padded = F.pad(w.float(), (0, si * BLOCK - in_f, 0, so * BLOCK - out_f))
    blocks = padded.view(so, BLOCK, si, BLOCK)
    amax = blocks.abs().amax(dim=(1, 3))
    scale = torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))
    q = (blocks / scale[:, None, :, None]).clamp(-FP8_MAX, FP8_MAX).view(so * BLOCK, si * BLOCK)
    return q[:out_f, :in_f].contiguous().to(torch.float8_e4m3fn), scale


def dequantize_fp8(q, scale):
    s = scale.repeat_interleave(BLOCK, 0).repeat_interleave(BLOCK, 1)[: q.shape[0], : q.shape[1]]
    return q.float() * s


def quantize_checkpoint(w):
    out = {}
    for k, v in w.items():
        if FP8_LINEAR.search(k):
            out[k], out[k + "_scale_inv"] = quantize_fp8(v)
        else:
            out[k] = v
    return out


# ----------------------------------------------------------------------------- files
def write_checkpoint(d, tensors):
    names = list(tensors)
    nbytes = [tensors[n].numel() * tensors[n].element_size() for n in names]
    total, acc, split = sum(nbytes), 0, len(names)
    for i, b in enumerate(nbytes):
        acc += b
        if acc >= total / 2:
            split = i + 1
            break
    weight_map = {}
    for shard, part in zip(SHARDS, (names[:split], names[split:])):
        save_file({n: tensors[n].contiguous() for n in part}, os.path.join(d, shard), metadata={"format": "pt"})
        weight_map.update({n: shard for n in part})
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2)


def read_checkpoint_float32(d):
    """Reads the shards back (the reference is computed from what is on disk); FP8 pairs are dequantized."""
    with open(os.path.join(d, "model.safetensors.index.json")) as f:
        weight_map = json.load(f)["weight_map"]
    raw = {}
    for shard in sorted(set(weight_map.values())):
        with safe_open(os.path.join(d, shard), framework="pt") as f:
            raw.update({k: f.get_tensor(k) for k in f.keys()})
    assert set(raw) == set(weight_map), "index and shards disagree"
    return {k: dequantize_fp8(v, raw[k + "_scale_inv"]) if k + "_scale_inv" in raw else v.float()
            for k, v in raw.items() if not k.endswith("_scale_inv")}


def fuse_experts(w):
    """Per-expert checkpoint names -> transformers v5 fused params gate_up_proj [E,2I,H] and down_proj [E,H,I]."""
    out, experts = {}, {}
    for k, v in w.items():
        m = re.match(r"(.*mlp\.experts)\.(\d+)\.(gate|up|down)_proj\.weight$", k)
        if m:
            experts.setdefault(m[1], {}).setdefault(int(m[2]), {})[m[3]] = v
        else:
            out[k] = v
    for p, ex in experts.items():
        order = sorted(ex)
        out[p + ".gate_up_proj"] = torch.stack([torch.cat([ex[e]["gate"], ex[e]["up"]], 0) for e in order])
        out[p + ".down_proj"] = torch.stack([ex[e]["down"] for e in order])
    return out


def write_config(d, spec):
    if spec.get("model_type"):  # official layout, verbatim
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(spec, f, indent=2, sort_keys=True)
    else:  # what transformers v5 itself writes
        cfg = DeepseekV2Config(**spec, dtype="bfloat16")
        cfg.architectures = ["DeepseekV2ForCausalLM"]
        cfg.save_pretrained(d)
    cfg = AutoConfig.from_pretrained(d)
    cfg._attn_implementation = "eager"
    cfg._experts_implementation = "eager"
    return cfg


# ----------------------------------------------------------------------------- reference
def model_class(cfg):
    return DeepseekV3ForCausalLM if cfg.model_type == "deepseek_v3" else DeepseekV2ForCausalLM


def greedy_reference(model, prompt):
    """Row k = logits of a full forward (no cache) over prompt + outputs[:k], at the last position."""
    seq, out, rows = list(prompt), [], []
    for _ in range(N_NEW):
        logits = model(torch.tensor([seq])).logits[0, -1]
        out.append(int(logits.argmax()))
        rows.append(logits)
        seq.append(out[-1])
    return out, torch.stack(rows)


def top2_gap(rows):
    top = rows.topk(2, dim=-1).values
    return float((top[:, 0] - top[:, 1]).min())


def rms_norm(weight, eps):
    n = DeepseekV3RMSNorm(weight.numel(), eps=eps)
    n.weight.data.copy_(weight)
    return n


def transformers_mtp_feed():
    """Which main-model hidden state transformers' own MTP drafting (generate(use_mtp=True)) feeds to hnorm."""
    try:
        from transformers.generation.candidate_generator import MTPCandidateGenerator
    except ImportError:
        return None, "transformers has no MTPCandidateGenerator"
    src = inspect.getsource(MTPCandidateGenerator.get_candidates)
    print("---- transformers MTPCandidateGenerator.get_candidates ----\n" + src + "----")
    if "hidden_states[-1]" in src:
        return "hidden_states[-1]", "transformers MTPCandidateGenerator feeds model_outputs.hidden_states[-1]"
    print("WARNING: could not tell which hidden state transformers feeds; falling back to pre_final_norm")
    return None, "transformers MTP source not recognized"


def main_hidden_states(model, ids):
    """(pre_final_norm, post_final_norm, output_hidden_states[-1]) of the main model."""
    captured = {}
    hook = model.model.norm.register_forward_hook(
        lambda mod, inp, out: captured.update(pre=inp[0].detach().clone(), post=out.detach().clone()))
    out = model.model(ids, output_hidden_states=True)
    hook.remove()
    return captured["pre"], captured["post"], out.hidden_states[-1]


def mtp_reference(model, cfg, w, prompt, choice):
    """MTP logits at positions 0..P-2: enorm(emb(t[i+1])) ++ hnorm(h[i]) -> eh_proj -> layer -> shared_head."""
    N, eps, P = cfg.num_hidden_layers, cfg.rms_norm_eps, len(prompt)
    p = f"model.layers.{N}."
    mtp = {k[len(p):]: v for k, v in w.items() if k.startswith(p)}
    block = fuse_experts({k: v for k, v in mtp.items() if k not in MTP_ONLY})
    pre, post, hs_last = main_hidden_states(model, torch.tensor([prompt]))
    label, evidence = choice, (f"--mtp-hidden {choice}; transformers' hidden_states[-1] equals the "
                               f"{'pre' if torch.equal(hs_last, pre) else 'post'}-norm state")
    if choice == "auto":
        how, evidence = transformers_mtp_feed()
        if how is None:
            label = "pre_final_norm"
        else:
            label = "post_final_norm" if torch.equal(hs_last, post) else "pre_final_norm"
            evidence += f" (equal to the {label} state here: {torch.equal(hs_last, pre) or torch.equal(hs_last, post)})"
    h = (pre if label == "pre_final_norm" else post)[:, : P - 1]

    layer = DeepseekV3DecoderLayer(cfg, layer_idx=N).eval()  # N >= first_k_dense_replace -> MoE, as in V3
    layer.load_state_dict(block, strict=True)
    ids = torch.tensor([prompt[1:]])
    pos = torch.arange(P - 1)[None]
    emb = F.embedding(ids, mtp["embed_tokens.weight"])
    x = F.linear(torch.cat([rms_norm(mtp["enorm.weight"], eps)(emb), rms_norm(mtp["hnorm.weight"], eps)(h)], -1),
                 mtp["eh_proj.weight"])
    cos_sin = model.model.rotary_emb(x, position_ids=pos)
    mask = create_causal_mask(config=cfg, inputs_embeds=x, attention_mask=None, past_key_values=None,
                              position_ids=pos)
    x = layer(x, attention_mask=mask, position_ids=pos, position_embeddings=cos_sin)
    x = x[0] if isinstance(x, tuple) else x
    logits = F.linear(rms_norm(mtp["shared_head.norm.weight"], eps)(x), mtp["shared_head.head.weight"])[0]
    cross_check_mtp(model, block, mtp, ids, h, pos, mask, logits)
    return logits, label, evidence


def cross_check_mtp(model, block, mtp, ids, h, pos, mask, logits):
    """Same computation through transformers' own MtpLayer/MtpModel, when it exists (informational)."""
    try:
        from transformers.modeling_layers import MtpModel
        m = MtpModel(copy.deepcopy(model), num_mtp_layers=1).eval()  # it ties (and may re-init) main modules
        sd = {f"layers.0.mtp_block.{k}": v for k, v in block.items()}
        sd.update({"layers.0.enorm.weight": mtp["enorm.weight"], "layers.0.hnorm.weight": mtp["hnorm.weight"],
                   "layers.0.eh_proj.weight": mtp["eh_proj.weight"],
                   "layers.0.post_norm.weight": mtp["shared_head.norm.weight"],
                   "embed_tokens.weight": mtp["embed_tokens.weight"], "shared_head.weight": mtp["shared_head.head.weight"]})
        m.load_state_dict(sd, strict=True)
        emb = m.embed_tokens(ids)
        out = m.layers[0](emb, h, position_embeddings=m.rotary_emb(emb, position_ids=pos), attention_mask=mask,
                          position_ids=pos, past_key_values=None)
        diff = float((m._project_to_logits(out)[0] - logits).abs().max())
        print(f"  MTP cross-check vs transformers MtpModel/MtpLayer: max|diff| = {diff:.3g}"
              + ("" if diff < 1e-5 else "  <-- MISMATCH"))
    except Exception as e:  # noqa: BLE001 - informational only
        print(f"  [info] no MTP cross-check through transformers' MtpModel: {type(e).__name__}: {str(e)[:300]}")


def noaux_bias_effect(model, ids):
    """How many (token, MoE layer) expert selections the e_score_correction_bias changes."""
    routers = [m for m in model.modules() if type(m).__name__ == "DeepseekV3TopkRouter"]
    seen = []
    hooks = [r.register_forward_hook(lambda mod, inp, out: seen.append((mod, inp[0], out[2]))) for r in routers]
    model(ids)
    for hk in hooks:
        hk.remove()
    changed = total = 0
    for mod, x, idx in seen:
        bias = mod.e_score_correction_bias.clone()
        mod.e_score_correction_bias.zero_()
        idx0 = mod(x)[2]
        mod.e_score_correction_bias.copy_(bias)
        changed += int((idx.sort(-1).values != idx0.sort(-1).values).any(-1).sum())
        total += idx.shape[0]
    return changed, total


def reload_check(cls, d, ids, expected, w, fp8):
    if not fp8:  # our on-disk layout must be exactly what transformers loads
        m, info = cls.from_pretrained(d, dtype=torch.float32, attn_implementation="eager", output_loading_info=True)
        m.config._experts_implementation = "eager"
        get = info.get if isinstance(info, dict) else lambda k: getattr(info, k)
        assert not get("missing_keys") and not get("mismatched_keys"), info
        diff = float((m(ids).logits[0] - expected).abs().max())
        print(f"  reload via from_pretrained: max|diff| = {diff:.3g}, "
              f"unexpected keys (the MTP layer) = {len(get('unexpected_keys'))}")
        assert diff < 1e-5
        return
    try:  # informational: transformers' own FP8 dequantize path
        from transformers import FineGrainedFP8Config
        m = cls.from_pretrained(d, dtype=torch.float32, attn_implementation="eager",
                                quantization_config=FineGrainedFP8Config(dequantize=True))
        m.config._experts_implementation = "eager"
        diff = float((m(ids).logits[0].float() - expected).abs().max())
        print(f"  [info] transformers FP8 dequantize=True load: logits max|diff| vs our dequant = {diff:.3g}")
        sd = m.state_dict()
        for k in sorted(k for k in sd if k.startswith("model.layers.0.") and FP8_LINEAR.search(k)):
            print(f"    {k} {tuple(sd[k].shape)}: weight max|diff| = {float((sd[k].float() - w[k]).abs().max()):.3g}")
    except Exception as e:  # noqa: BLE001 - informational only
        print(f"  [info] transformers FP8 dequantize=True load failed: {type(e).__name__}: {str(e)[:300]}")


def probe_save_pretrained(model):
    """What transformers v5's own save_pretrained writes for the experts (per-expert or fused 3D)."""
    with tempfile.TemporaryDirectory() as t:
        model.save_pretrained(t)
        shapes = {}
        for fn in sorted(os.listdir(t)):
            if fn.endswith(".safetensors"):
                with safe_open(os.path.join(t, fn), framework="pt") as f:
                    shapes.update({k: tuple(f.get_slice(k).get_shape()) for k in f.keys()})
    keys = sorted(k for k in shapes if k.startswith("model.layers.1.mlp."))
    print(f"  [info] save_pretrained wrote {len(shapes)} tensors; model.layers.1.mlp.* has {len(keys)}:")
    for k in keys if len(keys) <= 10 else keys[:7] + ["..."] + keys[-2:]:
        print(f"    {k} {shapes.get(k, '')}")


def build_fixture(root, name, spec, seed, prompt_len, mtp_hidden):
    print(f"== {name}")
    d = os.path.join(root, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    cfg = write_config(d, spec)
    fp8 = "quantization_config" in spec
    weights = make_weights(cfg, seed)
    write_checkpoint(d, quantize_checkpoint(weights) if fp8 else weights)

    w = read_checkpoint_float32(d)
    N, cls = cfg.num_hidden_layers, model_class(cfg)
    model = cls(cfg).float().eval()
    model.config._attn_implementation, model.config._experts_implementation = "eager", "eager"
    main = {k: v for k, v in w.items() if not k.startswith(f"model.layers.{N}.")}
    model.load_state_dict(fuse_experts(main), strict=True)
    print(f"  {cls.__name__}: attn={model.config._attn_implementation}, "
          f"experts={model.config._experts_implementation}, rope={model.config.rope_parameters}")

    prompt = torch.randint(2, cfg.vocab_size, (prompt_len,), generator=torch.Generator().manual_seed(100 + seed))
    prompt = prompt.tolist()
    out_ids, rows = greedy_reference(model, prompt)
    ref = {"prompt_ids": prompt, "output_ids": out_ids, "logits": rows.tolist()}
    if getattr(cfg, "num_nextn_predict_layers", 0):
        mtp_logits, label, evidence = mtp_reference(model, cfg, w, prompt, mtp_hidden)
        ref.update(mtp_logits=mtp_logits.tolist(), mtp_hidden=label, mtp_hidden_evidence=evidence)
        changed, total = noaux_bias_effect(model, torch.tensor([prompt + out_ids]))
        print(f"  MTP hidden: {label} ({evidence})")
        print(f"  e_score_correction_bias changed {changed}/{total} token expert selections"
              + ("" if changed else "  <-- WARNING: bias has no effect"))
    ref["dtype_note"] = (("linear weights F8_E4M3 + F32 128x128 weight_scale_inv, rest bf16; reference float32 "
                          "on dequantized weights (q.float() * scale)") if fp8 else
                         "weights stored bf16; reference float32 on the bf16 values")
    ref["transformers_version"] = transformers.__version__
    full = torch.tensor([prompt + out_ids[:-1]])
    full_logits = model(full).logits[0, prompt_len - 1:]
    assert (full_logits - rows).abs().max() < 1e-4  # one pass over prompt+outputs agrees with the rows
    reload_check(cls, d, full, model(full).logits[0], w, fp8)
    if name == "v2_lite":
        try:
            probe_save_pretrained(model)
        except Exception as e:  # noqa: BLE001 - informational only
            print(f"  [info] save_pretrained probe failed: {type(e).__name__}: {str(e)[:300]}")
    with open(os.path.join(d, "reference.json"), "w") as f:
        json.dump(ref, f)
    size = sum(os.path.getsize(os.path.join(d, fn)) for fn in os.listdir(d))
    return name, size, float(rows.abs().max()), out_ids, top2_gap(rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="tests/fixtures", help="output root (default tests/fixtures)")
    ap.add_argument("--only", nargs="*", help="fixture names to build (default: all)")
    ap.add_argument("--mtp-hidden", default="post_final_norm", choices=["auto", "pre_final_norm", "post_final_norm"],
                    help="main-model hidden state fed to the MTP hnorm. Default: the final-normed state, which "
                         "SGLang (deepseek_nextn) and vLLM (deepseek_mtp) feed; auto = mirror transformers' MTP "
                         "drafting (hidden_states[-1], the pre-norm state in transformers 5.17)")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    rows, failed = [], []
    for name, spec, seed, prompt_len in FIXTURES:
        if args.only and name not in args.only:
            continue
        try:  # keep going, so one run reports on every fixture
            rows.append(build_fixture(args.out, name, spec, seed, prompt_len, args.mtp_hidden))
        except Exception:  # noqa: BLE001
            traceback.print_exc()
            failed.append(name)
    print(f"\n{'fixture':<9} {'bytes':>9} {'max|logit|':>10} {'min top2 gap':>12}  greedy ids")
    for name, size, amax, ids, gap in rows:
        print(f"{name:<9} {size:>9} {amax:>10.3f} {gap:>12.4f}  {ids}")
    if failed:
        sys.exit(f"FAILED: {failed}")


if __name__ == "__main__":
    main()
