"""Device augmentation against the papers' own pipelines: outputs on fixed draws, and the
distribution of the draws.

- shift: Keras' ImageDataGenerator (SCE) composes its matrices and calls
  scipy.ndimage.affine_transform(order=1, mode='nearest'); that is the reference here.
- crop: torchvision's pad / crop / flip / to_tensor / normalize on PIL images.
"""
import numpy as np
import scipy.ndimage
import scipy.stats
import torch
from PIL import Image
from torchvision.transforms import functional as TF

from noisylabels.engine import augment

from conftest import TinyDataset, train_job, typed


def keras_affine(image_hwc, theta_deg, tx, ty, flip):
    """keras_preprocessing.image.apply_affine_transform + flip_axis, for one H x W x C image."""
    h, w = image_hwc.shape[:2]
    t = np.deg2rad(theta_deg)
    rotation = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    shift = np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1]])
    matrix = rotation @ shift
    o_x, o_y = h / 2 + 0.5, w / 2 + 0.5  # transform_matrix_offset_center
    offset = np.array([[1, 0, o_x], [0, 1, o_y], [0, 0, 1]])
    reset = np.array([[1, 0, -o_x], [0, 1, -o_y], [0, 0, 1]])
    matrix = offset @ matrix @ reset
    out = np.stack([scipy.ndimage.affine_transform(image_hwc[..., c], matrix[:2, :2], matrix[:2, 2],
                                                   order=1, mode="nearest") for c in range(image_hwc.shape[2])], -1)
    return out[:, ::-1] if flip else out


def test_shift_matches_keras_on_fixed_draws():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 3, 32, 32)).astype(np.float64)
    f64 = dict(dtype=torch.float64)  # so that both sides shift by the same number of pixels
    draws = {"theta": torch.tensor([0.0, 0.0, 17.0, -20.0], **f64), "tx": torch.tensor([0.2, -0.13, 0.05, 0.0], **f64),
             "ty": torch.tensor([-0.2, 0.07, -0.11, 0.0], **f64), "flip": torch.tensor([False, True, False, True])}
    ours = augment.Shift(0.2, 20, True).apply(torch.from_numpy(x), draws).numpy()
    for i in range(4):  # Keras draws fractions and multiplies by the side (32 px here)
        ref = keras_affine(x[i].transpose(1, 2, 0), float(draws["theta"][i]), float(draws["tx"][i]) * 32,
                           float(draws["ty"][i]) * 32, bool(draws["flip"][i]))
        np.testing.assert_allclose(ours[i].transpose(1, 2, 0), ref, atol=1e-9)


def test_shift_draws_have_kerass_distribution():
    g = torch.Generator().manual_seed(0)
    d = augment.Shift(0.2, 20, True).draw(20000, g)
    for key, bound in (("tx", 0.2), ("ty", 0.2), ("theta", 20)):
        assert scipy.stats.kstest(d[key].numpy(), scipy.stats.uniform(-bound, 2 * bound).cdf).pvalue > 1e-3
    assert abs(d["flip"].float().mean().item() - 0.5) < 0.02
    assert not augment.Shift(0.2, 0, False).draw(100, g)["flip"].any()
    assert (augment.Shift(0.2, 0, False).draw(100, g)["theta"] == 0).all()


def test_crop_matches_torchvision_with_padding_in_raw_pixel_space():
    rng = np.random.default_rng(1)
    raw = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    x = (torch.from_numpy(raw).permute(0, 3, 1, 2).float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) \
        / torch.tensor(std).view(1, 3, 1, 1)
    op = augment.Augmentation(typed({"name": "crop", "size": 32, "padding": 4, "flip": True}),
                              torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1), x.shape).op
    draws = {"top": torch.tensor([0, 8, 3]), "left": torch.tensor([8, 0, 5]), "flip": torch.tensor([True, False, True])}
    ours = op.apply(x, draws)
    for i in range(3):
        img = TF.pad(Image.fromarray(raw[i]), 4, fill=0)  # torchvision pads the raw image with black
        img = TF.crop(img, int(draws["top"][i]), int(draws["left"][i]), 32, 32)
        if draws["flip"][i]:
            img = TF.hflip(img)
        ref = TF.normalize(TF.to_tensor(img), mean, std)
        torch.testing.assert_close(ours[i], ref, atol=1e-6, rtol=0)


def test_crop_draws_are_uniform_offsets_and_fair_flips():
    op = augment.Crop(32, 4, True, fill=torch.zeros(3), image_hw=(32, 32))
    d = op.draw(18000, torch.Generator().manual_seed(0))
    for key in ("top", "left"):  # torchvision: randint(0, 32 + 8 - 32 + 1)
        counts = np.bincount(d[key].numpy(), minlength=9)
        assert len(counts) == 9 and scipy.stats.chisquare(counts).pvalue > 1e-3
    assert abs(d["flip"].float().mean().item() - 0.5) < 0.02


def test_clothing1m_crop_is_random_in_training_and_central_in_evaluation():
    raw = torch.randint(0, 256, (2, 3, 256, 256), dtype=torch.uint8)
    mean, std = augment.normalisation(raw, "imagenet")
    aug = augment.Augmentation(typed({"name": "crop", "size": 224, "padding": 0, "flip": True}), mean, std, raw.shape)
    images = augment.Images(raw, mean, std, aug.view)
    assert images.shape == (2, 3, 224, 224) and images[:].shape == (2, 3, 224, 224)
    ref = TF.normalize(TF.center_crop(raw.float() / 255, [224, 224]), augment.IMAGENET_MEAN, augment.IMAGENET_STD)
    torch.testing.assert_close(images[:], ref)
    assert aug(images.normalised(slice(None)), torch.Generator().manual_seed(0)).shape == (2, 3, 224, 224)
    centre = augment.Augmentation(typed({"name": "center_crop", "size": 224}), mean, std, raw.shape)
    torch.testing.assert_close(centre(images.normalised(slice(None)), torch.Generator()), ref)


def test_normalisations():
    raw = torch.randint(0, 256, (50, 3, 4, 4), dtype=torch.uint8)
    x = raw.double() / 255
    mean, std = augment.normalisation(raw, "pixel_mean")  # SCE / seed 002: the mean image subtracted
    torch.testing.assert_close(mean[0].double(), x.mean(0), atol=1e-6, rtol=0)
    assert (std == 1).all()
    mean, std = augment.normalisation(raw, "channel")
    torch.testing.assert_close(mean.double().flatten(), x.mean(dim=(0, 2, 3)), atol=1e-6, rtol=0)
    torch.testing.assert_close(std.double().flatten(), x.transpose(0, 1).reshape(3, -1).std(1), atol=1e-6, rtol=0)


def test_a_small_set_kept_normalised_gives_the_batches_normalising_each_batch_gives(monkeypatch):
    raw = torch.randint(0, 256, (300, 3, 8, 8), dtype=torch.uint8)
    idx = torch.randperm(300)[:64]
    for kind in ("pixel_mean", "channel", "imagenet"):
        mean, std = augment.normalisation(raw, kind)
        cached = augment.Images(raw, mean, std)
        monkeypatch.setattr(augment.Images, "CACHED", 0)
        each = augment.Images(raw, mean, std)
        monkeypatch.undo()
        assert cached.cached is not None and each.cached is None
        assert torch.equal(cached.normalised(idx), each.normalised(idx))
        assert torch.equal(cached.subset(idx)[:5], each.subset(idx)[:5])


def test_training_with_each_augmentation_runs_and_is_paired_by_seed():
    ds = TinyDataset(n_per_class=6, shape=(12, 12, 3))
    val = np.zeros(len(ds.train_labels), dtype=bool)
    val[::6] = True
    model = {"name": "sce_cifar10_cnn"}
    for aug, norm in (({"name": "shift", "shift": 0.2, "rotation": 20, "flip": True}, "pixel_mean"),
                      ({"name": "crop", "size": 12, "padding": 2, "flip": True}, "channel"),
                      ({"name": "crop", "size": 8, "padding": 0, "flip": True}, "imagenet")):
        train = {"epochs": 1, "batch_size": 16, "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0, "milestones": [],
                 "gamma": 0.1, "device": "cpu", "augment": aug, "normalize": norm}
        a, b = (train_job(ds, loss={"name": "ce"}, model=model, train=train, noisy=ds.train_labels, val=val)
                for _ in range(2))
        assert a.history == b.history and a.test_pred.shape == (1, 100)


def test_a_window_larger_than_the_images_is_refused():
    assert augment.check_fits(typed({"name": "center_crop", "size": 224}), (32, 32, 3)) == \
        "expected a window of at most 32 pixels (the images are 32x32)"
    assert augment.check_fits(typed({"name": "crop", "size": 32, "padding": 4, "flip": True}), (32, 32, 3)) is None
