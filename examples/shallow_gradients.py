"""The lecture's hand-derived gradients beside autograd's, then both used to train.

    python examples/shallow_gradients.py [--data-dir DIR] [--out DIR] [--epochs N]

1. Tables: for the shallow tanh/sigmoid network (three hand forms) and the deep ReLU MLPs of the
   depth sweep (2-5 layers), max |hand - autograd| and the relative difference per parameter, in
   float64 and float32, with finite differences (float64) as a third opinion.
2. Training: the shallow network trained by hand-derived gradient descent and by autograd + SGD
   from the same initial weights, on MNIST 0-vs-1 (when the data is there) or on a generated 2-D
   dataset. The two loss curves coincide; the figure is saved to --out.
"""

import argparse
import copy
import os
from pathlib import Path

import numpy as np

from tinygrad_edu import handgrad as hg, nn, optim, tensor
from tinygrad_edu.vision.datasets import MNIST
from tinygrad_edu.vision.utils import atomic_savefig

LAYER_SIZES = [784, 512, 256, 128, 64]   # the sweep's widths, scaled down below to keep FD quick


def print_table(title, hand, autograd, numerical):
    print(f"\n{title}")
    print(f"  {'param':<6}{'shape':<12}{'max|hand-auto|':>16}{'rel':>10}{'rel vs finite diff':>20}")
    fd = {r.name: r for r in hg.compare(hand, numerical)}
    for row in hg.compare(hand, autograd):
        print(f"  {row.name:<6}{str(row.shape):<12}{row.max_abs_diff:>16.2e}{row.max_rel_diff:>10.1e}"
              f"{fd[row.name].max_rel_diff:>20.1e}")


def gradient_tables(rng):
    X, Y = rng.standard_normal((32, 10)), (rng.random(32) > 0.5).astype(np.float64)
    for dtype in (np.float64, np.float32):
        net = hg.ShallowNet(10, 8, seed=1, dtype=dtype)
        Xd, Yd = X.astype(dtype), Y.astype(dtype)
        auto = net.autograd_gradients(Xd, Yd)
        net64 = hg.ShallowNet(10, 8, seed=1)
        numerical = hg.numerical_gradients(lambda: net64.cost(X, Y), net64.params())
        for form in ("gradients_loop", "gradients_outer", "gradients_batch"):
            print_table(f"shallow net, {np.dtype(dtype).name}, hand form {form}",
                        getattr(net, form)(Xd, Yd), auto, numerical)
    y = rng.integers(0, 10, 16)
    Xdeep = rng.standard_normal((16, 20))
    for layers in (2, 3, 4, 5):
        sizes = [20] + [s // 32 for s in LAYER_SIZES[1:layers]] + [10]   # 512 -> 16, 256 -> 8, ...
        for dtype in (np.float64, np.float32):
            mlp = hg.DeepMLP(sizes, seed=layers, dtype=dtype)
            mlp64 = hg.DeepMLP(sizes, seed=layers)
            numerical = hg.numerical_gradients(lambda: mlp64.cost(Xdeep, y), mlp64.params())
            Xd = Xdeep.astype(dtype)
            print_table(f"deep MLP {'-'.join(map(str, sizes))} ({layers} layers), {np.dtype(dtype).name}",
                        mlp.gradients(Xd, y), mlp.autograd_gradients(Xd, y), numerical)


def training_data(data_dir, rng):
    """MNIST digits 0 and 1 (1000 training images), or two interleaved half-moons in 2-D when
    there is no MNIST (saying why, in one line, if a folder was given)."""
    if data_dir:
        folder = Path(data_dir)
        if not folder.exists():
            why = "does not exist"
        elif not folder.is_dir():
            why = "is a file, not a folder"
        else:
            try:
                train = MNIST(folder, train=True)
                images, labels = train.data.numpy(), train.targets.numpy()
                keep = np.flatnonzero(labels <= 1)[:1000]
                return images[keep].reshape(len(keep), -1) / 255.0, labels[keep].astype(np.float64), "MNIST 0 vs 1"
            except FileNotFoundError:
                why = "holds no MNIST training files"
            except (OSError, ValueError) as e:   # unreadable or corrupt files
                why = f"holds MNIST files that cannot be used ({str(e).splitlines()[0]})"
        print(f"MNIST folder {folder} {why}: training on two moons (2-D) instead")
    t = rng.random(400) * np.pi
    upper = rng.random(400) < 0.5
    X = np.where(upper[:, None], np.c_[np.cos(t), np.sin(t)], np.c_[1 - np.cos(t), 0.5 - np.sin(t)])
    return X + 0.1 * rng.standard_normal(X.shape), upper.astype(np.float64), "two moons (2-D)"


def train_side_by_side(X, Y, epochs, lr=0.5, hidden=8):
    """Full-batch gradient descent on the mean loss, once by hand and once by autograd + SGD."""
    by_hand = hg.ShallowNet(X.shape[1], hidden, seed=0)
    by_autograd = copy.deepcopy(by_hand)
    module = by_autograd.module()
    optimizer = optim.SGD(module.parameters(), lr=lr / len(X))    # summed loss: lr / N = mean
    criterion = nn.BCELoss(reduction="sum")
    hand_losses, autograd_losses = [], []
    for _ in range(epochs):
        hand_losses.append(by_hand.cost(X, Y) / len(X))
        grads = by_hand.gradients_batch(X, Y)
        for name, p in by_hand.params().items():
            p -= lr * grads[name] / len(X)                        # w := w - eta * dJ/dw
        optimizer.zero_grad()
        loss = criterion(module(tensor(X)).reshape(-1), tensor(Y))
        loss.backward()
        optimizer.step()
        autograd_losses.append(loss.item() / len(X))
    return by_hand, np.array(hand_losses), np.array(autograd_losses)


def save_figure(path, title, hand_losses, autograd_losses, model, X, Y):
    from matplotlib.figure import Figure   # not pyplot: the caller's backend and figures stay as they are
    two_d = X.shape[1] == 2
    fig = Figure(figsize=(11 if two_d else 6, 4.2))
    axes = fig.subplots(1, 2 if two_d else 1, squeeze=False)
    ax = axes[0, 0]
    ax.plot(hand_losses, label="hand-derived gradients", linewidth=3, alpha=0.5)
    ax.plot(autograd_losses, "--", label="autograd", color="black")
    ax.set(xlabel="epoch", ylabel="mean binary cross-entropy", title=f"training on {title}")
    ax.legend()
    if two_d:
        ax = axes[0, 1]
        xx, yy = np.meshgrid(np.linspace(X[:, 0].min() - 0.5, X[:, 0].max() + 0.5, 200),
                             np.linspace(X[:, 1].min() - 0.5, X[:, 1].max() + 0.5, 200))
        probs, _ = model.predict(np.c_[xx.ravel(), yy.ravel()])
        ax.contourf(xx, yy, probs.reshape(xx.shape), levels=20, cmap="RdBu", alpha=0.6)
        ax.scatter(X[:, 0], X[:, 1], c=Y, cmap="RdBu", edgecolors="k", s=12)
        ax.set(title="decision boundary (hand-trained)")
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get("TINYGRAD_EDU_DATA"),
                        help="folder with MNIST (default: $TINYGRAD_EDU_DATA); without it, two moons")
    parser.add_argument("--out", type=Path, default=Path("runs/shallow_gradients"))
    parser.add_argument("--epochs", type=int, default=300)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    gradient_tables(rng)
    X, Y, title = training_data(args.data_dir, rng)
    model, hand, auto = train_side_by_side(X, Y, args.epochs)
    accuracy = ((model.predict(X)[0] > 0.5) == Y).mean()
    print(f"\ntraining on {title}: {args.epochs} epochs, final loss hand {hand[-1]:.6f} autograd "
          f"{auto[-1]:.6f}, largest gap between the curves {np.abs(hand - auto).max():.2e}, "
          f"training accuracy {accuracy:.3f}")
    path = args.out / "shallow_training.png"
    save_figure(path, title, hand, auto, model, X, Y)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
