"""Applications on top of the engine: batch (datasets into an output folder, on Ray too), video,
evaluate (faithfulness metrics on generated scenes), bench (timings against the peers) and report
(browsable HTML of their outputs)."""
