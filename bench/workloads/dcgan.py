"""A DCGAN trained on synthetic 64x64 color images: pytorch/examples `dcgan/main.py`, as a plain script.

    python bench/workloads/dcgan.py [--scale 1.0] [--epochs 1]

As in the example: the generator (nz=100 -> ngf*8 x 4x4 -> ... -> 3 x 64x64 through
transposed convolutions, batch norm, ReLU, tanh) and the discriminator (strided
convolutions, batch norm, LeakyReLU 0.2, sigmoid) with ngf = ndf = 64, their `weights_init`,
BCELoss, Adam (lr 0.0002, betas (0.5, 0.999)) for both, batches of 64, a fixed noise batch,
real label 1 and fake label 0, the same three steps per batch (D on real, D on fake, G),
and the training loop at module level.

Not as in the example. No download: the images are synthetic (2-4 soft colored blobs on
a dark background, in [-1, 1] as after the example's Normalize), generated from a seed.
And the size: one DCGAN step on 64 images takes seconds on a 2-core CPU, so --scale 1.0
means 1,280 images (20 batches) for one epoch, which took 78 s on the shared 2-core
development VM; the example trains 25 epochs over datasets of hundreds of thousands of images. --scale multiplies the
image count. No images or checkpoints are written (the example saves some per epoch).
"""

import argparse

import numpy as np
import torch
import torch.nn as nn
import torch.optim as optim
from torch.utils.data import DataLoader, TensorDataset

nz, ngf, ndf, nc = 100, 64, 64, 3
FULL = 1_280


def weights_init(m):
    classname = m.__class__.__name__
    if classname.find("Conv") != -1:
        torch.nn.init.normal_(m.weight, 0.0, 0.02)
    elif classname.find("BatchNorm") != -1:
        torch.nn.init.normal_(m.weight, 1.0, 0.02)
        torch.nn.init.zeros_(m.bias)


class Generator(nn.Module):
    def __init__(self):
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 8), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh(),
        )

    def forward(self, input):
        return self.main(input)


class Discriminator(nn.Module):
    def __init__(self):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 8), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False), nn.Sigmoid(),
        )

    def forward(self, input):
        return self.main(input).view(-1, 1).squeeze(1)


def synthetic_images(n, seed):
    """n 3x64x64 float32 images in [-1, 1]: 2-4 soft colored blobs each."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:64, 0:64].astype(np.float32)
    images = np.zeros((n, 3, 64, 64), dtype=np.float32)
    for k in range(4):
        present = (rng.random(n) < 0.5) if k >= 2 else np.ones(n, bool)
        cy, cx = (rng.uniform(8, 56, (2, n, 1, 1))).astype(np.float32)
        width = rng.uniform(20, 120, (n, 1, 1)).astype(np.float32)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / width) * present[:, None, None]
        images += blob[:, None] * rng.uniform(0, 1, (n, 3, 1, 1)).astype(np.float32)
    return np.clip(images, 0, 1) * 2 - 1


parser = argparse.ArgumentParser(description="pytorch/examples DCGAN on synthetic images")
parser.add_argument("--scale", type=float, default=1.0, help=f"fraction of {FULL} images")
parser.add_argument("--epochs", type=int, default=1)
args = parser.parse_args()

torch.manual_seed(999)
np.random.seed(999)
images = torch.from_numpy(synthetic_images(max(int(FULL * args.scale), 64), seed=999))
dataloader = DataLoader(TensorDataset(images), batch_size=64, shuffle=True)

netG = Generator()
netG.apply(weights_init)
netD = Discriminator()
netD.apply(weights_init)
criterion = nn.BCELoss()
fixed_noise = torch.randn(64, nz, 1, 1)
real_label, fake_label = 1.0, 0.0
optimizerD = optim.Adam(netD.parameters(), lr=0.0002, betas=(0.5, 0.999))
optimizerG = optim.Adam(netG.parameters(), lr=0.0002, betas=(0.5, 0.999))

losses = []
for epoch in range(args.epochs):
    for i, (real,) in enumerate(dataloader):
        # (1) Update D: maximize log(D(x)) + log(1 - D(G(z)))
        netD.zero_grad()
        batch_size = real.size(0)
        label = torch.full((batch_size,), real_label)
        output = netD(real)
        errD_real = criterion(output, label)
        errD_real.backward()
        D_x = output.mean().item()

        noise = torch.randn(batch_size, nz, 1, 1)
        fake = netG(noise)
        label.fill_(fake_label)
        output = netD(fake.detach())
        errD_fake = criterion(output, label)
        errD_fake.backward()
        D_G_z1 = output.mean().item()
        errD = errD_real + errD_fake
        optimizerD.step()

        # (2) Update G: maximize log(D(G(z)))
        netG.zero_grad()
        label.fill_(real_label)
        output = netD(fake)
        errG = criterion(output, label)
        errG.backward()
        D_G_z2 = output.mean().item()
        optimizerG.step()

        losses.append((errD.item(), errG.item()))
        print(f"[{epoch}/{args.epochs}][{i}/{len(dataloader)}] Loss_D: {errD.item():.4f} Loss_G: {errG.item():.4f} "
              f"D(x): {D_x:.4f} D(G(z)): {D_G_z1:.4f} / {D_G_z2:.4f}")

with torch.no_grad():
    sample = netG(fixed_noise)
print(f"dcgan: images={len(images)} epochs={args.epochs} steps={len(losses)} loss_D={losses[-1][0]:.4f} "
      f"loss_G={losses[-1][1]:.4f} sample_mean={sample.mean().item():.4f}")
