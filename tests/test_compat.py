"""What users of the original bring runs unchanged: every import line of its README and notebooks, its README usage
example (verbatim but for the `model.geenration` typo and the device), and `Model.forward`'s DictWrapper output."""
from __future__ import annotations

import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from lutils.dict_wrapper import DictWrapper
from tests.conftest import ROOT

#: The usage example of the original README (github.com/Araachie/cage @ 7412afb), character for character.
ORIGINAL_README_EXAMPLE = '''from lutils.configuration import Configuration
from lutils.logging import to_video
from model import Model
from model.geenration import generate
from demo.common import show_video

config = Configuration(<path_to_config_file>)
model = Model(config["model"])
model.load_from_ckpt(<path_to_checkpoint_file>)
model.cuda()
model.eval()

generated_frames = generate(
    model=model,
    num_frames=num_frames,
    device="cuda:0",
    initial_frames=initial_frames,  # [b l C H W]
    feats=control_features,  # [b s d h w]
    feats_masks=control_features_masks,  # [b s 1 h w]
    verbose=True)

--------------
generated_frames = to_video(generated_frames)  # to save the generated video
------OR------
show_video(generated_frames)  # to display the generated video with matplotlib (e.g. in Jupyter notebook)
--------------
'''

ORIGINAL_IMPORTS = [
    "from lutils.configuration import Configuration",
    "from lutils.logging import to_video",
    "from model import Model",
    "from model.generation import generate",
    "from demo.common import show_video",
    "from demo import Demo",
    "from demo import DemoCompose as Demo",
]


def test_every_original_import_line_works_in_a_fresh_interpreter():
    for line in ORIGINAL_IMPORTS:
        result = subprocess.run([sys.executable, "-c", f"import matplotlib; matplotlib.use('Agg'); {line}"],
                                cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"{line}: {result.stderr[-2000:]}"


def readme_example(config_path, ckpt_path) -> tuple:
    """(setup and generation, alternative 1, alternative 2) of the README example, with only the import typo and the
    device changed (CPU here)."""
    text = ORIGINAL_README_EXAMPLE
    for old, new in [("model.geenration", "model.generation"), ("model.cuda()", "model.cpu()"),
                     ('device="cuda:0"', 'device="cpu"'), ("<path_to_config_file>", repr(str(config_path))),
                     ("<path_to_checkpoint_file>", repr(str(ckpt_path)))]:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    body, alternatives, _ = text.split("\n--------------\n")
    first, second = alternatives.split("\n------OR------\n")
    return body, first, second


def test_the_original_readme_example_runs_on_a_golden_model(golden_dir, tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    folder = tmp_path / "tiny_ldm"
    shutil.copytree(golden_dir / "tiny_ldm", folder)
    monkeypatch.chdir(folder)  # the config's autoencoder path (ae.pth) is relative, as in the original configs
    io = torch.load(folder / "io.pt", weights_only=True)
    body, to_video_alternative, show_alternative = readme_example(folder / "config.yaml", folder / "model.pth")
    namespace = {"num_frames": 5, "initial_frames": io["gen_initial_frames"], "control_features": io["gen_feats"],
                 "control_features_masks": io["gen_feats_masks"]}
    torch.manual_seed(221)
    exec(compile(body, "README example", "exec"), namespace)
    video = namespace["generated_frames"]
    assert video.shape == (2, 7, 3, 32, 32) and torch.isfinite(video).all()
    assert torch.equal(video[:, :2], io["gen_initial_frames"])  # the initial frames come first

    from lutils.configuration import Configuration
    from model import Model
    from model.generation import generate

    torch.manual_seed(221)  # the same steps through our API: building the model draws from the same global RNG
    model = Model(Configuration(folder / "config.yaml")["model"]).load_from_ckpt(folder / "model.pth").eval()
    again = generate(model, 5, "cpu", initial_frames=io["gen_initial_frames"], feats=io["gen_feats"],
                     feats_masks=io["gen_feats_masks"], batch_size=2, num_steps=20)
    assert torch.equal(video, again)

    shown = dict(namespace)
    exec(compile(show_alternative, "README example (show)", "exec"), shown)  # displays; returns PIL frames
    exec(compile(to_video_alternative, "README example (to_video)", "exec"), namespace)
    frames = namespace["generated_frames"]
    assert isinstance(frames, np.ndarray) and frames.dtype == np.uint8 and frames.shape == (2, 7, 3, 32, 32)
    expected = ((video.clamp(-1, 1) + 1) * 127.5).to(torch.uint8).numpy()
    assert np.abs(frames.astype(int) - expected.astype(int)).max() <= 1


def test_forward_returns_a_dict_wrapper_read_both_ways(golden_dir):
    from lutils.configuration import Configuration
    from model import Model

    folder = golden_dir / "tiny_ldm"
    config = Configuration(folder / "config.yaml", [f"model.autoencoder.ckpt_path={folder / 'ae.pth'}"])
    model = Model(config["model"]).load_from_ckpt(folder / "model.pth")
    frames = torch.load(folder / "io.pt", weights_only=True)["frames"].repeat(1, 2, 1, 1, 1)  # 8 observations
    out = model(frames, generator=torch.Generator().manual_seed(0))
    assert isinstance(out, DictWrapper) and isinstance(out, dict)
    assert out.reconstructed_vectors is out["reconstructed_vectors"]
    assert out.target_vectors.shape == out["target_vectors"].shape == (2, 3, 4, 8, 8)
    assert set(out) == {"reconstructed_vectors", "target_vectors", "selected_masks", "num_controls"}


def test_dict_wrapper_semantics():
    d = DictWrapper({"a": 1}, b=2)
    assert d.a == 1 and d["b"] == 2 and list(d.items()) == [("a", 1), ("b", 2)]
    d.c = 3
    assert d["c"] == 3
    d["e"] = 5
    assert d.e == 5
    del d.a
    assert "a" not in d
    with pytest.raises(AttributeError, match="'missing'.*keys: b, c, e"):
        d.missing
    assert pickle.loads(pickle.dumps(d)) == d and isinstance(pickle.loads(pickle.dumps(d)), DictWrapper)
    d.update(items=7)  # a key shadowed by a dict method stays reachable by item
    assert d["items"] == 7 and callable(d.items)
    nested = DictWrapper(inner={"x": 1})
    assert nested.inner == {"x": 1}  # top level only, as the original
