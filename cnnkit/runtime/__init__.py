"""What training and inference both stand on: the device, seeding, a config's model, data and
task assembled and checked against each other, the precision a model runs in (speed.py) and
the one evaluation pass (evaluate.py). Training and inference are siblings above this layer;
neither imports the other."""
