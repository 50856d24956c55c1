"""The cold path of `distillation` with a closed-form teacher, trained alone (about a second an
epoch on ML-1M), to compare student options before a full run.

With a closed-form teacher the student shares nothing with the warm model (its own item
encoder, its own user model), so its cold-user ranking after N epochs of its loss alone is the
one a full run's student reaches after N epochs, less the checkpoint selection. The strategy is
built exactly as `recmig train` builds it; each epoch walks the overlap rows once in a random
order, steps the student's loss (set-level likelihood of the user's target items plus the
distillation term) and prints the cold validation NDCG@10; the test users' at the end.

    python experiments/tools/student_probe.py 30 strategy.teacher=ridge_map \
        strategy.student=mean strategy.temperature=1.0 encoder=text_id

Set strategy.distill_weight=0 for the set-level likelihood alone.
"""

from __future__ import annotations

import sys
import time

import torch

from recmig.evaluation.ranking import ranking_metrics
from recmig.timing import compose_scratch
from recmig.tokens import STREAM_ID
from recmig.train import build_run


def cold_ndcg(strategy, datamodule, split: str) -> float:
    strategy.eval()
    values = []
    with torch.no_grad():
        for batch in datamodule.eval_data[split]:
            cold = batch["is_cold"]
            if cold.any():
                scores = strategy.student_scores(
                    batch["source_hist"][cold], strategy.student_items(None)
                )
                metrics = ranking_metrics(
                    scores, batch["relevant"][cold], batch["excluded"][cold], ks=(10,)
                )
                values.append(metrics["ndcg@10"])
    strategy.train()
    return torch.cat(values).mean().item()


def main(epochs: int, overrides: list[str]) -> None:
    cfg = compose_scratch(["strategy=distillation", "logger=none", *overrides])
    torch.manual_seed(cfg.seed)
    parts = build_run(cfg)
    datamodule, strategy = parts.datamodule, parts.module.strategy
    if strategy._closed_form is None:
        raise SystemExit("student_probe: set strategy.teacher to a closed-form strategy")
    strategy.prepare(datamodule.tensors.training_matrix())
    student = [*strategy.student.parameters(), *strategy.student_items.parameters()]
    optimizer = torch.optim.Adam(student, lr=cfg.optimizer.lr)
    rows = torch.nonzero(datamodule.train_data["stream"] == STREAM_ID["overlap"]).squeeze(1)
    batch_size = cfg.loader.batch_size
    for epoch in range(epochs):
        start = time.perf_counter()
        losses = []
        for chunk in rows[torch.randperm(len(rows))].split(batch_size):
            pairs = strategy.rows(datamodule._train_batch(chunk.tolist()), "overlap")
            scores = strategy.student_scores(
                pairs["source_hist"], strategy.student_items(pairs["source_hist"])
            )
            objective = strategy.objective
            hard = objective.history_loss(scores, pairs, "target", strategy.target_catalog)
            teacher = strategy.closed_form_scores(pairs["user"])
            soft = objective.soft_target_loss(teacher, scores, strategy.temperature)
            optimizer.zero_grad()
            (hard + strategy.distill_weight * soft).backward()
            optimizer.step()
            losses.append((hard.item(), soft.item()))
        hard, soft = (sum(part) / len(losses) for part in zip(*losses, strict=True))
        print(
            f"epoch {epoch} likelihood {hard:.3f} distillation {soft:.3f} "
            f"val cold ndcg@10 {cold_ndcg(strategy, datamodule, 'val'):.4f} "
            f"({time.perf_counter() - start:.1f} s)",
            flush=True,
        )
    print(f"test cold ndcg@10 {cold_ndcg(strategy, datamodule, 'test'):.4f}")


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2:])
