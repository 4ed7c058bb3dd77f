"""
The output layer's log-probs and loss without logits [N, V]: lm_head + log-softmax (+ entropy) a chunk of tokens at
a time. At Llama 3's 128,256-token vocabulary, logits and their fp32 copy take ~4.4 GB per 8.6K-token sequence each;
here a chunk's logits exist only while it is processed, and backward recomputes them (log-probs) or uses a gradient
computed during forward (the mean cross-entropy, whose upstream gradient is a known scalar factor).

    chunked_logprobs(h [N, D], weight [V, D], targets [N], temperature, chunk, need_entropy) -> (logp [N], ent [N]|None)
    chunked_cross_entropy(h [N, D], weight [V, D], targets [N] (-100 = ignored), chunk)    -> mean CE (scalar)
    full_logprobs(logits, targets, temperature, need_entropy, entropy_grad)                 -> the unchunked reference

model.Llama.forward calls these inside forward (DDP's and FSDP's hooks only see lm_head.weight there).
"""
from __future__ import annotations

import torch

def autocast_dtype(t: torch.Tensor) -> torch.dtype:
    """The dtype matmuls on t's device run in right now: autocast's (bf16) inside an autocast region, else t's."""
    dev = t.device.type
    return torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else t.dtype


def _scaled_logits(h, w, temperature: float):
    """h [c, dim], w [V, dim] (both already in the matmul dtype) -> logits / temperature [c, V] in fp32."""
    z = (h @ w.T).float()  # a new tensor either way, so the in-place division below touches nothing shared
    return z if temperature == 1.0 else z.div_(temperature)


def _logit_grad(z, logz, targets, g_logp, g_ent=None, mean_z=None):
    """d loss / d z [c, V] from the upstream gradients of log p(target) and of the entropy, g_logp and g_ent [c]
    (either may be None), built in z's buffer (z is consumed). dlogp/dz = onehot(target) - p and
    dH/dz = -p * (z - E_p[z]), so dz = p * (-g_ent * (z - E_p[z]) - g_logp), plus g_logp at the target."""
    if g_ent is None:
        dz = z.sub_(logz[:, None]).exp_().mul_(-g_logp[:, None])
    else:
        p = (z - logz[:, None]).exp_()
        dz = z.sub_(mean_z[:, None]).mul_(-g_ent[:, None])
        if g_logp is not None:
            dz.sub_(g_logp[:, None])
        dz.mul_(p)
    if g_logp is not None:
        dz.scatter_add_(-1, targets[:, None], g_logp[:, None])
    return dz


def _accumulate(dz, hc, wd, dh_out, dw):
    """The lm_head matmul's backward for one chunk: dz [c, V] (matmul dtype) -> dh_out [c, dim] and dw [V, dim] +=."""
    if dh_out is not None:
        dh_out.copy_(dz @ wd)
    if dw is not None:
        if dw.dtype == dz.dtype:
            dw.addmm_(dz.T, hc)
        else:
            dw.add_(dz.T @ hc)


class _ChunkedLogprobs(torch.autograd.Function):
    """Per-token log p(target) and entropy under softmax(h @ w.T / temperature), holding at most [chunk, V] logits:
    the backward recomputes each chunk's logits instead of keeping them (an 8K-token sequence's logits at V = 128K
    are 4 GB in fp32, more than the rest of a 3B model's activations). The matmuls run in `dtype` (bf16 under
    autocast), the softmax in fp32, as in the unchunked path."""

    @staticmethod
    def forward(ctx, h, w, targets, temperature: float, chunk: int, dtype: torch.dtype, need_entropy: bool):
        # h [N, dim], w [V, dim], targets [N] -> logp [N], entropy [N] (zeros without need_entropy), both fp32
        ctx.set_materialize_grads(False)  # an unused output (the entropy, often) gets None, not a zeros tensor
        N, wd = h.shape[0], w.to(dtype)
        logz, mean_z, logp = (torch.zeros(N, dtype=torch.float32, device=h.device) for _ in range(3))
        for s in range(0, N, chunk):
            z = _scaled_logits(h[s:s + chunk].to(dtype), wd, temperature)  # [c, V]
            logz[s:s + chunk] = torch.logsumexp(z, dim=-1)
            logp[s:s + chunk] = z.gather(-1, targets[s:s + chunk, None])[:, 0] - logz[s:s + chunk]
            if need_entropy:
                mean_z[s:s + chunk] = (torch.softmax(z, dim=-1) * z).sum(-1)  # E_p[z]
        ctx.save_for_backward(h, w, targets, logz, mean_z)
        ctx.temperature, ctx.chunk, ctx.dtype = temperature, chunk, dtype
        if not need_entropy:
            ent = torch.zeros_like(logp)
            ctx.mark_non_differentiable(ent)
            return logp, ent
        return logp, logz - mean_z  # H = log Z - E_p[z]

    @staticmethod
    def backward(ctx, g_logp, g_ent):
        h, w, targets, logz, mean_z = ctx.saved_tensors
        if g_logp is None and g_ent is None:
            return (None,) * 7
        wd, chunk, dt = w.to(ctx.dtype), ctx.chunk, ctx.dtype
        dh = torch.empty_like(h) if ctx.needs_input_grad[0] else None
        dw = torch.zeros(w.shape, dtype=torch.float32, device=w.device) if ctx.needs_input_grad[1] else None
        for s in range(0, h.shape[0], chunk):
            c = slice(s, s + chunk)
            hc = h[c].to(dt)
            dz = _logit_grad(_scaled_logits(hc, wd, ctx.temperature), logz[c], targets[c],
                             None if g_logp is None else g_logp[c], None if g_ent is None else g_ent[c], mean_z[c])
            dz = (dz if ctx.temperature == 1.0 else dz.div_(ctx.temperature)).to(dt)  # d loss / d logits [c, V]
            _accumulate(dz, hc, wd, None if dh is None else dh[c], dw)
        return dh, None if dw is None else dw.to(w.dtype), None, None, None, None, None


class _ChunkedCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy over the positions where `valid`, a chunk of tokens at a time. A scalar loss's gradient
    is known in forward up to the one factor backward brings, so it is computed there, while each chunk's logits
    exist: the same three matmuls as the unchunked path (no recompute), and [V, dim] + [N, dim] kept for backward."""

    @staticmethod
    def forward(ctx, h, w, targets, valid, chunk: int, dtype: torch.dtype, with_grad: bool):
        N, wd = h.shape[0], w.to(dtype)
        g = -valid.float() / valid.sum()  # d loss / d logp [N]
        dh = torch.empty_like(h) if with_grad else None
        dw = torch.zeros(w.shape, dtype=torch.float32, device=w.device) if with_grad else None
        loss = torch.zeros((), dtype=torch.float32, device=h.device)
        for s in range(0, N, chunk):
            c = slice(s, s + chunk)
            hc = h[c].to(dtype)
            z = _scaled_logits(hc, wd, 1.0)  # [c, V]
            logz = torch.logsumexp(z, dim=-1)
            loss += (g[c] * (z.gather(-1, targets[c, None])[:, 0] - logz)).sum()
            if with_grad:
                _accumulate(_logit_grad(z, logz, targets[c], g[c]).to(dtype), hc, wd, dh[c], dw)
        ctx.save_for_backward(dh, None if dw is None else dw.to(w.dtype))
        return loss

    @staticmethod
    def backward(ctx, g_loss):
        dh, dw = ctx.saved_tensors
        return dh * g_loss, dw * g_loss, None, None, None, None, None


def _check_chunk(chunk) -> None:
    if not (isinstance(chunk, int) and chunk > 0):
        raise ValueError(f"chunk must be a positive int (tokens per lm_head chunk), got {chunk!r}")


def chunked_logprobs(h, weight, targets, temperature: float = 1.0, chunk: int = 256, need_entropy: bool = False):
    """h [N, dim] final hidden states, weight [V, dim] the output matrix (pass weight[:vocab_size] to leave padded
    rows out), targets [N] in [0, V) -> (logp [N], entropy [N]) in fp32, differentiable in h and weight; `chunk`
    tokens at a time through the vocabulary. The entropy is zeros without need_entropy."""
    _check_chunk(chunk)
    return _ChunkedLogprobs.apply(h, weight, targets, float(temperature), chunk, autocast_dtype(weight), need_entropy)


def chunked_cross_entropy(h, weight, targets, chunk: int = 256):
    """h [N, dim], weight [V, dim], targets [N] (-100 = ignored) -> mean cross-entropy over the others (fp32, as
    F.cross_entropy over the logits), `chunk` tokens at a time."""
    _check_chunk(chunk)
    valid = targets != -100
    with_grad = torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad)
    return _ChunkedCrossEntropy.apply(h, weight, torch.where(valid, targets, 0), valid, chunk, autocast_dtype(weight),
                                      with_grad)


def full_logprobs(logits, targets, temperature: float = 1.0, need_entropy: bool = False, entropy_grad: bool = False):
    """The unchunked reference: logits [N, V] (all held at once, plus an fp32 copy) -> (logp [N], entropy [N] or
    None) in fp32; the entropy carries a gradient only with entropy_grad."""
    z = logits.float() / temperature  # [N, V]
    logp = z.gather(-1, targets[:, None])[:, 0] - torch.logsumexp(z, dim=-1)
    if not need_entropy:
        return logp, None
    with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
        zz = z if entropy_grad else z.detach()
        return logp, torch.logsumexp(zz, dim=-1) - (torch.softmax(zz, dim=-1) * zz).sum(-1)  # H = log Z - E_p[z]
