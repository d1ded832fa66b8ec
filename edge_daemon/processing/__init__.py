"""Pre- and post-processing: metadata-driven preprocessing and per-task output decoding."""
