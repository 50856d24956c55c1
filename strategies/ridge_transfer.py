"""An item-space linear map with a source-side densifier (cold users), EASE for warm users.

What it is: EMCDR's linear mapping (Man et al., IJCAI 2017) fit between item spaces instead of
latent factors, i.e. a ridge regression from a user's source row to their target row, with the
source row first densified by source-side EASE (Steck, WWW 2019) and, optionally, the language
model's text neighbours. ``ridge_map`` is the same map without the densifier and the text
(the baseline that shows what they add); ``text_prior`` regularises the map toward text.

EASE (:mod:`recmig.ease`) learns the source -> target weights of B as what a source item adds to a
target item *given all the user's other items*, target items included. A cold user has no
target item, so at test time EASE's source -> target weights answer a question they were not
fit for. Here the cold path is fit on exactly the cold-start question, "which target items
does a user with this source history have?", on the users who have both (the objective
mismatch of the baselines issue, in closed form):

    S      = row-normalised k-nearest-neighbour text similarity among source items (cosine of
             the item encoder's language-model features, each item's ``text_neighbours``)
    D      = I + delta B_ss + gamma S        densify a source history before mapping: B_ss is
             EASE on every user's source rows (cold users' too: the source domain is fully
             observed), S spreads interest to source items that read alike
    M      = argmin_M ||X_T - X_S D M||^2 + mu ||M||^2     over users with both histories
             = (D^T G_S D + mu I)^-1 D^T X_S^T X_T,        G_S = X_S^T X_S of those users
    score  = x_u^S D M      for a user without target history (cold)
             x_u B_ease     for everyone else (warm users get EASE exactly)

Everything is dense in the source catalogue (N_S x N_S), so the same item limit as EASE holds.
Without the densifier and the text (``ridge_map``), the map and EASE have the
neighbourhood solver of :mod:`recmig.sparse_ridge` for larger catalogues (``solver``).

Under a privacy budget (``privacy.epsilon`` finite) the target side never sees a raw source
history: each user's source row is released once through the Gaussian mechanism and the cold
map is fit on the released rows (:mod:`recmig.private_map`; ``release_dim``,
``release_basis``), warm users scored by EASE on the target items only.

The model is :class:`recmig.item_map.ItemMapTransfer` (shared with ``ridge_map`` and
``text_prior``).
"""

from __future__ import annotations

from recmig.item_map import ItemMapTransfer


class RidgeTransfer(ItemMapTransfer):
    description = (
        "closed form: item-space ridge map from the densified source row (cold), EASE (warm)"
    )
