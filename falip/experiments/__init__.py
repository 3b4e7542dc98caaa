"""The experiment layer: the one loop (runner), run records, provenance, tables, reports, benchmarks."""
