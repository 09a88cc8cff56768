"""twinbench-thermal: an example twinbench plugin.

- `twinbench_thermal.thermal`: the `transformer-thermal` twin (hot-spot temperature of the grid's
  transformer, an hour ahead), which ships trained weights instead of training.
- `twinbench_thermal.low_rank`: the `low-rank` compression pass (truncated SVD of Linear layers).

twinbench imports each module through its entry point; this file imports neither (see pyproject.toml).
"""
