"""PyTorch eager baseline for `npm run bench -- t5-step`: Hugging Face's T5ForConditionalGeneration
(dropout off) with the same config, AdamW, batch shape and thread count, timed per training step,
full weights or LoRA (peft, all-linear, same rank). Random ids, seeded. Prints one JSON line.
PyTorch, transformers and peft are benchmark/fixture tools only, never TruthGPT dependencies.

    python bench/torch_t5_step.py --config '{"vocab_size": 4096, ...}' --batch 8 --src 64 --tgt 16 --threads 2 [--lora 8]
"""

import argparse
import json
import time

import torch
from transformers import T5Config, T5ForConditionalGeneration


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--src", type=int, required=True)
    ap.add_argument("--tgt", type=int, required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--lora", type=int, default=0, help="LoRA rank on all linear layers (0: full fine-tuning)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = T5Config(**json.loads(a.config), dropout_rate=0.0)
    model = T5ForConditionalGeneration(cfg).train()
    if a.lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=a.lora, lora_alpha=2 * a.lora, target_modules="all-linear", task_type="SEQ_2_SEQ_LM"))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(1)
    times, losses = [], []
    for i in range(a.warmup + a.steps):
        x = torch.randint(2, cfg.vocab_size, (a.batch, a.src), generator=g)
        y = torch.randint(2, cfg.vocab_size, (a.batch, a.tgt), generator=g)
        t0 = time.perf_counter()
        loss = model(input_ids=x, attention_mask=torch.ones_like(x), labels=y).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        dt = time.perf_counter() - t0
        losses.append(loss.item())
        if i >= a.warmup:
            times.append(dt)
    times.sort()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(json.dumps({"trainable": trainable, "step_s_median": times[len(times) // 2], "first_loss": losses[0], "last_loss": losses[-1], "torch": torch.__version__}))


if __name__ == "__main__":
    main()
