"""The augment.* config section: mixing policies (how many synthetic images per class) and quality filters (which
synthetic images are good enough). The random transforms of training batches are fercore.transforms."""
