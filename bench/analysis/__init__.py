"""Where fine-tuning changed the model: `analyze` (parameter change per layer, `bench analyze` → ANALYSIS.md)
and `drift` (representation drift, block-wise linear CKA, and the analysis figures)."""
