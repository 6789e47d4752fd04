"""The smallest useful example: a 2-4-1 network learns XOR with the PyTorch-shaped API."""

import tinygrad_edu as torch
from tinygrad_edu import nn, optim

torch.manual_seed(0)
x = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
y = torch.tensor([[0.0], [1.0], [1.0], [0.0]])

model = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 1), nn.Sigmoid())
criterion = nn.BCELoss()
optimizer = optim.SGD(model.parameters(), lr=0.5, momentum=0.9)

for step in range(500):
    optimizer.zero_grad()
    loss = criterion(model(x), y)
    loss.backward()          # dL/dw for every weight, by reverse-mode autograd
    optimizer.step()         # w <- w - lr * (momentum-smoothed) dL/dw
    if step % 100 == 0:
        print(f"step {step:3d}  loss {loss:.4f}")

with torch.no_grad():
    print("predictions:", model(x).reshape(-1).tolist())
