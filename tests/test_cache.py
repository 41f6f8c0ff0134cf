from pathlib import Path

import pytest

from vtok import cache
from vtok.cache import default_cache_dir, prepare_command, resolve_cache


@pytest.mark.parametrize("platform, env, expected", [
    ("linux", {"XDG_CACHE_HOME": "/xdg"}, Path("/xdg/vtok")),
    ("linux", {"XDG_CACHE_HOME": "relative/path"}, Path("/home/u/.cache/vtok")),
    ("linux", {}, Path("/home/u/.cache/vtok")),
    ("darwin", {"XDG_CACHE_HOME": "/xdg"}, Path("/home/u/Library/Caches/vtok")),
    ("win32", {"LOCALAPPDATA": "/appdata"}, Path("/appdata/vtok")),
    ("win32", {}, Path("/home/u/AppData/Local/vtok")),
])
def test_the_default_is_the_platform_user_cache(monkeypatch, platform, env, expected):
    monkeypatch.setattr(cache.sys, "platform", platform)
    monkeypatch.setattr(cache.Path, "home", classmethod(lambda cls: Path("/home/u")))
    for name in ("XDG_CACHE_HOME", "LOCALAPPDATA", "VTOK_CACHE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert default_cache_dir() == expected


def test_an_environment_variable_does_not_move_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("VTOK_CACHE", str(tmp_path))
    assert default_cache_dir() != tmp_path


def test_the_prepare_command_names_a_folder_that_is_not_the_default(tmp_path):
    assert resolve_cache(None) == default_cache_dir()
    assert resolve_cache(tmp_path) == tmp_path
    assert prepare_command() == "vtok data prepare"
    assert prepare_command(default_cache_dir(), "lpips") == "vtok data prepare --lpips"
    assert prepare_command(tmp_path / "a b") == f"vtok data prepare --cache '{tmp_path / 'a b'}'"
