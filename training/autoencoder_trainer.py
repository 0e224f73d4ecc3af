"""Training our own VQVAE (autoencoder type "ours") on HDF5 clips, on the generic loop (training/loop.py).

Loss: reconstruction MSE + codebook and commitment terms (beta 0.25). Dead codes (rarely chosen ones) are restarted
at encoder outputs of the current batch every `restart_every` steps, so the codebook stays in use. Checkpoints keep
the VQVAE's weights under "model" with DDP's `module.` prefix: the file is directly an `autoencoder.ckpt_path` that
Model (and the original code) loads.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from einops import rearrange

from dataset.clips import seeded_pick
from dataset.transforms import to_float
from evaluation.frame_metrics import psnr_per_frame
from lutils import schema
from model.autoencoder import VQVAE
from model.checkpoint import DDP_PREFIX, autoencoder_file, strip_prefix
from training.distributed import barrier
from training.loop import VAL_SEED, BaseTrainer

USAGE_DECAY = 0.99


class AutoencoderTrainer(BaseTrainer):
    """Trains VQVAE(config["autoencoder"]) to reconstruct frames; see train_autoencoder.py."""

    schema_kind = "autoencoder"  # its training defaults differ from CAGE's: no EMA, code restarts (lutils/schema.py)

    def build_model(self) -> VQVAE:
        ae = schema.complete("autoencoder", self.config["autoencoder"], kind="autoencoder")  # type "ours" only
        weights = self.options["loss_weights"]
        self.reconstruction_weight = float(weights["reconstruction"])
        self.vq_weight = float(weights["vq"])
        self.restart_every = int(self.options["restart_every"])
        self.dead_threshold = float(self.options["dead_code_threshold"])
        model = VQVAE.from_config(ae)
        # Expected uses of each code per step, as an exponential moving average (restarts use it).
        self.usage = torch.ones(model.vector_quantizer.num_embeddings)
        self.last_latents: Optional[torch.Tensor] = None
        self.last_codes: Optional[torch.Tensor] = None
        return model

    def forward_loss(self, observations: torch.Tensor) -> tuple:
        frames = rearrange(observations, "b o c h w -> (b o) c h w")
        out = self.ddp_model(frames, with_loss=True)
        reconstruction = F.mse_loss(out.reconstructions.float(), frames.float())
        loss = self.reconstruction_weight * reconstruction + self.vq_weight * out.vq_loss.float()
        self.last_latents, self.last_codes = out.latents.detach(), out.codes.detach()
        counts = torch.bincount(out.codes.flatten(), minlength=self.usage.numel()).float()
        probabilities = counts / counts.sum()
        perplexity = torch.exp(-(probabilities * torch.log(probabilities.clamp_min(1e-10))).sum())
        return loss, {"Training/Loss/reconstruction": reconstruction, "Training/Loss/vq": out.vq_loss,
                      "Training/Stats/codebook_used": (counts > 0).float().mean(), "Training/Stats/perplexity": perplexity}

    @torch.no_grad()
    def after_step(self) -> None:
        """Track code usage; restart dead codes at random encoder outputs of this batch (same on every rank)."""
        counts = torch.bincount(self.last_codes.flatten(), minlength=self.usage.numel()).float().to(self.device)
        if self.info.distributed:
            dist.all_reduce(counts)
        self.usage.mul_(USAGE_DECAY).add_(counts.cpu() * (1 - USAGE_DECAY))
        if self.restart_every <= 0 or (self.global_step + 1) % self.restart_every != 0:
            return
        expected = counts.sum().item() / self.usage.numel()
        dead = torch.nonzero(self.usage < self.dead_threshold * expected).flatten()
        if len(dead) == 0:
            return
        embedding = self.model.vector_quantizer.embedding.weight
        candidates = rearrange(self.last_latents, "n c h w -> (n h w) c").float()
        picks = torch.randint(len(candidates), (len(dead),), generator=self.generator, device=self.generator.device)
        embedding.data[dead.to(embedding.device)] = candidates[picks.to(candidates.device)].to(embedding.dtype)
        if self.info.distributed:
            dist.broadcast(embedding.data, src=0)
        self.usage[dead] = expected
        self.logger.info(f"step {self.global_step + 1}: restarted {len(dead)} dead codes")

    def extra_state(self) -> dict:
        return {"usage": self.usage.clone()}

    def load_extra_state(self, state: dict) -> None:
        if "usage" in state:
            self.usage.copy_(state["usage"])

    def state_dict_for_checkpoint(self) -> dict:
        """The VQVAE's keys with `module.`, the format of the original's autoencoder files."""
        return autoencoder_file(self.model.state_dict())["model"]

    def snapshot(self) -> dict:
        """The VQVAE's weights (EMA weights when it keeps them) in the layout of the original's autoencoder files."""
        ema = self.ema.shadow if self.ema is not None else None
        return autoencoder_file(self.model.state_dict(), ema, global_step=self.global_step)

    def load_model_state(self, state: dict) -> None:
        self.model.load_state_dict(strip_prefix(state, DDP_PREFIX))

    def _val_frames(self) -> torch.Tensor:
        clips = seeded_pick(self.val_set, self.options["val_clips"], VAL_SEED)
        return rearrange(to_float(torch.stack(clips)), "b o c h w -> (b o) c h w")

    @torch.no_grad()
    def validate(self) -> Optional[dict]:
        """Reconstruction PSNR, codebook use and latent spread on fixed validation frames.

        `latent_std` is the standard deviation of the unquantized latents; CAGE's `model.latent_scale` should be about
        its inverse, so that the latents match the unit variance of the flow's noise.
        """
        if self.val_set is None:
            return None
        values = None
        if self.info.is_main:
            frames = self._val_frames().to(self.device)
            self.model.eval()
            with self.autocast:
                out = self.model(frames)
            values = {"Validation/psnr": float(psnr_per_frame(frames, out.reconstructions.float(), "minus_one_one").mean()),
                      "Validation/codebook_used": float(out.codes.unique().numel() / self.usage.numel()),
                      "Validation/latent_std": float(out.latents.float().std())}
        barrier(self.info)
        return values

    @torch.no_grad()
    def sample(self) -> None:
        """samples/step_N.png: validation frames (top) and their reconstructions (bottom)."""
        from lutils.media import save_contact_sheet

        if self.info.is_main and self.val_set is not None:
            frames = self._val_frames().to(self.device)
            self.model.eval()
            with self.autocast:
                reconstructions = self.model(frames).reconstructions.float().clamp(-1, 1)
            path = save_contact_sheet(self.run_dir / "samples" / f"step_{self.global_step}.png",
                                      torch.stack([frames.cpu(), reconstructions.cpu()]))
            self.logger.info(f"step {self.global_step}: reconstructions written to {path}")
        barrier(self.info)
