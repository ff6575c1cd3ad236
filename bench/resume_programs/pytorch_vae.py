# From pytorch/examples (https://github.com/pytorch/examples) at 77f55b9, vae/main.py.
# BSD 3-Clause License, Copyright (c) 2017, Pytorch contributors; see
# https://github.com/pytorch/examples/blob/main/LICENSE.
# Adapted for relive's resume corpus (bench/resume_fidelity.py), only to run offline and
# deterministically on a CPU in a few seconds:
# - torchvision is not needed: datasets.MNIST is replaced by SyntheticMNIST (below), 1280
#   training and 256 test 28x28 digits in [0, 1] generated from a fixed seed (ToTensor's
#   scaling written out), and save_image by save_digest, which writes the image tensor's
#   SHA-256 and sum to results/*.txt instead of a PNG;
# - defaults: --epochs 3 (was 10), --log-interval 2 (was 10);
# - results/ is created if missing; the end prints a hash of the trained weights.
# The model, the loss, Adam, the shuffled training loader (seeded by torch.manual_seed as
# upstream) and the train/test loops are upstream's.
from __future__ import print_function
import argparse
import torch
import torch.utils.data
from torch import nn, optim
from torch.nn import functional as F
import hashlib
import os


parser = argparse.ArgumentParser(description='VAE MNIST Example')
parser.add_argument('--batch-size', type=int, default=128, metavar='N',
                    help='input batch size for training (default: 128)')
parser.add_argument('--epochs', type=int, default=3, metavar='N',
                    help='number of epochs to train (default: 3)')
parser.add_argument('--no-accel', action='store_true', 
                    help='disables accelerator')
parser.add_argument('--seed', type=int, default=1, metavar='S',
                    help='random seed (default: 1)')
parser.add_argument('--log-interval', type=int, default=2, metavar='N',
                    help='how many batches to wait before logging training status')
args = parser.parse_args()


class SyntheticMNIST(torch.utils.data.Dataset):
    """MNIST-shaped digits in [0, 1] from a fixed seed: class stroke patterns plus noise."""

    def __init__(self, train, transform=None):
        g = torch.Generator().manual_seed(1234)
        templates = (torch.rand(10, 28, 28, generator=g) > 0.7).float()
        if not train:
            g = torch.Generator().manual_seed(4321)
        n = 1280 if train else 256
        self.targets = torch.randint(0, 10, (n,), generator=g)
        noise = torch.rand(n, 28, 28, generator=g)
        self.data = (templates[self.targets] * 180 + noise * 75).to(torch.uint8)

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, index):
        # what transforms.ToTensor() makes of a uint8 image
        return (self.data[index].float() / 255.0).unsqueeze(0), int(self.targets[index])


def save_digest(tensor, filename, nrow=8):
    """Stands for torchvision.utils.save_image: the image's digest, not its PNG."""
    with open(filename.replace('.png', '.txt'), 'w') as f:
        f.write(hashlib.sha256(tensor.detach().numpy().tobytes()).hexdigest()
                + ' %.6f\n' % tensor.sum().item())


use_accel = not args.no_accel and torch.accelerator.is_available()

torch.manual_seed(args.seed)


if use_accel:
    device = torch.accelerator.current_accelerator()
else:
    device = torch.device("cpu")

print(f"Using device: {device}")

kwargs = {'num_workers': 1, 'pin_memory': True} if use_accel else {}
train_loader = torch.utils.data.DataLoader(
    SyntheticMNIST(train=True),
    batch_size=args.batch_size, shuffle=True, **kwargs)
test_loader = torch.utils.data.DataLoader(
    SyntheticMNIST(train=False),
    batch_size=args.batch_size, shuffle=False, **kwargs)


class VAE(nn.Module):
    def __init__(self):
        super(VAE, self).__init__()

        self.fc1 = nn.Linear(784, 400)
        self.fc21 = nn.Linear(400, 20)
        self.fc22 = nn.Linear(400, 20)
        self.fc3 = nn.Linear(20, 400)
        self.fc4 = nn.Linear(400, 784)

    def encode(self, x):
        h1 = F.relu(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def reparameterize(self, mu, logvar):
        std = torch.exp(0.5*logvar)
        eps = torch.randn_like(std)
        return mu + eps*std

    def decode(self, z):
        h3 = F.relu(self.fc3(z))
        return torch.sigmoid(self.fc4(h3))

    def forward(self, x):
        mu, logvar = self.encode(x.view(-1, 784))
        z = self.reparameterize(mu, logvar)
        return self.decode(z), mu, logvar


model = VAE().to(device)
optimizer = optim.Adam(model.parameters(), lr=1e-3)


# Reconstruction + KL divergence losses summed over all elements and batch
def loss_function(recon_x, x, mu, logvar):
    BCE = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction='sum')

    # see Appendix B from VAE paper:
    # Kingma and Welling. Auto-Encoding Variational Bayes. ICLR, 2014
    # https://arxiv.org/abs/1312.6114
    # 0.5 * sum(1 + log(sigma^2) - mu^2 - sigma^2)
    KLD = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())

    return BCE + KLD


def train(epoch):
    model.train()
    train_loss = 0
    for batch_idx, (data, _) in enumerate(train_loader):
        data = data.to(device)
        optimizer.zero_grad()
        recon_batch, mu, logvar = model(data)
        loss = loss_function(recon_batch, data, mu, logvar)
        loss.backward()
        train_loss += loss.item()
        optimizer.step()
        if batch_idx % args.log_interval == 0:
            print('Train Epoch: {} [{}/{} ({:.0f}%)]\tLoss: {:.6f}'.format(
                epoch, batch_idx * len(data), len(train_loader.dataset),
                100. * batch_idx / len(train_loader),
                loss.item() / len(data)))

    print('====> Epoch: {} Average loss: {:.4f}'.format(
          epoch, train_loss / len(train_loader.dataset)))


def test(epoch):
    model.eval()
    test_loss = 0
    with torch.no_grad():
        for i, (data, _) in enumerate(test_loader):
            data = data.to(device)
            recon_batch, mu, logvar = model(data)
            test_loss += loss_function(recon_batch, data, mu, logvar).item()
            if i == 0:
                n = min(data.size(0), 8)
                comparison = torch.cat([data[:n],
                                      recon_batch.view(args.batch_size, 1, 28, 28)[:n]])
                save_digest(comparison.cpu(),
                         'results/reconstruction_' + str(epoch) + '.png', nrow=n)

    test_loss /= len(test_loader.dataset)
    print('====> Test set loss: {:.4f}'.format(test_loss))

if __name__ == "__main__":
    os.makedirs('results', exist_ok=True)
    for epoch in range(1, args.epochs + 1):
        train(epoch)
        test(epoch)
        with torch.no_grad():
            sample = torch.randn(64, 20).to(device)
            sample = model.decode(sample).cpu()
            save_digest(sample.view(64, 1, 28, 28),
                       'results/sample_' + str(epoch) + '.png')
    weights = torch.cat([p.detach().flatten() for p in model.parameters()])
    print("weights sha256", hashlib.sha256(weights.numpy().tobytes()).hexdigest())
