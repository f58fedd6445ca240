"""imcap: image captioning with adaptive attention and a visual sentinel (Lu et al., CVPR 2017),
a Keras 3 / TensorFlow 2 port of imcap_keras."""

__version__ = "0.1.0"
