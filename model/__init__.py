"""The CAGE model: VQ autoencoders, the DINOv2 feature backbone and the flow-matching vector-field regressor."""
