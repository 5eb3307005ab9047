"""The three classic uses of ``tf.image.extract_patches``, through patchkit and TensorFlow side by side.

1. non-overlapping VALID: a (1, 256, 256, 3) image, 16x16 patches, stride 16;
2. overlapping SAME: the same image, 16x16 patches, stride 8;
3. a batch of 32 such images processed in chunks of 8 and concatenated.

For each: the output shapes, whether the two agree bit for bit, the best time of a few runs, and the
peak memory each needed (RSS growth). ``make demo`` runs this until the notebook templates replace it.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_extract import PeakRSS, best_time, format_size  # noqa: E402

import patchkit  # noqa: E402
from patchkit.testing import assert_patches_equal  # noqa: E402

USES = [
    ("1. non-overlapping VALID", 1, dict(sizes=16, strides=16, padding="VALID"), None),
    ("2. overlapping SAME", 1, dict(sizes=16, strides=8, padding="SAME"), None),
    ("3. batch of 32 in chunks of 8", 32, dict(sizes=16, strides=8, padding="SAME"), 8),
]


def run_use(extract, images: np.ndarray, kwargs: dict, chunk: int | None) -> np.ndarray:
    """``extract`` over ``images``, whole or in batch chunks of ``chunk`` images, concatenated."""
    if chunk is None:
        return np.asarray(extract(images, **kwargs))
    return np.concatenate([np.asarray(extract(images[i : i + chunk], **kwargs)) for i in range(0, len(images), chunk)])


def quiet_tensorflow():
    """Import TensorFlow and start its runtime with C++ log lines (CUDA probing) sent to /dev/null."""
    devnull, saved = os.open(os.devnull, os.O_WRONLY), os.dup(2)
    os.dup2(devnull, 2)
    try:
        import tensorflow as tf

        tf.constant(0)
    finally:
        os.dup2(saved, 2)
        os.close(devnull)
        os.close(saved)


def tensorflow_extract(images, sizes, strides, padding):
    """``tf.image.extract_patches`` with the scalar arguments spelled out as TensorFlow wants them."""
    import tensorflow as tf

    return tf.image.extract_patches(images, [1, sizes, sizes, 1], [1, strides, strides, 1], [1, 1, 1, 1], padding)


def measure(extract, images, kwargs, chunk, repeats: int):
    """Result, best seconds and peak RSS growth of one contender."""
    with PeakRSS() as meter:
        result = run_use(extract, images, kwargs, chunk)
        seconds = best_time(lambda: run_use(extract, images, kwargs, chunk), repeats)
    return result, seconds, meter.growth


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per contender (best is shown)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    quiet_tensorflow()
    print(f"patchkit {patchkit.__version__}: the classic uses of tf.image.extract_patches\n")
    header = f"{'use':32} {'output shape':>22} {'equal':>6} {'TF time':>9} {'pk time':>9} {'speed-up':>8} {'TF peak':>10} {'pk peak':>10}"
    print(header)
    print("-" * len(header))
    all_equal = True
    for label, batch, kwargs, chunk in USES:
        images = rng.random((batch, 256, 256, 3), dtype=np.float32)
        reference, tf_seconds, tf_peak = measure(tensorflow_extract, images, kwargs, chunk, args.repeats)
        ours, pk_seconds, pk_peak = measure(patchkit.extract_patches, images, kwargs, chunk, args.repeats)
        try:
            assert_patches_equal(ours, reference)
            equal = True
        except AssertionError:
            equal = all_equal = False
        print(
            f"{label:32} {str(ours.shape):>22} {'yes' if equal else 'NO':>6} {tf_seconds * 1e3:7.1f}ms "
            f"{pk_seconds * 1e3:7.1f}ms {tf_seconds / pk_seconds:7.1f}x {format_size(tf_peak):>10} {format_size(pk_peak):>10}"
        )
    print("\npeak = RSS growth while the contender ran; TF's includes its first-call set-up.")
    print("every result equal to TensorFlow's, bit for bit" if all_equal else "MISMATCH: see the table above")
    return 0 if all_equal else 1


if __name__ == "__main__":
    raise SystemExit(main())
