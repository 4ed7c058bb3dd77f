"""rl.py: advantages, the clipped loss and its three aggregations by hand; the training forward against the sampler;
rewards, sampler; dynamic sampling; a toy task learned end to end; resume. The 2-rank checks (2 gloo ranks
== 1 process) share one launch with the FSDP ones in test_fsdp.py, from one_update here."""
from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import socket
from types import SimpleNamespace

import pytest
import torch

import conftest  # noqa: F401  first: it puts the repo root on sys.path (also in test_fsdp.py's worker processes)
import benchmarks  # noqa: E402
import policy_update  # noqa: E402
import rl  # noqa: E402
import sample  # noqa: E402
from data.tokenizer import Tokenizer
from model import Llama, LlamaConfig, save_checkpoint

# ---- advantages --------------------------------------------------------------------------------------------------


def test_schedule_and_seeds():
    sched = rl.length_schedule({0: 2048, 100: 4096, "160": 8192})  # a str key, as after a JSON round trip
    assert [rl.response_len_at(sched, s) for s in (0, 99, 100, 159, 160, 10**6)] == [2048, 2048, 4096, 4096, 8192, 8192]
    assert rl.length_schedule(96) == [(0, 96)]
    for bad in ({5: 10}, {0: 0}, {}, "long", {"x": 5}):
        with pytest.raises(ValueError, match="max_response_len"):
            rl.length_schedule(bad)
    assert rl.derive_seed(1, 2, 3) == rl.derive_seed(1, 2, 3) != rl.derive_seed(1, 2, 4)


def test_lr_warms_up_then_follows_its_cosine():
    c = SimpleNamespace(lr=1.0, lr_warmup_steps=4, max_steps=14, min_lr_ratio=0.1)
    lrs = [rl.lr_at(s, c) for s in range(14)]
    assert lrs[:5] == [0.25, 0.5, 0.75, 1.0, 1.0]  # warmup, then the cosine's top
    assert lrs[9] == pytest.approx(0.55) and all(a > b for a, b in zip(lrs[4:], lrs[5:]))  # halfway: halfway down
    assert lrs[-1] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.9)))  # reaching 0.1 at max_steps
    c.min_lr_ratio = 1.0  # the default: constant after the warmup, as before the knob
    assert [rl.lr_at(s, c) for s in range(14)] == [0.25, 0.5, 0.75] + [1.0] * 11


def test_sampler_covers_each_epoch_and_resumes():
    state = {"epoch": 0, "pos": 0}
    first = rl.sampler_draw(state, 10, 6, seed=3) + rl.sampler_draw(state, 10, 4, seed=3)
    assert sorted(first) == list(range(10)) and state == {"epoch": 1, "pos": 0}
    a = {"epoch": 0, "pos": 0}
    whole = rl.sampler_draw(a, 10, 25, seed=3)  # wraps into epochs 1 and 2
    b = {"epoch": 0, "pos": 0}
    parts = rl.sampler_draw(b, 10, 7, seed=3)
    saved = json.loads(json.dumps(b))  # what a checkpoint keeps
    parts += rl.sampler_draw(saved, 10, 18, seed=3)
    assert parts == whole and whole[:10] == first
    assert sorted(whole[10:20]) == list(range(10)) and whole[10:20] != whole[:10]


class _C:  # a Completion stand-in for the reward function
    def __init__(self, text):
        self.text = text


def test_math_reward_values():
    f = rl.make_math_reward(correct=1.0, wrong=-1.0, no_answer=-2.0)
    ex = {"answer": "12"}
    assert f(_C("3 * 4 = 12. The answer is \\boxed{12}."), ex) == 1.0
    assert f(_C("\\boxed{7} then \\boxed{12.0}"), ex) == 1.0  # the last box decides
    assert f(_C("\\boxed{12} no wait \\boxed{13}"), ex) == -1.0
    assert f(_C("The answer is 12."), ex) == -2.0  # no box = no answer, whatever the text says
    assert f(_C("The answer is \\boxed{12"), ex) == -2.0  # an unclosed box (a cut-off response)


# ---- a tiny model, tokenizer and checkpoint ----------------------------------------------------------------------

WORDS = "Question: Mia has 3 apples and buys 4 more. How many apples? Answer: 3 + 4 = 7. The answer is \\boxed{7}."


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("rl")
    tok = Tokenizer.train([WORDS] * 3, vocab_size=290)
    cfg = LlamaConfig.from_preset("test", vocab_size=tok.vocab_size, bos_id=tok.bos_id, eos_id=tok.eos_id)
    torch.manual_seed(0)
    net = Llama(cfg)
    save_checkpoint(str(root / "base" / "ckpt-000000"), net, tokenizer=tok)
    with open(root / "prompts.jsonl", "w") as f:
        for i in range(40):
            f.write(json.dumps({"problem": f"Mia has {i} apples and buys {i % 7} more. How many apples?",
                                "solution": f"{i} + {i % 7} = {2 * i}\n#### {i + i % 7}"}) + "\n")
        f.write(json.dumps({"problem": "Mia " * 200, "solution": "#### 1"}) + "\n")  # too long: dropped
    return SimpleNamespace(root=root, tok=tok, net=net, base=str(root / "base"), prompts=str(root / "prompts.jsonl"))


def test_trainer_logprobs_match_the_sampler(tiny):
    """The training forward (right-padded prompt + response, one pass) gives the sampler's log-probs (KV-cache
    decode, left-padded) at the same temperature, and nothing outside the response is a target."""
    prompts = [tiny.tok.encode("Mia has", bos=True), tiny.tok.encode("Question: How many apples", bos=True)]
    outs = sample.generate(tiny.net, tiny.tok, prompts, n=3, max_new_tokens=9, temperature=0.7, seed=1)
    rs = [policy_update.Rollout(o.prompt_tokens, o.tokens, o.logprobs, o.text, o.finish_reason, 0.0, o.prompt_index) for o in outs]
    idx, targets = policy_update.pack(rs, "cpu")
    assert idx.shape[1] == max(len(r.prompt_tokens) + len(r.tokens) for r in rs) - 1
    with torch.no_grad():
        logp, ent, mask = policy_update.response_logprobs(tiny.net, idx, targets, 0.7, need_entropy=True)
    assert mask.sum(1).tolist() == [len(r.tokens) for r in rs]
    assert (ent[mask] > 0).all() and (ent[~mask] == 0).all()
    for b, r in enumerate(rs):
        assert torch.allclose(logp[b][mask[b]], r.logprobs, atol=1e-4), b
        assert targets[b][mask[b]].tolist() == r.tokens


def test_trainer_logprobs_match_the_sampler_with_a_padded_vocab(tiny):
    """A model with more embedding rows than the tokenizer has ids (padded for speed): the sampler never draws the
    extra rows and leaves them out of its softmax; given vocab_size, so does the trainer."""
    torch.manual_seed(0)
    padded = Llama(LlamaConfig.from_preset("test", vocab_size=tiny.tok.vocab_size + 37)).eval()  # flat logits
    outs = sample.generate(padded, tiny.tok, [tiny.tok.encode("Mia has", bos=True)], n=4, max_new_tokens=6,
                           temperature=1.0, seed=2)
    rs = [policy_update.Rollout(o.prompt_tokens, o.tokens, o.logprobs, o.text, o.finish_reason, 0.0, 0) for o in outs]
    idx, targets = policy_update.pack(rs, "cpu")
    with torch.no_grad():
        logp, _, mask = policy_update.response_logprobs(padded, idx, targets, 1.0, vocab_size=tiny.tok.vocab_size)
        unmasked, _, _ = policy_update.response_logprobs(padded, idx, targets, 1.0)
    sampler = torch.cat([r.logprobs for r in rs])
    assert torch.allclose(logp[mask], sampler, atol=1e-4)
    assert (unmasked[mask] < sampler - 1e-3).all()  # the extra rows take probability from every token


def test_dynamic_sampling_refills_with_mixed_groups(tiny):
    ex = benchmarks.load_prompts(tiny.prompts, tiny.tok, "Q: {question}\nA:", 64, "problem", "solution",
                                 log=lambda s: None)
    c = SimpleNamespace(**{**rl.DEFAULTS, "group_size": 4, "prompts_per_step": 6, "drop_uniform_groups": True,
                           "max_refill_rounds": 5, "stop": [], "seed": 0})
    d = SimpleNamespace(ddp=False, rank=0, world_size=1)
    # only prompts whose question mentions an odd count of apples can be won: the others' groups are all -1
    reward = lambda comp, e: (1.0 if comp.tokens[0] % 2 else -1.0) if int(e["question"].split()[2]) % 2 else -1.0  # noqa: E731
    sampler = {"epoch": 0, "pos": 0}
    batch, st = rl.collect_rollouts(tiny.net, tiny.tok, ex, c, d, 0, sampler, 3, reward, contextlib.nullcontext)
    groups = rl.chunks(batch, 4)
    assert len(groups) == 6 and not any(rl.is_uniform(g) for g in groups)
    assert st["groups_sampled"] > 6 and st["groups_kept"] == 6 and 0 < st["uniform_groups"] < 1


# ---- end to end: a toy reward a random model learns in a few steps; resume continues exactly --------------------

def first_token_reward(comp, example) -> float:
    """+1 when the response starts with an even token id: half the vocabulary, learnable from a random model."""
    return 1.0 if comp.tokens[0] % 2 == 0 else -1.0


def toy_args(tiny, out, steps, *extra):
    return [f"--init_from={tiny.base}", f"--out_dir={out}", f"--prompt_file={tiny.prompts}",
            "--question_field=problem", "--answer_field=solution", "--template=Q: {question}\nA:",
            "--max_prompt_len=64", "--max_response_len=3", "--group_size=8", "--prompts_per_step=8", "--lr=2e-2",
            f"--max_steps={steps}", "--eval_interval=0", "--log_interval=0", "--ckpt_interval=2", "--keep_last_n=1",
            "--micro_batch=16", *extra]


def test_user_error_in_the_run_leaves_no_process_group(tiny, tmp_path):
    """A UserError raised inside rl.main's run (a missing init_from) ends in runtime.distributed too (issue 28): a
    one-rank group stands in for torchrun's."""
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    with pytest.raises(rl.UserFileError, match="init_from"):
        rl.main(toy_args(tiny, str(tmp_path / "run"), 2, f"--init_from={tmp_path / 'missing'}"))
    assert not torch.distributed.is_initialized()


def train_rows(out):
    return [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl")) if '"train"' in line]


def test_toy_reward_rises_end_to_end(tiny, tmp_path):
    out = str(tmp_path / "run")
    res = rl.main(toy_args(tiny, out, 12), reward_fn=first_token_reward)
    rows = train_rows(out)
    assert res["steps"] == 12 and [r["step"] for r in rows] == list(range(1, 13))
    early, late = sum(r["reward"] for r in rows[:2]) / 2, sum(r["reward"] for r in rows[-2:]) / 2
    assert late > early + 0.4, [r["reward"] for r in rows]
    assert all(r["logprob_mismatch_mean"] < 1e-4 for r in rows)
    assert sorted(os.listdir(out)) == ["ckpt-000012", "latest", "metrics.jsonl"]  # keep_last_n=1
    state = torch.load(os.path.join(out, "ckpt-000012", "state.pt"), weights_only=False)
    assert state["step"] == 12 and state["sampler"] == {"epoch": 2, "pos": 12 * 8 % 40} and "optimizer" in state
    assert state["at_ref"] is False  # the policy has moved: uniform groups' KL gradients count again
    cfg = json.load(open(os.path.join(out, "ckpt-000012", "run_config.json")))
    assert cfg["lr"] == 2e-2 and cfg["max_response_len"] == 3
    with pytest.raises(ValueError, match="already holds a run"):
        rl.main(toy_args(tiny, out, 12), reward_fn=first_token_reward)


def test_a_run_without_reward_signal_costs_rollouts_only(tiny, tmp_path):
    """Every reward -1 (the study's base arm): no step runs a forward or an optimizer step, the checkpoint says the
    policy is still at its reference, and its weights are the start's bit for bit."""
    out = str(tmp_path / "run")
    rl.main(toy_args(tiny, out, 2), reward_fn=lambda completion, example: -1.0)
    rows = train_rows(out)
    assert [(r["uniform_groups"], r["forward_tokens"], r["optimizer_steps"]) for r in rows] == [(1.0, 0, 0)] * 2
    assert torch.load(os.path.join(out, "ckpt-000002", "state.pt"), weights_only=False)["at_ref"] is True
    from model import load_checkpoint
    after = load_checkpoint(out)[0].state_dict()
    assert all(torch.equal(v, after[k]) for k, v in tiny.net.state_dict().items())


def test_no_signal_steps_ends_a_run_that_cannot_start(tiny, tmp_path, capsys, monkeypatch):
    """no_signal_steps=2: a run whose first 2 steps had no reward spread ends there, checkpointed and evaluated
    (the study's base arm); a resumed one stays ended; a run with signal runs every step."""
    monkeypatch.setattr(rl, "run_eval", lambda model, tok, c, step, autocast: {"synth": 0.0})
    flat, moved = str(tmp_path / "flat"), str(tmp_path / "moved")
    res = rl.main(toy_args(tiny, flat, 6, "--no_signal_steps=2", "--eval_interval=3"),
                  reward_fn=lambda completion, example: -1.0)
    assert res["steps"] == 2 and [r["step"] for r in train_rows(flat)] == [1, 2]
    assert "no reward signal in 2 steps (16 groups of 8" in capsys.readouterr().out
    assert sorted(os.listdir(flat)) == ["ckpt-000002", "latest", "metrics.jsonl"]
    evals = [json.loads(line)["step"] for line in open(os.path.join(flat, "metrics.jsonl")) if '"eval"' in line]
    assert evals == [0, 2]  # the end's evaluation, as at max_steps
    assert rl.main(toy_args(tiny, flat, 6, "--no_signal_steps=2", "--resume=True"),
                   reward_fn=lambda completion, example: -1.0)["steps"] == 2
    assert len(train_rows(flat)) == 2
    assert rl.main(toy_args(tiny, moved, 4, "--no_signal_steps=1"), reward_fn=first_token_reward)["steps"] == 4


def test_evaluations_at_the_start_weights_are_not_repeated(tiny, tmp_path, monkeypatch):
    """While no optimizer step has moved the policy, a scheduled evaluation reuses the one of the start weights
    (the study's base arm decoded the same answers five times); once it moves, every evaluation runs again."""
    calls = []
    monkeypatch.setattr(rl, "run_eval", lambda model, tok, c, step, autocast: calls.append(step) or {"synth": 0.25})
    flat, moved = str(tmp_path / "flat"), str(tmp_path / "moved")
    rl.main(toy_args(tiny, flat, 2, "--eval_interval=1"), reward_fn=lambda completion, example: -1.0)
    rl.main(toy_args(tiny, moved, 2, "--eval_interval=1"), reward_fn=first_token_reward)
    assert calls == [0, 0, 1, 2]
    evals = [json.loads(line) for line in open(os.path.join(flat, "metrics.jsonl")) if '"eval"' in line]
    assert [(r["step"], r["accuracy"], r.get("same_as_step")) for r in evals] == [
        (0, {"synth": 0.25}, None), (1, {"synth": 0.25}, 0), (2, {"synth": 0.25}, 0)]


def test_resume_continues_exactly(tiny, tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    extra = ("--ppo_epochs=2", "--mini_batches=2", "--loss_agg=seq-mean-token-mean")
    rl.main(toy_args(tiny, a, 4, *extra), reward_fn=first_token_reward)
    rl.main(toy_args(tiny, b, 2, *extra), reward_fn=first_token_reward)
    rl.main(toy_args(tiny, b, 4, *extra, "--resume=True"), reward_fn=first_token_reward)
    ra, rb = train_rows(a), train_rows(b)
    assert [r["step"] for r in rb] == [1, 2, 3, 4]
    for x, y in zip(ra, rb):
        assert x["reward"] == y["reward"] and x["loss"] == pytest.approx(y["loss"], abs=1e-7)
    from model import load_checkpoint
    wa, wb = load_checkpoint(a)[0].state_dict(), load_checkpoint(b)[0].state_dict()
    assert all(torch.allclose(wa[k], wb[k], atol=1e-7) for k in wa)


def test_config_errors(tiny, tmp_path):
    base = toy_args(tiny, str(tmp_path / "x"), 1)
    for flag, msg in [("--loss_agg=mean", "loss_agg"), ("--group_size=1", "group_size"),
                      ("--template=no placeholder", "template"), ("--max_response_len={3: 5}", "step 0"),
                      ("--max_response_len=500", "context"), ("--temperature=0", "temperature"),
                      ("--kv_budget=-1", "kv_budget"), ("--no_signal_steps=-1", "no_signal_steps"), ('--eval_stop=["\\n", ""]', "eval_stop must be"),
                      ("--kv_budget=0.5", "fraction of free GPU memory"),  # the knob reaches the rollout engine
                      ("--min_lr_ratio=2", "min_lr_ratio")]:
        with pytest.raises(ValueError, match=msg):
            rl.main(base + [flag], reward_fn=first_token_reward)


# ---- ranks: 2 gloo ranks make the same update as 1 process with the same rollouts (run by test_fsdp.py) ------

CONFIGS = [("token-mean", 0.0, 0.0), ("seq-mean-token-mean", 0.0, 0.0), ("seq-mean-token-sum-norm", 0.1, 0.01)]


def fixed_rollouts(vocab: int) -> list:
    g = torch.Generator().manual_seed(7)
    out = []
    for i in range(12):
        P, R = int(torch.randint(2, 7, (1,), generator=g)), int(torch.randint(1, 8, (1,), generator=g))
        adv = 0.0 if i % 4 == 3 else float(torch.randn(1, generator=g))  # some zero-advantage sequences
        out.append(policy_update.Rollout(torch.randint(0, vocab, (P,), generator=g).tolist(),
                              torch.randint(0, vocab, (R,), generator=g).tolist(),
                              -torch.rand(R, generator=g), "", "eos", 0.0, i // 4, adv))
    return out


def one_update(rank: int, world: int, d, budget: int = 0) -> dict:
    """Each config: fresh model, SGD, ppo_epochs=2 (so the old log-probs are recomputed and ratios move);
    this rank's half of the rollouts; micro-batches of 2 sequences, or of up to `budget` tokens (micro_batch_tokens).
    -> {config: state_dict after the update}."""
    results = {}
    for agg, kl, ent in CONFIGS:
        torch.manual_seed(0)
        net = Llama(LlamaConfig.from_preset("test"))
        ref = None
        if kl:
            torch.manual_seed(1)
            ref = Llama(LlamaConfig.from_preset("test")).requires_grad_(False)
        # SGD, so parameters compare gradients: Adam's first step is about lr * sign(g), which turns float-rounding
        # noise in near-zero gradients (summed in another order over ranks) into lr-sized differences
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        c = SimpleNamespace(**{**rl.DEFAULTS, "loss_agg": agg, "kl_coef": kl, "entropy_coef": ent, "ppo_epochs": 2,
                               "mini_batches": 1, "micro_batch": 2, "clip_low": 0.05, "clip_high": 0.05,
                               "micro_batch_tokens": budget})
        rs = fixed_rollouts(net.config.vocab_size)
        share = rs[rank * len(rs) // world:(rank + 1) * len(rs) // world]
        stats = policy_update.update_policy(net, opt, share, c, d, ref_model=ref, loss_max_len=8, seed=rank)
        assert stats["optimizer_steps"] == 2
        results[agg] = {k: v.clone() for k, v in net.state_dict().items()}
    return results


def test_token_budget_micro_batches():
    """Length-sorted ids fill a micro-batch while count x the newest (longest) length fits the budget; a sequence
    longer than the budget goes alone; budget 0 = micro_batch sequences at a time."""
    lens = {0: 3, 1: 3, 2: 4, 3: 5, 4: 9, 5: 20}
    ids = sorted(lens, key=lens.get)
    assert policy_update.micro_batches(ids, lens.get, 2, 12) == [[0, 1, 2], [3], [4], [5]]  # 3 x 4 = 12 fits, 4 x 5 does not
    assert policy_update.micro_batches(ids, lens.get, 2, 18) == [[0, 1, 2], [3, 4], [5]]
    assert policy_update.micro_batches(ids, lens.get, 4) == [[0, 1, 2, 3], [4, 5]]
    for budget in (1, 7, 10, 30, 100):
        mbs = policy_update.micro_batches(ids, lens.get, 2, budget)
        assert sum(mbs, []) == ids
        assert all(len(m) == 1 or len(m) * max(map(lens.get, m)) <= budget for m in mbs)


def test_token_budget_update_equals_fixed_micro_batches():
    """The same update (every config: the three aggregations, KL, entropy, recomputed old log-probs) whether a step
    is cut into micro-batches of 2 sequences or of up to 10 / 24 tokens (other counts and shapes); the 2-rank and
    FSDP runs of the same are in tests/test_fsdp.py."""
    solo = SimpleNamespace(ddp=False, rank=0, world_size=1)
    fixed = one_update(0, 1, solo)
    lens = sorted(len(r.prompt_tokens) + len(r.tokens) - 1 for r in fixed_rollouts(256))
    for budget in (10, 24):
        assert len(policy_update.micro_batches(lens, int, 2, budget)) != len(policy_update.micro_batches(lens, int, 2))
        got = one_update(0, 1, solo, budget)
        for agg in fixed:
            assert all(torch.allclose(fixed[agg][k], got[agg][k], atol=1e-6) for k in fixed[agg]), (budget, agg)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# test_fsdp.py runs update_policy on 2 gloo ranks (plain DDP-style all-reduce and FSDP shards) in one launch of 2
# worker processes, against one_update in 1 process


def test_no_reward_signal_leaves_the_policy_bit_identical():
    """Every group uniform (all advantages 0) and the policy still at its reference: the KL term's gradient is exactly
    zero only if the policy's and the reference's log-probs come out bit for bit the same, i.e. from the same
    micro-batches. Adam turns any float noise there into lr-sized steps (it took the study's base arm off its start
    model), so sequences of equal length must be batched in the same order in both passes."""
    torch.manual_seed(0)
    net = Llama(LlamaConfig.from_preset("test"))
    ref = copy.deepcopy(net).requires_grad_(False)
    start = {k: v.clone() for k, v in net.state_dict().items()}
    g = torch.Generator().manual_seed(3)
    rs = []
    for i in range(16):  # lengths tie often: the update's shuffled order and the recompute's differ among ties
        P, R = 3 + i % 2, 2 + (i // 2) % 3
        rs.append(policy_update.Rollout(torch.randint(0, 256, (P,), generator=g).tolist(),
                             torch.randint(0, 256, (R,), generator=g).tolist(), -torch.rand(R, generator=g), "",
                             "eos", -1.0, i // 8, 0.0))
    c = SimpleNamespace(**{**rl.DEFAULTS, "kl_coef": 0.1, "micro_batch": 3})
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=0.0)
    solo = SimpleNamespace(ddp=False, rank=0, world_size=1)
    for step in range(3):
        stats = policy_update.update_policy(net, opt, rs, c, solo, ref_model=ref, loss_max_len=8, seed=step)
        assert stats["grad_norm"] == 0.0 and stats["ref_kl"] == 0.0, step
    assert all(torch.equal(start[k], v) for k, v in net.state_dict().items())


def test_at_ref_skips_uniform_groups_with_the_same_update():
    """At its reference (no optimizer step yet) a uniform group's KL gradient is exactly zero: with at_ref the
    update skips those sequences (no forward at all when every group is uniform) and moves the weights as the full
    update does."""
    torch.manual_seed(0)
    net = Llama(LlamaConfig.from_preset("test"))
    ref = copy.deepcopy(net).requires_grad_(False)
    g = torch.Generator().manual_seed(5)
    rs = [policy_update.Rollout(torch.randint(0, 256, (3 + i % 3,), generator=g).tolist(),
                     torch.randint(0, 256, (2 + i % 4,), generator=g).tolist(), -torch.rand(2 + i % 4, generator=g),
                     "", "eos", -1.0, i // 4, 0.0) for i in range(16)]
    c = SimpleNamespace(**{**rl.DEFAULTS, "kl_coef": 0.1, "micro_batch": 4})
    solo = SimpleNamespace(ddp=False, rank=0, world_size=1)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=0.0)
    stats = policy_update.update_policy(net, opt, rs, c, solo, ref_model=ref, loss_max_len=8, at_ref=True)
    assert stats["forward_tokens"] == 0 and stats["optimizer_steps"] == 0
    for i in range(8, 12):  # group 2 is mixed: its sequences train, the other groups' are skipped at the reference
        rs[i].advantage = 1.0 if i % 2 else -1.0
    moved = []
    for at_ref in (False, True):
        m = copy.deepcopy(net)
        o = torch.optim.SGD(m.parameters(), lr=1.0)  # weights move by the gradient itself (Adam would sign it)
        stats = policy_update.update_policy(m, o, rs, c, solo, ref_model=ref, loss_max_len=8, at_ref=at_ref)
        assert stats["optimizer_steps"] == 1
        moved.append((m, stats["forward_tokens"]))
    (full, n_full), (skip, n_skip) = moved
    assert n_skip < n_full
    for (k, a), b in zip(full.state_dict().items(), skip.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
