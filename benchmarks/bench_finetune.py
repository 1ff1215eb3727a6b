"""Fine-tuning speed: seconds per epoch on CPU, and the training step against a bare loop on CUDA.

Usage (from the repository root):

    python benchmarks/bench_finetune.py cpu  [--arch torchvision:resnet18] [--images 1000] [--epochs 2]
    python benchmarks/bench_finetune.py cuda [--arch torchvision:resnet50] [--batch-size 96] [--steps 200]

``cpu``: ghnorth's trainer (in-memory uint8 images, batched crop + flip, SGD, cosine schedule) on
``--images`` random 32 x 32 images, ResNet-18 at 32 px adapted for small inputs (the paper's
setting) and with its ImageNet stem; seconds per epoch after one warm-up epoch.

``cuda``: images per second of ghnorth's training step (bf16 autocast, channels_last, augmentation
on the GPU, the per-step finite-loss check) against a bare PyTorch loop (same model, optimizer and
precision, on pre-made random float tensors, no augmentation, no synchronization) for ResNet-50
at 32 px, batch 96. The target is a ratio of at least 0.8.

Prints a Markdown table on stdout (append it to benchmarks/results/finetune.md).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch


def _trainer(arch: str, *, images: int, batch_size: int, small_input: bool, device: str, epochs: int = 100):
    from ghnorth_cli.finetune import FinetuneConfig
    from ghnorth_cli.finetune.data import Split
    from ghnorth_cli.finetune.trainer import Trainer
    from ghnorth_cli.models import create_model, resolve_spec

    spec = resolve_spec(arch, num_classes=10, img_size=32, small_input=small_input)
    model = create_model(spec, seed=0)
    g = torch.Generator().manual_seed(0)
    train = Split(torch.randint(0, 256, (images, 3, 32, 32), generator=g, dtype=torch.uint8),
                  torch.randint(0, 10, (images,), generator=g))
    config = FinetuneConfig(data="synthetic", arch=arch, epochs=epochs, batch_size=batch_size, device=device)
    return Trainer(model, config=config, train=train, mean=(0.5,) * 3, std=(0.25,) * 3, img_size=32,
                   device=torch.device(device))


def bench_cpu(args: argparse.Namespace) -> list[str]:
    rows = ["| model | small-input stem | images | batch | s / epoch | images / s |", "|---|---|---|---|---|---|"]
    for small_input in (True, False):
        trainer = _trainer(args.arch, images=args.images, batch_size=args.batch_size, small_input=small_input,
                           device="cpu")
        trainer.train_epoch(1)  # warm-up
        times = []
        for epoch in range(2, 2 + args.epochs):
            start = time.perf_counter()
            trainer.train_epoch(epoch)
            times.append(time.perf_counter() - start)
        per_epoch = min(times)
        rows.append(f"| {args.arch} | {'yes' if small_input else 'no'} | {args.images} | {args.batch_size} | "
                    f"{per_epoch:.1f} | {args.images / per_epoch:.0f} |")
    return rows


def _bare_loop_images_per_second(arch: str, *, batch_size: int, steps: int) -> float:
    from timm.optim import create_optimizer_v2

    from ghnorth_cli.models import create_model, resolve_spec

    model = create_model(resolve_spec(arch, num_classes=10, img_size=32), seed=0).cuda()
    model = model.to(memory_format=torch.channels_last).train()
    optimizer = create_optimizer_v2(model, opt="momentum", lr=0.01, weight_decay=0.01, momentum=0.9,
                                    filter_bias_and_bn=False)
    x = torch.randn(batch_size, 3, 32, 32, device="cuda").contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch_size,), device="cuda")

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(20):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return steps * batch_size / (time.perf_counter() - start)


def _ghnorth_images_per_second(arch: str, *, batch_size: int, steps: int) -> float:
    trainer = _trainer(arch, images=batch_size * steps, batch_size=batch_size, small_input=True, device="cuda",
                       epochs=3)
    trainer.train_epoch(1)  # warm-up (cuDNN autotuning, allocator)
    torch.cuda.synchronize()
    start = time.perf_counter()
    trainer.train_epoch(2)
    torch.cuda.synchronize()
    return steps * batch_size / (time.perf_counter() - start)


def bench_cuda(args: argparse.Namespace) -> list[str]:
    if not torch.cuda.is_available():
        raise SystemExit("cuda mode needs a CUDA device; none is available here")
    torch.backends.cudnn.benchmark = True
    bare = _bare_loop_images_per_second(args.arch, batch_size=args.batch_size, steps=args.steps)
    ours = _ghnorth_images_per_second(args.arch, batch_size=args.batch_size, steps=args.steps)
    return ["| model | batch | bare loop img/s | ghnorth img/s | ratio (target >= 0.8) |", "|---|---|---|---|---|",
            f"| {args.arch} @ 32 px | {args.batch_size} | {bare:.0f} | {ours:.0f} | {ours / bare:.2f} |"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("cpu", "cuda"))
    parser.add_argument("--arch", default=None)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs (cpu; the best is kept)")
    parser.add_argument("--batch-size", type=int, default=96)
    parser.add_argument("--steps", type=int, default=200, help="timed steps (cuda)")
    args = parser.parse_args()
    args.arch = args.arch or ("torchvision:resnet18" if args.mode == "cpu" else "torchvision:resnet50")
    rows = bench_cpu(args) if args.mode == "cpu" else bench_cuda(args)
    device = torch.cuda.get_device_name() if args.mode == "cuda" else platform.processor() or platform.machine()
    print(f"`python benchmarks/bench_finetune.py {args.mode}` on {device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
