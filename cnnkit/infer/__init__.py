"""Inference: a checkpoint turned back into a model, then evaluated, or asked to predict or
locate on image files."""
