"""The `vtok` command lines of README.md's shell blocks work as written.

The coding commands (encode, info, decode) run for real in a temporary folder holding the
files they name. Training and benchmark commands would run for hours or need the user's data:
their options are checked by `--print_config`, which parses and validates every option and
then stops. The rest (installing, fetching, a prior for the user's own model) is named in
NOT_RUN with the reason, so a command added to the README is either tested or listed here.
"""

import re
import shlex
from pathlib import Path

import pytest
import torch

from vtok.cli import main
from vtok.eval.codecs import to_pil
from vtok.models import create_tokenizer

README = Path(__file__).parents[1] / "README.md"
NOT_RUN = {
    "vtok data prepare": "fetches packages (make test runs it)",
    "vtok prior": "needs a trained model of the user's and their photos",
    "vtok convert": "needs a released checkpoint (tests/models/published/test_convert.py "
                    "converts reduced ones)",
    "vtok tokenize -i /data/": "needs the user's dataset",
    "vtok eval": "scores full-size tokenizers for minutes (tests/eval/test_eval_cmd.py runs it "
                 "on tiny ones)",
}


def shell_commands() -> list[list[str]]:
    """Each command of the README's plain (shell) blocks, continuation lines joined and
    comments dropped; `[--json]` gives the command without and with the option."""
    blocks, current, lang = [], None, None
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            if current is None:
                current, lang = [], line[3:].strip()
            else:
                if not lang:
                    blocks.append(current)
                current = None
        elif current is not None:
            current.append(line)
    commands = []
    for block in blocks:
        for text in re.sub(r"\\\n\s*", " ", "\n".join(block)).splitlines():
            words = shlex.split(text, comments=True)
            if words and words[0] in ("vtok", "torchrun"):
                if "[--json]" in words:
                    words.remove("[--json]")
                    commands.append([*words, "--json"])
                commands.append(words)
    return commands


COMMANDS = shell_commands()


def test_the_readme_shows_vtok_commands():
    kinds = {c[1] for c in COMMANDS if c[0] == "vtok"}
    assert {"encode", "decode", "info", "train"} <= kinds


def _vtok_args(words: list[str]) -> list[str]:
    """The vtok arguments of a `vtok ...` or `torchrun ... -m vtok ...` command."""
    if words[0] == "torchrun":
        return words[words.index("vtok") + 1:]
    return words[1:]


LONG = [c for c in COMMANDS if _vtok_args(c)[0] in ("train", "reduce-bench")]


def test_long_commands_parse_as_written(tmp_path, monkeypatch, capsys):
    """In order, in one folder: `... --print_config > t.yaml` writes the file a later
    `--config t.yaml` reads."""
    monkeypatch.chdir(tmp_path)
    assert len(LONG) >= 5
    for words in LONG:
        args, target = _vtok_args(words), None
        if ">" in args:
            args, target = args[: args.index(">")], args[args.index(">") + 1]
        if "--print_config" not in args:
            args = [*args, "--print_config"]
        capsys.readouterr()
        with pytest.raises(SystemExit) as stop:
            main(args)
        out, err = capsys.readouterr()
        assert stop.value.code == 0, f"{' '.join(words)}: {err}"
        assert "preset:" in out or args[0] == "reduce-bench"
        if target:
            Path(target).write_text(out)


def test_the_coding_commands_run_in_order(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    smooth = torch.nn.functional.interpolate(torch.rand(1, 3, 4, 6), size=(192, 256),
                                             mode="bicubic", align_corners=False)
    photo = smooth[0].clamp(0, 1)  # large enough for --target-bpp 0.02 with the headers
    for name in ("photo.jpg", "a.png", "b.png", "c.png", "photos/x.png", "photos/sub/y.jpg"):
        Path(name).parent.mkdir(parents=True, exist_ok=True)
        to_pil(photo).save(name)
    from tests.data.test_video import numbered, write_clip  # a tiny H.264 clip

    write_clip(Path("clip.mp4"), numbered(9), codec="libx264", pix_fmt="yuv420p", rate=25)
    create_tokenizer("test-conv3d").save_pretrained("runs/vid/model")  # the user's video model
    ran = 0
    for words in COMMANDS:
        args = _vtok_args(words)
        if args[0] in ("train", "reduce-bench"):
            continue
        if any(" ".join(words).startswith(prefix) for prefix in NOT_RUN):
            continue
        code = main(args)
        assert code == 0, f"{' '.join(words)}: exit {code}\n{capsys.readouterr().err}"
        ran += 1
    assert ran >= 8
    assert Path("p.png").exists() and Path("tokens/sub/y.vtok").exists()
    assert Path("tokens/a.vtok").exists() and Path("small.vtok").exists()
    assert Path("out.mp4").stat().st_size > 0 and Path("frames/clip/frame_000008.png").exists()
