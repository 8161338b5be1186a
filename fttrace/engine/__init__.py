"""The engine every study kind runs on, written once: the phase runner and run identity (runner), training state,
optimiser and the chunked phase loop (train), fine-tuning protocols as reparameterisations (protocols), placement
over devices and processes, checkpoints, the results store, progress, and the helpers every study's measurements
share (members: bounded-memory maps over the member axis; linear_probe; curves: steps to a threshold)."""
