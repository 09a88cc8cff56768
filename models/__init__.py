"""Reference twins of a power distribution grid, and the grid data they learn from."""
