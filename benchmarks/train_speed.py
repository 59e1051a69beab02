"""Training throughput ratios for ResNet-18 on this machine, all measured in one run.

    python benchmarks/train_speed.py

Prints images/s for each setting and its ratio to plain fp32 at 112 px; absolute numbers vary with
machine load, the ratios are what to read.
"""
import time

import timm
import torch

from fer_kit.train.precision import cpu_has_native_bf16


def images_per_second(size: int, channels_last: bool, bf16: bool, batch: int = 64, steps: int = 3) -> float:
    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=8)
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, 8, (batch,))
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    for step in range(steps + 1):
        if step == 1:
            start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return steps * batch / (time.perf_counter() - start)


if __name__ == "__main__":
    print(f"threads: {torch.get_num_threads()}   native bf16: {cpu_has_native_bf16()}")
    base = images_per_second(112, False, False)
    print(f"{'setting':32s} {'img/s':>7s} {'ratio':>6s}")
    print(f"{'fp32, 112 px':32s} {base:7.1f} {1.0:6.2f}")
    for label, args in [("fp32 channels_last, 112 px", (112, True, False)),
                        ("bf16 channels_last, 112 px", (112, True, True)),
                        ("fp32 channels_last, 80 px", (80, True, False)),
                        ("fp32 channels_last, 64 px", (64, True, False))]:
        ips = images_per_second(*args, steps=1 if args[2] and not cpu_has_native_bf16() else 3)
        print(f"{label:32s} {ips:7.1f} {ips / base:6.2f}")
