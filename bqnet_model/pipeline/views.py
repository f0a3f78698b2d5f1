"""Turned copies of a map for test-time augmentation (``inference.tta_rotations``).

Only turns about the vertical axis: the sentences' relations ("left of", "behind") are taken from
a viewpoint in the room, not from the map's axes, so they survive a turn; a mirror would swap left
and right, so none is used.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["rotation_z", "turn_about_z"]


def rotation_z(angle: float) -> np.ndarray:
    """(3, 3) rotation by ``angle`` radians about +z (points turn as ``xyz @ R.T``)."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def turn_about_z(xyz: np.ndarray | torch.Tensor, angle: float) -> np.ndarray | torch.Tensor:
    """Points turned by ``angle`` about the vertical axis through the centre of their bounding box;
    a torch tensor stays one (same device and dtype), anything else becomes a numpy array."""
    if isinstance(xyz, torch.Tensor):
        rot = torch.as_tensor(rotation_z(angle), dtype=xyz.dtype, device=xyz.device)
        centre = (xyz.amin(0) + xyz.amax(0)) * 0.5
        return ((xyz - centre) @ rot.T + centre).contiguous()
    xyz = np.asarray(xyz)
    centre = (xyz.min(axis=0) + xyz.max(axis=0)) * 0.5
    return ((xyz - centre) @ rotation_z(angle).T.astype(xyz.dtype) + centre).astype(xyz.dtype, copy=False)
