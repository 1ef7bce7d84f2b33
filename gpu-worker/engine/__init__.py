"""The worker's engine: job parsing, storage, segmentation, edits, encoding, callbacks, pipeline."""
