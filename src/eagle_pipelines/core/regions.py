"""SLICO superpixels as one integer label map per image.

Two backends: ``slico`` (scikit-image, the default: Lab colour, connectivity enforced) and ``opencv_slico`` (the
paper's own protocol: OpenCV's ximgproc SLICO on the image as ``cv2.imread`` gives it, BGR, no Lab conversion, no
connectivity enforcement; needs the ``opencv`` extra). ``superpixels`` picks one by name.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np
from skimage.segmentation import slic


@dataclass(frozen=True)
class RegionMap:
    """`labels` (H, W) int32 with values 0..n-1, and the SLIC parameters that made it."""

    labels: np.ndarray = field(repr=False)
    params: dict

    @property
    def n_regions(self) -> int:
        """Label ids 0..n-1; ``params["n_labels"]`` (OpenCV's own count, ``labels="opencv"``) also counts ids
        past the largest used one, which label no pixel (no-op regions, as the reference keeps them)."""
        return max(int(self.labels.max()) + 1, int(self.params.get("n_labels", 0)))

    def areas(self) -> np.ndarray:
        """Fraction of the image each region covers, (n,) summing to 1."""
        return np.bincount(self.labels.ravel(), minlength=self.n_regions) / self.labels.size

    def cumulative_area(self, order: np.ndarray) -> np.ndarray:
        """(n,) area fraction of each prefix of `order`; the last is exactly 1."""
        area = np.cumsum(self.areas()[np.asarray(order)])
        area[-1] = 1.0
        return area

    def masks(self, keep: np.ndarray) -> np.ndarray:
        """Pixel keep-masks (B, H, W) bool from region keep-indicators (B, n) bool."""
        keep = np.asarray(keep, dtype=bool)
        return keep[:, self.labels]


def slico(image: np.ndarray, n_segments: int = 64, compactness: float = 10.0, max_num_iter: int = 10,
          sigma: float = 0.0) -> RegionMap:
    """SLICO superpixels (scikit-image ``slic(..., slic_zero=True)``) of an (H, W, 3) image.

    The count is about `n_segments`; the real count depends on the image. Labels are renumbered 0..n-1 in
    raster order of first appearance, so the map is deterministic for a given image and parameters.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"superpixels need an (H, W, 3) image, got shape {image.shape}")
    raw = slic(image, n_segments=n_segments, compactness=compactness, max_num_iter=max_num_iter, sigma=sigma,
               slic_zero=True, start_label=0, channel_axis=-1, enforce_connectivity=True)
    params = {"method": "slico", "n_segments": n_segments, "compactness": compactness,
              "max_num_iter": max_num_iter, "sigma": sigma}
    return RegionMap(_raster_order(raw), params)


def _raster_order(raw: np.ndarray) -> np.ndarray:
    """`raw` labels renumbered 0..n-1 in raster order of first appearance (int32); ids that label no pixel
    vanish, so every id of the result labels at least one pixel."""
    values, first = np.unique(raw.ravel(), return_index=True)
    order = np.argsort(first)  # raster order of first appearance
    lookup = np.empty(int(values.max()) + 1, dtype=np.int32)
    lookup[values[order]] = np.arange(len(order), dtype=np.int32)
    return lookup[raw].astype(np.int32)


OPENCV_HINT = 'pip install "eagle_pipelines[opencv]"'


def _ximgproc():
    """OpenCV's contrib ``ximgproc`` module, or an ImportError saying how to install it."""
    try:
        import cv2
    except ImportError:
        raise ImportError(f"the opencv superpixel backend needs OpenCV with its contrib modules: "
                          f"{OPENCV_HINT}") from None
    if not hasattr(cv2, "ximgproc"):
        raise ImportError(f"OpenCV {cv2.__version__} has no ximgproc (the contrib modules); {OPENCV_HINT} "
                          f"(opencv-contrib-python-headless) instead of plain opencv-python")
    return cv2.ximgproc


def opencv_region_size(height: int, width: int, n_segments: int) -> int:
    """The reference's superpixel side: ``int(sqrt(H*W / n))`` pixels."""
    return int((height * width / n_segments) ** 0.5)


OPENCV_LABELS = ("renumbered", "opencv")


def opencv_slico(image_rgb: np.ndarray, n_segments: int = 64, ruler: float = 20.0,
                 num_iterations: int = 20, labels: str = "renumbered") -> RegionMap:
    """SLICO superpixels exactly as the paper's scripts make them, from an (H, W, 3) uint8 RGB image.

    The scripts read the file with ``cv2.imread`` (BGR) and run ``cv2.ximgproc.createSuperpixelSLIC(image,
    algorithm=SLICO, region_size=int(sqrt(H*W/n)), ruler=20)`` then ``iterate(20)`` on it, with no Lab
    conversion and no ``enforceLabelConnectivity`` (a region may be in several pieces). The same steps are run
    here on the channel-reversed array. The count is about `n_segments` and depends on the image. `labels`:
    ``renumbered`` (ours) renumbers OpenCV's ids 0..n-1 in raster order of first appearance, so ids that label no
    pixel never appear; ``opencv`` keeps OpenCV's ids and its count ``getNumberOfSuperpixels()``, as the reference's
    ``SubRegionDivision`` does (utils.py: one region per id ``range(number_slic)``), so an id that labels no pixel
    stays a region that changes nothing when kept or removed (it still decides ties of the search).
    """
    if labels not in OPENCV_LABELS:
        raise ValueError(f"superpixels.opencv_labels must be one of {OPENCV_LABELS}, got {labels!r}")
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise ValueError(f"superpixels need an (H, W, 3) image, got shape {image_rgb.shape}")
    if image_rgb.dtype != np.uint8:
        raise ValueError(f"opencv_slico needs a uint8 RGB image as a file decodes to, got {image_rgb.dtype}; "
                         f"convert it first (eagle_pipelines.core.images.as_rgb)")
    if isinstance(n_segments, bool) or not isinstance(n_segments, (int, np.integer)) or n_segments < 1:
        raise ValueError(f"n_segments must be an integer >= 1, got {n_segments!r}")
    if isinstance(num_iterations, bool) or not isinstance(num_iterations, (int, np.integer)) or num_iterations < 1:
        raise ValueError(f"num_iterations must be an integer >= 1, got {num_iterations!r}")
    if not ruler > 0:
        raise ValueError(f"ruler must be > 0, got {ruler!r}")
    height, width = image_rgb.shape[:2]
    region_size = opencv_region_size(height, width, int(n_segments))
    if region_size < 1:
        raise ValueError(f"n_segments={n_segments} is too many for a {width}x{height} image: the region side "
                         f"int(sqrt(H*W/n)) would be 0 px; at most {height * width} segments")
    ximgproc = _ximgproc()
    bgr = np.ascontiguousarray(image_rgb[..., ::-1])  # what cv2.imread returns for the same file
    slic = ximgproc.createSuperpixelSLIC(bgr, algorithm=ximgproc.SLICO, region_size=region_size,
                                         ruler=float(ruler))
    slic.iterate(int(num_iterations))
    params = {"method": "opencv_slico", "n_segments": int(n_segments), "region_size": region_size,
              "ruler": float(ruler), "num_iterations": int(num_iterations), "channels": "bgr",
              "enforce_connectivity": False}
    if labels == "opencv":
        params.update(labels="opencv", n_labels=int(slic.getNumberOfSuperpixels()))
        return RegionMap(slic.getLabels().astype(np.int32), params)
    return RegionMap(_raster_order(slic.getLabels()), params)


BACKENDS = {"skimage": slico, "opencv": opencv_slico}


def superpixels(image: np.ndarray, backend: str = "skimage", **params) -> RegionMap:
    """Superpixels of an (H, W, 3) RGB image by backend name: ``skimage`` (``slico``, the default) or
    ``opencv`` (``opencv_slico``, the paper's protocol); `params` go to that function."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown superpixel backend {backend!r}; choose one of {', '.join(map(repr, BACKENDS))}")
    return BACKENDS[backend](image, **params)


def params_hash(params: dict) -> str:
    """A short stable hash of a parameter dictionary (cache keys)."""
    return hashlib.sha1(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:10]


# -- spatio-temporal regions of a clip (docs/video.md) ------------------------------------------------------------
# A clip's label map is (N, H, W) int32 over all its frames; a region is one piece of one frame, and the ids run
# frame-major (every region of frame 0, then frame 1...). ``RegionMap.masks``, ``areas`` and ``cumulative_area``
# work on it unchanged, so ``RegionScorer`` turns region keep-indicators into (B, N, H, W) pixel keep-masks.


def grid_edges(size: int, parts: int) -> np.ndarray:
    """The reference's cell edges along one side: ``np.linspace(0, size, parts + 1, dtype=int)``."""
    return np.linspace(0, size, parts + 1, dtype=int)


def frame_grid(n_frames: int, height: int, width: int, rows: int = 5, cols: int = 5) -> RegionMap:
    """The reference's spatio-temporal regions: every frame cut into `rows` × `cols` cells (edges as
    ``grid_edges``); region id = frame · rows·cols + row · cols + col. The reference uses 5 × 5."""
    for name, value in (("n_frames", n_frames), ("rows", rows), ("cols", cols)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if rows > height or cols > width:
        raise ValueError(f"a {rows}x{cols} grid does not fit {width}x{height} frames (a cell per pixel at most)")
    r = np.searchsorted(grid_edges(height, rows), np.arange(height), side="right") - 1
    c = np.searchsorted(grid_edges(width, cols), np.arange(width), side="right") - 1
    cell = (r[:, None] * cols + c[None, :]).astype(np.int32)
    labels = cell[None] + (np.arange(n_frames, dtype=np.int32) * rows * cols)[:, None, None]
    return RegionMap(labels, {"method": "frame_grid", "rows": int(rows), "cols": int(cols),
                              "n_frames": int(n_frames)})


def frame_superpixels(frames: np.ndarray, n_segments: int = 25, backend: str = "skimage", **params) -> RegionMap:
    """SLICO per frame of (N, H, W, 3) frames (``superpixels`` on each, about `n_segments` per frame), the ids of
    frame k following those of frame k−1. ``params["frame_regions"]`` lists each frame's count."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frame superpixels need (N, H, W, 3) frames, got shape {frames.shape}")
    labels, counts, offset, made = [], [], 0, None
    for frame in frames:
        made = superpixels(frame, backend=backend, n_segments=n_segments, **params)
        labels.append(made.labels + offset)
        counts.append(made.n_regions)
        offset += made.n_regions
    return RegionMap(np.stack(labels).astype(np.int32),
                     {**made.params, "per_frame": True, "n_frames": len(frames), "frame_regions": counts})


def clip_regions(frames: np.ndarray, method: str = "grid", rows: int = 5, cols: int = 5, n_segments: int = 25,
                 **params) -> RegionMap:
    """Spatio-temporal regions of (N, H, W, 3) frames by name: ``grid`` (``frame_grid``, rows × cols per frame,
    the reference's) or ``slico`` (``frame_superpixels``, about `n_segments` per frame)."""
    frames = np.asarray(frames)
    if frames.ndim != 4:
        raise ValueError(f"clip regions need (N, H, W, 3) frames, got shape {frames.shape}")
    if method == "grid":
        return frame_grid(frames.shape[0], frames.shape[1], frames.shape[2], rows, cols)
    if method == "slico":
        return frame_superpixels(frames, n_segments=n_segments, **params)
    raise ValueError(f"unknown clip region method {method!r}; choose 'grid' or 'slico'")


def region_frames(regions: RegionMap) -> np.ndarray:
    """(n,) the frame each region of an (N, H, W) label map lies in."""
    if regions.labels.ndim != 3:
        raise ValueError(f"a clip's label map is (N, H, W); got shape {regions.labels.shape}")
    frame = np.zeros(regions.n_regions, dtype=np.int64)
    for k, plane in enumerate(regions.labels):
        frame[np.unique(plane)] = k
    return frame
