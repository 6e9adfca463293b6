"""Scale out: run a model over millions of items on Ray (or locally, resumably), shard by shard.

    from tenni.distributed import predict_at_scale, embed_at_scale
    predict_at_scale("model/", "tickets/", "preds/")            # a local Ray on 127.0.0.1, every core
    predict_at_scale("model/", "tickets/", "preds/", address="auto", actors=8)
    tenni.fit("labeled.csv", unlabeled="pool.parquet", pool_labeler=ClusterLabeler(address="auto"))

Ray is optional (``pip install 'tenni[ray]'``) and imported only when the Ray engine runs.
"""

from __future__ import annotations

from .batch import embed_at_scale, predict_at_scale
from .pool_labels import ClusterLabeler

__all__ = ["ClusterLabeler", "embed_at_scale", "predict_at_scale"]
