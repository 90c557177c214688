#!/usr/bin/env python3
# train_tiny.py: trains a tiny DeepSeek-V3 model (MLA, MoE, one MTP layer) on arith_problems.py, in narwhal's HF layout.
"""Train a small DeepSeek-V3-architecture model that solves tools/arith_problems.py, with a trained MTP layer.

It exists for the speculative-decoding work: a checkpoint whose answers can be scored (`narwhal bench-accuracy`)
and whose MTP head drafts tokens worth accepting, small enough to commit or copy around (< 25 MB).

Steps: (1) a byte-level BPE tokenizer (digits split one by one) trained on generated problems; (2) a DeepSeek-V3
model (MLA at DeepSeek's head dims, so narwhal's GPU kernels run it; MoE with noaux_tc routing; first layer
dense) plus DeepSeek-V3's MTP module, trained jointly: loss = main next-token loss + lambda * MTP loss, the MTP
module predicting token t+2 from [enorm(embed(t+1)) ; hnorm(h_t)] through eh_proj, one decoder layer and the
shared head. h_t is the main model's final-normed state, which narwhal (as SGLang's deepseek_nextn) feeds it.
Routing is balanced as DeepSeek-V3 does, by nudging e_score_correction_bias (no auxiliary loss); (3) writes
config.json, model.safetensors (per-expert names, MTP as model.layers.{N}.*), tokenizer.json,
tokenizer_config.json and the held-out problems as test.jsonl; (4) prints the greedy few-shot exact-match
accuracy on held-out problems and the MTP head's top-1 agreement (an acceptance proxy).

Needs torch, transformers 5.x (DeepseekV3), tokenizers, safetensors; no network. On the GPU machine:
    python3 tools/train_tiny.py --out models/arith-tiny          # about 7 minutes on one H200
    narwhal serve --model-path models/arith-tiny --port 30000 &
    narwhal bench-accuracy --port 30000 --data-path models/arith-tiny/test.jsonl
The run is seeded; CUDA kernels with atomics (grouped_mm's among them) may still make the last digits of the
losses differ between runs. On an H200 (torch 2.11, transformers 5.17) the defaults gave a 584-token tokenizer,
an 18 MiB checkpoint, held-out loss 0.26 (main and MTP), 200/200 exact matches and 0.98 MTP agreement.
"""
import argparse
import json
import math
import os
import re
import sys
import time

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS; must precede CUDA's start

import torch
import torch.nn as nn
import torch.nn.functional as F
import transformers
from safetensors.torch import save_file
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoConfig, DeepseekV3ForCausalLM
from transformers.masking_utils import create_causal_mask
from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3DecoderLayer, DeepseekV3RMSNorm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import arith_problems  # noqa: E402

BOS, EOS = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"  # DeepSeek-V3's spellings, ids 0 and 1
# A user turn is a question; the model answers it and its turn ends where the next "Question:" would begin.
CHAT_TEMPLATE = ("{{ bos_token }}{% for message in messages %}"
                 "{% if message['role'] == 'user' %}Question: {{ message['content'] }}\nAnswer:"
                 "{% elif message['role'] == 'assistant' %} {{ message['content'] }}\n\n"
                 "{% else %}{{ message['content'] }}\n\n{% endif %}{% endfor %}")
MTP_ONLY = ("enorm.weight", "hnorm.weight", "eh_proj.weight", "embed_tokens.weight", "shared_head.norm.weight",
            "shared_head.head.weight")
MAX_BYTES = 25 << 20


def model_config(vocab_size, max_positions):
    """DeepSeek-V3's config.json, official layout, at 256 hidden. MLA keeps DeepSeek's head dims (kv_lora 512,
    rope 64, nope 128, v 128) and MoE sizes are multiples of 64, which narwhal's fast CUDA kernels require."""
    return dict(architectures=["DeepseekV3ForCausalLM"], model_type="deepseek_v3", vocab_size=vocab_size,
                hidden_size=256, intermediate_size=768, moe_intermediate_size=64, num_hidden_layers=4,
                num_attention_heads=4, num_key_value_heads=4, q_lora_rank=128, kv_lora_rank=512,
                qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128, n_routed_experts=16, n_shared_experts=1,
                num_experts_per_tok=4, n_group=4, topk_group=2, topk_method="noaux_tc", scoring_func="sigmoid",
                norm_topk_prob=True, routed_scaling_factor=2.5, first_k_dense_replace=1, moe_layer_freq=1,
                num_nextn_predict_layers=1, hidden_act="silu", rms_norm_eps=1e-6,
                max_position_embeddings=max_positions, rope_theta=10000, rope_scaling=None, bos_token_id=0,
                eos_token_id=1, tie_word_embeddings=False, attention_bias=False, attention_dropout=0.0,
                initializer_range=0.02, aux_loss_alpha=0.001, seq_aux=True, ep_size=1, pretraining_tp=1,
                use_cache=True, torch_dtype="bfloat16")


# ----------------------------------------------------------------------------- tokenizer
def train_tokenizer(texts, vocab_size):
    """Byte-level BPE as narwhal's tokenizer reads it; digits are pre-split so numbers are spelled digit by digit."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex("[0-9]"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[BOS, EOS], min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    assert tok.token_to_id(BOS) == 0 and tok.token_to_id(EOS) == 1
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, 0)])
    return tok


def write_tokenizer(out, tok, max_positions):
    tok.save(os.path.join(out, "tokenizer.json"))
    config = {"add_bos_token": True, "add_eos_token": False, "bos_token": BOS, "eos_token": EOS, "pad_token": EOS,
              "clean_up_tokenization_spaces": False, "model_max_length": max_positions,
              "tokenizer_class": "PreTrainedTokenizerFast", "chat_template": CHAT_TEMPLATE}
    with open(os.path.join(out, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, ensure_ascii=False)


# ----------------------------------------------------------------------------- data
def documents(rows, per_doc):
    """Texts of `per_doc` solved problems each, in the few-shot layout bench-accuracy prompts with."""
    return ["".join(arith_problems.example_text(r, True) + "\n\n" for r in rows[i:i + per_doc])
            for i in range(0, len(rows) - per_doc + 1, per_doc)]


def token_blocks(tok, texts, length):
    """[n, length] token ids: each document encoded whole (BOS first), cut to `length`; shorter ones dropped."""
    ids = [e.ids[:length] for e in tok.encode_batch(texts)]
    kept = [x for x in ids if len(x) == length]
    assert kept, f"no document reaches {length} tokens; raise the problems per document"
    return torch.tensor(kept, dtype=torch.long)


# ----------------------------------------------------------------------------- model
class MtpLayer(nn.Module):
    """DeepSeek-V3's MTP module. The embedding and output head are the main model's (shared, as in V3)."""

    def __init__(self, cfg):
        super().__init__()
        hidden, eps = cfg.hidden_size, cfg.rms_norm_eps
        self.enorm, self.hnorm = DeepseekV3RMSNorm(hidden, eps=eps), DeepseekV3RMSNorm(hidden, eps=eps)
        self.eh_proj = nn.Linear(2 * hidden, hidden, bias=False)  # input [enorm(embedding) ; hnorm(hidden)]
        self.block = DeepseekV3DecoderLayer(cfg, layer_idx=cfg.num_hidden_layers)  # MoE: index >= first_k_dense
        self.head_norm = DeepseekV3RMSNorm(hidden, eps=eps)

    def forward(self, main, hidden, next_ids):
        """Logits for token t+2 at each position t, from the main model's final-normed hidden[t] and token t+1."""
        x = self.eh_proj(torch.cat([self.enorm(main.model.embed_tokens(next_ids)), self.hnorm(hidden)], -1))
        pos = torch.arange(x.shape[1], device=x.device)[None].expand(x.shape[0], -1)
        mask = create_causal_mask(config=main.config, inputs_embeds=x, attention_mask=None, past_key_values=None,
                                  position_ids=pos)
        x = self.block(x, attention_mask=mask, position_ids=pos,
                       position_embeddings=main.model.rotary_emb(x, position_ids=pos))
        x = x[0] if isinstance(x, tuple) else x
        return main.lm_head(self.head_norm(x))


def init_weights(modules, std):
    """Matrices N(0, std), norm weights 1, routing biases 0: every tensor drawn here, from the seeded CPU RNG."""
    for module in modules:
        for name, p in module.named_parameters():
            with torch.no_grad():
                if name.endswith("e_score_correction_bias"):
                    p.zero_()
                elif p.dim() >= 2:
                    p.normal_(0.0, std)
                else:
                    p.fill_(1.0)


class RouterBalance:
    """DeepSeek-V3's auxiliary-loss-free balancing: after each step, every router's e_score_correction_bias moves
    by `speed` towards its under-loaded experts (sign of mean load - load). Selection recomputed as the router's."""

    def __init__(self, modules, cfg, speed):
        self.cfg, self.speed, self.counts = cfg, speed, {}
        self.routers = [m for mod in modules for m in mod.modules()
                        if type(m).__name__.endswith("TopkRouter") and hasattr(m, "e_score_correction_bias")]
        for r in self.routers:
            r.register_forward_hook(self._count)
        print(f"routing balance: {len(self.routers)} routers, bias speed {speed}")

    @torch.no_grad()
    def _count(self, router, inputs, _):
        if not router.training or not inputs:
            return
        c = self.cfg
        x = inputs[0].reshape(-1, c.hidden_size).float()
        scores = torch.sigmoid(x @ router.weight.float().t()) + router.e_score_correction_bias.float()
        grouped = scores.view(-1, c.n_group, c.n_routed_experts // c.n_group)
        groups = grouped.topk(2, dim=-1).values.sum(-1).topk(c.topk_group, dim=-1).indices
        keep = torch.zeros_like(grouped[..., 0]).scatter_(1, groups, 1.0).bool()
        scores = scores.masked_fill(~keep.repeat_interleave(c.n_routed_experts // c.n_group, dim=1), float("-inf"))
        chosen = scores.topk(c.num_experts_per_tok, dim=-1).indices.flatten()
        load = torch.bincount(chosen, minlength=c.n_routed_experts).float()
        self.counts[router] = self.counts.get(router, 0) + load

    @torch.no_grad()
    def step(self):
        for router, load in self.counts.items():
            bias = router.e_score_correction_bias
            bias.add_((self.speed * torch.sign(load.mean() - load)).to(bias.dtype))
        self.counts = {}

    def imbalance(self):
        """max / mean expert load over the last step's tokens, averaged over routers (1.0 is perfect)."""
        ratios = [float(v.max() / v.mean()) for v in self.counts.values() if v.sum() > 0]
        return sum(ratios) / len(ratios) if ratios else float("nan")


def losses(model, mtp, batch):
    """(main loss, MTP loss) on token blocks [B, T+1]: main predicts x[t+1], MTP x[t+2]."""
    x, y = batch[:, :-1], batch[:, 1:]
    h = model.model(input_ids=x, use_cache=False).last_hidden_state  # final-normed, what lm_head reads
    main = F.cross_entropy(model.lm_head(h).float().flatten(0, 1), y.flatten())
    mtp_logits = mtp(model, h[:, :-1], x[:, 1:])
    return main, F.cross_entropy(mtp_logits.float().flatten(0, 1), y[:, 1:].flatten())


# ----------------------------------------------------------------------------- checkpoint
def split_experts(name, t, cfg):
    """transformers v5 keeps a layer's experts fused (gate_up_proj [E, 2I, H], down_proj [E, H, I]); DeepSeek's
    checkpoints name each expert. Other tensors pass through."""
    m = re.match(r"(.*\.mlp\.experts)\.(gate_up_proj|down_proj)$", name)
    if not m:
        return {name: t}
    E, H, I = cfg.n_routed_experts, cfg.hidden_size, cfg.moe_intermediate_size
    want = (E, 2 * I, H) if m[2] == "gate_up_proj" else (E, H, I)
    if tuple(t.shape) != want and tuple(t.transpose(1, 2).shape) == want:
        t = t.transpose(1, 2)
    assert tuple(t.shape) == want, f"{name}: shape {tuple(t.shape)}, expected {want}"
    if m[2] == "down_proj":
        return {f"{m[1]}.{e}.down_proj.weight": t[e] for e in range(E)}
    out = {}
    for e in range(E):
        out[f"{m[1]}.{e}.gate_proj.weight"], out[f"{m[1]}.{e}.up_proj.weight"] = t[e, :I], t[e, I:]
    return out


def checkpoint_tensors(model, mtp, cfg):
    """Every tensor under DeepSeek-V3's names: BF16, except the routing biases (F32, as the release has them)."""
    N, p = cfg.num_hidden_layers, f"model.layers.{cfg.num_hidden_layers}."
    named = dict(model.state_dict())
    for name, t in mtp.state_dict().items():
        head, _, rest = name.partition(".")
        named[{"block": p + rest, "head_norm": p + "shared_head.norm." + rest}.get(head, p + name)] = t
    named[p + "embed_tokens.weight"] = model.model.embed_tokens.weight  # shared with the main model, as in V3
    named[p + "shared_head.head.weight"] = model.lm_head.weight
    out = {}
    for name, t in named.items():
        for k, v in split_experts(name, t.detach(), cfg).items():
            v = v.float() if k.endswith("e_score_correction_bias") else v.to(torch.bfloat16)
            out[k] = v.cpu().contiguous().clone()  # an expert's slice must not share the fused tensor's storage
    # The MTP layer must carry exactly a main MoE layer's tensors plus its own: what narwhal's loader reads.
    layer = lambda i: {k[len(f"model.layers.{i}."):] for k in out if k.startswith(f"model.layers.{i}.")}
    assert layer(N) == layer(N - 1) | set(MTP_ONLY), sorted(layer(N) ^ (layer(N - 1) | set(MTP_ONLY)))
    return out


def write_config(out_dir, config):
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)


def round_to_bf16(modules):
    """Rounds the trained weights to what the BF16 checkpoint holds, so later checks see the saved model."""
    with torch.no_grad():
        for module in modules:
            for name, p in module.named_parameters():
                if not name.endswith("correction_bias"):
                    p.copy_(p.to(torch.bfloat16).float())


def reload_check(out_dir, model, probe, experts_implementation):
    """transformers loads the saved main model and agrees with the trained one (already rounded to BF16)."""
    loaded, info = DeepseekV3ForCausalLM.from_pretrained(out_dir, dtype=torch.float32, output_loading_info=True)
    loaded.config._experts_implementation = experts_implementation
    get = info.get if isinstance(info, dict) else lambda k: getattr(info, k)
    assert not get("missing_keys") and not get("mismatched_keys"), info
    with torch.no_grad():
        diff = float((loaded.to(probe.device).eval()(probe).logits - model(probe).logits).abs().max())
    print(f"reload via from_pretrained: max|logit diff| = {diff:.3g}; MTP tensors left to narwhal: "
          f"{len(get('unexpected_keys'))}")
    assert diff < 1e-2, "the saved checkpoint does not reproduce the trained model"


# ----------------------------------------------------------------------------- evaluation
@torch.no_grad()
def greedy_answers(model, tok, prompts, max_new, batch_size):
    """Greedy continuations, cut at "Question:" (bench-accuracy's stop). No KV cache: rows are right-padded, and
    causal attention keeps each row's real tokens blind to the padding after them."""
    device, outputs = next(model.parameters()).device, []
    for start in range(0, len(prompts), batch_size):
        encoded = [e.ids for e in tok.encode_batch(prompts[start:start + batch_size])]
        lens = torch.tensor([len(e) for e in encoded], device=device)
        ends = [len(e) for e in encoded]
        buf = torch.full((len(encoded), int(lens.max()) + max_new), 1, dtype=torch.long, device=device)
        for i, e in enumerate(encoded):
            buf[i, :len(e)] = torch.tensor(e, device=device)
        rows = torch.arange(len(encoded), device=device)
        for step in range(max_new):
            width = int(lens.max()) + step
            logits = model(input_ids=buf[:, :width], use_cache=False).logits
            buf[rows, lens + step] = logits[rows, lens + step - 1].argmax(-1)
            if step % 8 == 7:
                texts = [tok.decode(buf[i, n:n + step + 1].tolist()) for i, n in enumerate(ends)]
                if all("Question:" in t for t in texts):
                    break
        for i, n in enumerate(ends):
            outputs.append(tok.decode(buf[i, n:n + max_new].tolist()).split("Question:")[0])
    return outputs


def accuracy(model, tok, test_rows, num_shots, num_questions, max_new, batch_size):
    shots, rows = test_rows[:num_shots], test_rows[num_shots:num_shots + num_questions]
    prompts = [arith_problems.few_shot_prompt(shots, r) for r in rows]
    longest = max(len(e.ids) for e in tok.encode_batch(prompts))
    outputs = greedy_answers(model, tok, prompts, max_new, batch_size)
    preds = [arith_problems.last_number(o) for o in outputs]
    labels = [arith_problems.final_answer(r["answer"]) for r in rows]
    correct = sum(p == l for p, l in zip(preds, labels))
    print(f"\nheld-out greedy {num_shots}-shot exact match: {correct}/{len(rows)} = {correct / len(rows):.3f} "
          f"(invalid {sum(p is None for p in preds) / len(rows):.3f}; longest prompt {longest} tokens)")
    for r, o, p in list(zip(rows, outputs, preds))[:3]:
        print(f"  Q: {r['question']}\n  A: {o.strip()!r} -> {p} (label {arith_problems.final_answer(r['answer'])})")
    return correct / len(rows)


@torch.no_grad()
def mtp_agreement(model, mtp, blocks):
    """Teacher-forced top-1 rates on held-out blocks: the MTP head against token t+2 and against the main
    model's own top-1 for t+2 (what speculative verification accepts)."""
    x = blocks[:, :-1]
    h = model.model(input_ids=x, use_cache=False).last_hidden_state
    main_top = model.lm_head(h).argmax(-1)              # [B, T]: prediction of x[t+1]
    draft = mtp(model, h[:, :-1], x[:, 1:]).argmax(-1)  # [B, T-1]: prediction of x[t+2]
    truth = blocks[:, 2:]
    rates = (float((main_top == blocks[:, 1:]).float().mean()), float((draft == truth).float().mean()),
             float((draft == main_top[:, 1:]).float().mean()))
    print(f"teacher-forced top-1: main vs t+1 {rates[0]:.3f}, MTP vs t+2 {rates[1]:.3f}, "
          f"MTP vs main's t+2 (acceptance proxy) {rates[2]:.3f}")
    return rates


# ----------------------------------------------------------------------------- main
def build_data(args):
    """(tokenizer, training blocks, held-out rows, held-out blocks); writes the held-out rows to OUT/test.jsonl.
    Training problems never repeat a held-out question."""
    test_rows = arith_problems.generate("test", args.seed, args.num_test)
    arith_problems.write_jsonl(os.path.join(args.out, "test.jsonl"), test_rows)
    held_out = [r["question"] for r in test_rows]
    sample = arith_problems.generate("train", args.seed, 20000, held_out)
    tok = train_tokenizer(documents(sample, 10), args.vocab_size)
    # Enough problems per block that even the shortest ones fill it (the rest of the last one is cut).
    shortest = min(len(e.ids) for e in tok.encode_batch([arith_problems.example_text(r, True) for r in sample]))
    per_doc = math.ceil((args.seq_len + 1) / shortest) + 1
    rows = arith_problems.generate("train", args.seed, per_doc * args.train_docs, held_out)  # starts with `sample`
    print(f"{per_doc} problems per block (the shortest is {shortest} tokens)")
    return (tok, token_blocks(tok, documents(rows, per_doc), args.seq_len + 1), test_rows,
            token_blocks(tok, documents(test_rows, per_doc), args.seq_len + 1))


def train(args, model, mtp, cfg, blocks):
    """AdamW over FP32 master weights, BF16 autocast, warmup then cosine to 10%; returns the steps run."""
    params = [(n, p) for m in (model, mtp) for n, p in m.named_parameters() if not n.endswith("correction_bias")]
    print(f"parameters: {sum(p.numel() for _, p in params) / 1e6:.2f}M trained (main + MTP, which shares the "
          f"embedding and head)")
    matrices, vectors = [p for _, p in params if p.dim() >= 2], [p for _, p in params if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": matrices, "weight_decay": args.weight_decay},
                                   {"params": vectors, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95))
    schedule = lambda s: min(1.0, (s + 1) / args.warmup) * (0.1 + 0.45 * (1 + math.cos(math.pi * s / args.steps)))
    balance = RouterBalance([model, mtp], cfg, args.bias_speed)
    order = torch.randperm(len(blocks), generator=torch.Generator().manual_seed(args.seed)).to(blocks.device)
    start = time.time()
    for step in range(args.steps):
        for group in optimizer.param_groups:
            group["lr"] = args.lr * schedule(step)
        picks = order[(torch.arange(args.batch_size, device=blocks.device) + step * args.batch_size) % len(blocks)]
        with torch.autocast("cuda", dtype=torch.bfloat16):
            main_loss, mtp_loss = losses(model, mtp, blocks[picks])
        optimizer.zero_grad(set_to_none=True)
        (main_loss + args.mtp_weight * mtp_loss).backward()
        grad_norm = torch.nn.utils.clip_grad_norm_([p for _, p in params], 1.0)
        optimizer.step()
        report = step % 50 == 0 or step == args.steps - 1
        imbalance = balance.imbalance() if report else None
        balance.step()
        elapsed = time.time() - start
        if report:
            print(f"step {step:5d}  loss {main_loss.item():.4f}  mtp {mtp_loss.item():.4f}  grad {grad_norm:.2f}  "
                  f"lr {args.lr * schedule(step):.2e}  load max/mean {imbalance:.2f}  {elapsed:6.0f}s", flush=True)
        if elapsed > 60 * args.max_minutes:
            print(f"stopping after {step + 1} steps: --max-minutes {args.max_minutes} reached")
            return step + 1
    return args.steps


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="models/arith-tiny", help="model directory to write")
    ap.add_argument("--seed", type=int, default=0, help="seeds the problems, the weights and the batches")
    ap.add_argument("--vocab-size", type=int, default=1024,
                    help="BPE vocabulary asked for; the trainer stops sooner when no pair occurs twice")
    ap.add_argument("--seq-len", type=int, default=512, help="tokens per training block")
    ap.add_argument("--max-positions", type=int, default=2048, help="max_position_embeddings of the config")
    ap.add_argument("--train-docs", type=int, default=40000, help="training blocks generated (then cycled)")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--mtp-weight", type=float, default=0.3, help="lambda of the MTP loss")
    ap.add_argument("--bias-speed", type=float, default=1e-3, help="routing-bias update per step")
    ap.add_argument("--max-minutes", type=float, default=15, help="stop training early after this long")
    ap.add_argument("--num-test", type=int, default=1000, help="held-out problems written to OUT/test.jsonl")
    ap.add_argument("--eval-questions", type=int, default=200)
    ap.add_argument("--eval-shots", type=int, default=5)
    ap.add_argument("--eval-max-new-tokens", type=int, default=96)
    ap.add_argument("--attn-implementation", default="sdpa", help="transformers attention (sdpa or eager)")
    ap.add_argument("--experts-implementation", default="grouped_mm",
                    help="transformers experts: grouped_mm (0.1 s a step on an H200), eager (0.25 s)")
    args = ap.parse_args()
    assert torch.cuda.is_available(), "train_tiny.py needs a GPU"
    device = torch.device("cuda")
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    os.makedirs(args.out, exist_ok=True)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.cuda.get_device_name()}")

    tok, blocks, test_rows, test_blocks = build_data(args)
    blocks, test_blocks = blocks.to(device), test_blocks.to(device)
    vocab = 64 * math.ceil(tok.get_vocab_size() / 64)  # rows past the tokenizer's stay unused
    print(f"tokenizer: {tok.get_vocab_size()} tokens (model vocab {vocab}); {len(blocks)} training blocks of "
          f"{args.seq_len} tokens, {len(test_blocks)} held-out")
    write_tokenizer(args.out, tok, args.max_positions)
    write_config(args.out, model_config(vocab, args.max_positions))
    cfg = AutoConfig.from_pretrained(args.out)
    cfg._attn_implementation, cfg._experts_implementation = args.attn_implementation, args.experts_implementation
    model, mtp = DeepseekV3ForCausalLM(cfg).float(), MtpLayer(cfg).float()
    init_weights([model, mtp], cfg.initializer_range)
    model.to(device).train()
    mtp.to(device).train()
    start = time.time()
    steps = train(args, model, mtp, cfg, blocks)

    # Save (BF16), then evaluate the weights as saved.
    model.eval()
    mtp.eval()
    round_to_bf16([model, mtp])
    save_file(checkpoint_tensors(model, mtp, cfg), os.path.join(args.out, "model.safetensors"),
              metadata={"format": "pt"})
    reload_check(args.out, model, test_blocks[:4, :-1], args.experts_implementation)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        with torch.no_grad():
            main_loss, mtp_loss = losses(model, mtp, test_blocks)
        print(f"\nheld-out loss: main {main_loss.item():.4f}, MTP {mtp_loss.item():.4f}")
        mtp_agreement(model, mtp, test_blocks)
        accuracy(model, tok, test_rows, args.eval_shots, args.eval_questions, args.eval_max_new_tokens, 64)
    size = sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out))
    print(f"\nwrote {args.out}: {', '.join(sorted(os.listdir(args.out)))}; {size / 2**20:.1f} MiB; "
          f"trained {steps} steps in {time.time() - start:.0f}s")
    if size > MAX_BYTES:
        sys.exit(f"{args.out} is {size / 2**20:.1f} MiB, over the 25 MiB budget")

if __name__ == "__main__":
    main()
