"""vtok.data.qrc reads Qt resource bundles built here: plain and zlib entries, nested folders,
both node sizes, and refuses damaged bundles with ResourceError naming the file."""

import struct
import zlib

import pytest

from vtok.data.qrc import COMPRESSED, DIRECTORY, ResourceBundle, ResourceError


def build(tree: dict, version: int = 2, compress: tuple[str, ...] = ()) -> bytes:
    """A bundle of `tree` ({name: bytes or sub-dict}), nodes breadth-first as rcc lays them."""
    names, data, nodes = bytearray(), bytearray(), []

    def name_offset(name: str) -> int:
        at = len(names)
        encoded = name.encode("utf-16-be")
        names.extend(struct.pack(">HI", len(name), 0) + encoded)
        return at

    queue = [("", "", tree)]  # (name, path, content) in node order
    nodes_out = []
    while queue:
        name, path, content = queue.pop(0)
        nodes_out.append((name, path, content))
        if isinstance(content, dict):
            queue += [(k, f"{path}/{k}".lstrip("/"), v) for k, v in sorted(content.items())]
    index = {path: i for i, (_, path, _) in enumerate(nodes_out)}
    for name, path, content in nodes_out:
        offset = name_offset(name) if path else 0
        if isinstance(content, dict):
            children = sorted(content)
            first = index[f"{path}/{children[0]}".lstrip("/")] if children else 0
            node = struct.pack(">IHII", offset, DIRECTORY, len(children), first)
        else:
            flags, payload = 0, content
            if path in compress:
                flags, payload = COMPRESSED, struct.pack(">I", len(content)) + zlib.compress(
                    content)
            node = struct.pack(">IHHHI", offset, flags, 0, 0, len(data))
            data.extend(struct.pack(">I", len(payload)) + payload)
        nodes.append(node + (bytes(8) if version >= 2 else b""))
    header = 24 if version == 3 else 20
    tree_at = header
    data_at = tree_at + sum(map(len, nodes))
    names_at = data_at + len(data)
    head = b"qres" + struct.pack(">IIII", version, tree_at, data_at, names_at)
    head += struct.pack(">I", 0) if version == 3 else b""
    return head + b"".join(nodes) + bytes(data) + bytes(names)


TREE = {"images": {"cat.jpg": b"\xff\xd8 a cat" * 50, "sea": {"wave.png": b"png bytes"}},
        "readme.txt": b"hello"}


@pytest.mark.parametrize("version", [1, 2, 3])
def test_plain_and_compressed_entries_read_back_exactly(version):
    bundle = ResourceBundle(build(TREE, version, compress=("images/cat.jpg",)))
    assert bundle.names() == ["images/cat.jpg", "images/sea/wave.png", "readme.txt"]
    assert bundle.read("images/cat.jpg") == TREE["images"]["cat.jpg"]
    assert bundle.read("images/sea/wave.png") == b"png bytes"
    assert dict(bundle.items())["readme.txt"] == b"hello"


def test_damaged_bundles_are_refused_naming_the_problem(tmp_path):
    good = build(TREE, 2, compress=("images/cat.jpg",))
    with pytest.raises(ResourceError, match="no 'qres' magic"):
        ResourceBundle(b"PK" + good[2:], "x.rcc")
    with pytest.raises(ResourceError, match="version 9 is not supported"):
        ResourceBundle(good[:4] + struct.pack(">I", 9) + good[8:])
    with pytest.raises(ResourceError, match="lies outside"):
        ResourceBundle(good[:60])
    with pytest.raises(ResourceError, match="no file 'nope'"):
        ResourceBundle(good).read("nope")
    # the compressed entry's zlib stream damaged, and its declared length changed
    bundle = ResourceBundle(good)
    flags, offset = bundle._files["images/cat.jpg"]
    at = bundle.payloads + offset + 8
    broken = good[:at + 4] + bytes(8) + good[at + 12 :]
    with pytest.raises(ResourceError, match="images/cat.jpg: corrupt compressed data"):
        ResourceBundle(broken).read("images/cat.jpg")
    lying = good[: at - 4] + struct.pack(">I", 10) + good[at:]
    with pytest.raises(ResourceError, match="decompressed to 11 bytes, its header says 10"):
        ResourceBundle(lying).read("images/cat.jpg")
    (tmp_path / "a.rcc").write_bytes(good[:30])
    with pytest.raises(ResourceError, match="a.rcc: "):
        ResourceBundle.open(tmp_path / "a.rcc")
    with pytest.raises(ResourceError, match="nothing.rcc: cannot read"):
        ResourceBundle.open(tmp_path / "nothing.rcc")


def test_a_node_that_points_back_is_refused():
    data = bytearray(build({"a": {"b": b"x"}}, 2))
    # the directory "a" (node 1) claims its child is node 0, the root: a loop
    tree_at = struct.unpack(">I", data[8:12])[0]
    struct.pack_into(">I", data, tree_at + 22 + 10, 0)
    with pytest.raises(ResourceError, match="comes before it"):
        ResourceBundle(bytes(data))
