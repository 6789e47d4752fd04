"""The lecture's MNIST run: MLP 784-512-256-128-64-10, batch 12, SGD lr 0.01, 10 epochs.

    python examples/mnist_mlp.py                      # tinygrad_edu, the lecture's settings
    python examples/mnist_mlp.py --engine torch       # the same lines on PyTorch, for comparison

Prints the loss every 2000 mini-batches and the test accuracy in the lecture's format, saves the
GroundTruth/Prediction figure and a JSON summary in --out, both named after the engine and the
seed (predictions_ENGINE_seedN.png, mnist_mlp_ENGINE_seedN.json), so runs do not overwrite each
other. Ctrl-C stops it with one line.
"""

import argparse
import json
import sys
import time

import mnist_common as common
from tinygrad_edu.utils.data import DataLoader
from tinygrad_edu.utils.files import atomic_write_text


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_args(parser, out_default="runs/mnist_mlp")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--engine", choices=["tinygrad_edu", "torch"], default="tinygrad_edu")
    args = parser.parse_args(argv)
    common.check_data_args(parser, args)
    try:
        return run(args)
    except KeyboardInterrupt:
        print(f"\ninterrupted: the {args.engine} run stopped (its figure and summary are written only at "
              f"the end)", file=sys.stderr)
        return 130


def run(args):
    torch, nn, optim = common.load_engine(args.engine)
    torch.manual_seed(args.seed)
    train_data, test_data = common.load_mnist(args.data_dir, download=args.download)
    # the data order comes from one seeded generator, the same for both engines
    train_loader = DataLoader(train_data, batch_size=args.batch_size, shuffle=True, seed=args.seed)
    test_loader = DataLoader(test_data, batch_size=args.batch_size)

    model = common.make_mlp(nn, common.LECTURE_HIDDEN)
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(model.parameters(), lr=args.lr)

    epoch_seconds = []
    for epoch in range(args.epochs):  # loop over the dataset multiple times
        start = time.perf_counter()
        common.train_epoch(torch, model, train_loader, criterion, optimizer, epoch)
        epoch_seconds.append(common.seconds_since(start))
    print('Finished Training')

    images, labels = next(iter(test_loader))
    name = f"{args.engine}_seed{args.seed}"
    figure = common.show_predictions(torch, model, images, labels, args.out / f"predictions_{name}.png")

    n_correct, n_predict = common.evaluate(torch, model, test_loader)
    print(f"{n_correct}/{n_predict}")
    print(f"Accuracy: {n_correct/n_predict:.3f}")

    summary = {"engine": args.engine, "backend": torch.backend.name() if args.engine == "tinygrad_edu" else "torch",
               "seed": args.seed, "epochs": args.epochs,
               "batch_size": args.batch_size, "lr": args.lr, "accuracy": n_correct / n_predict,
               "seconds_per_epoch": epoch_seconds, "figure": str(figure)}
    path = args.out / f"mnist_mlp_{name}.json"
    atomic_write_text(path, json.dumps(summary, indent=2))
    print(f"saved {figure} and {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
