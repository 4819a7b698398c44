"""benchmarks/plot_curves.py: BC learning curves read from runs.csv (means over seeds, the data row, one PNG per cell)."""

from __future__ import annotations

from pathlib import Path

CSV = """task,tier,agent,knob,seed,step,split,acting,score
maze,mixed,data,0,0,0,test,,96.8000
maze,mixed,bc,0,0,100,val,temperature=0,80.0000
maze,mixed,bc,0,1,100,val,temperature=0,90.0000
maze,mixed,bc,0,0,200,val,temperature=0,95.0000
maze,mixed,bc,0,0,100,test,chosen,70.0000
maze,mixed,ilql,0,0,100,test,chosen,99.0000
"""


def test_curves_average_seeds_keep_the_data_row_and_ignore_other_agents(tmp_path: Path, benchmark_script) -> None:
    plot = benchmark_script("plot_curves")
    path = tmp_path / "runs.csv"
    path.write_text(CSV, encoding="utf-8")
    curves, data = plot.collect([str(path)], "bc")
    assert data == {("maze", "mixed"): 96.8}
    series = curves[("maze", "mixed")]
    assert sorted(series) == ["test chosen", "val temperature=0"]
    assert plot.mean_curve(series["val temperature=0"]) == ([100, 200], [85.0, 95.0])
    text = plot.table(("maze", "mixed"), series, 96.8)
    assert "data 96.8" in text and "| 100 | 70.0 | 85.0 |" in text and "| 200 | - | 95.0 |" in text
    plot.plot_cell(("maze", "mixed"), series, 96.8, tmp_path / "maze_mixed.png")
    assert (tmp_path / "maze_mixed.png").read_bytes()[:4] == b"\x89PNG"
