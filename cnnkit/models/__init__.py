"""Models: the layer registry and its blocks, the builder that turns a config into modules,
their initialization, pretrained weights and freezing."""
