"""Random coordinate subsets of the flat latent vector, stratified by latent site.

Where ``d`` is too large for a per-coordinate computation at every coordinate
(the exact Hessian diagonal of a 10^5-weight network at many draws), it is done
on a random subset: from every latent site (every layer's weights and biases),
up to ``per_site`` coordinates drawn uniformly without replacement. The draw
is one seeded permutation per site, so a smaller ``per_site`` gives a subset of
a larger one: the fixed-point check's coordinates are among ``hessian_diag``'s.
"""

from __future__ import annotations

import zlib

import numpy as np

from study.core.joint import FlatJoint


def coordinate_subset(joint: FlatJoint, per_site: int, seed: int = 0) -> np.ndarray:
    """Flat indices of up to ``per_site`` random coordinates of every latent site, sorted.

    Parameters
    ----------
    joint : FlatJoint
    per_site : int
        Coordinates kept per site (all of a site that has no more).
    seed : int
        Mixed with each site's name, so every site has its own stable permutation.

    Returns
    -------
    np.ndarray
        Shape ``(k,)``, int64, sorted, ``k = sum_sites min(size, per_site)``.
    """
    if per_site < 1:
        raise ValueError(f"per_site must be at least 1, got {per_site}")
    chosen = []
    for site in joint.sites:
        rng = np.random.default_rng([seed, zlib.crc32(site.name.encode())])
        order = rng.permutation(site.size)[:per_site]
        chosen.append(site.offset + np.sort(order))
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def site_weights(joint: FlatJoint, coordinates: np.ndarray) -> np.ndarray:
    """Horvitz-Thompson weight of each chosen coordinate: its site's size over the site's count.

    ``sum_k w_k f(i_k)`` is an unbiased estimate of ``sum_i f(i)`` over all ``d`` coordinates.

    Returns
    -------
    np.ndarray
        Shape ``(k,)``.
    """
    weights = np.empty(len(coordinates))
    for site in joint.sites:
        inside = (coordinates >= site.offset) & (coordinates < site.offset + site.size)
        if inside.any():
            weights[inside] = site.size / inside.sum()
    return weights

# One fixed seed for the coordinate subsets of every method and check, so that they measure
# the same coordinates of a model (the subsets nest across ``per_site``).
SUBSET_SEED = 0
