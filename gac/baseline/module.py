"""The baseline's LightningModule: L1 on standardised reflectance, plus pix2pix's PatchGAN term when `gan_weight` > 0.

With the GAN term off (the default) Lightning's automatic optimisation runs,
so accumulation, precision and DDP behave as in stages 2 and 3. With it on,
generator and discriminator alternate per batch (manual optimisation, one
step each, pix2pix's recipe); gradient accumulation is then not used.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from gac.baseline.model import BaselineUNet, PatchDiscriminator
from gac.baseline.params import BaselineParams
from gac.losses import fill_missing, psnr
from gac.nodata import standardised_filled
from gac.training import adamw_with_schedule

REFLECTANCE_SCALE = 1e4


class BaselineModule(pl.LightningModule):
    def __init__(self, net: BaselineUNet, p: BaselineParams):
        super().__init__()
        self.net = net
        self.train_params = p
        self.gan_weight = p.gan_weight
        self.disc = PatchDiscriminator(p.disc_channels) if p.gan_weight > 0 else None
        self.automatic_optimization = self.disc is None

    def _l1(self, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(L1 over valid pixels, standardised prediction, standardised target with NaN off the valid pixels)."""
        pred = self.net.standardised(batch["s1"])
        target = (batch["s2"] - self.net.s2_mean) / self.net.s2_std
        target = torch.where(batch["valid"][:, None], target, torch.full_like(target, float("nan")))
        filled = fill_missing(pred, target)
        return F.l1_loss(pred, filled), pred, filled

    def _gan_terms(self, batch, pred: torch.Tensor, target: torch.Tensor):
        s1 = standardised_filled(batch["s1"], self.net.s1_mean, self.net.s1_std)
        fake = self.disc(s1, pred)
        g_loss = F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))
        real = self.disc(s1, target)
        fake_detached = self.disc(s1, pred.detach())
        d_loss = 0.5 * (
            F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
            + F.binary_cross_entropy_with_logits(fake_detached, torch.zeros_like(fake_detached))
        )
        return g_loss, d_loss

    def training_step(self, batch, batch_idx):
        l1, pred, target = self._l1(batch)
        size = pred.shape[0]
        if self.disc is None:
            self.log("train/loss", l1, prog_bar=True, on_step=True, on_epoch=True, batch_size=size, sync_dist=True)
            return l1
        g_opt, d_opt = self.optimizers()
        g_sched, d_sched = self.lr_schedulers()
        g_loss, _ = self._gan_terms(batch, pred, target)
        total = l1 + self.gan_weight * g_loss
        g_opt.zero_grad()
        self.manual_backward(total)
        g_opt.step()
        g_sched.step()
        _, d_loss = self._gan_terms(batch, pred.detach(), target)
        d_opt.zero_grad()
        self.manual_backward(d_loss)
        d_opt.step()
        d_sched.step()
        for name, value in (("loss", total), ("l1", l1), ("gan_g", g_loss), ("gan_d", d_loss)):
            self.log(
                f"train/{name}",
                value,
                prog_bar=name == "loss",
                on_step=True,
                on_epoch=True,
                batch_size=size,
                sync_dist=True,
            )
        return None

    def validation_step(self, batch, batch_idx):
        l1, pred, _ = self._l1(batch)
        size = pred.shape[0]
        # val/loss is L1 alone either way, so checkpoints and early stopping compare like with like.
        self.log("val/loss", l1, prog_bar=True, on_epoch=True, batch_size=size, sync_dist=True)
        out = self.net.to_reflectance(pred) / REFLECTANCE_SCALE
        truth = (
            torch.where(batch["valid"][:, None], batch["s2"], torch.full_like(batch["s2"], float("nan")))
            / REFLECTANCE_SCALE
        )
        self.log("val/psnr", psnr(out, fill_missing(out, truth)), on_epoch=True, batch_size=size, sync_dist=True)

    def configure_optimizers(self):
        if self.disc is None:
            return adamw_with_schedule(self, self.train_params)
        generator = adamw_with_schedule(self, self.train_params, part=self.net)
        critic = adamw_with_schedule(self, self.train_params, part=self.disc)
        return [generator["optimizer"], critic["optimizer"]], [
            generator["lr_scheduler"]["scheduler"],
            critic["lr_scheduler"]["scheduler"],
        ]
