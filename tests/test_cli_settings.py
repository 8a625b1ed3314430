"""Issue 14.10b: settings a user got wrong end in one clear message and a non-zero exit, never a traceback."""

import errno
import os
import subprocess
import sys

import pytest

from cosmos_assets import cli


def one_message(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 3, err
    return err


@pytest.mark.parametrize("limit", ["0", "-1", "many"])
def test_search_limit_must_be_a_positive_whole_number(cosmos_env, capsys, limit):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["search", "a road at night", "--limit", limit])
    assert exit_.value.code == 2 and "--limit" in one_message(capsys)


def test_an_unknown_profile_is_one_message(cosmos_env, capsys, monkeypatch):
    monkeypatch.setenv("COSMOS_PROFILE", "gpu-typo")
    assert cli.main(["paths"]) == 2
    assert "COSMOS_PROFILE='gpu-typo' is not a profile; expected one of local, gpu, k8s" in one_message(capsys)


def test_a_home_that_is_a_file_or_cannot_be_written_is_one_message(tmp_path, capsys, monkeypatch, samples):
    monkeypatch.setenv("COSMOS_PROFILE", "local")
    home_file = tmp_path / "home.mp4"
    home_file.write_bytes((samples / "asl_walk.mkv").read_bytes()[:1000])  # e.g. a video's name given by mistake
    read_only, real_mkdir = tmp_path / "read-only-mount", os.mkdir

    def mkdir(path, *args, **kwargs):  # a read-only mount as root (the tests' user) meets it: permissions stop no root
        if str(path).startswith(str(read_only)):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    for home, says in [(home_file, "is a file, not a folder"), (home_file / "inside", "is not a folder this user can write"),
                       (read_only / "home", "is not a folder this user can write (Read-only file system)")]:
        monkeypatch.setenv("COSMOS_HOME", str(home))
        assert cli.main(["paths"]) == 2, home
        assert says in one_message(capsys)
    monkeypatch.setenv("COSMOS_HOME", str(home_file))
    assert cli.main(["models", "build-tiny", "--only", "vlm"]) == 2 and "is a file" in one_message(capsys)


def test_the_cosmos_command_exits_non_zero_without_a_traceback(tmp_path):
    env = {**os.environ, "COSMOS_HOME": str(tmp_path / "home"), "COSMOS_PROFILE": "nope"}
    done = subprocess.run([sys.executable, "-m", "cosmos_assets.cli", "paths"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr and "COSMOS_PROFILE='nope'" in done.stderr
