"""Input pipelines: transforms and augmentation (per image and batched on the device), sampling, the views of
pre-training."""
