"""Video data: HDF5 layouts, conversion tools and the VideoDataset."""


def __getattr__(name):
    # Lazy, so the conversion tools do not import torch.
    if name == "VideoDataset":
        from dataset.video_dataset import VideoDataset

        return VideoDataset
    raise AttributeError(name)


__all__ = ["VideoDataset"]
