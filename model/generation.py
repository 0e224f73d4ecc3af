"""Sampling videos from a trained CAGE model (reference-compat §5), with the original's schedules and controls.

    from model.generation import generate
    video = generate(model=model, num_frames=12, device="cuda", initial_frames=frames, feats=feats, feats_masks=masks)

The ODE from noise (t=0) to data (t=1) is solved window by window: "joint" denoises T new frames together, each window
conditioned on the previous frame (reference) and one random earlier frame (context); "rollout" staggers the noise
levels of the T frames in flight and advances one frame per stage.
"""
from __future__ import annotations

import sys
from typing import Callable, Optional

import torch
from einops import repeat
from torchdiffeq import odeint
from tqdm import tqdm

from model import rng
from model.controls import pad_controls
from model.flow_matching import FlowPath

FIXED_GRID_SOLVERS = ("euler", "midpoint", "rk4", "explicit_adams", "implicit_adams")
ADAPTIVE_SOLVERS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
METHODS = ("joint", "rollout")


class VelocityField:
    """dy/dt of the whole frame buffer for one stage: non-zero only on the T target frames of that stage."""

    def __init__(self, model, feats, masks, num_initial: int, gamma: float, batched_guidance: bool,
                 generator: Optional[torch.Generator], on_call: Optional[Callable] = None):
        self.model, self.feats, self.masks = model, feats, masks
        self.num_initial, self.gamma, self.batched_guidance = num_initial, gamma, batched_guidance
        self.generator, self.on_call = generator, on_call
        self.path = model.path
        self.num_targets = model.num_target_frames
        self.num_context = model.num_context_frames
        self.stage, self.i, self.context_from, self.scale_rolling = "joint", 0, 0, True
        self.plot = False  # noise-level bar chart at every evaluation (verbose, in notebooks)

    def set_stage(self, stage: str, i: int, context_from: int, scale_rolling: bool = True) -> None:
        self.stage, self.i, self.context_from, self.scale_rolling = stage, i, context_from, scale_rolling

    def target_times(self, t: torch.Tensor) -> tuple:
        """(timestamps of the T targets, velocity scale of each) for this stage at solver time t."""
        return self.path.stage_times(self.stage, t, self.num_targets, self.scale_rolling)

    def __call__(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        b, device, i, T = y.shape[0], y.device, self.i, self.num_targets
        if self.context_from >= i - 1:  # no earlier frame to choose from: the reference doubles as context
            context = torch.full((self.num_context,), i - 1, device=device, dtype=torch.long)
        else:
            context = rng.randint(self.context_from, i - 1, (self.num_context,), device, self.generator)
        reference_and_targets = torch.arange(i - 1, i + T, device=device)  # made on the device: no copy per call
        targets = reference_and_targets[1:]
        selected = torch.cat([context, reference_and_targets])  # [l]
        target_t, scale = self.target_times(t.float())
        if self.plot:
            plot_noise_levels(self.path.noise_levels(y.shape[1], i, target_t), f"{self.stage}, frames {i}..{i + T - 1}")
        times = torch.cat([self.path.clean_times(len(selected) - T, device), target_t])  # context, reference, targets
        x = y[:, selected]
        indices = repeat(selected, "l -> b l", b=b)
        times = repeat(times, "l -> b l", b=b).to(y.dtype)
        feats, masks = self.feats[:, targets - self.num_initial], self.masks[:, targets - self.num_initial]
        velocity = self._predict(x, times, indices, feats, masks)[:, -T:]
        dy = torch.zeros_like(y)
        # the state stays fp32 under autocast: bf16 velocities are cast up before they are written
        dy[:, targets] = (velocity * scale.to(velocity.dtype)[None, :, None, None, None]).to(dy.dtype)
        return dy

    def _predict(self, x, times, indices, feats, masks) -> torch.Tensor:
        """(1+γ)·v(controls) − γ·v(no controls); both passes as one batch when `batched_guidance`."""
        predict = self.model.predict_vector_field
        if self.gamma == 0:
            self._record(indices, times, masks, x, feats)
            return predict(x, times, indices, feats, masks, generator=self.generator)
        no_masks = torch.zeros_like(masks)
        if self.batched_guidance:
            both = predict(torch.cat([x, x]), torch.cat([times, times]), torch.cat([indices, indices]),
                           torch.cat([feats, feats]), torch.cat([masks, no_masks]), generator=self.generator)
            self._record(torch.cat([indices, indices]), torch.cat([times, times]), torch.cat([masks, no_masks]), x, feats)
            conditional, unconditional = both.chunk(2)
        else:
            self._record(indices, times, masks, x, feats)
            conditional = predict(x, times, indices, feats, masks, generator=self.generator)
            self._record(indices, times, no_masks, x, feats)
            unconditional = predict(x, times, indices, feats, no_masks, generator=self.generator)
        return (1 + self.gamma) * conditional - self.gamma * unconditional

    def _record(self, indices, times, masks, x, feats) -> None:
        if self.on_call is not None:
            self.on_call({"stage": self.stage, "i": self.i, "indices": indices.clone(), "t": times.clone(),
                          "masks": masks.clone(), "x_shape": tuple(x.shape), "feats_shape": tuple(feats.shape)})


def in_notebook() -> bool:
    """True inside a Jupyter kernel (where the noise-level plot can be shown)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def plot_noise_levels(levels: torch.Tensor, stage: str) -> None:
    """Bar chart of the noise levels, redrawn in place in a notebook."""
    import matplotlib.pyplot as plt
    from IPython.display import clear_output

    clear_output(wait=True)
    plt.figure(figsize=(max(4, len(levels) * 0.3), 2))
    plt.bar(range(len(levels)), levels.numpy(), color="tab:blue")
    plt.ylim(0, 1)
    plt.xlabel("frame in buffer")
    plt.ylabel("t (1 = clean)")
    plt.title(stage)
    plt.show()


def stages(method: str, num_frames: int, num_initial: int, num_targets: int, init_id: int, past_horizon: int) -> list:
    """[(stage, i, context_from)]: i is the first target frame of the stage in the buffer."""
    def context_from(i: int) -> int:
        return init_id if past_horizon == -1 else max(init_id, i - past_horizon)

    plan = [("joint", num_initial, 0)]
    if method == "joint":
        for k in range(0, num_frames - num_targets, num_targets):
            i = num_initial + num_targets + k
            plan.append(("joint", i, context_from(i)))
    elif method == "rollout":
        if num_frames > num_targets:
            i = num_initial + num_targets
            plan.append(("warmup", i, context_from(i)))
            for i in range(num_initial + num_targets + 1, num_initial + num_frames):
                plan.append(("rolling", i, context_from(i)))
    else:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return plan


def solver_options(odesolver: str, num_steps: int, atol: float, rtol: float, path: FlowPath) -> dict:
    """odeint keyword arguments valid for the solver (the original passed options some solvers reject)."""
    if odesolver in FIXED_GRID_SOLVERS:
        return {"method": odesolver, "options": {"step_size": path.step_size(num_steps)}}
    if odesolver in ADAPTIVE_SOLVERS:
        return {"method": odesolver, "atol": atol, "rtol": rtol}
    raise ValueError(f"odesolver must be one of {FIXED_GRID_SOLVERS + ADAPTIVE_SOLVERS}, got {odesolver!r}")


@torch.no_grad()
def generate(
    model,
    num_frames: int,
    device,
    initial_frames: Optional[torch.Tensor] = None,
    feats: Optional[torch.Tensor] = None,
    feats_masks: Optional[torch.Tensor] = None,
    batch_size: int = 1,
    method: str = "joint",
    odesolver: str = "euler",
    num_steps: int = 20,
    gamma: float = 0.0,
    past_horizon: int = -1,
    chunk_size: int = 1,
    verbose: bool = False,
    generator: Optional[torch.Generator] = None,
    seed: Optional[int] = None,
    batched_guidance: bool = True,
    scale_rollout_velocity: bool = True,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    return_latents: bool = False,
    on_call: Optional[Callable] = None,
):
    """Generate `num_frames` new frames: [b, l_init + num_frames, 3, H, W] on the CPU, initial frames prepended.

    initial_frames [b, l, 3, H, W] in [-1, 1] (None: start from noise); feats [b, k, F, h, w] and feats_masks
    [b, k, 1, h, w]: controls of generated frame j at index j (None: no controls; shorter: padded with none).
    gamma: guidance v = (1+γ)·v(controls) − γ·v(no controls). past_horizon: how far back the random context frame may
    lie (-1: anywhere; 0: the reference itself). generator / seed: all random draws (noise, context frames) come from
    it, so equal seeds give equal videos; without either, torch's global RNG is used as in the original.
    verbose shows a progress bar over the stages, and inside a notebook a bar chart of every frame's noise level.
    scale_rollout_velocity (default True) fixes the original's rollout, whose rolling stages miss the 1/T factor and
    overshoot; set False to reproduce the original. Returns (video, latents) with return_latents.
    """
    device = torch.device(device)
    if generator is None and seed is not None:
        generator = torch.Generator().manual_seed(seed)
    model = model.to(device).eval()
    T = model.num_target_frames
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    given = [x for x in (initial_frames, feats, feats_masks) if x is not None]
    b = given[0].shape[0] if given else batch_size
    if any(x.shape[0] != b for x in given):
        raise ValueError(f"initial_frames, feats and feats_masks must share the batch size, got {[x.shape[0] for x in given]}")
    s, (h, w) = model.state_size, model.state_res

    # Noise is drawn on the CPU (as the original) unless the generator lives elsewhere: equal seeds, equal videos.
    if initial_frames is not None:
        initial_frames = initial_frames.to(device)
        latents = model.encode(initial_frames).float()
        if latents.shape[1] == 1:  # a fake context frame before the single reference
            latents = torch.cat([rng.normal((b, 1, s, h, w), device, generator, default="cpu"), latents], dim=1)
        init_id = 0
    else:
        latents = rng.normal((b, 2, s, h, w), device, generator, default="cpu")  # fake context and reference
        init_id = 2
    num_initial = latents.shape[1]
    y = torch.cat([latents, rng.normal((b, num_frames + T, s, h, w), device, generator, default="cpu")], dim=1)

    length = num_frames + T  # controls for every frame the buffer may denoise
    if feats is None:
        feats = torch.zeros(b, length, model.feats_dim, h, w, device=device)
        feats_masks = torch.zeros(b, length, 1, h, w, device=device)
    elif feats_masks is None:
        raise ValueError("feats_masks is required when feats is given")
    feats, feats_masks = pad_controls(feats.to(device).float(), feats_masks.to(device).float(), length)

    field = VelocityField(model, feats, feats_masks, num_initial, gamma, batched_guidance, generator, on_call)
    field.plot = verbose and in_notebook()
    kwargs = solver_options(odesolver, num_steps, atol, rtol, model.path)
    span = model.path.time_span(device)
    plan = stages(method, num_frames, num_initial, T, init_id, past_horizon)
    for stage, i, context_from in tqdm(plan, desc="generate", disable=not verbose):
        field.set_stage(stage, i, context_from, scale_rollout_velocity)
        y = odeint(field, y, span, **kwargs)[-1]

    generated = y[:, num_initial:num_initial + num_frames]
    frames = torch.cat([model.decode(generated[:, k:k + chunk_size]).float().cpu()
                        for k in range(0, num_frames, max(1, chunk_size))], dim=1)
    if initial_frames is not None:
        frames = torch.cat([initial_frames.float().cpu(), frames], dim=1)
    return (frames, generated) if return_latents else frames


def generate_from_controls(model, controls, source_frames, num_frames: int, device, initial_frames=None,
                           precision: str = "fp32", **generate_kwargs) -> torch.Tensor:
    """The video that a controls file (model.controls.Controls) describes, as generate.py makes it.

    source_frames: [3 H W] in [-1, 1], one per source of the controls ("input" already resolved to the input frame);
    their DINO features are computed together, then the controls built and `generate` run under `precision` ("bf16"
    or "fp32", resolved). generate.py and the web editor both call this, so equal inputs and seeds give equal bits.
    """
    from lutils.precision import autocast

    feats = masks = None
    if controls.placements:
        feats, masks = controls.build(model.get_features(torch.stack(list(source_frames)).to(device)))
    with autocast(device, precision):
        return generate(model, num_frames, device, initial_frames=initial_frames, feats=feats, feats_masks=masks,
                        **generate_kwargs)
