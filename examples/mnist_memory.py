"""Resident memory across one MNIST epoch at batch 12: flat, because each step's graph is freed.

    python examples/mnist_memory.py [--data-dir DIR] [--download]

Prints the process's resident memory after the imports, after loading MNIST, every 500 steps,
and its peak (Linux: /proc/self/statm and getrusage).
"""

import argparse
import os
import resource

import mnist_common as common


def resident_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_data_args(parser)
    args = parser.parse_args(argv)
    common.check_data_args(parser, args)
    torch, nn, optim = common.load_engine("tinygrad_edu")
    after_imports = resident_mb()
    train, _ = common.load_mnist(args.data_dir, download=args.download)
    after_data = resident_mb()
    torch.manual_seed(0)
    model = common.make_mlp(nn, common.LECTURE_HIDDEN)
    criterion, optimizer = nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.01)
    samples = []
    for i, (inputs, labels) in enumerate(torch.utils.data.DataLoader(train, batch_size=12, shuffle=True, seed=0)):
        optimizer.zero_grad()
        criterion(model(inputs), labels).backward()
        optimizer.step()
        if i % 500 == 0:
            samples.append(round(resident_mb(), 1))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"after imports {after_imports:.1f} MB, after loading MNIST {after_data:.1f} MB "
          f"(the uint8 training and test images: {(train.data.numpy().nbytes + 10000 * 784) / 2**20:.1f} MB)")
    print(f"every 500 steps: {samples} MB")
    print(f"peak {peak:.1f} MB; growth over the epoch {samples[-1] - samples[0]:.1f} MB")


if __name__ == "__main__":
    main()
