"""Batched augmentation and DeviceLoader: exact crops/flips/cutout, distributions, resume."""
import pytest
import torch

from enas.data.augment import DeviceLoader, augment_batch, draw_params
from enas.data.datasets import ImageData
from enas.errors import UserError


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _data(n=10, c=2, h=6, w=5):
    g = _gen(99)
    images = torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.int64).to(torch.uint8)
    return ImageData(images, torch.arange(n) % 3, ["a", "b", "c"], (0.4,) * c, (0.2,) * c)


def _normalised(data):
    mean = torch.tensor(data.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.std).view(1, -1, 1, 1)
    return (data.images.float() / 255 - mean) / std


@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8])
@pytest.mark.parametrize("flip", [False, True])
def test_crop_and_flip_move_pixels_by_the_drawn_offset(dtype, flip):
    b, h, w, pad = 16, 5, 7, 2
    x = (torch.arange(b * 2 * h * w) % 250 + 1).view(b, 2, h, w).to(dtype)  # no zeros in the pattern
    out, p = augment_batch(x, pad=pad, flip=flip, cutout=0, generator=_gen(1))
    assert out.dtype == dtype and out.shape == x.shape
    for i in range(b):
        dy, dx = p["offsets"][i].tolist()
        for y in range(h):
            for xx in range(w):
                col = w - 1 - xx if p["flip"][i] else xx
                sy, sx = y + dy - pad, col + dx - pad
                inside = 0 <= sy < h and 0 <= sx < w
                expect = x[i, :, sy, sx] if inside else torch.zeros(2, dtype=dtype)
                assert torch.equal(out[i, :, y, xx], expect), (i, y, xx)
    assert bool(p["flip"].any()) == flip


def test_offsets_flip_and_centres_are_uniform():
    n, pad = 18000, 4
    p = draw_params(n, 8, 6, pad=pad, flip=True, cutout=3, generator=_gen(2))
    for axis in (0, 1):
        counts = torch.bincount(p["offsets"][:, axis], minlength=2 * pad + 1)
        assert counts.numel() == 2 * pad + 1 and counts.min() > 0.8 * n / 9 and counts.max() < 1.2 * n / 9
    assert 0.47 < p["flip"].float().mean().item() < 0.53
    assert torch.bincount(p["centers"][:, 0]).numel() == 8 and p["centers"][:, 0].min() == 0
    assert torch.bincount(p["centers"][:, 1]).numel() == 6 and p["centers"][:, 1].min() == 0


def test_cutout_zeroes_the_clipped_box():
    b, h, w, size = 64, 8, 8, 4
    x = torch.ones(b, 3, h, w)
    out, p = augment_batch(x, pad=0, flip=False, cutout=size, generator=_gen(3))
    assert p["offsets"].abs().sum() == 0
    clipped = 0
    for i in range(b):
        cy, cx = p["centers"][i].tolist()
        y1, y2 = max(cy - size // 2, 0), min(cy - size // 2 + size, h)
        x1, x2 = max(cx - size // 2, 0), min(cx - size // 2 + size, w)
        expect = torch.ones(h, w)
        expect[y1:y2, x1:x2] = 0
        assert torch.equal(out[i], expect.expand(3, h, w)), i
        clipped += (y2 - y1) * (x2 - x1) < size * size
    assert clipped > 0  # some boxes hit a border and shrank
    out3, p3 = augment_batch(x, pad=0, flip=False, cutout=3, generator=_gen(4))
    inner = ((p3["centers"] >= 1) & (p3["centers"] <= 6)).all(dim=1)
    assert (out3[inner] == 0).sum(dim=(1, 2, 3)).eq(3 * 9).all()  # odd sizes stay exact


def test_augment_is_reproducible_under_the_generator():
    x = torch.rand(8, 3, 6, 6)
    a, _ = augment_batch(x, 2, True, 2, _gen(5))
    b, _ = augment_batch(x, 2, True, 2, _gen(5))
    c, _ = augment_batch(x, 2, True, 2, _gen(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_eval_loader_is_identity_except_normalisation():
    data = _data(n=10)
    loader = DeviceLoader(data, 4, torch.device("cpu"), train=False, pad=4, cutout=3)
    assert len(loader) == 3
    batches = list(loader)
    assert [len(y) for _, y in batches] == [4, 4, 2]
    x = torch.cat([xb for xb, _ in batches])
    assert torch.allclose(x, _normalised(data), atol=1e-5)
    assert torch.equal(torch.cat([yb for _, yb in batches]), data.labels)


def _index_of(x, data):
    """Identify unaugmented batch rows by matching them against the normalised images."""
    ref = _normalised(data).flatten(1)
    return torch.cdist(x.flatten(1), ref).argmin(dim=1)


def test_train_order_is_a_seeded_permutation_per_epoch():
    data = _data(n=10)
    make = lambda seed: DeviceLoader(data, 3, torch.device("cpu"), train=True, pad=0, flip=False,
                                     seed=seed)
    loader = make(0)
    assert len(loader) == 3  # drops the partial batch
    idx = torch.cat([_index_of(x, data) for x, _ in loader.epoch_batches(0)])
    assert idx.numel() == 9 and idx.unique().numel() == 9
    assert torch.equal(idx, loader.epoch_order(0)[:9])
    assert torch.equal(make(0).epoch_order(4), loader.epoch_order(4))
    assert not torch.equal(loader.epoch_order(0), loader.epoch_order(1))
    assert not torch.equal(make(1).epoch_order(0), loader.epoch_order(0))


def test_resume_mid_epoch_reproduces_the_remaining_batches():
    data = _data(n=20)
    kw = dict(batch_size=4, device=torch.device("cpu"), train=True, pad=2, cutout=2, seed=11)
    full = list(DeviceLoader(data, generator=_gen(123), **kw).epoch_batches(3))
    first = DeviceLoader(data, generator=_gen(123), **kw)
    it = first.epoch_batches(3)
    for _ in range(2):
        next(it)
    state = first.generator.get_state()  # what a checkpoint stores
    resumed_gen = torch.Generator()
    resumed_gen.set_state(state)
    rest = list(DeviceLoader(data, generator=resumed_gen, **kw).epoch_batches(3, start=2))
    assert len(rest) == len(full) - 2 == 3
    for (xa, ya), (xb, yb) in zip(full[2:], rest):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # Same order under another generator, but other augmentations: the train loader augments.
    other = list(DeviceLoader(data, generator=_gen(124), **kw).epoch_batches(3))
    assert torch.equal(other[0][1], full[0][1]) and not torch.equal(other[0][0], full[0][0])


def test_sample_batch_is_deterministic_without_repeats():
    data = _data(n=10)
    make = lambda s: DeviceLoader(data, 6, torch.device("cpu"), train=False, generator=_gen(s))
    xa, ya = make(7).sample_batch()
    xb, yb = make(7).sample_batch()
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert _index_of(xa, data).unique().numel() == 6
    loader = make(7)
    assert not torch.equal(loader.sample_batch()[0], loader.sample_batch()[0])
    # An explicit generator replaces the loader's own and leaves it untouched.
    state = loader.generator.get_state()
    xc, _ = loader.sample_batch(generator=_gen(7))
    assert torch.equal(xc, xa) and torch.equal(loader.generator.get_state(), state)


def test_layout_dtype_and_bad_settings():
    data = _data(n=8, c=3)
    loader = DeviceLoader(data, 4, "cpu", train=True, channels_last=True, dtype=torch.float64)
    x, y = next(iter(loader))
    assert x.dtype == torch.float64 and y.dtype == torch.int64
    assert x.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(UserError, match="exceeds the 8 images"):
        DeviceLoader(data, 16, "cpu", train=True)
    assert len(DeviceLoader(data, 16, "cpu", train=False)) == 1
    with pytest.raises(ValueError):
        list(loader.epoch_batches(0, start=5))
