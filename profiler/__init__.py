"""GPU profiler: measure real batch costs of one model shard and fit a profiled cost model.

Pipeline: ``grids`` lists the batches, ``run`` times them on the device (``layers`` +
``paged_attention`` + ``kernels`` build the shard, ``measure`` times it) into
``profiles/<gpu>/<model>/tp<k>/measurements.csv`` with ``provenance.json``; ``fit`` fits
``goodput.sim.costmodel.profiled.ProfiledCostModel`` and reports its held-out error; ``calibrate`` fits
roofline efficiencies for GPUs without a profile. Entry point: ``goodput profile`` (``cli``).
See docs/profiling.md.
"""
