"""Benchmarks against the peers (transformers, TRL, math-verify) and the GPU self-check; each file is a script.

A package so that `bench.hf_peer` resolves to this folder from the tests and from the scripts alike, even beside an
installed distribution that ships a top-level `bench`.
"""
