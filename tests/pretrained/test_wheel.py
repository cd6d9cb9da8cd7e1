"""A wheel built from the checkout carries the weights; installed in a fresh venv it runs the headline commands."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from standins import build_standins
from test_default_models import SPEECH, digit_png

REPO = Path(__file__).resolve().parents[2]
NEEDED = ("speech-16k", "mnist", "mnist-prior")


def sh(*args, cwd, env=None, timeout=600) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (args, result.stdout[-2000:], result.stderr[-2000:])
    return result


@pytest.mark.slow
def test_wheel_installs_and_runs_without_m(tmp_path):
    # The checkout's files (not git's: the weights may be freshly exported); stand-ins when none are shipped.
    src = tmp_path / "src"
    shutil.copytree(REPO / "vqtok", src / "vqtok", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src)
    models = src / "vqtok" / "pretrained"
    if not all((models / f"{n}.safetensors").is_file() for n in NEEDED):
        for f in models.glob("*.safetensors"):
            f.unlink()
        build_standins(models, tmp_path / "standins")
    shipped = sorted(f.name for f in models.glob("*.safetensors"))

    # Offline build: no isolated build environment to download setuptools into.
    sh(sys.executable, "-m", "pip", "wheel", src, "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist",
       "-q", cwd=tmp_path)
    wheel = next((tmp_path / "dist").glob("vqtok-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        inside = set(z.namelist())
    assert {f"vqtok/pretrained/{name}" for name in shipped} <= inside

    venv = tmp_path / "venv"
    sh(sys.executable, "-m", "venv", "--system-site-packages", venv, cwd=tmp_path)  # torch & co. come along
    sh(venv / "bin" / "python", "-m", "pip", "install", "--no-deps", "--no-index", "-q", wheel, cwd=tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["OMP_NUM_THREADS"] = "1"
    empty = tmp_path / "empty"
    empty.mkdir()
    where = sh(venv / "bin" / "python", "-c", "import vqtok; print(vqtok.__file__)", cwd=empty, env=env).stdout
    assert Path(where.strip()).is_relative_to(venv), where  # the installed package, not the checkout

    shutil.copy(SPEECH, empty / "x.flac")
    digit_png(empty / "digit.png")
    vqtok = venv / "bin" / "vqtok"
    for args in (["encode", "x.flac"], ["decode", "x.npy"], ["encode", "digit.png"], ["decode", "digit.npy"],
                 ["models"], ["sample", "mnist-prior", "-n", "16", "--label", "3", "-o", "threes.png"]):
        sh(vqtok, *args, cwd=empty, env=env)
    for out in ("x.decoded.wav", "digit.decoded.png", "threes.png"):
        assert (empty / out).stat().st_size > 0
