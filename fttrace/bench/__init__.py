"""`fttrace bench`: the training loop's throughput (throughput) against a PyTorch per-run loop (torch_baseline),
the decoder's sampled tokens/s (decode), and stopped members with and without compaction (compaction)."""
