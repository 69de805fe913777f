"""Every neural network of facedemo with its weights: the model registry, the detectors and the embedding CNNs."""
