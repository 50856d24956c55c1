"""Knowledge distillation from a teacher that sees both domains to a source-only student.

Phase 1 (``teacher_epochs``): the teacher, a model over both domains merged in time (as
``pooled``), learns next-item prediction on the union catalogue. Phase 2: the teacher is frozen
(no loss reaches it, and it runs in eval mode) and a student user model learns to predict a
user's target items from their *source history alone*, which is all a cold-start user has:

    L_student = - mean_{i in T(u)} log p_S(i | history_S(u))
                + w * tau^2 * KL( softmax(z_T / tau) || softmax(z_S / tau) )

z_T = teacher scores of the target catalogue given the user's full history (source and target:
privileged information the student never sees), z_S = student scores given the source history;
the sum runs over warm overlapping users (``overlap`` rows). tau^2 keeps the gradient scale of
the soft term independent of the temperature (Hinton et al., 2015). The student reads items
through the teacher's frozen item encoder, so both score the same item vectors.

Under the rating objective the hard term is the squared error of the user's target ratings and
the soft term its regression counterpart: the squared difference between the student's and the
teacher's predicted rating of every target item. The rating scale that turns scores into
ratings is frozen with the teacher, whose warm-user predictions use it too.

Warm users are ranked by the teacher, cold users by the student.
"""

from __future__ import annotations

import torch

from recmig.strategy import Phase, StrategyContext, Tower, TransferStrategy


class Distillation(TransferStrategy):
    description = "frozen two-domain teacher distils target preferences into a source-only student"
    streams = ("pooled", "overlap")
    objectives = ("ranking", "rating")

    def __init__(
        self,
        context: StrategyContext,
        teacher_epochs: int = 3,
        temperature: float = 2.0,
        distill_weight: float = 1.0,
    ):
        super().__init__(context)
        if teacher_epochs < 1:
            raise ValueError(f"strategy.teacher_epochs must be >= 1, got {teacher_epochs}")
        if temperature <= 0:
            raise ValueError(f"strategy.temperature must be > 0, got {temperature}")
        self.teacher_epochs = teacher_epochs
        self.temperature = temperature
        self.distill_weight = distill_weight
        self.teacher = Tower(context)
        self.student = context.user_model()
        self.register_buffer(
            "all_items",
            torch.cat([context.source_catalog, context.target_catalog]),
            persistent=False,
        )

    @property
    def phases(self) -> tuple[Phase, ...]:
        return (Phase(("pooled",), self.teacher_epochs), Phase(("overlap",)))

    def student_interest(self, source_hist: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        return self.student.last(table[source_hist], source_hist)

    def training_loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        teacher_loss = self.stream_loss(self.teacher, batch, "pooled", self.all_items)
        pairs = self.rows(batch, "overlap")
        if len(pairs["user"]) == 0:
            return {"loss": teacher_loss, "loss_teacher": teacher_loss}
        with torch.no_grad():
            was_training = self.teacher.training
            self.teacher.eval()
            table = self.teacher.table(None)
            targets = table[self.target_catalog]
            teacher_scores = self.teacher.interest(pairs["pooled_hist"], table) @ targets.T
            self.teacher.train(was_training)
        student_scores = self.student_interest(pairs["source_hist"], table) @ targets.T
        # The objective's own parameters (a rating scale) are frozen with the teacher, whose
        # warm-user predictions use them too.
        frozen = self.objective.frozen()
        hard = frozen.history_loss(student_scores, pairs, "target", self.target_catalog)
        soft = frozen.soft_target_loss(teacher_scores, student_scores, self.temperature)
        loss = teacher_loss + hard + self.distill_weight * soft
        return {
            "loss": loss,
            "loss_teacher": teacher_loss,
            "loss_student": hard,
            "loss_distill": soft,
        }

    def target_interest(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        table = self.teacher.table(None)
        warm = self.teacher.interest(batch["pooled_hist"], table)
        cold = self.student_interest(batch["source_hist"], table)
        return torch.where(batch["is_cold"].unsqueeze(1), cold, warm)

    def target_items(self) -> torch.Tensor:
        return self.teacher.table(None)[self.target_catalog]
