"""The training-set statistics the paper needs, accumulated in one streaming pass: the mean image and the
eigen-decomposition of the 3x3 covariance of RGB pixel values (for PCA lighting)."""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

from alexnet_tf.data import ops
from alexnet_tf.process import atomic


@dataclasses.dataclass(frozen=True)
class Stats:
    """mean_image: float32 (H, W, 3) in 0-255; eigval/eigvec: of the RGB covariance of pixels scaled to [0, 1],
    eigenvalues in decreasing order, eigenvectors as columns; count: images seen."""

    mean_image: np.ndarray
    rgb_covariance: np.ndarray
    eigval: np.ndarray
    eigvec: np.ndarray
    count: int

    @property
    def mean_rgb(self) -> np.ndarray:
        return self.mean_image.reshape(-1, 3).mean(axis=0, dtype=np.float64)

    def save(self, path: str | pathlib.Path) -> None:
        """Write an .npz atomically (temporary name, then rename)."""
        atomic.save_npz(path, mean_image=self.mean_image, rgb_covariance=self.rgb_covariance, eigval=self.eigval,
                        eigvec=self.eigvec, count=self.count)

    @classmethod
    def load(cls, path: str | pathlib.Path) -> Stats:
        with np.load(path) as data:
            return cls(data["mean_image"].astype(np.float32), data["rgb_covariance"], data["eigval"],
                       data["eigvec"], int(data["count"]))

    @classmethod
    def imagenet(cls, size: int = ops.PAPER_SIZE) -> Stats:
        """The widely used ImageNet values, for data sets without their own statistics."""
        eigval, eigvec = np.array(ops.IMAGENET_EIGVAL), np.array(ops.IMAGENET_EIGVEC)
        mean_image = np.broadcast_to(np.array(ops.IMAGENET_MEAN_RGB, np.float32), (size, size, 3)).copy()
        return cls(mean_image, eigvec @ np.diag(eigval) @ eigvec.T, eigval, eigvec, 0)


class StatsAccumulator:
    """Running sums (float64) from which `Stats` follow; partial sums merge, so shards can be summed separately."""

    def __init__(self, size: int = ops.PAPER_SIZE):
        self.image_sum = np.zeros((size, size, 3), np.float64)
        self.rgb_sum = np.zeros(3, np.float64)
        self.rgb_outer = np.zeros((3, 3), np.float64)
        self.images = 0
        self.pixels = 0

    def add(self, image: np.ndarray) -> None:
        """Add one uint8 (size, size, 3) image."""
        pixels = image.reshape(-1, 3).astype(np.float64) / 255.0
        self.image_sum += image
        self.rgb_sum += pixels.sum(axis=0)
        self.rgb_outer += pixels.T @ pixels
        self.images += 1
        self.pixels += len(pixels)

    def merge(self, other: StatsAccumulator) -> None:
        self.image_sum += other.image_sum
        self.rgb_sum += other.rgb_sum
        self.rgb_outer += other.rgb_outer
        self.images += other.images
        self.pixels += other.pixels

    def save(self, path: str | pathlib.Path) -> None:
        """Write the partial sums atomically, for a resumable `prepare`."""
        atomic.save_npz(path, image_sum=self.image_sum, rgb_sum=self.rgb_sum, rgb_outer=self.rgb_outer,
                        images=self.images, pixels=self.pixels)

    @classmethod
    def load(cls, path: str | pathlib.Path) -> StatsAccumulator:
        with np.load(path) as data:
            acc = cls(data["image_sum"].shape[0])
            acc.image_sum, acc.rgb_sum, acc.rgb_outer = data["image_sum"], data["rgb_sum"], data["rgb_outer"]
            acc.images, acc.pixels = int(data["images"]), int(data["pixels"])
        return acc

    def finalize(self) -> Stats:
        if self.images == 0:
            raise ValueError("no images were accumulated: cannot compute statistics of an empty training split")
        mean = self.rgb_sum / self.pixels
        covariance = self.rgb_outer / self.pixels - np.outer(mean, mean)
        eigval, eigvec = np.linalg.eigh(covariance)
        order = np.argsort(eigval)[::-1]
        return Stats((self.image_sum / self.images).astype(np.float32), covariance, eigval[order],
                     eigvec[:, order], self.images)
