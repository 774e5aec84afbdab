"""Records -> one table model -> table.md, table.csv, rows.jsonl, results.jsonl, report.html.

metrics (the registry every writer reads) · spread (n.s. and noisy rules) · table (the model: cells,
parameters, blocks, baseline) · environment (title, host state) · views (cell text shared by md and
html) · markdown / csvjson / html / plots (writers) · choose (constraints, ranking, Pareto front) ·
outputs (write_outputs, markdown_for: what runners/sweep.py calls) · cli (`python -m runners.report`).
"""
