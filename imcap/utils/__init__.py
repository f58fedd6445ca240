"""Data preparation and loading: NeuralTalk2-format preprocessing, image reading, the synthetic
shapes dataset and the tf.data loader."""
