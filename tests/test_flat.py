"""bayesirl.core.flat: one layout of a dict of sites as a vector, batched."""

import numpy as np
import torch

from bayesirl.core.flat import flattening


def test_flatten_and_unflatten_round_trip_with_leading_batch_dims():
    like = {"b": torch.zeros(2, 3), "a": torch.zeros(()), "c": torch.zeros(4)}
    flatten, unflatten = flattening(like)
    u = {"b": torch.arange(6.0).reshape(2, 3), "a": torch.tensor(6.0),
         "c": torch.arange(7.0, 11.0)}
    x = flatten(u)
    assert torch.equal(x, torch.arange(11.0))  # sites in the dict's order, row-major
    back = unflatten(x)
    assert list(back) == ["b", "a", "c"]
    assert all(torch.equal(back[k], u[k]) for k in u)
    batch = torch.stack([x, x + 100]).expand(5, 2, 11)
    parts = unflatten(batch)
    assert parts["b"].shape == (5, 2, 2, 3) and parts["a"].shape == (5, 2)
    assert torch.equal(parts["c"][3, 1], u["c"] + 100)


def test_unflatten_takes_numpy_in_the_sites_dtype():
    like = {"w": torch.zeros(3, dtype=torch.float32)}
    _, unflatten = flattening(like)
    w = unflatten(np.array([1.0, 2.0, 3.0]))["w"]
    assert w.dtype == torch.float32 and torch.equal(w, torch.tensor([1.0, 2.0, 3.0]))
