"""``--strategy``: one device, all local devices (MirroredStrategy), or several workers
(MultiWorkerMirroredStrategy, from ``TF_CONFIG``).

Keras splits each global batch of ``-bs`` images across the replicas and sums their gradients,
so the losses match training on one device (tested on two logical CPU devices and on two local
workers over loopback). Only the chief writes into ``-data_folder``; the other workers write
their (identical) checkpoints under ``tmp/worker_N`` so that no file is written twice.
"""

import json
import os

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multiworker")


def split_cpu(count):
    """Splits the CPU into ``count`` logical devices (to run mirrored training without GPUs).
    Must run before TensorFlow initialises its devices."""
    if count <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)])
    except RuntimeError as e:
        raise ValueError(f"-cpu_devices {count}: TensorFlow is already initialised ({e})") \
            from None


def check_tf_config():
    """The parsed ``TF_CONFIG`` of a multi-worker run, or a clear error."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise ValueError("--strategy multiworker needs the TF_CONFIG environment variable, e.g. "
                         '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                         '"task": {"type": "worker", "index": 0}}')
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"TF_CONFIG is not valid JSON: {e.msg}") from None
    cluster, task = config.get("cluster"), config.get("task")
    if not isinstance(cluster, dict) or not cluster or not isinstance(task, dict):
        raise ValueError("TF_CONFIG must hold a 'cluster' {type: [host:port, ...]} and a "
                         "'task' {type, index}")
    hosts = cluster.get(task.get("type"))
    if not isinstance(hosts, list) or not isinstance(task.get("index"), int) \
            or not 0 <= task["index"] < len(hosts):
        raise ValueError(f"TF_CONFIG task {task} is not one of the cluster's {cluster}")
    return config


def make_strategy(name, cpu_devices=1):
    """The ``tf.distribute`` strategy ``name`` (one of ``STRATEGIES``)."""
    if name not in STRATEGIES:
        raise ValueError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {name!r}")
    split_cpu(cpu_devices)
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    check_tf_config()
    return tf.distribute.MultiWorkerMirroredStrategy()


def worker_index(strategy):
    """None on the chief (or without workers), else this worker's index."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return None
    task_type, task_id = resolver.task_type, resolver.task_id
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    if task_type == "chief" or (task_type == "worker" and task_id == 0 and not has_chief):
        return None
    return task_id if task_type == "worker" else f"{task_type}{task_id}"


def build_from_first_replica(model):
    """Works around Keras 3 failing to ``fit`` under MultiWorkerMirroredStrategy with dict
    inputs (keras-team/keras#20329, #20585): before its first step ``fit`` all-reduces a whole
    input batch just to learn its shapes, and the collective reduce rejects nested structures.
    The first replica's batch has the same shapes (and needs no collective)."""
    import types

    from keras import tree

    original = model._maybe_symbolic_build
    strategy = model.distribute_strategy

    def first_replica(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        if iterator is not None and data_batch is None:
            for _, _, batches in iterator:
                data_batch = tree.map_structure(first_replica, next(batches))
                break
        return original(data_batch=data_batch)

    model._maybe_symbolic_build = types.MethodType(maybe_symbolic_build, model)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        # Keras then reduces each replica's logs with reduce("MEAN", value, axis=0), which
        # needs an axis: give the scalar logs one (their mean over replicas is the scalar).
        for name in ("train_step", "test_step"):
            step = getattr(model, name)
            setattr(model, name, _with_batch_axis(step))
    return model


def _with_batch_axis(step):
    def wrapped(data):
        return {key: tf.reshape(value, [1]) for key, value in step(data).items()}
    return wrapped


def output_folder(folder, strategy):
    """Where a run writes: ``folder``, or ``folder/tmp/worker_N`` on the workers of a
    multi-worker run that are not the chief (their checkpoints equal the chief's)."""
    worker = worker_index(strategy)
    if worker is None:
        return folder
    return os.path.join(folder, "tmp", f"worker_{worker}")
