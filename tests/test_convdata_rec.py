"""The recognizer's text-line data (tests/convdata.py rec_lines / rec_samples): upright single lines,
training and held-out sharing no photo, page half or word."""
from __future__ import annotations

import numpy as np

import convdata


def test_recognizer_splits_share_no_word_or_photo():
    assert not set(convdata.REC_WORDS["calibration"]) & set(convdata.REC_WORDS["heldout"])
    assert not set(convdata.SPLITS["calibration"][1]) & set(convdata.SPLITS["heldout"][1])


def test_recognizer_lines_are_single_wide_lines_with_text():
    for split in ("calibration", "heldout"):
        lines = convdata.rec_lines(split, 12)
        assert len(lines) == 12
        for line in lines:
            h, w = line.shape[:2]
            assert line.ndim == 3 and line.shape[2] == 3 and w >= 1.5 * h   # a line, not a page
            assert line.std() > 10   # ink on a background, not a blank margin
        assert not np.array_equal(lines[0], convdata.rec_lines(split, 12, seed=1)[0])
        again, sources = convdata.rec_lines_and_sources(split, 12)
        assert all(np.array_equal(a, b) for a, b in zip(lines, again)) and len(set(sources)) >= 3


def test_recognizer_samples_use_the_preset_height_and_padding():
    batch = convdata.rec_samples("heldout", 6)
    assert batch.shape == (6, 3, 48, 320) and batch.dtype == np.float32
    assert batch.min() >= -1.0 and batch.max() <= 1.0
    # fit_height: a line narrower than 320 at height 48 is padded on the right with mid-gray (~0.0)
    assert any(np.all(np.abs(b[:, :, -8:]) < 0.01) for b in batch)
