"""The test environment holds one OpenCV: the product's ``opencv-python-headless`` (the reference
``vos-benchmark`` is installed with ``--no-deps``, so its ``opencv-python`` does not overwrite
``cv2``)."""

from importlib import metadata


def _installed(name: str) -> bool:
    try:
        metadata.version(name)
    except metadata.PackageNotFoundError:
        return False
    return True


def test_one_opencv_distribution():
    found = [n for n in ("opencv-python", "opencv-python-headless", "opencv-contrib-python",
                         "opencv-contrib-python-headless") if _installed(n)]
    assert found == ["opencv-python-headless"], f"OpenCV distributions installed: {found}"


def test_reference_evaluator_imports_with_it():
    import cv2
    import vos_benchmark.benchmark  # noqa: F401

    assert cv2.dilate is not None
