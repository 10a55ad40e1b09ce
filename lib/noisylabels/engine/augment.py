"""Images on the device: normalisation and the papers' augmentations, batch by batch.

The raw uint8 images stay on the device (`Images`); a batch is normalised when it is
indexed, so a data set costs a byte per pixel there (Clothing1M at 256 x 256). Normalisation
(`train.normalize`):
- channel: per-channel mean and std of the training images (the default run);
- pixel_mean: the mean training image subtracted from images in [0, 1] (SCE's Keras code,
  joint optimisation and seed 002: "mean subtraction");
- imagenet: ImageNet's channel mean and std, which torchvision's pretrained weights expect.

Augmentation (`train.augment`) acts on a normalised training batch, with per-sample draws
from the run's own generator (so every method of a seed sees the same draws):
- shift: Keras' ImageDataGenerator as SCE uses it: a continuous shift of up to `shift` of
  the height and width, a rotation of up to `rotation` degrees (CIFAR-100), bilinear
  interpolation with nearest-edge fill, then a horizontal flip with probability 1/2 if
  `flip`. Keras calls scipy.ndimage.affine_transform; the rotation centre is Keras'
  (h/2 + 0.5, w/2 + 0.5).
- crop: torchvision's RandomCrop(size, padding) and RandomHorizontalFlip: the padding is a
  raw black pixel (torchvision pads before it normalises), then a random size x size window.
  Evaluation takes the centre window (Clothing1M: 256 -> 224; CIFAR: the image itself).
- center_crop: the centre size x size window, in training and evaluation (SCE's Clothing1M).
Each augmentation is `draw(n, generator)` then `apply(x, draws)`: the tests compare `apply`
with scipy and torchvision on fixed draws, and `draw` with the papers' distributions.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class Images:
    """uint8 N x C x H x W images on the device; `images[idx]` is the normalised float batch.

    A set of at most CACHED elements (the digits) is also kept normalised, so that a batch is
    one index rather than five ops: a stacked digits step spent 0.1 ms of its 2 ms
    normalising its batch on this CPU. The values are the same (elementwise ops)."""

    CACHED = 2**24  # elements: 64 MB as float32

    def __init__(self, raw: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, view=None):
        self.raw, self.mean, self.std = raw, mean, std
        self.view = view  # evaluation view of a batch (a centre crop), or None
        self.cached = self._normalise(raw) if raw.numel() <= self.CACHED else None

    def __len__(self):
        return len(self.raw)

    @property
    def device(self):
        return self.raw.device

    @property
    def shape(self):
        """The shape a model sees (after the evaluation view)."""
        h, w = self.raw.shape[2:] if self.view is None else (self.view.size, self.view.size)
        return (len(self.raw), self.raw.shape[1], h, w)

    def subset(self, idx) -> "Images":
        return Images(self.raw[idx], self.mean, self.std, self.view)

    def _normalise(self, raw: torch.Tensor) -> torch.Tensor:
        return (raw.float().div_(255) - self.mean) / self.std

    def normalised(self, idx) -> torch.Tensor:
        """The batch at full stored size, before any view (what augmentation starts from)."""
        return self._normalise(_take(self.raw, idx)) if self.cached is None else _take(self.cached, idx)

    def __getitem__(self, idx) -> torch.Tensor:
        x = self.normalised(idx)
        return x if self.view is None else self.view.evaluate(x)


def _take(t: torch.Tensor, idx) -> torch.Tensor:
    """t[idx] along the first dimension; for an index tensor through index_select, which took
    7 us for a stacked digits batch on this CPU where t[idx] took 32 us."""
    return t.index_select(0, idx) if isinstance(idx, torch.Tensor) else t[idx]


def normalisation(train_raw: torch.Tensor, kind: str):
    """(mean, std) broadcastable to N x C x H x W images in [0, 1]."""
    c = train_raw.shape[1]
    if kind == "imagenet":
        if c != 3:
            raise ValueError(f"normalize=imagenet needs RGB images, got {c} channels")
        return (torch.tensor(IMAGENET_MEAN, device=train_raw.device).view(1, 3, 1, 1),
                torch.tensor(IMAGENET_STD, device=train_raw.device).view(1, 3, 1, 1))
    # sums in chunks: a float copy of a large data set would not fit beside it
    total = torch.zeros(c, *train_raw.shape[2:], dtype=torch.float64, device=train_raw.device)
    for i in range(0, len(train_raw), 4096):
        total += train_raw[i : i + 4096].double().div(255).sum(0)
    mean_image = total / len(train_raw)
    if kind == "pixel_mean":
        return mean_image[None].float(), torch.ones(1, device=train_raw.device)
    if kind == "channel":
        mean = mean_image.mean(dim=(1, 2))
        var = torch.zeros(c, dtype=torch.float64, device=train_raw.device)
        for i in range(0, len(train_raw), 4096):
            var += ((train_raw[i : i + 4096].double().div(255) - mean[None, :, None, None]) ** 2).sum(dim=(0, 2, 3))
        n = len(train_raw) * train_raw.shape[2] * train_raw.shape[3]
        std = (var / (n - 1)).sqrt().clamp_min(1e-6)
        return mean.float().view(1, c, 1, 1), std.float().view(1, c, 1, 1)
    raise ValueError(f"unknown normalisation {kind!r}")


# --- augmentations: draw(n, generator) -> draws; apply(x, draws) -> batch --------------


class NoAugment:
    def draw(self, n, generator):
        return None

    def apply(self, x, draws):
        return x


class Shift(NoAugment):
    """Keras: tx, ty ~ U(-shift, shift) * side, theta ~ U(-rotation, rotation) degrees, flip."""

    def __init__(self, shift: float, rotation: float, flip: bool):
        self.shift, self.rotation, self.flip = shift, rotation, flip

    def draw(self, n, generator):
        u = torch.rand(n, 4, generator=generator, device=generator.device)
        return {"theta": (2 * u[:, 0] - 1) * self.rotation, "tx": (2 * u[:, 1] - 1) * self.shift,
                "ty": (2 * u[:, 2] - 1) * self.shift, "flip": (u[:, 3] < 0.5) & self.flip}

    def apply(self, x, draws):
        n, _, h, w = x.shape
        # output pixel o (row, col) reads input c + R (o - c + t), t = (tx h, ty w) (Keras'
        # offset-centred rotation after shift; scipy's affine_transform convention)
        theta = torch.deg2rad(draws["theta"])
        cos, sin = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
        rows = torch.arange(h, device=x.device, dtype=x.dtype)[None, :, None]
        cols = torch.arange(w, device=x.device, dtype=x.dtype)[None, None, :]
        cr, cc = h / 2 + 0.5, w / 2 + 0.5
        dr = rows - cr + (draws["tx"] * h)[:, None, None]
        dc = cols - cc + (draws["ty"] * w)[:, None, None]
        src_r, src_c = cr + cos * dr - sin * dc, cc + sin * dr + cos * dc
        # align_corners=True maps -1/+1 to the centres of the edge pixels; 'border' clamps to
        # them, which for bilinear is scipy's mode='nearest' (the edge pixel repeated)
        grid = torch.stack([2 * src_c / (w - 1) - 1, 2 * src_r / (h - 1) - 1], dim=-1)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)
        return torch.where(draws["flip"][:, None, None, None], out.flip(-1), out)


class Crop(NoAugment):
    """torchvision: pad `padding` raw black pixels, a random size x size window of the
    (h, w) images, a flip; or, not `random`, the centre window (torchvision's CenterCrop)
    in training too."""

    def __init__(self, size: int, padding: int, flip: bool, fill: torch.Tensor | None, image_hw,
                 random: bool = True):
        self.size, self.padding, self.flip, self.random = size, padding, flip, random
        self.fill = fill  # per channel: what a raw 0 becomes after normalisation
        self.image_hw = tuple(image_hw)

    def draw(self, n, generator):
        if not self.random:
            return None
        span = [s + 2 * self.padding - self.size + 1 for s in self.image_hw]
        return {"top": torch.randint(span[0], (n,), generator=generator, device=generator.device),
                "left": torch.randint(span[1], (n,), generator=generator, device=generator.device),
                "flip": (torch.rand(n, generator=generator, device=generator.device) < 0.5) & self.flip}

    def apply(self, x, draws):
        if draws is None:
            return self.evaluate(x)
        n, c, h, w = x.shape
        p = self.padding
        if p:
            padded = self.fill.view(1, c, 1, 1).expand(n, c, h + 2 * p, w + 2 * p).clone()
            padded[:, :, p : p + h, p : p + w] = x
            x = padded
        k = torch.arange(self.size, device=x.device)
        rows = (draws["top"][:, None] + k)[:, None, :, None]
        cols = (draws["left"][:, None] + k)[:, None, None, :]
        batch, channel = torch.arange(n, device=x.device), torch.arange(c, device=x.device)
        out = x[batch[:, None, None, None], channel[None, :, None, None], rows, cols]
        return torch.where(draws["flip"][:, None, None, None], out.flip(-1), out)

    def evaluate(self, x):
        h, w = x.shape[2:]
        top, left = (h - self.size) // 2, (w - self.size) // 2  # torchvision's CenterCrop
        return x[:, :, top : top + self.size, left : left + self.size]


class CenterCrop(Crop):
    """The centre size x size window, in training too (torchvision's CenterCrop)."""

    def __init__(self, size: int, fill, image_hw):
        super().__init__(size, 0, False, None, image_hw, random=False)


class Augmentation:
    """The `train.augment` section (a spec.train settings model, whose `impl` names the
    class here) bound to a data set's normalisation and stored image shape."""

    def __init__(self, spec, mean: torch.Tensor, std: torch.Tensor, shape):
        _, c, h, w = shape
        options = spec.options()
        if spec.crops:  # a crop knows the image size and what a padded raw 0 becomes
            fill = ((0 - mean) / std).reshape(-1)
            if fill.numel() != c:  # pixel_mean: no mean pixel outside the image; the channel's mean
                fill = (0 - mean).mean(dim=(0, 2, 3))
            options.update(fill=fill, image_hw=(h, w))
        self.op = globals()[spec.impl](**options)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.op.apply(x, self.op.draw(len(x), generator))

    @property
    def none(self) -> bool:
        """No augmentation: a batch trains as it is, and no generator draws."""
        return type(self.op) is NoAugment

    @property
    def view(self):
        """What evaluation sees: the centre window of a crop smaller than the image, else the image."""
        return self.op if isinstance(self.op, Crop) and self.op.size < min(self.op.image_hw) else None


def check_fits(spec, image_shape) -> str | None:
    """Why this augmentation cannot run on images of `image_shape` (H, W, ...), or None."""
    if spec.crops and spec.size > min(image_shape[:2]):
        return f"expected a window of at most {min(image_shape[:2])} pixels (the images are {image_shape[0]}x{image_shape[1]})"
    return None


def input_shape(spec, image_shape) -> tuple[int, int, int]:
    """(C, H, W) a model sees for stored images of `image_shape` (H, W, C)."""
    h, w, c = image_shape
    return (c, spec.size, spec.size) if spec.crops else (c, h, w)
