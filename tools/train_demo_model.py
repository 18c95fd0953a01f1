"""Train the bundled demo model (seg_xai_fast/data/demo_model.pt) on synthetic scenes.

    python tools/train_demo_model.py [--out PATH] [--minutes M] [--steps N]

CPU only, 2 threads, deterministic: step ``s`` trains on ``synthetic_scenes(bs,
seed=TRAIN_SEED_BASE + s, size=...)``, disjoint from the validation seed used for
progress reports and from EVAL_SEED used for the final number (and by the tests).

The LR schedule (warm-up, then cosine decay) runs on
progress = max(step / steps, (elapsed - grace) / (budget - grace)), grace = 10% of
the budget (<= 60 s) to absorb start-up. The time term only wins on a machine too slow
to finish ``--steps`` within ``--minutes``: there the schedule is compressed in time so
training still ends annealed within the budget (and the script says so). Otherwise
the run is a pure function of the seeds.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
from seg_xai_fast.demo.model import WEIGHTS_PATH, DemoSegNet, per_class_iou  # noqa: E402
from seg_xai_fast.demo.scenes import CLASS_NAMES, synthetic_scenes  # noqa: E402

TRAIN_SEED_BASE = 1_000_000  # training batches use seeds TRAIN_SEED_BASE + step
VAL_SEED = 7                 # progress reports during training
EVAL_SEED = 20240            # final held-out evaluation (same as tests/test_demo_model.py)
SIZES = (96, 112, 128, 144, 160)  # mixed training sizes for robustness
PIXELS_PER_BATCH = 8 * 128 * 128  # small batches: more Adam steps per CPU-second
MAX_FILE_BYTES = 2 * 1024 * 1024


def evaluate(model, seed, n, size=128):
    """Per-class IoU float64 [NUM_CLASSES] and mIoU over ``n`` scenes from ``seed``."""
    images, masks = synthetic_scenes(n, seed=seed, size=size)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(images[i:i + 16]).argmax(1) for i in range(0, n, 16)])
    model.train(was_training)
    iou = per_class_iou(pred, masks)
    return iou, iou.mean().item()


def loss_fn(logits, masks):
    """Cross-entropy with object classes up-weighted, plus a soft Dice term.

    logits: float32 [B,C,H,W]; masks: int64 [B,H,W]. Background is ~88% of pixels:
    plain CE learns "background vs object" quickly but is slow to separate the shape
    classes; the weights and the Dice term (balanced per class) push on exactly that.
    """
    weight = torch.tensor([1.0] + [3.0] * (logits.shape[1] - 1))
    ce = F.cross_entropy(logits, masks, weight=weight)
    prob = logits.softmax(1)
    onehot = F.one_hot(masks, logits.shape[1]).permute(0, 3, 1, 2).to(prob.dtype)
    inter = (prob * onehot).sum((0, 2, 3))
    dice = (2 * inter + 1) / (prob.sum((0, 2, 3)) + onehot.sum((0, 2, 3)) + 1)
    return ce + (1 - dice).mean()


def lr_at(progress, peak, warmup=0.03):
    if progress < warmup:
        return peak * progress / warmup
    t = min((progress - warmup) / (1 - warmup), 1.0)
    return peak * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t)))


def save_atomic(model, out):
    """Write the state_dict to ``out`` via a temp file and os.replace (no torn files)."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    torch.save(state, tmp)
    if tmp.stat().st_size > MAX_FILE_BYTES:  # fall back to fp16 storage to fit the budget
        torch.save({k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}, tmp)
    os.replace(tmp, out)
    return out.stat().st_size


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=WEIGHTS_PATH)
    ap.add_argument("--minutes", type=float, default=10.0, help="wall-clock budget for training")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0, help="torch seed for the weight init")
    args = ap.parse_args()

    torch.set_num_threads(2)
    torch.manual_seed(args.seed)
    model = DemoSegNet()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"DemoSegNet: {n_params} parameters; {args.steps} steps, budget {args.minutes} min", flush=True)

    budget = args.minutes * 60.0
    grace = min(60.0, 0.1 * budget)
    t0 = time.perf_counter()
    step, run_loss, time_compressed = 0, None, False
    model.train()
    while True:
        elapsed = time.perf_counter() - t0
        by_time = (elapsed - grace) / (budget - grace)
        time_compressed |= by_time > step / args.steps
        progress = max(step / args.steps, by_time)
        if progress >= 1.0:
            break
        size = SIZES[step % len(SIZES)]
        bs = max(4, round(PIXELS_PER_BATCH / size ** 2))
        images, masks = synthetic_scenes(bs, seed=TRAIN_SEED_BASE + step, size=size)
        for g in opt.param_groups:
            g["lr"] = lr_at(progress, args.lr)
        loss = loss_fn(model(images), masks)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        run_loss = loss.item() if run_loss is None else 0.95 * run_loss + 0.05 * loss.item()
        step += 1
        if step % 100 == 0:
            _, miou = evaluate(model, VAL_SEED, 32)
            print(f"step {step:5d}  {elapsed / 60:5.2f} min  lr {g['lr']:.2e}  loss {run_loss:.4f}  "
                  f"val mIoU {miou:.4f}", flush=True)

    train_s = time.perf_counter() - t0
    if time_compressed:
        print(f"machine too slow for {args.steps} steps in {args.minutes} min: the LR schedule was "
              f"compressed in time ({step} steps done), so this run is not bit-reproducible", flush=True)
    iou, miou = evaluate(model, EVAL_SEED, 64)
    print(f"trained {step} steps in {train_s / 60:.2f} min")
    print("held-out IoU (64 scenes, 128x128, seed %d): " % EVAL_SEED
          + ", ".join(f"{n} {v:.4f}" for n, v in zip(CLASS_NAMES, iou.tolist())))
    print(f"held-out mIoU {miou:.4f}")
    size = save_atomic(model, args.out)
    print(f"wrote {args.out} ({size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
