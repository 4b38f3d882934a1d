"""The numerical core must load without cluster or widget libraries."""

import subprocess
import sys


def test_import_mgtoolkit_pulls_no_heavy_libraries():
    code = (
        "import sys, mgtoolkit, mgtoolkit.grids\n"
        "heavy = ('dask', 'distributed', 'panel', 'holoviews', 'bokeh', 'mpi4py')\n"
        "print(' '.join(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
