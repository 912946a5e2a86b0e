import numpy as np
import pytest

from koemorph import grid


def test_ten_minutes_is_exactly_18000_frames_at_30fps():
    assert grid.num_frames(600.0, 30) == 18000
    assert grid.num_frames(600.0, 60) == 36000
    assert grid.num_frames_for_samples(600 * grid.SAMPLE_RATE, 30) == 18000


def test_frame_times_have_no_drift_within_half_a_sample():
    n = grid.num_frames(600.0, 30)
    centers = grid.frame_centers(n, 30)
    exact = np.arange(n) * grid.SAMPLE_RATE / 30  # fractional sample position of frame k
    assert np.abs(centers - exact).max() <= 0.5
    assert centers[-1] == round(17999 * 16000 / 30)
    # the original's integer hop (533) would be this far off at the last frame:
    assert exact[-1] - 17999 * 533 > 5000  # samples (~0.37 s)
    assert np.allclose(grid.frame_times(n, 30)[[0, 1, 17999]], [0.0, 1 / 30, 17999 / 30])


@pytest.mark.parametrize("fps", [30, 60])
def test_frame_count_covers_every_sample(fps):
    for n_samples in (1, 532, 533, 534, 16000, 16001, 12345):
        n = grid.num_frames_for_samples(n_samples, fps)
        # last frame starts inside the audio, the next one would not
        assert (n - 1) / fps < n_samples / grid.SAMPLE_RATE <= n / fps


def test_nominal_hop_and_fps_checks():
    assert grid.nominal_hop(30) == 533
    assert grid.nominal_hop(60) == 267
    with pytest.raises(ValueError, match="unsupported frame rate"):
        grid.check_fps(25)
    assert grid.num_frames(0.1, 30) == 3  # float noise (0.1*30 = 3.0000000000000004) is not a frame
