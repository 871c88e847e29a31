"""Data: CoOp/Dassl layout readers, Dassl-exact few-shot sampling, base/new split, transforms, image sets."""
