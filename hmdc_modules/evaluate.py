"""Cross-architecture evaluation of condensed CIFAR-10 sets, under a named evaluation protocol.

Evaluate sets (run folders holding synthetic.pt, or .pt files) on a pool of architectures:

    python -m hmdc_modules.evaluate runs/hmdc_cifar10 runs/random_ipc1 \\
        --models convnet,resnet18,vit_tiny_patch16_224 --seeds 3 --epochs 300 --out runs/eval/ipc1

Protocols (--protocol): hmdc, the default, is the HMDC authors' evaluation (the paper's tables); dsa is the
DC/DSA/DM/MTT convention (their tables); ddranking is DD-Ranking's hard-label demo configuration. Numbers from
different protocols are not comparable. Every setting can be overridden (--epochs, --lr-schedule, --augment,
--cutmix-p, ...); settings.json and every record hold the protocol and all settings:

    python -m hmdc_modules.evaluate sets/dm_res.pt --protocol dsa --models convnet --seeds 5

Sets saved by other tools are read too (MTT's images_best.pt, DC/DSA/DM's res_*.pt, IDC/DREAM's data.pt, the
HMDC authors' synthetic_images.pth, a bare tensor); say how their images are normalised:

    python -m hmdc_modules.evaluate mtt_run/images_best.pt --set-normalization dc --protocol dsa

Make the "Random" baseline (ipc real training images per class, drawn with a seed) as a run folder:

    python -m hmdc_modules.evaluate random --ipc 1 --seed 0 --out runs/random_ipc1

Pool the sets one method condensed with several seeds into one column with --group (repeat once per set):

    python -m hmdc_modules.evaluate runs/hmdc_s0 runs/hmdc_s1 runs/random_s0 runs/random_s1 \\
        --group hmdc --group hmdc --group random --group random --seeds 1 --out runs/eval/pooled

The output folder receives one JSON record per finished (set, model, seed) cell, so running the same command
again skips finished cells (an interrupted run continues; different settings for the same folder are refused), and
results.md, results.csv, results.json and accuracy.png summarising every cell of the folder. Each cell reports the
final-epoch accuracy and, separately, the best accuracy over the periodic test evaluations (the paper's metric,
which picks the epoch on the test set, so it is optimistic):
mean and sample standard deviation over seeds ("n/a" with one seed), plus CNN, ViT and overall averages per set.

Spread the cells over several processes with torchrun (one per GPU, or a few on a CPU machine); the tables are the
same as one process's. Rank R trains every W-th pending cell (log lines start with [rank R]), stores each record as
it finishes, and rank 0 gathers the records and writes settings.json and the reports:

    python -m torch.distributed.run --standalone --nproc-per-node 4 -m hmdc_modules.evaluate runs/hmdc_cifar10 \\
        --models paper --seeds 3 --out runs/eval/ipc1

On several machines, start the same command on each, with the node count, this machine's node rank and where
to meet (HOST: the first machine's address, reachable from the others):

    python -m torch.distributed.run --nnodes 2 --node-rank 0 --nproc-per-node 4 \\
        --rdzv-backend c10d --rdzv-endpoint HOST:29500 -m hmdc_modules.evaluate ...

(or --master-addr HOST --master-port 29500 in place of the two --rdzv options). Every machine needs the sets and
the CIFAR-10 test split at the given paths. Without a shared filesystem the output folder of rank 0's machine is
the evaluation's: the reports are written there, and the records trained elsewhere are copied into it; a record
left on another machine by an interrupted run is taken from there when the job is started again. An error on one
process stops all of them; finished cells stay stored, so running the same command again continues.
"""

import sys

from hmdc_modules.evaluation.cli import build_parser, build_random_parser, main

__all__ = ["build_parser", "build_random_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
