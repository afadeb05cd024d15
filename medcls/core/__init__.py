"""The core: the classifier, the training loop, augmentation, execution on a device, checkpoints,
run folders, and the one inference path every workflow scores through."""
