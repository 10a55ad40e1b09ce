"""Benchmark: the device augmentation against the per-image CPU pipelines it replaces.

    python benchmarks/augment.py [--n 1024]

On one batch of CIFAR-sized images, in this one process (so both share the machine's load):
- Keras' shift + rotation + flip (SCE CIFAR-100), as Keras computes it: scipy's
  affine_transform per image and channel, against augment.Shift on the whole batch;
- torchvision's pad-4 random crop + flip + normalise per PIL image, against augment.Crop.
Prints images per second of each and the ratio. On a GPU (`--device cuda`) the batch ops
run there; the per-image pipelines always run on the CPU, as a DataLoader's workers would.
"""
import time

import click
import numpy as np
import scipy.ndimage
import torch
from PIL import Image
from torchvision.transforms import functional as TF

from noisylabels.engine import augment


def _rate(fn, n, repeat=3):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return n / best


@click.command()
@click.option("--n", default=1024, show_default=True, help="images per batch")
@click.option("--device", default="cpu", show_default=True)
def main(n, device):
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    x = torch.from_numpy(raw).permute(0, 3, 1, 2).float().div(255).to(device)
    g = torch.Generator(device=device).manual_seed(0)
    shift = augment.Shift(0.2, 20, True)
    draws = shift.draw(n, g)
    d = {k: v.cpu().numpy() for k, v in draws.items()}

    def keras():
        for i in range(n):  # Keras: one affine_transform per channel of each image
            t = np.deg2rad(d["theta"][i])
            m = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
            for c in range(3):
                scipy.ndimage.affine_transform(raw[i, :, :, c] / 255.0, m, (d["tx"][i] * 32, d["ty"][i] * 32), order=1,
                                               mode="nearest")

    def sync(fn):
        def run():
            fn()
            if device == "cuda":
                torch.cuda.synchronize()
        return run

    mean, std = augment.normalisation(torch.from_numpy(raw).permute(0, 3, 1, 2).to(device), "channel")
    crop = augment.Crop(32, 4, True, ((0 - mean) / std).reshape(-1), (32, 32))
    images = [Image.fromarray(a) for a in raw]
    m, s = mean.flatten().tolist(), std.flatten().tolist()

    def torchvision():
        for img in images:
            TF.normalize(TF.to_tensor(TF.hflip(TF.crop(TF.pad(img, 4), 3, 5, 32, 32))), m, s)

    rows = [("shift+rotation+flip", _rate(keras, n), _rate(sync(lambda: shift.apply(x, shift.draw(n, g))), n)),
            ("pad-crop+flip", _rate(torchvision, n), _rate(sync(lambda: crop.apply(x, crop.draw(n, g))), n))]
    print(f"{n} images of 32x32x3, one thread; images per second (best of 3)")
    for name, cpu, ours in rows:
        print(f"{name:22s} per image (Keras/torchvision) {cpu:10.0f}   augment.py on {device} {ours:10.0f}   "
              f"x{ours / cpu:.1f}")


if __name__ == "__main__":
    main()
