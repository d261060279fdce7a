"""The CLI must start fast: --help and --version never import torch, transformers, datasets or accelerate."""

import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "datasets", "accelerate", "sklearn", "pandas")


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["train", "--help"], ["eval", "--help"],
                                  ["predict", "--help"]])
def test_help_and_version_import_no_heavy_library(argv):
    code = (
        "import sys\n"
        "from bertclf.cli import app\n"
        "try:\n"
        f"    app({argv!r}, prog_name='bertclf')\n"
        "except SystemExit as exc:\n"
        "    assert exc.code in (0, None), exc.code\n"
        f"print('HEAVY=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "HEAVY="


def test_version_prints_package_version():
    from bertclf import __version__

    out = subprocess.run([sys.executable, "-m", "bertclf", "--version"], capture_output=True, text=True)
    assert out.returncode == 0
    assert out.stdout.strip() == f"bertclf {__version__}"
