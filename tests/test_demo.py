"""`make demo`'s code path: the accounting table always; the shipped model answering when present."""

from internvlx import demo


def test_accounting_table_compares_the_baseline_with_each_compressor():
    table = demo.accounting_table()
    for name in ("InternVL2-2B (MLP, stock tiling)", "+ RVTC length", "+ RVTC area", "+ LVTC"):
        assert name in table
    rows = [line for line in table.splitlines() if line.startswith("1024x768")]
    assert len(rows) == 5 and rows[0].rstrip().endswith("1.00x")
    # RVTC length caps 1024x768 at ceil(768/448)*ceil(1024/448) = 6 tiles (+ thumbnail)
    assert " 7 " in rows[2] and "1792" in rows[2]


def test_demo_main_runs(capsys):
    assert demo.main() == 0
    out = capsys.readouterr().out
    assert "visual-token accounting" in out and "demo finished" in out
    if demo.DEMO_MODEL.exists():  # the shipped model answers, with the ground truth beside it
        assert out.count("Q: ") >= 5 and out.count("ground truth") >= 5
    else:
        assert "No trained demo model" in out
