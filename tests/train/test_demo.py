"""quick_demo: trains a cycle and prints the held-out comparison with FEM."""

from mgtoolkit.train import quick_demo


def test_quick_demo_prints_errors_vs_fem(store2d_fem, tmp_path):
    lines = []
    result = quick_demo(
        store2d_fem,
        tmp_path / "demo",
        levels=2,
        max_epochs=2,
        val_samples=4,
        batch_size=10,
        progress=False,
        echo=lines.append,
    )
    text = "\n".join(lines)
    assert "half-V cycle: 2 steps, levels 2 1" in text
    assert "held-out samples at 16^2 vs FEM" in text
    rows = [ln.split() for ln in lines if ln.strip().split()[:1] in (["20"], ["23"], ["mean"])]
    assert len(rows) == 3
    rel_l2 = float(rows[-1][1])
    assert abs(rel_l2 - result.validation["val_rel_l2"]) < 1e-3  # same samples, same network
    assert "network" in text and "FEM solve" in text
