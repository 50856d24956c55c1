"""The plain source -> target ridge map (EMCDR's linear map, in item space), EASE for warm users.

    M     = argmin_M ||X_T - X_S M||^2 + mu ||M||^2 = (X_S^T X_S + mu I)^-1 X_S^T X_T
            over the users with both source and target training interactions
    score = x_u^S M        for a user without target history (cold)
            x_u B_ease     for everyone else

The baseline that ``ridge_transfer`` extends (a source-side densifier D = I + delta B_ss +
gamma S before the map) and ``text_prior`` regularises toward the language model: with
densify = 0 and text_weight = 0 ridge_transfer is exactly this model, so tables show what each
extra term adds. Man et al. (IJCAI 2017) fit the map between latent factors; here it runs
between item spaces directly, so no factorisation stands between the data and the map.
"""

from __future__ import annotations

from recmig.item_map import ItemMapTransfer
from recmig.strategy import StrategyContext


class RidgeMap(ItemMapTransfer):
    description = "baseline: ridge map from a user's source row to their target items (cold), EASE"
    config_name = "ridge_map"

    def __init__(
        self,
        context: StrategyContext,
        lam: float = 4000.0,
        map_lam: float = 300.0,
        max_items: int = 20000,
        release_dim: int = 8,
        release_basis: str = "public",
        solver: str = "auto",
        neighbours: int = 200,
    ):
        super().__init__(
            context,
            lam=lam,
            map_lam=map_lam,
            densify=0.0,
            text_weight=0.0,
            max_items=max_items,
            release_dim=release_dim,
            release_basis=release_basis,
            solver=solver,
            neighbours=neighbours,
        )
