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

``teacher: <closed-form strategy>`` (``ridge_map``, ``ease``, ... with ``teacher_options``)
distils a model fitted in closed form instead: before training it is fitted once on the
training interactions (:meth:`TransferStrategy.prepare`), and z_T becomes its score of the
target catalogue from the user's *source row alone*, the view it has of a cold user,
standardised per user (closed-form scores are counts or regression outputs whose scale says
nothing about a softmax's temperature):

    z_T = (s_T - mean(s_T)) / std(s_T),   s_T = teacher(x_u^S)

It is never saved (fitted again by each run that trains; serving needs only the student).
Warm users are then ranked by a target-domain model trained on ``target`` windows beside the
student from the first epoch (``teacher_epochs`` does not apply): with no trained teacher to
feed, a two-domain model would cost five times the epoch for no measured gain on warm users
(test warm NDCG@10 0.0976 against 0.0970 for the target-domain model, cold_start_ml1m beta 0.2,
seed 0). The student has an item encoder of its own, trained by its loss, for the source
items it reads and the target items it scores (a cold user's ranking then never depends on the
warm model). Ranking objective only. ``student: mean`` reads the source history as a set
(:class:`recmig.users.interest.MeanInterest`) instead of through the run's user model.
``warm_items: id`` gives the warm model learned ID vectors instead of the run's encoder (the
student keeps it): text carries what a cold user's ranking needs, while for users with
interactions text + ID items ranked below ID items alone on both data sets measured
(``target_only`` warm NDCG@10 0.108 vs 0.147 on cold_start_ml1m; the distilled strategy's warm
users 0.037 vs 0.046 on the sparse titles-only proxy).
"""

from __future__ import annotations

import numpy as np
import torch

from recmig.batches import Batch, TrainBatch, UserBatch
from recmig.closed_form import ClosedFormStrategy
from recmig.data.scenario import SOURCE
from recmig.data.tensors import TrainingMatrix, sparse_rows
from recmig.registry import discover, load_strategy
from recmig.strategy import Phase, StrategyContext, Tower, TransferStrategy

TRAINED_TEACHER = "pooled"
STUDENTS = ("user_model", "mean")
WARM_ITEMS = ("encoder", "id")


class Distillation(TransferStrategy):
    description = (
        "a frozen two-domain teacher, or a closed-form one (teacher=ridge_map), distils target "
        "preferences into a source-only student"
    )
    streams = ("pooled", "overlap")
    objectives = ("ranking", "rating")

    def __init__(
        self,
        context: StrategyContext,
        teacher_epochs: int = 3,
        temperature: float = 2.0,
        distill_weight: float = 1.0,
        teacher: str = TRAINED_TEACHER,
        teacher_options: dict | None = None,
        student: str = "user_model",
        warm_items: str = "encoder",
    ):
        super().__init__(context)
        if teacher_epochs < 1:
            raise ValueError(f"strategy.teacher_epochs must be >= 1, got {teacher_epochs}")
        if temperature <= 0:
            raise ValueError(f"strategy.temperature must be > 0, got {temperature}")
        self.teacher_epochs = teacher_epochs
        self.temperature = temperature
        self.distill_weight = distill_weight
        if warm_items not in WARM_ITEMS:
            raise ValueError(f"strategy.warm_items={warm_items!r}: expected one of {WARM_ITEMS}")
        if warm_items == "id" and teacher == TRAINED_TEACHER:
            raise ValueError(
                "strategy.warm_items=id: only beside a closed-form teacher (the trained "
                "teacher's student reads the teacher's item vectors)"
            )
        self.teacher = Tower(context, context.id_encoder() if warm_items == "id" else None)
        if student not in STUDENTS:
            raise ValueError(f"strategy.student={student!r}: expected one of {list(STUDENTS)}")
        # The run's user model, or an order-free mean: a cold user's question is a set (their
        # target items) asked from a set (their source items), whatever the order they came in.
        self.student = context.user_model() if student == "user_model" else context.mean_model()
        # Not a submodule (set past nn.Module's registration): fitted by each run that
        # trains (prepare), never in checkpoints, kept on the CPU where sparse rows are.
        object.__setattr__(
            self, "_closed_form", closed_form_teacher(context, teacher, teacher_options)
        )
        self._source_rows = None  # (num_users, vocab_size) CSR of source training items
        if self._closed_form is not None:
            self.student_items = context.item_encoder()
        # What the model of warm users (``teacher``) trains on: both domains as the trained
        # teacher, the target domain alone beside a closed-form teacher.
        self.warm_stream = "target" if self._closed_form is not None else "pooled"
        # The student reads source histories, the set loss target ones, the warm model its own.
        self.reads = frozenset({"source_hist", "target_hist", f"{self.warm_stream}_hist"})
        self.streams = (self.warm_stream, "overlap")
        catalogs = [context.target_catalog]
        if self._closed_form is None:
            catalogs.insert(0, context.source_catalog)
        self.register_buffer("warm_catalog", torch.cat(catalogs), persistent=False)

    @property
    def phases(self) -> tuple[Phase, ...]:
        # Beside a closed-form teacher the student needs nothing of the warm model: both
        # train from the first epoch.
        if self._closed_form is not None:
            return (Phase(self.streams),)
        return (Phase(("pooled",), self.teacher_epochs), Phase(("overlap",)))

    def prepare(self, matrix: TrainingMatrix) -> None:
        if self._closed_form is None:
            return
        self._closed_form.fit(matrix)
        source = np.append(matrix.item_domain == SOURCE, False)  # (+ the BOS column)
        self._source_rows = matrix.interactions.multiply(source[None, :]).tocsr()

    def group_parameters(self) -> dict[str, tuple[str, ...]] | None:
        # Beside a closed-form teacher the student (cold users) reads its own item encoder and
        # the warm model nothing of the student's; the trained teacher's student reads the
        # teacher's items.
        if self._closed_form is None:
            return None
        return {"cold": ("student.", "student_items."), "warm": ("teacher.",)}

    def closed_form_scores(self, users: torch.Tensor) -> torch.Tensor:
        """(B, N_t) the closed-form teacher's standardised scores from each user's source row."""
        if self._source_rows is None:
            raise RuntimeError("distillation: prepare(training matrix) fits the teacher first")
        rows = sparse_rows(self._source_rows, users.cpu().numpy())
        batch = UserBatch(user=users.cpu(), inputs=rows)
        scores = self._closed_form.target_scores(batch).to(users.device)
        centred = scores - scores.mean(1, keepdim=True)
        return centred / centred.std(1, keepdim=True).clamp_min(1e-6)

    def student_scores(self, source_hist: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """(B, N_t) the student's scores of the target catalogue from (B, L) source histories,
        over ``table``: the frozen teacher's item vectors, or (closed-form teacher) those of
        the student's own encoder."""
        interest = self.student.last(table[source_hist], source_hist)
        return interest @ table[self.target_catalog].T

    def warm_scores(self, batch: Batch, table: torch.Tensor) -> torch.Tensor:
        """(B, N_t) the warm model's scores from the history it reads, over its ``table``."""
        return self.target_interest(batch, table) @ table[self.target_catalog].T

    def training_loss(self, batch: TrainBatch) -> dict[str, torch.Tensor]:
        teacher_loss = self.stream_loss(self.teacher, batch, self.warm_stream, self.warm_catalog)
        pairs = self.rows(batch, "overlap")
        if len(pairs.user) == 0:
            return {"loss": teacher_loss, "loss_teacher": teacher_loss}
        if self._closed_form is None:
            # One evaluation-mode table of the frozen teacher: its soft targets and the
            # student's item vectors.
            with torch.no_grad():
                was_training = self.teacher.training
                self.teacher.eval()
                table = self.teacher.table(None)
                teacher_scores = self.warm_scores(pairs, table)
                self.teacher.train(was_training)
        else:
            table = self.student_items(pairs.source_hist)
            teacher_scores = self.closed_form_scores(pairs.user)
        student_scores = self.student_scores(pairs.source_hist, table)
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

    def target_interest(self, batch: Batch, table: torch.Tensor | None = None) -> torch.Tensor:
        """The warm model's interest from the history it reads (both domains' or the
        target's), over its ``table`` (None: computed here)."""
        table = self.teacher.table(None) if table is None else table
        return self.teacher.interest(batch.history(self.warm_stream), table)

    def target_items(self) -> torch.Tensor:
        return self.teacher.table(None)[self.target_catalog]

    def target_scores(self, batch: UserBatch) -> torch.Tensor:
        table = self.teacher.table(None)  # once, for both paths over the teacher's items
        own = table if self._closed_form is None else self.student_items(None)
        cold = self.student_scores(batch.source_hist, own)
        scores = torch.where(batch.is_cold.unsqueeze(1), cold, self.warm_scores(batch, table))
        return self.objective.predictions(scores, self.target_catalog)


def closed_form_teacher(
    context: StrategyContext, name: str, options: dict | None
) -> ClosedFormStrategy | None:
    """The closed-form strategy ``name`` built with ``options`` (None for the trained
    two-domain teacher, ``pooled``)."""
    if name == TRAINED_TEACHER:
        if options:
            raise ValueError("strategy.teacher_options: only for a closed-form teacher")
        return None
    if name not in discover() or not issubclass(load_strategy(name), ClosedFormStrategy):
        closed = sorted(n for n in discover() if issubclass(load_strategy(n), ClosedFormStrategy))
        raise ValueError(
            f"strategy.teacher={name!r}: expected {TRAINED_TEACHER!r} or a closed-form "
            f"strategy: {closed}"
        )
    if context.objective.name != "ranking":
        raise ValueError("strategy.teacher: a closed-form teacher distils rankings only")
    return load_strategy(name)(context, **(options or {}))
