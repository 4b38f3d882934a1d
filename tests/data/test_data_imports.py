"""Importing the data and fields packages stays light: heavy libraries load where used."""

import subprocess
import sys


def test_import_data_and_fields_pulls_no_heavy_libraries():
    code = (
        "import sys, mgtoolkit.data, mgtoolkit.fields\n"
        "heavy = ('dask', 'distributed', 'xarray', 'zarr', 'torch', 'panel', 'mpi4py')\n"
        "print(' '.join(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
