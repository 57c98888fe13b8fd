"""cellkit.config: data roots (what the app may read) and the upload limit."""

from __future__ import annotations

import os

import pytest

from cellkit import config
from cellkit.errors import CellkitError


@pytest.fixture
def roots(tmp_path, monkeypatch):
    """Two data roots, a folder outside both, and a link inside a root that points outside."""
    a, b, outside = tmp_path / "a", tmp_path / "b", tmp_path / "outside"
    for folder in (a / "pbc" / "neutrophil", b, outside):
        folder.mkdir(parents=True)
    (a / "escape").symlink_to(outside, target_is_directory=True)
    (a / "inside_link").symlink_to(a / "pbc", target_is_directory=True)
    monkeypatch.setenv("CELLKIT_DATA_DIR", f"{a}{os.pathsep}{b}")
    return a, b, outside


def test_data_roots_are_a_pathsep_list_and_data_dir_is_the_first(roots):
    a, b, _ = roots
    assert config.data_roots() == [a, b]
    assert config.data_dir() == a


def test_data_roots_default_to_shared_data_when_present(monkeypatch):
    monkeypatch.delenv("CELLKIT_DATA_DIR", raising=False)
    shared = config.PROJECT_ROOT.parent / "shared" / "data"
    assert config.data_roots() == ([shared] if shared.is_dir() else [])


@pytest.mark.parametrize(
    "typed",
    [
        lambda a, b, o: "/etc",
        lambda a, b, o: str(a / ".."),
        lambda a, b, o: f"{a}/pbc/../../outside",
        lambda a, b, o: str(a / "escape"),
        lambda a, b, o: str(a / "escape" / "anything.png"),
        lambda a, b, o: str(o),
        lambda a, b, o: "",
    ],
    ids=["etc", "parent", "dotdot-out", "symlink-out", "file-through-symlink", "sibling", "empty"],
)
def test_paths_outside_the_roots_are_refused(roots, typed):
    with pytest.raises(CellkitError):
        config.resolve_data_path(typed(*roots))


def test_paths_inside_the_roots_are_resolved(roots, monkeypatch):
    a, b, _ = roots
    assert config.resolve_data_path(str(a / "pbc")) == (a / "pbc").resolve()
    assert config.resolve_data_path(f"{a}/pbc/neutrophil/..") == (a / "pbc").resolve()
    assert config.resolve_data_path(a / "inside_link") == (a / "pbc").resolve()  # a link that stays inside
    assert config.resolve_data_path(str(b)) == b.resolve()
    monkeypatch.chdir(a)
    assert config.resolve_data_path("pbc") == (a / "pbc").resolve()  # relative to the working directory


def test_a_symbolic_link_loop_is_said_in_words(roots):
    a, _, _ = roots
    (a / "loop_a").symlink_to(a / "loop_b")
    (a / "loop_b").symlink_to(a / "loop_a")
    for typed in (a / "loop_a", a / "loop_a" / "pbc"):
        with pytest.raises(CellkitError) as info:
            config.resolve_data_path(str(typed))
        assert str(info.value) == f"{typed} is a symbolic link loop; choose another folder"


def test_no_roots_means_no_folder_can_be_opened(monkeypatch, tmp_path):
    monkeypatch.setattr(config, "data_roots", lambda: [])
    with pytest.raises(CellkitError, match="CELLKIT_DATA_DIR"):
        config.resolve_data_path(tmp_path)


@pytest.mark.parametrize(("value", "expected"), [(None, 200), ("", 200), ("5", 5), (" 1024 ", 1024)])
def test_max_upload_mb(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("CELLKIT_MAX_UPLOAD_MB", raising=False)
    else:
        monkeypatch.setenv("CELLKIT_MAX_UPLOAD_MB", value)
    assert config.max_upload_mb() == expected


@pytest.mark.parametrize("value", ["0", "-3", "abc", "1.5"])
def test_bad_max_upload_mb_is_a_clear_error(monkeypatch, value):
    monkeypatch.setenv("CELLKIT_MAX_UPLOAD_MB", value)
    with pytest.raises(CellkitError, match="CELLKIT_MAX_UPLOAD_MB"):
        config.max_upload_mb()


def test_a_cache_folder_that_is_a_file_is_one_clear_error(tmp_path, monkeypatch):
    from cellkit.errors import CellkitError

    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("CELLKIT_CACHE_DIR", str(tmp_path / "afile"))
    with pytest.raises(CellkitError, match="is a file, not a folder; set CELLKIT_CACHE_DIR"):
        config.cache_dir()


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "sqlite:///file:x?mode=memory&uri=true"])
def test_an_in_memory_database_setting_is_refused(monkeypatch, url):
    """It would report analyses as saved and keep none of them."""
    from cellkit import config
    from cellkit.errors import CellkitError
    from cellkit.store import Store

    monkeypatch.setenv("CELLKIT_DB_URL", url)
    with pytest.raises(CellkitError, match="is an in-memory database: nothing saved there outlives this process"):
        config.db_url()
    with pytest.raises(CellkitError, match="in-memory"):
        Store()
    monkeypatch.setenv("CELLKIT_DB_URL", "sqlite:////tmp/x.db")
    assert config.db_url() == "sqlite:////tmp/x.db"
