"""Many LoRAs at once: a batch or a sweep fanned out over several rentals, one budget, one live table, one report.

Each rental is driven by its own `Pipeline` (runner/run/pipeline.py) in its own thread; this room only plans
(sweep.py, packing.py, plan.py), drives the rentals side by side (fanout.py), shows them (table.py), remembers
them (record.py) and reports them (report.py)."""
