"""imcap: image captioning with adaptive attention and a visual sentinel (Lu et al., CVPR 2017),
a Keras 3 / TensorFlow 2 port of imcap_keras."""

import os as _os

# TensorFlow turns its oneDNN kernels on by itself only on CPUs with AVX-512 or AMX; on an
# AVX2-only CPU they make the demo's training step about a third faster and ResNet-50 about a
# tenth (README, "Tests and benchmarks"). TensorFlow reads this when it loads, so it is set
# here, before any imcap module imports it; a value the user set is kept
# (TF_ENABLE_ONEDNN_OPTS=0 turns them off).
_os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__version__ = "0.1.0"
