import pytest


@pytest.fixture
def decoded_pts(monkeypatch):
    """The presentation times of every frame vtok.data.video decodes from now on."""
    video = pytest.importorskip("vtok.data.video")
    decoded = []
    original = video._decoded_frames

    def counting(container, stream):
        for frame in original(container, stream):
            decoded.append(frame.pts)
            yield frame

    monkeypatch.setattr(video, "_decoded_frames", counting)
    return decoded
