#!/usr/bin/env python3
"""CPU timing of the peer's own self-critical (SCST) training step:
ruotianluo/self-critical.pytorch, AdaAtt, `new_self_critical` (mean-of-other-samples baseline).

One step is what the peer's tools/train.py does once `structure_after` has passed with
`structure_loss_type new_self_critical`, `structure_loss_weight 1`, `train_sample_n 5`:

    optimizer.zero_grad()
    out = LossWrapper(fc, att, labels, masks, att_masks=None, gts, arange(B),
                      sc_flag=False, struc_flag=True, drop_worst_flag=False)
        -> model(..., mode='sample', opt={'sample_method': 'sample', 'beam_size': 1,
                                          'output_logsoftmax': True, 'sample_n': 5})
           (with autograd, train mode, dropout 0.5, temperature 1, no greedy pass)
        -> StructureLosses('new_self_critical'): get_scores -> CiderD (the peer's pinned
           `cider` submodule, ruotianluo/cider), baseline = mean of the other 4 samples,
           loss = -sum(logp * mask * (r - b)) / sum(mask)
    out['loss'].backward(); clip_grad_value_(params, 0.1); Adam.step()

Everything of the peer is imported at run time from PEER_SRC (a `git archive` of the peer at
$PEER_SRC/../PEER_COMMIT, with its `cider` submodule, ruotianluo/cider, extracted at the
commit the peer pins into $PEER_SRC/cider); nothing of it is copied here, and nothing here
runs in the test suite. The model is built by
/work/shared/peer/bench_peer.py's build() (same reference shapes as the project's peer
harness: 32 images, 49 x 2048 regions, fc 2048, 512 everywhere, 9,487 words + 1, 16 words,
dropout 0.5, random weights) and <eos> is suppressed as there (logit bias[0] = -1e4), so
every one of the 160 samples runs all 16 steps.

CIDEr-D references: 1,000 images x five random 10-word captions (word ids 1..9487, padded
with 0 to 16 as the peer's label h5 is); the step's images are the first 32. The document
frequencies come from those 1,000 images, computed in memory exactly as the peer's
scripts/prepro_ngrams.py computes its `coco-train-idxs` pickle (the peer's CiderScorer,
<eos>=0 appended to every reference; ref_len = 1000 images) and handed to the peer's CiderD
as if loaded from that pickle (df_mode != 'corpus').

Timing: bench_peer.py's clean-iteration rule (imported): before each timed step wait for an
idle window (is_idle), time the step with timed_call, keep it only if other processes used
<= 5% of 2 cores during it. The split is measured inside the same steps:
  sample        = the model's sampling forward (forward hooks on the model),
  reward        = the peer's get_scores (CIDEr-D of the 160 samples; as patched into losses),
  backward_step = loss.backward() + clip_grad_value_ + optimizer.step(),
  other         = the rest (zero_grad, baseline/loss arithmetic, LossWrapper glue).

Set-up: ../shared/peer/README.md (the peer's venv and source in $PEER), plus the `cider`
submodule as above. Usage, from the repository's root, the machine otherwise idle, right
before or after `python bench/scst.py --only reference` (the same workload in imcap):
    PEER_SRC=$PEER/src $PEER/venv/bin/python bench/peer_scst.py
Prints one JSON line on stdout (the peer's own "Cider scores:" prints are swallowed).
"""
import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PEER_SRC = os.environ.get("PEER_SRC", "")
SHARED_PEER = os.environ.get(  # the peer harness (bench_peer.py) of ../shared/peer
    "SHARED_PEER", os.path.join(os.path.dirname(HERE), "..", "shared", "peer"))

REF_IMAGES = 1000
REF_CAPS = 5
REF_WORDS = 10
SAMPLE_N = 5
LR = 5e-5  # peer configs/*_nsc.yml learning_rate (value irrelevant to timing)


def peer_opt(cfg):
    """The options the nsc step reads, at the peer's defaults (captioning/utils/opts.py) except
    where its configs/*_nsc.yml set them. (parse_opt() itself imports yaml/yacs, which the
    README's venv does not have, so the namespace is built here, as bench_peer.py does.)"""
    import types
    return types.SimpleNamespace(
        caption_model=cfg["caption_model"], batch_size=cfg["batch_size"],
        vocab_size=cfg["vocab_size"], seq_length=cfg["seq_length"],
        # loss_wrapper / losses / rewards
        label_smoothing=0.0,
        structure_loss_type="new_self_critical", structure_loss_weight=1.0,  # *_nsc.yml
        train_sample_n=SAMPLE_N, train_sample_method="sample", train_beam_size=1,
        struc_use_logsoftmax=False, entropy_reward_weight=0.0, self_cider_reward_weight=0.0,
        use_ppo=0, cider_reward_weight=1.0, bleu_reward_weight=0.0,
        # optimizer (utils.build_optimizer) and clipping (tools/train.py)
        optim="adam", learning_rate=LR, optim_alpha=0.9, optim_beta=0.999, optim_epsilon=1e-8,
        weight_decay=0.0, grad_clip_mode=cfg["grad_clip_mode"],
        grad_clip_value=cfg["grad_clip_value"])


def make_references(np):
    rng = np.random.default_rng(0)
    L = 16
    refs = []  # per image: (5, 16) int array, like the peer's label h5 rows
    for _ in range(REF_IMAGES):
        a = np.zeros((REF_CAPS, L), dtype=np.int64)
        a[:, :REF_WORDS] = rng.integers(1, 9487 + 1, size=(REF_CAPS, REF_WORDS))
        refs.append(a)
    return refs


def install_cider(np, refs):
    """Peer's CiderD with document frequencies of the 1,000 reference images (in memory,
    as prepro_ngrams.py would pickle them), installed as rewards.CiderD_scorer."""
    import captioning.utils.rewards as peer_rewards
    from pyciderevalcap.ciderD.ciderD import CiderD
    from pyciderevalcap.ciderD.ciderD_scorer import CiderScorer

    tmp = CiderScorer(df_mode="corpus")
    for r in refs:  # prepro_ngrams: ' '.join(ids of tokens + <eos>=0)
        tmp.cook_append(None, [peer_rewards.array_to_str(row) for row in r])
    tmp.compute_doc_freq()
    scorer = CiderD(df="corpus")
    s = scorer.cider_scorer  # what CiderScorer.__init__ does with a df pickle:
    s.df_mode = "bench-refs-idxs"
    s.ref_len = np.log(float(len(tmp.crefs)))
    s.document_frequency = tmp.document_frequency
    # init_scorer() would also build Bleu (coco-caption submodule, not extracted); it is only
    # used when bleu_reward_weight > 0, so set the CiderD global directly.
    peer_rewards.CiderD_scorer = scorer
    return scorer


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iters", type=int, default=12, help="clean timed steps wanted")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--max-iters", type=int, default=200, help="timed steps at most")
    ap.add_argument("--max-seconds", type=float, default=3600, help="stop waiting after this")
    ap.add_argument("--no-wait-idle", action="store_true",
                    help="don't wait for an idle window before each step (steps may be discarded)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not os.path.isdir(os.path.join(PEER_SRC, "captioning")):
        sys.exit(f"bench/peer_scst.py: PEER_SRC={PEER_SRC!r} holds no captioning/ (the peer's "
                 "source, set up as ../shared/peer/README.md says)")

    for p in (SHARED_PEER, PEER_SRC, os.path.join(PEER_SRC, "cider")):
        if p not in sys.path:
            sys.path.insert(0, p)
    import numpy as np
    import torch
    import bench_peer  # the harness: build(), CFG, is_idle, timed_call, cpu_busy_s

    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    # the peer's import-time notices ("cider or coco-caption missing", "Hugginface
    # transformers not installed", ...) go to stderr: stdout carries only the JSON line
    with contextlib.redirect_stdout(sys.stderr):
        import captioning.models  # noqa: F401
        import captioning.modules.losses as peer_losses
        from captioning.modules.loss_wrapper import LossWrapper
        import captioning.utils.misc as peer_misc

    cfg = bench_peer.CFG
    B, L = cfg["batch_size"], cfg["seq_length"]
    with contextlib.redirect_stdout(sys.stderr):
        model = bench_peer.build(torch)
    with torch.no_grad():
        model.logit.bias[0] = -1e4  # <eos> suppressed, as bench_peer's decode workloads
    opt = peer_opt(cfg)
    lw = LossWrapper(model, opt)
    optimizer = peer_misc.build_optimizer(model.parameters(), opt)
    clip = getattr(torch.nn.utils, "clip_grad_%s_" % opt.grad_clip_mode)

    refs = make_references(np)
    install_cider(np, refs)
    gts = refs[:B]  # data['gts']: the batch images' reference rows
    fc, att = bench_peer.make_feats(torch, B)
    labels = torch.zeros(B, SAMPLE_N, L + 2, dtype=torch.long)  # unused with weight 1
    masks = torch.ones(B, SAMPLE_N, L + 2)
    gt_indices = torch.arange(0, B)
    model.train()
    lw.train()

    # split instrumentation (only reads clocks)
    acc = {}
    marks = {}

    def pre_hook(mod, inp):
        marks["s0"] = time.perf_counter()

    def post_hook(mod, inp, out):
        acc["sample"] = acc.get("sample", 0.0) + time.perf_counter() - marks.pop("s0")

    model.register_forward_pre_hook(pre_hook)
    model.register_forward_hook(post_hook)
    real_get_scores = peer_losses.get_scores

    def timed_get_scores(*a, **k):
        t0 = time.perf_counter()
        try:
            return real_get_scores(*a, **k)
        finally:
            acc["reward"] = acc.get("reward", 0.0) + time.perf_counter() - t0

    peer_losses.get_scores = timed_get_scores
    sink = io.StringIO()

    def step():
        acc.clear()
        sink.seek(0)
        sink.truncate()
        t0 = time.perf_counter()
        optimizer.zero_grad()
        with contextlib.redirect_stdout(sink):  # get_scores prints 'Cider scores: ...'
            out = lw(fc, att, labels, masks, None, gts, gt_indices, False, True, False)
        loss = out["loss"]
        t1 = time.perf_counter()
        loss.backward()
        clip(model.parameters(), opt.grad_clip_value)
        optimizer.step()
        t2 = time.perf_counter()
        total = t2 - t0
        split = dict(sample=acc.get("sample", 0.0), reward=acc.get("reward", 0.0),
                     backward_step=t2 - t1)
        split["other"] = total - sum(split.values())
        return dict(split=split, loss=float(loss.detach()),
                    mean_reward=float(out["reward"].mean()))

    # check the workload once: 160 samples, all 16 words long
    last = {"mean_reward": None}
    for i in range(args.warmup):
        last = step()
    with torch.no_grad():
        model.eval()
        seq, _ = model(fc, att, None, opt={"sample_method": "sample", "beam_size": 1,
                                            "sample_n": SAMPLE_N}, mode="sample")
        model.train()
    lengths = (seq > 0).sum(1)

    rows = []
    busy_polls = 0
    t_start = time.time()
    while sum(r["clean"] for r in rows) < args.iters and len(rows) < args.max_iters \
            and time.time() - t_start < args.max_seconds:
        if not args.no_wait_idle and not bench_peer.is_idle():
            busy_polls += 1
            continue
        res, row = bench_peer.timed_call(step)
        row.update(res)
        rows.append(row)
    clean = [r for r in rows if r["clean"]]

    def med(rs, key=None):
        if not rs:
            return None
        vals = [r["sec"] if key is None else r["split"][key] for r in rs]
        return statistics.median(vals)

    commit = None
    cpath = os.path.join(os.path.dirname(PEER_SRC.rstrip("/")), "PEER_COMMIT")
    if os.path.exists(cpath):
        commit = open(cpath).read().strip()
    keys = ("sample", "reward", "backward_step", "other")
    result = {
        "workload": "peer_scst_reference",
        "images_per_s": round(B / med(clean), 3) if clean else None,
        "split_s": {k: round(med(clean, k), 4) for k in keys} if clean else None,
        "iterations": len(clean),
        "torch": torch.__version__,
        "peer_commit": commit,
        "step_s": round(med(clean), 4) if clean else None,
        "images_per_s_best": round(B / min(r["sec"] for r in clean), 3) if clean else None,
        "images_per_s_worst": round(B / max(r["sec"] for r in clean), 3) if clean else None,
        "iterations_run": len(rows),
        "contended_discarded": len(rows) - len(clean),
        "contended_images_per_s": round(B / med(rows), 3) if rows else None,
        "contended_split_s": {k: round(med(rows, k), 4) for k in keys} if rows else None,
        "busy_polls": busy_polls,
        "waited_for_idle": not args.no_wait_idle,
        "warmup": args.warmup,
        "threads": torch.get_num_threads(),
        "images": B, "samples_per_image": SAMPLE_N, "sampled_words": L,
        "sample_lengths_min_max": [int(lengths.min()), int(lengths.max())],
        "vocab_logits": cfg["vocab_size"] + 1,
        "reference_images": REF_IMAGES,
        "loss": "StructureLosses(new_self_critical)", "optimizer": "Adam lr %g" % LR,
        "clip": "%s %g" % (opt.grad_clip_mode, opt.grad_clip_value),
        "last_mean_reward": (rows[-1] if rows else last)["mean_reward"],
        "step_times_s": [round(r["sec"], 4) for r in rows],
        "clean_flags": [r["clean"] for r in rows],
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
