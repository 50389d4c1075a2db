"""PyTorch eager baseline for `npm run bench -- step`: the same GPT (HF GPT-2 layout, GELU tanh,
tied head, no dropout), AdamW, the same batch shape and thread count, timed per training step.
Prints one JSON line. PyTorch is a benchmark/fixture tool only, never a TruthGPT dependency.

    python bench/torch_step.py --layers 4 --heads 4 --embd 128 --ctx 64 --batch 12 --vocab 256 --threads 2
"""

import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, C, nh):
        super().__init__()
        self.nh = nh
        self.ln_1 = nn.LayerNorm(C)
        self.c_attn = nn.Linear(C, 3 * C)
        self.c_proj = nn.Linear(C, C)
        self.ln_2 = nn.LayerNorm(C)
        self.c_fc = nn.Linear(C, 4 * C)
        self.mlp_proj = nn.Linear(4 * C, C)

    def attn(self, x, fused):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.nh, C // self.nh).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        if fused:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # nanoGPT's slow path: explicit (T, T) attention matrix, like our graph
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
            mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            y = att.masked_fill(~mask, float("-inf")).softmax(dim=-1) @ v
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))

    def forward(self, x, fused):
        x = x + self.attn(self.ln_1(x), fused)
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, V, ctx, L, nh, C):
        super().__init__()
        self.wte = nn.Embedding(V, C)
        self.wpe = nn.Embedding(ctx, C)
        self.h = nn.ModuleList(Block(C, nh) for _ in range(L))
        self.ln_f = nn.LayerNorm(C)
        # GPT-2 init as engine/models/gpt.ts does it, so the loss starts near log(V).
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.dim() >= 2:
                proj = name.endswith("c_proj.weight") or name.endswith("mlp_proj.weight")
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * L) if proj else 0.02)

    def forward(self, idx, targets, fused):
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        for b in self.h:
            x = b(x, fused)
        logits = self.ln_f(x) @ self.wte.weight.T  # tied head
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def main():
    ap = argparse.ArgumentParser()
    for k, v in dict(layers=4, heads=4, embd=128, ctx=64, batch=12, vocab=256, threads=2, steps=20, warmup=3).items():
        ap.add_argument(f"--{k}", type=int, default=v)
    ap.add_argument("--data", default=None, help="byte file to sample batches from (random tokens if absent)")
    ap.add_argument("--sdpa", action="store_true", help="use fused scaled_dot_product_attention")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = GPT(a.vocab, a.ctx, a.layers, a.heads, a.embd)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    lr, min_lr, warmup, decay_steps = 1e-3, 1e-4, 10, 5000
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.99))

    def get_lr(it):  # nanoGPT train.py, as bench/step.ts configures ours
        if it < warmup:
            return lr * (it + 1) / (warmup + 1)
        ratio = min(1.0, (it - warmup) / (decay_steps - warmup))
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: get_lr(it) / lr)
    if a.data:
        data = torch.frombuffer(bytearray(open(a.data, "rb").read()), dtype=torch.uint8).long()
    else:
        data = torch.randint(0, a.vocab, (100_000,))

    def batch():
        ix = torch.randint(len(data) - a.ctx - 1, (a.batch,))
        x = torch.stack([data[i : i + a.ctx] for i in ix])
        y = torch.stack([data[i + 1 : i + 1 + a.ctx] for i in ix])
        return x, y

    def step():
        x, y = batch()
        loss = model(x, y, a.sdpa)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        return loss.item()

    first = step()
    for _ in range(a.warmup - 1):
        step()
    times = []
    last = None
    for _ in range(a.steps):
        t0 = time.perf_counter()
        last = step()
        times.append(time.perf_counter() - t0)
    times.sort()
    median = times[len(times) // 2]
    tokens = a.batch * a.ctx
    print(json.dumps({
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "params": sum(p.numel() for p in model.parameters()),
        "step_s_median": median,
        "step_s_mean": sum(times) / len(times),
        "tokens_per_s": tokens / median,
        "first_loss": first,
        "last_loss": last,
        "sdpa": a.sdpa,
    }))


if __name__ == "__main__":
    main()
