"""What the benchmarks share: one JSON line per workload, and a closing summary line."""

import argparse
import json
import os
import resource
import statistics


def report(workload, dtype, unit, rates, **details):
    """Prints the JSON line of a workload: median, min and max of ``rates`` and ``details``."""
    print(json.dumps({"workload": workload, "dtype": dtype, "unit": unit,
                      "median": round(statistics.median(rates), 1),
                      "min": round(min(rates), 1), "max": round(max(rates), 1),
                      "n": len(rates), **details}), flush=True)


def summary():
    """The last JSON line: peak RSS of the process and TensorFlow's thread settings."""
    import tensorflow as tf

    print(json.dumps({"workload": "summary", "peak_rss_mib": round(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "threads": {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                    "inter_op": tf.config.threading.get_inter_op_parallelism_threads()},
        "cpu_count": os.cpu_count()}))


def arguments(description, repeats):
    """``--quick`` (fewer timed repeats) and ``--only NAME``; returns (args, repeats to time)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="fewer timed repeats")
    parser.add_argument("--only", default=None, help="run workloads whose name contains this")
    args = parser.parse_args()
    return args, 4 if args.quick else repeats
