import contextlib
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vtok.codec import (
    ImageTokens,
    RawCoder,
    VtokFile,
    VtokFormatError,
    bitpack,
    from_vtok,
    read_vtok,
    to_vtok,
    write_vtok,
)
from vtok.models import create_tokenizer

GOLDEN_V1 = Path(__file__).parent / "golden-v1.vtok"
GOLDEN = Path(__file__).parent / "golden-v2.vtok"


@pytest.mark.parametrize("k", [1, 2, 3, 7, 128, 240, 1000, 4096, 65536, 1 << 20])
def test_bit_packing_round_trips_in_exactly_ceil_log2_k_bits(k):
    values = np.random.default_rng(k).integers(0, k, size=1001)
    data = bitpack.pack(values, k)
    bits = max(1, int(np.ceil(np.log2(k))))
    assert len(data) == -(-1001 * bits // 8) == bitpack.packed_size(1001, k)
    assert np.array_equal(bitpack.unpack(data, 1001, k), values)


def test_bit_packing_known_bytes_and_bad_payloads():
    assert bitpack.pack(np.array([1, 2, 3]), 4) == bytes([0b01101100])
    assert bitpack.pack(np.array([5]), 8) == bytes([0b10100000])
    with pytest.raises(ValueError, match="need 1 bytes, got 2"):
        bitpack.unpack(b"\x00\x00", 3, 4)
    with pytest.raises(ValueError, match="padding bits"):
        bitpack.unpack(bytes([0b01101101]), 3, 4)
    with pytest.raises(ValueError, match="outside the codebook of 3"):
        bitpack.unpack(bytes([0b11000000]), 1, 3)
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 4\)"):
        bitpack.pack(np.array([4]), 4)


def _golden_file(version: int = 2) -> VtokFile:
    coder = RawCoder(5)
    named = version == 2
    return VtokFile("0123456789abcdef", 5, "raw", 1, [
        ImageTokens((3, 4), (2,), coder.encode(np.array([1, 4])), name="first" if named else ""),
        ImageTokens((10, 7), (1, 3), coder.encode(np.array([0, 2, 3])), alpha=True),
    ], version=version)


def test_golden_file_pins_the_layout():
    data = _golden_file().to_bytes()
    assert data == GOLDEN.read_bytes()
    assert data[:8] == b"\x89VTOK\r\n\x1a"
    assert struct.unpack("<HBB", data[8:12]) == (2, 0, 0)
    assert data[12:20].hex() == "0123456789abcdef"
    assert data[20:28] == bytes(8)  # no prior: raw coding
    assert struct.unpack("<IBI", data[28:37]) == (5, 1, 2)
    assert struct.unpack("<IIBB", data[37:47]) == (3, 4, 0, 5)  # a still: no frame fields
    assert data[47:52] == b"first"
    assert struct.unpack("<BIII", data[52:65]) == (1, 2, 2, 1)
    assert struct.unpack("<I", data[-4:])[0] == zlib.crc32(data[:-4])
    assert VtokFile.from_bytes(data) == _golden_file()


def test_version_1_files_still_read():
    back = VtokFile.from_bytes(GOLDEN_V1.read_bytes())
    assert back == _golden_file(version=1)
    assert (back.prior_id, [im.name for im in back.images]) == (None, ["", ""])
    assert VtokFile.from_bytes(back.to_bytes()).version == 2  # written as version 2


def test_names_frames_and_priors_are_checked_on_write():
    good = _golden_file()
    for name in ("a/b", "..", "tab\there", "x" * 256, "\\server", "C:x", "NUL", "com1.txt",
                 "a\u202eb"):
        good.images[0].name = name
        with pytest.raises(ValueError, match="image name"):
            good.to_bytes()
    good.images[0].name = "é" * 127  # 254 bytes of UTF-8
    assert VtokFile.from_bytes(good.to_bytes()).images[0].name == "é" * 127
    good.images[0].frames = 3
    with pytest.raises(ValueError, match="needs a frame rate above 0"):
        good.to_bytes()
    good.images[0].fps = (30000, 1001)
    assert VtokFile.from_bytes(good.to_bytes()).images[0].fps == (30000, 1001)
    good.prior_id = "00000000000000ff"
    with pytest.raises(ValueError, match="a raw-coded file has no prior id"):
        good.to_bytes()
    good.coding, good.prior_id = "entropy", None
    with pytest.raises(ValueError, match="needs its prior's id"):
        good.to_bytes()
    with pytest.raises(ValueError, match="holds 1 to 1024 images"):
        VtokFile("0123456789abcdef", 5, "raw", 1, [good.images[0]] * 1025).to_bytes()


@pytest.mark.parametrize("preset,size", [("test-conv2d", (37, 50)), ("test-titok", (32, 32))])
def test_tokens_file_tokens_is_exact(tmp_path, preset, size):
    tok = create_tokenizer(preset).eval()
    batches = [tok.encode(torch.rand(3, 3, *size)), tok.encode(torch.rand(1, 3, 20, 24))]
    if preset == "test-titok":
        batches.append(tok.encode(torch.rand(2, 3, *size), num_tokens=3))
    vfile = to_vtok(batches, tok.codebook_size, RawCoder(tok.codebook_size), alpha=[0, 1, 0, 0]
                    + [0] * (2 if preset == "test-titok" else 0))
    write_vtok(tmp_path / "a.vtok", vfile)
    back = from_vtok(read_vtok(tmp_path / "a.vtok"), RawCoder(tok.codebook_size),
                     tok.tokenizer_id)
    flat = [(b, i) for b in batches for i in range(b.indices.shape[0])]
    assert len(back) == len(flat)
    for got, (batch, i) in zip(back, flat):
        assert torch.equal(got.indices[0], batch.indices[i])
        assert (got.token_shape, got.image_size, got.num_tokens) == (
            batch.token_shape, batch.image_size, batch.num_tokens)
        assert torch.allclose(tok.decode(got), tok.decode(batch)[i : i + 1], atol=1e-5)
    assert [im.alpha for im in read_vtok(tmp_path / "a.vtok").images][:2] == [False, True]


def test_frame_count_and_rate_travel_with_the_tokens(tmp_path):
    import dataclasses

    tok = create_tokenizer("test-conv2d").eval()
    still = tok.encode(torch.rand(1, 3, 16, 16))
    clip = dataclasses.replace(tok.encode(torch.rand(1, 3, 16, 16)), frames=9, fps=(30000, 1001))
    write_vtok(tmp_path / "a.vtok", to_vtok([still, clip], 16, RawCoder(16)))
    back = from_vtok(read_vtok(tmp_path / "a.vtok"), RawCoder(16), tok.tokenizer_id)
    assert [(t.frames, t.fps) for t in back] == [(1, (0, 1)), (9, (30000, 1001))]
    # an image tokenizer could not have made a clip's tokens: refused before decoding
    with pytest.raises(VtokFormatError, match="image 1: a conv2d tokenizer codes still images"):
        from_vtok(read_vtok(tmp_path / "a.vtok"), RawCoder(16), tok)


@pytest.mark.parametrize("preset,size", [("test-conv2d", (37, 50)), ("test-titok", (32, 32)),
                                         ("test-conv2d", (8, 100))])
def test_token_shape_is_what_encode_gives(preset, size):
    tok = create_tokenizer(preset).eval()
    tokens = tok.encode(torch.rand(1, 3, *size))
    assert tok.token_shape(size) == tokens.token_shape
    assert tokens.indices.shape[1:] == tokens.token_shape  # one index per token here
    assert tok.indices_per_token == 1
    if tok.variable_length:
        assert tok.token_shape(size, 3) == tok.encode(torch.rand(1, 3, *size), 3).token_shape
        with pytest.raises(ValueError, match=r"gives 1 to 8 tokens in a sequence, not \(9,\)"):
            tok.token_shape(size, 9)
    else:
        with pytest.raises(ValueError, match="gives exactly"):
            tok.token_shape(size, tokens.num_tokens + 1)


def test_another_tokenizers_file_is_refused_naming_both(tmp_path):
    tok = create_tokenizer("test-conv2d").eval()
    vfile = to_vtok([tok.encode(torch.rand(1, 3, 16, 16))], 16, RawCoder(16))
    with pytest.raises(ValueError, match=f"made by tokenizer {tok.tokenizer_id}; "
                                         f"the tokenizer given is 00000000000000ff"):
        from_vtok(vfile, RawCoder(16), "00000000000000ff")


def test_existing_output_is_kept_without_force(tmp_path):
    path = tmp_path / "a.vtok"
    path.write_bytes(b"keep")
    with pytest.raises(FileExistsError, match="use --force"):
        write_vtok(path, _golden_file())
    assert path.read_bytes() == b"keep"
    write_vtok(path, _golden_file(), force=True)
    assert path.read_bytes() == GOLDEN.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.vtok"]


def test_every_truncation_and_every_bit_flip_is_a_format_error():
    data = GOLDEN.read_bytes()
    for n in range(len(data)):
        with pytest.raises(VtokFormatError):
            VtokFile.from_bytes(data[:n])
    for i in range(len(data) * 8):
        flipped = bytearray(data)
        flipped[i // 8] ^= 1 << (i % 8)
        with pytest.raises(VtokFormatError):
            VtokFile.from_bytes(bytes(flipped))


def _with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


@pytest.mark.parametrize("patch,message", [
    ((52, struct.pack("<I", 0)), "frame count must be in"),
    ((56, struct.pack("<I", 0)), "needs a frame rate above 0"),
    ((60, struct.pack("<I", 0)), "frame rate must be a fraction"),
])
def test_hostile_frame_fields_are_refused(patch, message):
    clip = _golden_file()
    clip.images[0].frames, clip.images[0].fps = 3, (30, 1)
    body = bytearray(clip.to_bytes()[:-4])
    assert struct.unpack("<IIBB", body[37:47]) == (3, 4, 2, 5)  # the frame fields follow
    offset, value = patch
    body[offset : offset + len(value)] = value
    with pytest.raises(VtokFormatError, match=message):
        VtokFile.from_bytes(_with_crc(bytes(body)))


@pytest.mark.parametrize("patch,message", [
    ((8, struct.pack("<H", 3)), "format version 3 is not supported"),
    ((10, b"\x07"), "unknown coding method 7"),
    ((11, b"\x01"), "reserved header flags"),
    ((20, b"\x01"), "a raw-coded file has no prior id"),
    ((33, struct.pack("<I", 0xFFFFFFFF)), "image count 4294967295 does not fit"),
    ((28, struct.pack("<I", 0)), "codebook size must be in"),
    ((37, struct.pack("<I", 1 << 20)), "outside 1..65536 pixels"),
    ((45, b"\x04"), "unknown flags"),
    ((46, b"\xff"), "image 0 name needs 255 bytes"),
    ((47, b"/"), "path separator"),
    ((47, b"\xff"), "can't decode"),
    ((52, b"\x04"), "token rank 4"),
    ((53, struct.pack("<I", 0xFFFFFFFF)), "exceed"),
    ((57, struct.pack("<I", 3)), "3 tokens kept but the token shape"),
    ((61, struct.pack("<I", 0x7FFFFFFF)), "payload needs 2147483647 bytes"),
])
def test_hostile_headers_with_a_valid_crc_are_refused(patch, message):
    body = bytearray(GOLDEN.read_bytes()[:-4])
    offset, value = patch
    body[offset : offset + len(value)] = value
    with pytest.raises(VtokFormatError, match=message):
        VtokFile.from_bytes(_with_crc(bytes(body)))


def test_bad_payloads_and_unreadable_files_name_the_problem(tmp_path):
    body = bytearray(GOLDEN.read_bytes()[:-4])
    body[-1] |= 1  # a padding bit of the last payload
    vfile = VtokFile.from_bytes(_with_crc(bytes(body)))
    with pytest.raises(VtokFormatError, match="image 1: bad payload .padding bits"):
        from_vtok(vfile, RawCoder(5))
    (tmp_path / "empty.vtok").write_bytes(b"")
    with pytest.raises(VtokFormatError, match="empty.vtok: the file is empty"):
        read_vtok(tmp_path / "empty.vtok")
    with pytest.raises(VtokFormatError, match="nothing.vtok: cannot read"):
        read_vtok(tmp_path / "nothing.vtok")
    (tmp_path / "text.vtok").write_text("hello")
    with pytest.raises(VtokFormatError, match="text.vtok: not a .vtok file"):
        read_vtok(tmp_path / "text.vtok")


def _parse_or_format_error(data: bytes) -> None:
    try:
        vfile = VtokFile.from_bytes(data)
    except VtokFormatError:
        return
    assert VtokFile.from_bytes(vfile.to_bytes()) == vfile  # what parses is consistent
    for image in vfile.images:
        with contextlib.suppress(ValueError):
            RawCoder(vfile.codebook_size).decode(image.payload, vfile.shape(image))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(data):
    _parse_or_format_error(data)
    _parse_or_format_error(b"\x89VTOK\r\n\x1a" + data)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 60), st.integers(0, 255)), min_size=1, max_size=6))
def test_fuzz_edits_behind_a_valid_crc(edits):
    body = bytearray(GOLDEN.read_bytes()[:-4])
    for offset, value in edits:
        body[offset % len(body)] = value
    _parse_or_format_error(_with_crc(bytes(body)))
