"""Synthetic augmentation: mixing policies (how many synthetic images per class) and batch augmentation on the device."""
