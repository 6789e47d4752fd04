"""The C build is optional: with no working compiler the package installs and runs on NumPy."""

import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO

# Import the copy installed below: run from an empty folder (not the checkout) with it on
# PYTHONPATH, and drop the editable install's import hook, which would otherwise supply the
# checkout's compiled tinygrad_edu._kernels when the copy has none.
IMPORT_INSTALLED_COPY = """
import sys
sys.meta_path = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
import tinygrad_edu, tinygrad_edu.backend as backend
assert tinygrad_edu.__file__.startswith(sys.argv[1]), tinygrad_edu.__file__
print(backend.name(), backend.available())
x = tinygrad_edu.ones(3, 4, requires_grad=True)
(x @ tinygrad_edu.ones(4, 2)).sum().backward()
print(float(x.grad.sum()))
"""


def test_install_without_a_compiler_falls_back_to_numpy(tmp_path):
    source, target = tmp_path / "src", tmp_path / "site"
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, source / name)
    env = {k: v for k, v in os.environ.items() if k not in ("TINYGRAD_EDU_REQUIRE_C", "TINYGRAD_EDU_BACKEND")}
    # --no-build-isolation builds with this environment's setuptools (no download), which the test
    # extra provides (test_the_test_extra_provides_the_build_requirements); pip checks it did
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                              "--check-build-dependencies", "-q", "--target", str(target), str(source)],
                             capture_output=True, text=True, env=dict(env, CC="false"), timeout=600)
    assert install.returncode == 0, install.stderr
    assert not list(target.glob("tinygrad_edu/_kernels*"))
    run = subprocess.run([sys.executable, "-c", IMPORT_INSTALLED_COPY, str(target)], capture_output=True,
                         text=True, env=dict(env, PYTHONPATH=str(target)), timeout=120, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split("\n")[:2] == ["numpy ['numpy']", "24.0"]
    assert "C kernels not built, running on NumPy" in run.stderr
    forced = subprocess.run([sys.executable, "-c", IMPORT_INSTALLED_COPY, str(target)], capture_output=True,
                            text=True, env=dict(env, PYTHONPATH=str(target), TINYGRAD_EDU_BACKEND="c"),
                            timeout=120, cwd=tmp_path)
    assert forced.returncode != 0 and "C kernels are not built" in forced.stderr


def test_the_test_extra_provides_the_build_requirements():
    # the tests build with the environment's own tools (above, and setuptools below): a fresh
    # virtualenv's setuptools is too old for pyproject.toml, so `pip install -e ".[test]"` must
    # bring the build requirements along
    try:
        import tomllib
    except ModuleNotFoundError:   # Python 3.10: pytest depends on tomli, the same parser
        import tomli as tomllib
    from packaging.requirements import Requirement

    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    provided = {str(Requirement(r)) for r in config["project"]["optional-dependencies"]["test"]
                + config["project"]["dependencies"]}
    needed = {str(Requirement(r)) for r in config["build-system"]["requires"]}
    assert needed <= provided, f"add {sorted(needed - provided)} to the test extra"


def test_a_build_by_hand_and_pip_build_write_the_same_file(monkeypatch):
    # two names would let the one Python imports first (.cpython-3XX before .abi3) shadow the other
    from setuptools import Distribution

    monkeypatch.chdir(REPO)
    monkeypatch.syspath_prepend(str(REPO))
    import build_ext

    dist = Distribution({"name": "tinygrad_edu", "cffi_modules": ["build_ext.py:ffibuilder"]})
    command = dist.get_command_obj("build_ext")
    command.ensure_finalized()
    assert [command.get_ext_filename(ext.name) for ext in dist.ext_modules] == [f"tinygrad_edu/{build_ext.TARGET}"]


def test_the_c_kernel_checks_pass_for_every_instruction_set(tmp_path):
    """csrc/kernel_check.c, the kernels against plain loops in C alone (CI also runs it
    cross-compiled for aarch64 under qemu-user)."""
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        pytest.skip("no C compiler: the C kernels are not built here either")
    sources = [str(REPO / "csrc" / name) for name in ("kernel_check.c", "kernels.c", "conv.c", "pool.c", "program.c")]
    binary = tmp_path / "kernel_check"
    subprocess.run([compiler, "-O2", "-std=gnu11", f"-I{REPO / 'csrc'}", *sources, "-o", str(binary),
                    "-lpthread", "-lm"], check=True, timeout=600)
    run = subprocess.run([str(binary)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout
    assert run.stdout.strip().endswith("0 check(s) failed") and "FAIL" not in run.stdout
    assert run.stdout.count("\nok ") >= 30
