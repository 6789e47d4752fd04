"""The lecture's MNIST run: MLP 784-512-256-128-64-10, batch 12, SGD lr 0.01, 10 epochs.

    python examples/mnist_mlp.py                      # tinygrad_edu, the lecture's settings
    python examples/mnist_mlp.py --engine torch       # the same lines on PyTorch, for comparison

Prints the loss every 2000 mini-batches and the test accuracy in the lecture's format, saves the
GroundTruth/Prediction figure and a JSON summary in --out, both named after the engine and the
seed (predictions_ENGINE_seedN.png, mnist_mlp_ENGINE_seedN.json), so runs do not overwrite each
other. Ctrl-C stops it with one line.
"""

import argparse
import sys
import time

import mnist_common as common


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_args(parser, out_default="runs/mnist_mlp")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--engine", choices=["tinygrad_edu", "torch"], default="tinygrad_edu")
    args = parser.parse_args(argv)
    common.check_data_args(parser, args)
    return common.run_until_interrupted(run, args)


def run(args):
    torch, nn, optim = common.load_engine(args.engine)
    torch.manual_seed(args.seed)
    train_loader, test_loader = common.seeded_loaders(args)   # the same data order on both engines

    model = common.make_mlp(nn, common.LECTURE_HIDDEN)
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(model.parameters(), lr=args.lr)

    # the lecture's four lines of a training step, captured once and replayed (--no-jit: eagerly)
    step = common.compiled_step(torch, model, criterion, optimizer) if args.jit and args.engine == "tinygrad_edu" else None
    epoch_seconds = []
    for epoch in range(args.epochs):  # loop over the dataset multiple times
        start = time.perf_counter()
        common.train_epoch(torch, model, train_loader, criterion, optimizer, epoch, step=step)
        epoch_seconds.append(common.seconds_since(start))
    print('Finished Training')

    return common.finish(torch, model, test_loader, args, "mnist_mlp", epoch_seconds)


if __name__ == "__main__":
    sys.exit(main())
