"""The reference model and what it needs to run: configuration, model, training, evaluation, decoding, checkpoints,
FLOPs and the checks of a configuration against the registries."""
