"""Model benchmark: tumorseg's Attention U-Net versus MONAI's AttentionUnet, side by side.

Same channels, same input, same loss and optimizer; prints training and inference slices (3D: patches) per
second (median over repeats) and writes them as JSON. On CUDA it also measures bf16/fp16
autocast, channels-last and torch.compile variants of tumorseg's model.

    python benchmarks/model_speed.py --size 240 --batch 8 --repeats 5 [--json model_speed.json]
    python benchmarks/model_speed.py --dims 3 --size 128 --batch 2   # 3D: volumes (patches) per second
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from contextlib import nullcontext

import torch

from tumorseg.models.attention_unet import build_model

CHANNELS = (16, 32, 64, 128, 256)


def make_step(model, x, target, train: bool, amp_dtype=None):
    """One forward (and backward and optimizer) pass of ``model`` on ``x``."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def autocast():
        return torch.autocast(x.device.type, dtype=amp_dtype) if amp_dtype else nullcontext()

    def step():
        model.train(train)
        if train:
            with autocast():
                loss = loss_fn(model(x).float(), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        else:
            with torch.inference_mode(), autocast():
                model(x)

    return step


def interleaved_rates(steps: dict, batch: int, repeats: int, passes: int, device) -> dict[str, float]:
    """Median slices/s of each step, timed in turns (A B C A B C ...) so drift hits all alike."""
    for step in steps.values():  # warm-up (and compilation)
        step()
        step()
    rates = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(passes):
                step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            rates[name].append(passes * batch / (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in rates.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=240, help="slice height and width (default 240)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--dims", type=int, choices=(2, 3), default=2, help="2D slices or 3D patches")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="passes per timing")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    grid = [args.size] * args.dims
    x = torch.randn(args.batch, 4, *grid, device=device)
    target = (torch.rand(args.batch, 3, *grid, device=device) > 0.9).float()
    channels_last = torch.channels_last_3d if args.dims == 3 else torch.channels_last
    variants = [
        ("tumorseg", "attention_unet", {}),
        ("monai", "monai_attention_unet", {}),
        ("tumorseg channels-last", "attention_unet", {"channels_last": True}),
        ("monai channels-last", "monai_attention_unet", {"channels_last": True}),
    ]
    if device.type == "cuda":
        amp = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        variants += [
            ("tumorseg amp", "attention_unet", {"amp": amp}),
            ("monai amp", "monai_attention_unet", {"amp": amp}),
            ("tumorseg amp channels-last", "attention_unet", {"amp": amp, "channels_last": True}),
            ("monai amp channels-last", "monai_attention_unet", {"amp": amp, "channels_last": True}),
            (
                "tumorseg amp channels-last compile",
                "attention_unet",
                {"amp": amp, "channels_last": True, "compile": True},
            ),
        ]
    name = (
        torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or platform.machine()
    )
    print(
        f"{name}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"input {args.batch}x4x{'x'.join(map(str, grid))}, channels {CHANNELS}, median of {args.repeats}"
    )
    train_steps, infer_steps = {}, {}
    for label, model_name, options in variants:
        torch.manual_seed(0)
        model = build_model(model_name, spatial_dims=args.dims, channels=CHANNELS).to(device)
        inputs = x
        if options.get("channels_last"):
            model = model.to(memory_format=channels_last)
            inputs = x.contiguous(memory_format=channels_last)
        if options.get("compile"):
            model = torch.compile(model)
        train_steps[label] = make_step(model, inputs, target, True, options.get("amp"))
        infer_steps[label] = make_step(model, inputs, target, False, options.get("amp"))
    train = interleaved_rates(train_steps, args.batch, args.repeats, args.steps, device)
    infer = interleaved_rates(infer_steps, args.batch, args.repeats, args.steps, device)
    print(f"{'variant':<38} {'train slices/s':>15} {'infer slices/s':>15}")
    rows = []
    for label in train:
        rows.append(
            {"variant": label, "train_slices_per_s": train[label], "infer_slices_per_s": infer[label]}
        )
        print(f"{label:<38} {train[label]:>15,.1f} {infer[label]:>15,.1f}")
    by_name = {r["variant"]: r for r in rows}
    for suffix in ("", " channels-last", " amp", " amp channels-last"):
        ours, theirs = by_name.get("tumorseg" + suffix), by_name.get("monai" + suffix)
        if ours and theirs:
            train_ratio = ours["train_slices_per_s"] / theirs["train_slices_per_s"]
            infer_ratio = ours["infer_slices_per_s"] / theirs["infer_slices_per_s"]
            print(f"tumorseg/monai{suffix}: train {train_ratio:.2f}x, inference {infer_ratio:.2f}x")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(
                {
                    "device": name,
                    "torch": torch.__version__,
                    "size": args.size,
                    "batch": args.batch,
                    "rows": rows,
                },
                handle,
                indent=2,
            )


if __name__ == "__main__":
    main()
