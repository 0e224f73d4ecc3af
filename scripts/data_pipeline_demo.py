"""The data pipeline end to end on a small generated sample (the README's main command, for now).

generate synthetic frame folders -> dataset/convert_to_h5.py -> dataset.inspect -> VideoDataset through the
clevrer config (with overrides) and a DataLoader -> a contact sheet PNG and a GIF of one batch.
Stages whose outputs exist are reused; pass --fresh to redo everything.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch
from torch.utils.data import DataLoader

from dataset import convert_to_h5
from dataset import inspect as inspect_h5
from dataset.synthetic import write_frame_dataset
from lutils.configuration import Configuration
from lutils.media import save_contact_sheet, write_video
from dataset.clips import clips_from_config

COUNTS = {"train": 16, "val": 4, "test": 4}


def stage(message: str) -> None:
    print(f"\n== {message}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "outputs" / "data_pipeline"), help="output folder")
    parser.add_argument("--fresh", action="store_true", help="delete earlier outputs first")
    args = parser.parse_args()
    out = Path(args.out)
    if args.fresh and out.exists():
        shutil.rmtree(out)
    frames_dir, h5_dir = out / "frames", out / "h5"
    print("Running the data pipeline on a small generated sample. Training on the embedded default arrives "
          "with the trainer; this command will then run the whole method.")

    stage(f"1/4 synthetic frame folders -> {frames_dir}")
    if (frames_dir / "test").is_dir():
        print("reusing existing frames")
    else:
        partial = out / ".frames.partial"
        shutil.rmtree(partial, ignore_errors=True)
        write_frame_dataset(partial, COUNTS, num_frames=32, size=64, seed=0)
        partial.rename(frames_dir)
        print(f"wrote {sum(COUNTS.values())} videos of 32 PNG frames (64x64)")

    stage(f"2/4 convert to HDF5 -> {h5_dir}")
    if all((h5_dir / split / "manifest.json").is_file() for split in COUNTS):
        print("reusing existing shards")
    else:
        code = convert_to_h5.main(["--data-dir", str(frames_dir), "--out-dir", str(h5_dir), "--extension", "png",
                                   "--image-size", "64", "--processes", "2", "--force"])
        if code != 0:
            return code

    stage("3/4 inspect")
    if inspect_h5.main([str(h5_dir)]) != 0:
        return 1

    stage("4/4 VideoDataset from configs/clevrer.yaml (data overrides) through a DataLoader")
    overrides = [f"data.data_root={h5_dir}", "data.input_size=64", "data.crop_size=64", "data.skip_frames=1"]
    config = Configuration(ROOT / "configs" / "clevrer.yaml", overrides)
    print("overrides: " + " ".join(overrides))
    dataset = clips_from_config(config["data"], "train", "train", output_dtype="float32")
    loader = DataLoader(dataset, batch_size=4, shuffle=True, num_workers=2,
                        generator=torch.Generator().manual_seed(0))
    start = time.time()
    batch = next(iter(loader))
    print(f"train: {dataset.num_videos} videos; batch {tuple(batch.shape)} {batch.dtype} in "
          f"[{batch.min().item():.2f}, {batch.max().item():.2f}] ({time.time() - start:.2f} s, 2 workers, "
          f"colour jitter on: aug={config.data.aug})")
    sheet = save_contact_sheet(out / "batch.png", batch)
    gif = write_video(out / "batch_clip0.gif", batch[0], fps=8)
    print(f"\nwrote {sheet} (rows: clips, columns: frames) and {gif}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
