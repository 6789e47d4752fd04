"""Image transforms. ``ToTensor`` turns uint8 pixels into float32 in [0, 1], channel first."""

import numpy as np

from ..tensor import Tensor


def _to_float_chw(pixels, batched):
    """uint8 (H, W) or (H, W, C) images -> float32 (C, H, W) in [0, 1]; batched adds a leading N."""
    pixels = pixels.data if isinstance(pixels, Tensor) else np.asarray(pixels)
    spatial = pixels.ndim - batched
    if spatial == 2:
        pixels = np.expand_dims(pixels, -3)           # one channel
    elif spatial == 3:
        pixels = np.moveaxis(pixels, -1, -3)          # H x W x C -> C x H x W
    else:
        raise ValueError(f"ToTensor expects an H x W or H x W x C image, got shape {pixels.shape}")
    if pixels.dtype == np.uint8:
        return pixels.astype(np.float32) / np.float32(255)
    return pixels.astype(np.float32)


class ToTensor:
    """uint8 image (H x W or H x W x C) -> float32 tensor C x H x W with values in [0, 1]."""

    def __call__(self, pixels):
        return Tensor._make(_to_float_chw(pixels, batched=False), False, None)

    def apply_batch(self, pixels):
        """The same for a stack of N images at once (the DataLoader's fast path); returns an array."""
        return _to_float_chw(pixels, batched=True)

    def __repr__(self):
        return "ToTensor()"


class Normalize:
    """(x - mean) / std per channel, for C x H x W float tensors."""

    def __init__(self, mean, std):
        self.mean = np.asarray(mean, dtype=np.float32).reshape(-1, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(-1, 1, 1)
        if np.any(self.std == 0):
            raise ValueError("Normalize: std must not be 0")

    def __call__(self, image):
        return Tensor._make(self.apply_batch(image.data if isinstance(image, Tensor) else image), False, None)

    def apply_batch(self, images):
        return ((images - self.mean) / self.std).astype(np.float32)

    def __repr__(self):
        return f"Normalize(mean={self.mean.ravel().tolist()}, std={self.std.ravel().tolist()})"


class Compose:
    """Apply transforms one after the other."""

    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x

    def apply_batch(self, x):
        if not all(hasattr(t, "apply_batch") for t in self.transforms):
            return None
        x = x.data if isinstance(x, Tensor) else x
        for t in self.transforms:
            x = t.apply_batch(x)
        return x

    def __repr__(self):
        return "Compose(" + ", ".join(map(repr, self.transforms)) + ")"
