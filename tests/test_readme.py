"""Every Python block of README.md runs as written (in a temporary folder); a block marked as
taking an hour is only compiled."""

import re
from pathlib import Path

import pytest

README = Path(__file__).parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
LONG = "about an hour"


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index, tmp_path, monkeypatch):
    code = BLOCKS[index]
    compiled = compile(code, f"README.md python block {index}", "exec")
    if LONG in code:
        return  # compiled only: it trains for an hour
    monkeypatch.chdir(tmp_path)
    exec(compiled, {"__name__": f"readme_{index}"})
