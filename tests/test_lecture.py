"""The DNN lecture's code cells, run on tinygrad_edu with only their imports changed.

The lecture (a PyTorch notebook) loads MNIST, trains a five-layer MLP with SGD, looks at one test
batch, counts the correct predictions, and then shows two ways to hold a variable number of layers
(a plain Python list, which registers nothing, and ``nn.ModuleList``). Each helper below is one of
those cells, kept as the lecture spells it, so that the tests run the students' own code paths.
Its convolution examples (``nn.Conv2d`` in ``nn.Sequential``) are run in tests/test_conv.py.

What needs the real MNIST takes the ``mnist_root`` fixture; everything else runs on small
synthetic "digits". Comparisons with PyTorch run the very same cell functions on both engines
and are skipped where torch is not installed.
"""

import math
import re
import warnings

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest

# The lecture's imports, changed as the README says: torch -> tinygrad_edu, torchvision -> vision.
import tinygrad_edu as torch
import tinygrad_edu.nn.functional as F
from tinygrad_edu import nn, optim
from tinygrad_edu import vision as torchvision
from tinygrad_edu.vision import datasets, transforms

BATCH_SIZE = 12          # the lecture's batch size
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


# --- the lecture's cells, as functions of the engine they run on -----------------------------------
def lecture_mlp(nn):
    """The lecture's MLP class on the engine whose ``nn`` is given (784-512-256-128-64-10, ReLU)."""
    class MLP(nn.Module):
        def __init__(self):
            super().__init__()

            self.in_dim = 28*28 # MNIST
            self.out_dim = 10

            self.fc1 = nn.Linear(self.in_dim, 512)
            self.fc2 = nn.Linear(512, 256)
            self.fc3 = nn.Linear(256, 128)
            self.fc4 = nn.Linear(128, 64)
            self.fc5 = nn.Linear(64, self.out_dim)

            self.relu = nn.ReLU()
            self.log_softmax = nn.LogSoftmax()   # built without dim and never called in forward

        def forward(self, x):
            a1 = self.relu(self.fc1(x.view(-1, self.in_dim)))
            a2 = self.relu(self.fc2(a1))
            a3 = self.relu(self.fc3(a2))
            a4 = self.relu(self.fc4(a3))
            logit = self.fc5(a4)
            return logit
    return MLP


def train_like_the_lecture(model, train_loader, nn, optim, epochs=1, print_every=2000):
    """The lecture's training cell (it prints every 2000 mini-batches); returns each loss."""
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(model.parameters(), lr = 0.01)
    losses = []

    for epoch in range(epochs):
        running_loss = 0.0
        for i, data in enumerate(train_loader, 0):
            inputs, labels = data

            optimizer.zero_grad()

            outputs = model(inputs)
            loss = criterion(outputs, labels)
            loss.backward()
            optimizer.step()

            running_loss += loss.item()
            losses.append(loss.item())
            if (i+1) % print_every == 0:
                print('[%d, %5d] loss: %.3f' %
                      (epoch + 1, i + 1, running_loss / print_every))
                running_loss = 0.0

    print('Finished Training')
    return losses


def imshow(img):
    """The lecture's helper: a C x H x W image tensor shown with matplotlib."""
    npimg = img.numpy()
    plt.imshow(np.transpose(npimg, (1, 2, 0)))
    plt.show()


def prediction_cell(model, test_loader, batch_size):
    """The lecture's look at one test batch: the picture, the true labels and the predicted ones.

    (The exported notebook garbles the quotes of the two label prints; this is what they mean.)"""
    dataiter = iter(test_loader)
    images, labels = dataiter.next()

    imshow(torchvision.utils.make_grid(images, nrow = batch_size))
    print('GroundTruth')
    print('    '+' '.join('%3s' % label.item() for label in labels))

    outputs = model(images)
    _, predicted = torch.max(outputs, 1)
    print("Prediction")
    print('    '+' '.join('%3s' % label.item() for label in predicted))
    return images, labels, predicted


def accuracy_cell(torch, model, test_loader):
    """The lecture's accuracy count over a test loader, on the engine ``torch``."""
    n_predict = 0
    n_correct = 0

    for data in test_loader:
        inputs, labels = data
        outputs = model(inputs)
        _, predicted = torch.max(outputs, 1)

        n_predict += len(predicted)
        n_correct += (labels == predicted).sum()

    print(f"{n_correct}/{n_predict}")
    print(f"Accuracy: {n_correct/n_predict:.3f}")
    return n_correct, n_predict


def lecture_mlp_h(nn, layer_list=list):
    """The lecture's MLP with hyper-parameters. With ``layer_list=list`` its layers sit in a plain
    Python list (the lecture's bug); ``layer_list=nn.ModuleList`` is the one-line fix."""
    class MLP_h(nn.Module):
        def __init__(self, hidden_units = [512, 256, 128]):
            super().__init__()

            self.in_dim = 28*28 # MNIST
            self.out_dim = 10

            self.l_layers = layer_list()      # the lecture writes [] here
            self.l_layers.append(nn.Linear(self.in_dim, hidden_units[0]))
            for i in range(len(hidden_units)-1):
                self.l_layers.append(nn.Linear(hidden_units[i], hidden_units[i+1]))
            self.l_layers.append(nn.Linear(hidden_units[-1], self.out_dim))

            self.relu = nn.ReLU()
            self.log_softmax = nn.LogSoftmax()

        def forward(self, x):
            a = x.view(-1, self.in_dim)
            for l in range(len(self.l_layers)):
                z = self.l_layers[l](a)
                if l == len(self.l_layers) - 1:
                    logit = z
                else:
                    a = self.relu(z)

            return logit
    return MLP_h


def lecture_module_list_example(nn):
    """The lecture's ModuleList example: ten Linear(10, 10), the first five each used twice more."""
    class MyModule(nn.Module):
        def __init__(self):
            super(MyModule, self).__init__()
            self.linears = nn.ModuleList([nn.Linear(10, 10) for i in range(10)])

        def forward(self, x):
            # ModuleList can act as an iterable, or be indexed using ints
            for i, l in enumerate(self.linears):
                x = self.linears[i // 2](x) + l(x)
            return x
    return MyModule


# --- helpers --------------------------------------------------------------------------------------
def synthetic_digits(n, seed=0):
    """``n`` fake 28 x 28 uint8 "digits" with labels 0..9: the label picks which band of two rows is
    bright, on a dim noisy background, so a model can learn it."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
    for image, label in zip(images, labels):
        image[4 + 2 * label: 6 + 2 * label] = 255
    return images, labels.astype(np.int64)


def synthetic_loader(n, shuffle=False, seed=0, double=False):
    """A DataLoader over synthetic digits turned into tensors by the lecture's ``ToTensor``
    (and into float64 with ``double``)."""
    images, labels = synthetic_digits(n, seed)
    to_tensor = transforms.ToTensor()
    inputs = torch.stack([to_tensor(image) for image in images])
    dataset = torch.utils.data.TensorDataset(inputs.double() if double else inputs, torch.tensor(labels))
    return torch.utils.data.DataLoader(dataset, batch_size = BATCH_SIZE, shuffle=shuffle)


def twin_models(pytorch, make_class, dtype, seed=0):
    """The same model on both engines: PyTorch's initial weights copied into ours."""
    pytorch.manual_seed(seed)
    theirs = make_class(pytorch.nn)()
    ours = make_class(nn)()
    if dtype == "float64":
        theirs, ours = theirs.double(), ours.double()
    ours.load_state_dict({name: value.detach().numpy() for name, value in theirs.state_dict().items()})
    return ours, theirs


def torch_batches(pytorch, loader):
    """The batches of an unshuffled ``loader``, as PyTorch tensors: the same data for both engines."""
    return [(pytorch.from_numpy(inputs.numpy()), pytorch.from_numpy(labels.numpy())) for inputs, labels in loader]


@pytest.fixture
def agg_pyplot():
    """pyplot draws on Agg during the test; the backend in use before is restored after it."""
    previous = matplotlib.get_backend()
    figures_before = set(plt.get_fignums())
    plt.switch_backend("agg")
    yield plt
    for number in set(plt.get_fignums()) - figures_before:
        plt.close(number)
    plt.switch_backend(previous)
    assert matplotlib.get_backend() == previous


def grid_by_the_formula(images, nrow, padding=2, pad_value=0.0):
    """torchvision's documented layout, written out: one-channel images become three channels;
    min(nrow, N) images per row, ceil(N / that) rows; every image framed by ``padding`` pixels."""
    images = np.repeat(images, 3, axis=1) if images.shape[1] == 1 else images
    n, c, h, w = images.shape
    columns = min(nrow, n)
    rows = math.ceil(n / columns)
    grid = np.full((c, rows * (h + padding) + padding, columns * (w + padding) + padding), pad_value,
                   dtype=images.dtype)
    for k in range(n):
        top = (k // columns) * (h + padding) + padding
        left = (k % columns) * (w + padding) + padding
        grid[:, top:top + h, left:left + w] = images[k]
    return grid


# --- the data and loader cells ----------------------------------------------------------------------
def test_data_cell_on_real_mnist(mnist_root):
    batch_size = 12

    train_data = datasets.MNIST(str(mnist_root), train=True, download=True, transform=transforms.ToTensor())
    test_data = datasets.MNIST(str(mnist_root), train=False, download=True, transform=transforms.ToTensor())

    train_loader = torch.utils.data.DataLoader(train_data, batch_size = batch_size, shuffle=True)
    test_loader = torch.utils.data.DataLoader(test_data, batch_size = batch_size)

    assert (len(train_data), len(test_data)) == (60000, 10000)
    assert (len(train_loader), len(test_loader)) == (5000, math.ceil(10000 / 12))
    image, label = test_data[0]
    assert image.shape == (1, 28, 28) and image.dtype == torch.float32 and label == 7

    torch.manual_seed(0)
    seen_labels, first_batches = [], []
    for epoch in range(2):
        for i, data in enumerate(train_loader, 0):
            inputs, labels = data
            if i == 0:
                first_batches.append(labels.numpy())
                assert inputs.shape == (12, 1, 28, 28) and inputs.dtype == torch.float32
                assert labels.shape == (12,) and labels.dtype == torch.int64
                assert 0 <= inputs.numpy().min() and inputs.numpy().max() <= 1
            if epoch == 0:
                seen_labels.append(labels.numpy())
    # shuffle=True: every label as often as in the data set, in a new order each epoch
    assert np.array_equal(np.bincount(np.concatenate(seen_labels)), np.bincount(train_data.targets.numpy()))
    assert not np.array_equal(*first_batches)

    batches = list(test_loader)   # no shuffle: the file's order, the last batch partial
    assert batches[0][1].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9, 0, 6]   # the lecture's GroundTruth
    assert batches[-1][0].shape == (10000 % 12, 1, 28, 28)


def test_normalize_on_real_mnist(mnist_root):
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))])
    test_data = datasets.MNIST(str(mnist_root), train=False, transform=transform)
    raw = test_data.data.numpy()

    images, labels = next(iter(torch.utils.data.DataLoader(test_data, batch_size=BATCH_SIZE)))
    expected = (raw[:12, None].astype(np.float32) / 255 - MNIST_MEAN) / MNIST_STD
    assert np.allclose(images.numpy(), expected, atol=1e-6)
    assert np.array_equal(test_data[3][0].numpy(), images.numpy()[3])   # one sample == its batch row

    everything = next(iter(torch.utils.data.DataLoader(test_data, batch_size=len(test_data))))[0].numpy()
    # MNIST's usual statistics normalise its pixels to mean ~0 and standard deviation ~1
    assert abs(everything.mean()) < 0.02 and abs(everything.std() - 1) < 0.02


def test_to_tensor_and_normalize_on_synthetic_images():
    images, _ = synthetic_digits(3)
    tensor = transforms.ToTensor()(images[0])
    assert tensor.shape == (1, 28, 28) and tensor.dtype == torch.float32
    assert np.array_equal(tensor.numpy()[0], images[0] / np.float32(255))
    normalized = transforms.Normalize((0.5,), (0.25,))(tensor)
    assert np.allclose(normalized.numpy(), (tensor.numpy() - 0.5) / 0.25)


def test_loader_cell_on_synthetic_data():
    images, _ = synthetic_digits(30)
    sample_ids = torch.arange(30)     # in place of labels, so the order of the samples can be read
    train_loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, sample_ids),
                                               batch_size = BATCH_SIZE, shuffle=True)
    torch.manual_seed(1)
    epochs = []
    for epoch in range(2):
        sizes, ids_seen = [], []
        for i, data in enumerate(train_loader, 0):
            inputs, labels = data
            assert np.array_equal(inputs.numpy(), images[labels.numpy()])   # each input with its label
            sizes.append(len(inputs))
            ids_seen.append(labels.numpy())
        epochs.append(np.concatenate(ids_seen))
        assert sizes == [12, 12, 6]                               # the last batch is kept, partial
    assert all(sorted(e) == list(range(30)) for e in epochs)      # every sample once per epoch
    assert not np.array_equal(*epochs)                            # reshuffled each epoch

    torch.manual_seed(1)
    again = np.concatenate([labels.numpy() for _, labels in train_loader])
    assert np.array_equal(again, epochs[0])                       # manual_seed makes it repeatable


# --- the model cell -------------------------------------------------------------------------------
def test_mlp_class_builds_and_runs_as_in_the_lecture():
    with warnings.catch_warnings():
        warnings.simplefilter("error")       # an unused LogSoftmax() without dim is silent, as in PyTorch
        model = lecture_mlp(nn)()
        logits = model(torch.zeros(BATCH_SIZE, 1, 28, 28))       # forward never calls log_softmax
    assert logits.shape == (12, 10)
    assert [(name, p.shape) for name, p in model.named_parameters()] == [
        ("fc1.weight", (512, 784)), ("fc1.bias", (512,)), ("fc2.weight", (256, 512)), ("fc2.bias", (256,)),
        ("fc3.weight", (128, 256)), ("fc3.bias", (128,)), ("fc4.weight", (64, 128)), ("fc4.bias", (64,)),
        ("fc5.weight", (10, 64)), ("fc5.bias", (10,))]
    assert model(torch.zeros(1, 28, 28)).shape == (1, 10)           # view(-1, 784) of one image

    # x.view(-1, 784) is the flattening the lecture uses: the same numbers as flatten(1)
    x = torch.rand(3, 1, 28, 28)
    assert np.array_equal(x.view(-1, 28*28).numpy(), x.flatten(1).numpy())

    # the LogSoftmax it never uses, if called, warns and picks dim=1 for a batch, as PyTorch does
    with pytest.warns(UserWarning, match="dim=1"):
        log_probs = model.log_softmax(logits)
    assert np.allclose(log_probs.detach().numpy(), F.log_softmax(logits, dim=1).detach().numpy())


def test_unused_log_softmax_behaves_as_in_pytorch():
    pytorch = pytest.importorskip("torch")
    with warnings.catch_warnings():
        warnings.simplefilter("error")                  # neither engine warns when it is built
        ours, theirs = nn.LogSoftmax(), pytorch.nn.LogSoftmax()
    x = np.random.default_rng(0).standard_normal((4, 10)).astype(np.float32)
    with pytest.warns(UserWarning, match="[Ii]mplicit dimension"):   # both warn when it is called
        our_result = ours(torch.tensor(x))
    with pytest.warns(UserWarning, match="[Ii]mplicit dimension"):
        their_result = theirs(pytorch.from_numpy(x))
    assert np.allclose(our_result.numpy(), their_result.numpy(), atol=1e-6)


# --- the training cell -----------------------------------------------------------------------------
def test_training_cell_prints_and_updates_like_the_lecture(capsys):
    torch.manual_seed(0)
    model = lecture_mlp(nn)()
    before = {name: p.detach().numpy().copy() for name, p in model.named_parameters()}

    losses = train_like_the_lecture(model, synthetic_loader(60, shuffle=True), nn, optim, epochs=2,
                                    print_every=2)

    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "Finished Training"
    expected = []
    for epoch in range(2):
        epoch_losses = losses[5 * epoch: 5 * epoch + 5]           # 60 samples: 5 batches of 12
        for i in (1, 3):
            expected.append('[%d, %5d] loss: %.3f' % (epoch + 1, i + 1, sum(epoch_losses[i - 1:i + 1]) / 2))
    assert lines[:-1] == expected
    assert re.fullmatch(r"\[1,     2\] loss: \d\.\d{3}", lines[0])
    assert all(isinstance(v, float) and math.isfinite(v) for v in losses) and len(losses) == 10
    assert all(not np.array_equal(before[name], p.detach().numpy()) for name, p in model.named_parameters())


def test_one_training_step_is_zero_grad_backward_and_sgd():
    torch.manual_seed(0)
    model = lecture_mlp(nn)()
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(model.parameters(), lr = 0.01)
    inputs, labels = next(iter(synthetic_loader(12)))

    model(inputs).sum().backward()                     # stale gradients that zero_grad must clear
    optimizer.zero_grad()
    assert all(p.grad is None for p in model.parameters())

    outputs = model(inputs)
    loss = criterion(outputs, labels)
    loss.backward()
    before = {name: (p.detach().numpy().copy(), p.grad.numpy().copy()) for name, p in model.named_parameters()}
    optimizer.step()
    for name, p in model.named_parameters():
        weight, grad = before[name]
        assert np.allclose(p.detach().numpy(), weight - np.float32(0.01) * grad, rtol=0, atol=1e-7), name

    # the loss prints the way the lecture's and PyTorch's formatting expects
    value = loss.item()
    assert isinstance(value, float)
    assert '%.3f' % loss == f"{loss:.3f}" == '%.3f' % value
    assert f"{loss}" == f"{value}"


@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-10), ("float32", 1e-5)])
def test_training_cell_matches_pytorch(dtype, rtol, capsys):
    pytorch = pytest.importorskip("torch")
    ours, theirs = twin_models(pytorch, lecture_mlp, dtype)
    loader = synthetic_loader(48, double=dtype == "float64")   # unshuffled: both engines see the same batches

    our_losses = train_like_the_lecture(ours, loader, nn, optim, epochs=2, print_every=2)
    our_print = capsys.readouterr().out
    their_losses = train_like_the_lecture(theirs, torch_batches(pytorch, loader), pytorch.nn, pytorch.optim,
                                          epochs=2, print_every=2)
    their_print = capsys.readouterr().out

    assert len(our_losses) == len(their_losses) == 8
    assert np.allclose(our_losses, their_losses, rtol=rtol, atol=0)
    if dtype == "float64":
        assert our_print == their_print
    for name, p in ours.named_parameters():
        assert np.allclose(p.detach().numpy(), theirs.state_dict()[name].numpy(), rtol=10 * rtol, atol=10 * rtol), name


# --- the test cells --------------------------------------------------------------------------------
def test_dataiter_next_and_builtin_next():
    test_loader = synthetic_loader(30)
    first, second, third = list(test_loader)

    dataiter = iter(test_loader)
    images, labels = dataiter.next()                  # old PyTorch iterators had .next()
    assert np.array_equal(images.numpy(), first[0].numpy()) and np.array_equal(labels.numpy(), first[1].numpy())
    images, labels = next(dataiter)                    # today's spelling, on the same iterator
    assert np.array_equal(labels.numpy(), second[1].numpy())
    assert len(dataiter.next()[1]) == len(third[1]) == 6
    with pytest.raises(StopIteration):
        dataiter.next()


@pytest.mark.parametrize("n, nrow", [(12, 12), (10000 % 12, 12), (5, 2), (7, 3)])
def test_make_grid_lays_images_out_like_torchvision(n, nrow):
    rng = np.random.default_rng(n)
    images = rng.random((n, 1, 28, 28)).astype(np.float32)
    grid = torchvision.utils.make_grid(torch.tensor(images), nrow = nrow)

    columns = min(nrow, n)
    assert grid.shape == (3, math.ceil(n / columns) * 30 + 2, columns * 30 + 2)   # padding 2
    assert grid.dtype == torch.float32
    # no rescaling: the values are the images' own, and the padding is 0
    assert grid.numpy().max() == images.max() and grid.numpy().min() == 0
    try:
        from torchvision.utils import make_grid as reference
        import torch as pytorch
        expected = reference(pytorch.from_numpy(images), nrow=nrow).numpy()
    except ImportError:
        expected = grid_by_the_formula(images, nrow)
    assert np.array_equal(grid.numpy(), expected)


def test_imshow_cell_draws_the_grid(agg_pyplot):
    images, _ = next(iter(synthetic_loader(12)))
    grid = torchvision.utils.make_grid(images, nrow = BATCH_SIZE)
    imshow(grid)
    drawn = plt.gca().get_images()
    assert len(drawn) == 1
    picture = np.asarray(drawn[0].get_array())
    assert picture.shape == (32, 12 * 30 + 2, 3)                   # H x W x RGB, as imshow wants
    assert np.array_equal(picture, np.transpose(grid.numpy(), (1, 2, 0)))
    plt.gcf().canvas.draw()                                          # and it renders


def test_prediction_cell_prints_labels_and_predictions(capsys, agg_pyplot):
    torch.manual_seed(0)
    model = lecture_mlp(nn)()
    test_loader = synthetic_loader(30)

    images, labels, predicted = prediction_cell(model, test_loader, BATCH_SIZE)

    logits = model(images).detach().numpy()
    assert predicted.dtype == torch.int64 and predicted.shape == (12,)
    assert np.array_equal(predicted.numpy(), logits.argmax(1))
    values, indices = torch.max(model(images), 1)
    assert np.array_equal(values.detach().numpy(), logits.max(1)) and np.array_equal(indices.numpy(), predicted.numpy())
    assert capsys.readouterr().out.splitlines() == [
        "GroundTruth", "    " + " ".join(f"{v:>3}" for v in labels.tolist()),
        "Prediction", "    " + " ".join(f"{v:>3}" for v in logits.argmax(1).tolist())]


def test_torch_max_of_the_numpy_array_behind_data():
    # PyTorch code often writes torch.max(outputs.data, 1); here .data is the NumPy array itself
    outputs = torch.tensor(np.random.default_rng(0).standard_normal((5, 10)), requires_grad=True)
    values, predicted = torch.max(outputs.data, 1)
    assert np.array_equal(predicted.numpy(), outputs.data.argmax(1))
    assert np.array_equal(values.numpy(), outputs.data.max(1)) and not values.requires_grad
    assert torch.max(outputs.data).item() == outputs.data.max()
    assert np.array_equal(torch.argmax(outputs.data, 1).numpy(), predicted.numpy())
    assert np.allclose(torch.sum(outputs.data, 1).numpy(), outputs.data.sum(1))
    assert np.allclose(torch.mean(outputs.data, 0).numpy(), outputs.data.mean(0))


def test_accuracy_cell_counts_and_prints_in_pytorchs_format(capsys):
    torch.manual_seed(0)
    model = lecture_mlp(nn)()
    train_like_the_lecture(model, synthetic_loader(240, shuffle=True), nn, optim, epochs=3)
    test_loader = synthetic_loader(25, seed=1)        # batches of 12, 12 and 1
    capsys.readouterr()

    n_correct, n_predict = accuracy_cell(torch, model, test_loader)

    labels = np.concatenate([labels.numpy() for _, labels in test_loader])
    logits = np.concatenate([model(inputs).detach().numpy() for inputs, _ in test_loader])
    expected_correct = int((logits.argmax(1) == labels).sum())
    assert n_predict == 25 and isinstance(n_predict, int)
    assert isinstance(n_correct, torch.Tensor) and n_correct.dtype == torch.int64 and n_correct.shape == ()
    assert n_correct.item() == expected_correct
    # PyTorch prints a 0-d tensor in an f-string as its number, and int64 / int is float32
    accuracy = float(np.float32(expected_correct) / np.float32(25))
    assert capsys.readouterr().out == f"{expected_correct}/25\nAccuracy: {accuracy:.3f}\n"


def test_accuracy_cell_prints_what_pytorch_prints(capsys):
    pytorch = pytest.importorskip("torch")
    ours, theirs = twin_models(pytorch, lecture_mlp, "float32")
    test_loader = synthetic_loader(30, seed=2)
    accuracy_cell(torch, ours, test_loader)
    our_print = capsys.readouterr().out
    accuracy_cell(pytorch, theirs, torch_batches(pytorch, test_loader))
    assert our_print == capsys.readouterr().out

    # and the same counts print the same, the lecture's 9761/10000 among them
    for correct, total in [(9761, 10000), (1135, 10000), (1, 3), (2, 3), (0, 12), (12, 12), (5, 8), (1, 2000), (3, 2000)]:
        printed = []
        for engine in (torch, pytorch):
            n_correct = 0
            n_correct += (engine.arange(total) < correct).sum()
            print(f"{n_correct}/{total}")
            print(f"Accuracy: {n_correct/total:.3f}")
            printed.append(capsys.readouterr().out)
        assert printed[0] == printed[1]


@pytest.mark.slow
def test_test_cells_on_real_mnist(mnist_root, capsys, agg_pyplot):
    batch_size = 12
    train_data = datasets.MNIST(str(mnist_root), train=True, transform=transforms.ToTensor())
    test_data = datasets.MNIST(str(mnist_root), train=False, transform=transforms.ToTensor())
    train_loader = torch.utils.data.DataLoader(torch.utils.data.Subset(train_data, range(1200)),
                                               batch_size = batch_size, shuffle=True)
    test_loader = torch.utils.data.DataLoader(test_data, batch_size = batch_size)
    torch.manual_seed(0)
    model = lecture_mlp(nn)()
    train_like_the_lecture(model, train_loader, nn, optim)   # 100 steps: enough to have predictions
    capsys.readouterr()

    _, _, predicted = prediction_cell(model, test_loader, batch_size)
    n_correct, n_predict = accuracy_cell(torch, model, test_loader)

    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == ["GroundTruth", "      7   2   1   0   4   1   4   9   5   9   0   6"]  # as the lecture shows
    assert plt.gca().get_images()[0].get_array().shape == (32, 362, 3)
    with torch.no_grad():   # all 10000 at once, to check the cells' batch-by-batch count
        logits = model(torch.tensor(test_data.data.numpy()[:, None] / np.float32(255))).numpy()
    right = int((logits.argmax(1) == test_data.targets.numpy()).sum())
    assert np.array_equal(predicted.numpy(), logits[:12].argmax(1))
    assert lines[3] == "    " + " ".join(f"{v:>3}" for v in logits[:12].argmax(1).tolist())
    accuracy = float(np.float32(right) / np.float32(10000))     # PyTorch divides in float32
    assert lines[4:] == [f"{right}/10000", f"Accuracy: {accuracy:.3f}"]
    assert (n_correct.item(), n_predict) == (right, 10000)


# --- the hyper-parameter MLP: a plain list, then a ModuleList ------------------------------------
def test_mlp_h_with_a_plain_list_registers_nothing_and_the_optimizer_says_why():
    MLP_h = lecture_mlp_h(nn)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = MLP_h([2, 3])     # its list was empty when assigned: nothing to warn about yet
    assert model(torch.zeros(4, 1, 28, 28)).shape == (4, 10)   # the forward itself works

    # gathering the parameters finds the list full of layers: a warning, then the friendly error
    with pytest.warns(UserWarning, match=r"MLP_h\.l_layers is a plain Python list.*nn\.ModuleList"), \
            pytest.raises(ValueError, match=r"optimizer got an empty parameter list.*nn\.ModuleList"):
        optim.SGD(model.parameters(), lr = 0.01)

    class Filled(nn.Module):   # a list filled before it is assigned: the warning comes at assignment
        def __init__(self):
            super().__init__()
            layers = [nn.Linear(784, 2), nn.Linear(2, 10)]
            self.l_layers = layers

    with pytest.warns(UserWarning, match=r"Filled\.l_layers .*nn\.ModuleList"):
        Filled()


def test_pytorch_also_refuses_the_plain_list():
    pytorch = pytest.importorskip("torch")
    model = lecture_mlp_h(pytorch.nn)([2, 3])
    with pytest.raises(ValueError, match="optimizer got an empty parameter list"):
        pytorch.optim.SGD(model.parameters(), lr = 0.01)


def test_mlp_h_with_a_module_list_registers_dotted_names_and_trains():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = lecture_mlp_h(nn, nn.ModuleList)([2, 3])
        optimizer = optim.SGD(model.parameters(), lr = 0.01)
    assert [(name, p.shape) for name, p in model.named_parameters()] == [
        ("l_layers.0.weight", (2, 784)), ("l_layers.0.bias", (2,)), ("l_layers.1.weight", (3, 2)),
        ("l_layers.1.bias", (3,)), ("l_layers.2.weight", (10, 3)), ("l_layers.2.bias", (10,))]
    assert sum(len(group["params"]) for group in optimizer.param_groups) == 6

    before = [p.detach().numpy().copy() for p in model.parameters()]
    train_like_the_lecture(model, synthetic_loader(24), nn, optim)
    assert all(not np.array_equal(b, p.detach().numpy()) for b, p in zip(before, model.parameters()))


def test_mlp_h_module_list_names_match_pytorch():
    pytorch = pytest.importorskip("torch")
    for hidden in ([2, 3], [512, 256, 128]):
        ours = lecture_mlp_h(nn, nn.ModuleList)(hidden)
        theirs = lecture_mlp_h(pytorch.nn, pytorch.nn.ModuleList)(hidden)
        assert [(n, tuple(p.shape)) for n, p in ours.named_parameters()] == \
               [(n, tuple(p.shape)) for n, p in theirs.named_parameters()]


# --- the ModuleList example, whose forward reuses the first five layers ---------------------------
def module_list_example_by_hand(x, *weights_and_biases):
    """MyModule's forward with its (W, b) pairs as explicit inputs, so gradcheck can perturb them."""
    linears = list(zip(weights_and_biases[0::2], weights_and_biases[1::2]))
    for i, (weight, bias) in enumerate(linears):
        half_weight, half_bias = linears[i // 2]
        x = F.linear(x, half_weight, half_bias) + F.linear(x, weight, bias)
    return x


def test_module_list_example_matches_pytorch():
    pytorch = pytest.importorskip("torch")
    ours, theirs = twin_models(pytorch, lecture_module_list_example, "float64")
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert len(list(ours.parameters())) == 20
    x = np.random.default_rng(0).standard_normal((4, 10))
    x_ours = torch.tensor(x, requires_grad=True)
    x_theirs = pytorch.tensor(x, requires_grad=True)

    out_ours, out_theirs = ours(x_ours), theirs(x_theirs)
    assert np.allclose(out_ours.detach().numpy(), out_theirs.detach().numpy(), rtol=1e-12, atol=1e-12)
    (out_ours * out_ours).sum().backward()
    (out_theirs * out_theirs).sum().backward()

    assert np.allclose(x_ours.grad.numpy(), x_theirs.grad.numpy(), rtol=1e-10, atol=1e-12)
    theirs_named = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():     # linears.0 to .4 collect three contributions each
        expected = theirs_named[name].grad.numpy()
        assert np.allclose(p.grad.numpy(), expected, rtol=1e-10, atol=1e-12 * np.abs(expected).max()), name


def test_module_list_example_gradients_by_central_differences():
    torch.manual_seed(0)
    model = lecture_module_list_example(nn)().double()
    x = torch.tensor(np.random.default_rng(1).standard_normal((3, 10)), requires_grad=True)
    weights = [p.detach() for p in model.parameters()]

    # the module and its by-hand twin compute the same numbers and the same gradients ...
    out = model(x)
    by_hand_inputs = [x.detach().requires_grad_()] + [w.requires_grad_() for w in weights]
    by_hand = module_list_example_by_hand(*by_hand_inputs)
    assert np.array_equal(out.detach().numpy(), by_hand.detach().numpy())
    out.sum().backward()
    by_hand.sum().backward()
    assert np.allclose(x.grad.numpy(), by_hand_inputs[0].grad.numpy(), rtol=1e-12, atol=0)
    for p, twin in zip(model.parameters(), by_hand_inputs[1:]):
        assert np.allclose(p.grad.numpy(), twin.grad.numpy(), rtol=1e-12, atol=0)

    # ... and the twin's gradients, weights included, agree with central differences
    assert torch.gradcheck(module_list_example_by_hand, [torch.tensor(x.data, requires_grad=True)]
                           + [torch.tensor(w.data, requires_grad=True) for w in weights])
    assert torch.gradcheck(model, [torch.tensor(x.data, requires_grad=True)])


@pytest.mark.parametrize("shape", [(28, 28), (1, 28, 28), (1, 1, 28, 28), (1, 3, 28, 28)])
def test_make_grid_of_one_image_is_that_image_as_torchvision_gives_it(shape):
    # torchvision returns a single image in three channels, without padding
    image = np.random.default_rng(0).random(shape).astype(np.float32)
    grid = torchvision.utils.make_grid(torch.tensor(image))
    assert grid.shape == (3, 28, 28)
    assert np.array_equal(grid.numpy()[0], image.reshape(-1, 28, 28)[0])
