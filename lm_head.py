"""
The output layer's log-probs and loss without logits [N, V]: lm_head + log-softmax (+ entropy) a chunk of tokens at
a time. At Llama 3's 128,256-token vocabulary, logits and their fp32 copy take ~4.4 GB per 8.6K-token sequence each;
here a chunk's logits exist only while it is processed, and backward recomputes them (log-probs) or uses a gradient
computed during forward (the mean cross-entropy, whose upstream gradient is a known scalar factor).

    chunked_logprobs(h [N, D], weight [V, D], targets [N], temperature, chunk, need_entropy) -> (logp [N], ent [N]|None)
    chunked_cross_entropy(h [N, D], weight [V, D], targets [N] (-100 = ignored), chunk)    -> mean CE (scalar)
    full_logprobs(logits, targets, temperature, need_entropy, entropy_grad)                 -> the unchunked reference

model.Llama.forward calls these inside forward (DDP's and FSDP's hooks only see lm_head.weight there).
compile_backend (a torch.compile backend; model.Llama.compile_backend, which runtime.compile_model sets): the math
of one chunk (its logits, log-softmax and their gradient: several passes over [chunk, V] in fp32 when eager) runs
compiled, one chunk at a time, so the graphs do not grow with the number of tokens.
"""
from __future__ import annotations

import functools

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


# one chunk's math, what compile_backend compiles (chunk_fns): plain functions of one chunk's tensors
def _logprob_chunk(hc, wd, tc, temperature: float, need_entropy: bool):
    """hc [c, dim], wd [V, dim] (matmul dtype), tc [c] -> log Z, log p(target) and E_p[z] (None without
    need_entropy), each [c] fp32."""
    z = _scaled_logits(hc, wd, temperature)  # [c, V]
    logz = torch.logsumexp(z, dim=-1)
    logp = z.gather(-1, tc[:, None])[:, 0] - logz
    return logz, logp, (torch.softmax(z, dim=-1) * z).sum(-1) if need_entropy else None


def _logprob_chunk_grad(hc, wd, tc, temperature: float, logz, g_logp, g_ent, mean_z):
    """d loss / d logits [c, V] in hc's dtype, from the chunk's logits recomputed (see _logit_grad)."""
    dz = _logit_grad(_scaled_logits(hc, wd, temperature), logz, tc, g_logp, g_ent, mean_z)
    return (dz if temperature == 1.0 else dz.div_(temperature)).to(hc.dtype)


def _ce_chunk(hc, wd, tc, gc, with_grad: bool):
    """The chunk's share of the loss, sum(gc * log p(target)), and (with_grad) its d loss / d logits [c, V] in hc's
    dtype. gc [c]: d loss / d log p."""
    z = _scaled_logits(hc, wd, 1.0)  # [c, V]
    logz = torch.logsumexp(z, dim=-1)
    loss = (gc * (z.gather(-1, tc[:, None])[:, 0] - logz)).sum()
    return loss, _logit_grad(z, logz, tc, gc).to(hc.dtype) if with_grad else None


@functools.lru_cache(maxsize=None)
def chunk_fns(backend=None) -> tuple:
    """(_logprob_chunk, _logprob_chunk_grad, _ce_chunk), eager (backend None) or torch.compile'd with `backend`.
    Every chunk has the same shape but the last, so a run compiles each function about twice (a varying last
    chunk, as in RL, becomes one dynamic-shape graph); the loops over chunks and the lm_head gradient's
    accumulation into dw stay eager. Callers pass detached tensors: a compiled graph is guarded on its inputs'
    requires_grad, and with or without grad (the RL recompute, the update) the math is the same."""
    fns = (_logprob_chunk, _logprob_chunk_grad, _ce_chunk)
    return fns if backend is None else tuple(torch.compile(f, backend=backend) for f in fns)


class _ChunkedLogprobs(torch.autograd.Function):
    """Per-token log p(target) and entropy under softmax(h @ w.T / temperature), holding at most [chunk, V] logits:
    the backward recomputes each chunk's logits instead of keeping them (an 8K-token sequence's logits at V = 128K
    are 4 GB in fp32, more than the rest of a 3B model's activations). The matmuls run in `dtype` (bf16 under
    autocast), the softmax in fp32, as in the unchunked path."""

    @staticmethod
    def forward(ctx, h, w, targets, temperature: float, chunk: int, dtype: torch.dtype, need_entropy: bool, backend):
        # h [N, dim], w [V, dim], targets [N] -> logp [N], entropy [N] (zeros without need_entropy), both fp32
        ctx.set_materialize_grads(False)  # an unused output (the entropy, often) gets None, not a zeros tensor
        h, w = h.detach(), w.detach()  # as chunk_fns wants them
        N, wd, forward_chunk = h.shape[0], w.to(dtype), chunk_fns(backend)[0]
        logz, mean_z, logp = (torch.zeros(N, dtype=torch.float32, device=h.device) for _ in range(3))
        for s in range(0, N, chunk):
            c = slice(s, s + chunk)
            logz[c], logp[c], mz = forward_chunk(h[c].to(dtype), wd, targets[c], temperature, need_entropy)
            if need_entropy:
                mean_z[c] = mz  # E_p[z]
        ctx.save_for_backward(h, w, targets, logz, mean_z)
        ctx.temperature, ctx.chunk, ctx.dtype, ctx.backend = temperature, chunk, dtype, backend
        if not need_entropy:
            ent = torch.zeros_like(logp)
            ctx.mark_non_differentiable(ent)
            return logp, ent
        return logp, logz - mean_z  # H = log Z - E_p[z]

    @staticmethod
    def backward(ctx, g_logp, g_ent):
        h, w, targets, logz, mean_z = ctx.saved_tensors
        if g_logp is None and g_ent is None:
            return (None,) * 8
        wd, chunk, dt, grad_chunk = w.to(ctx.dtype), ctx.chunk, ctx.dtype, chunk_fns(ctx.backend)[1]
        dh = torch.empty_like(h) if ctx.needs_input_grad[0] else None
        dw = torch.zeros(w.shape, dtype=torch.float32, device=w.device) if ctx.needs_input_grad[1] else None
        for s in range(0, h.shape[0], chunk):
            c = slice(s, s + chunk)
            hc = h[c].to(dt)
            dz = grad_chunk(hc, wd, targets[c], ctx.temperature, logz[c], None if g_logp is None else g_logp[c],
                            None if g_ent is None else g_ent[c], mean_z[c])  # d loss / d logits [c, V]
            _accumulate(dz, hc, wd, None if dh is None else dh[c], dw)
        return dh, None if dw is None else dw.to(w.dtype), None, None, None, None, None, None


class _ChunkedCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy over the positions where `valid`, a chunk of tokens at a time. A scalar loss's gradient
    is known in forward up to the one factor backward brings, so it is computed there, while each chunk's logits
    exist: the same three matmuls as the unchunked path (no recompute), and [V, dim] + [N, dim] kept for backward."""

    @staticmethod
    def forward(ctx, h, w, targets, valid, chunk: int, dtype: torch.dtype, with_grad: bool, backend):
        h, w = h.detach(), w.detach()  # as chunk_fns wants them
        N, wd, ce_chunk = h.shape[0], w.to(dtype), chunk_fns(backend)[2]
        g = -valid.float() / valid.sum()  # d loss / d logp [N]
        dh = torch.empty_like(h) if with_grad else None
        dw = torch.zeros(w.shape, dtype=torch.float32, device=w.device) if with_grad else None
        loss = torch.zeros((), dtype=torch.float32, device=h.device)
        for s in range(0, N, chunk):
            c = slice(s, s + chunk)
            hc = h[c].to(dtype)
            part, dz = ce_chunk(hc, wd, targets[c], g[c], with_grad)
            loss += part
            if with_grad:
                _accumulate(dz, hc, wd, dh[c], dw)
        ctx.save_for_backward(dh, None if dw is None else dw.to(w.dtype))
        return loss

    @staticmethod
    def backward(ctx, g_loss):
        dh, dw = ctx.saved_tensors
        return dh * g_loss, dw * g_loss, None, None, None, None, None, None


def _check_chunk(chunk) -> None:
    if not (isinstance(chunk, int) and chunk > 0):
        raise ValueError(f"chunk must be a positive int (tokens per lm_head chunk), got {chunk!r}")


def chunked_logprobs(h, weight, targets, temperature: float = 1.0, chunk: int = 256, need_entropy: bool = False,
                     compile_backend=None):
    """h [N, dim] final hidden states, weight [V, dim] the output matrix (pass weight[:vocab_size] to leave padded
    rows out), targets [N] in [0, V) -> (logp [N], entropy [N]) in fp32, differentiable in h and weight; `chunk`
    tokens at a time through the vocabulary. The entropy is zeros without need_entropy."""
    _check_chunk(chunk)
    return _ChunkedLogprobs.apply(h, weight, targets, float(temperature), chunk, autocast_dtype(weight), need_entropy,
                                  compile_backend)


def chunked_cross_entropy(h, weight, targets, chunk: int = 256, compile_backend=None):
    """h [N, dim], weight [V, dim], targets [N] (-100 = ignored) -> mean cross-entropy over the others (fp32, as
    F.cross_entropy over the logits), `chunk` tokens at a time."""
    _check_chunk(chunk)
    valid = targets != -100
    with_grad = torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad)
    return _ChunkedCrossEntropy.apply(h, weight, torch.where(valid, targets, 0), valid, chunk, autocast_dtype(weight),
                                      with_grad, compile_backend)


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
