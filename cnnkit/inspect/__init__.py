"""Seeing inside a network: summaries with shapes, parameters and receptive fields, and
pictures of filters, activations and saliency."""
