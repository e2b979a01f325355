"""The engine: config, data, models, the training step and loop, devices."""
