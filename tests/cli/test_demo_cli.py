"""`mgtoolkit demo --small`: the packaged 3D network's errors it prints are those of what it wrote,
and the train-your-own part trains and compares with FEM."""

from __future__ import annotations

import re

import numpy as np
import zarr

from mgtoolkit import pretrained
from mgtoolkit.cli import main
from mgtoolkit.cli.demo import DEMO_MODEL


def test_demo_small_prints_what_it_wrote(tmp_path, capsys):
    out_dir = tmp_path / "demo"
    assert main(["demo", "--small", "--out", str(out_dir)]) == 0
    out = capsys.readouterr().out
    card = pretrained.get(DEMO_MODEL).card
    for n, name, label in [
        (32, "u_pred", "32³"),
        (64, "u_pred", "64³"),
        (64, "u_pred_at32", "64³ at 32³"),
    ]:
        level = zarr.open_group(str(out_dir / f"data3d-{n}.zarr"), mode="r")["level1"]
        u, ref = level[name][:].astype(np.float64), level["u_fem"][:].astype(np.float64)
        for s in range(2):
            rel = np.linalg.norm(u[s] - ref[s]) / np.linalg.norm(ref[s])
            assert re.search(rf"\s{label}\s+{s}\s+{rel:.4f}\s", out), (label, s, rel, out)
            if n == card["resolution"] and name == "u_pred":  # as good as its card says
                assert rel <= 2 * card["metrics"]["unseen"]["network"]["rel_l2"]
    assert "held-out samples at 32² vs FEM" in out
    table = out[out.index("held-out samples at 32²") :]
    mean = re.search(r"mean\s+([\d.]+)\s+([\d.]+)", table)
    assert mean and 0 < float(mean.group(1)) < 1, table
